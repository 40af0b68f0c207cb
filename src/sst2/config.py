"""Typed configs, one dataclass per command. Field ``help`` metadata becomes ``--help`` text.

Each config validates itself in ``__post_init__`` and reports every problem at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sst2.errors import UserError
from sst2.typed import type_problems

# what sst2 predict reads as a table (the others are one text a line); the readers: sst2.data.formats
TABLE_EXTENSIONS = (".tsv", ".csv", ".jsonl", ".json", ".ndjson", ".parquet", ".pq")


class ConfigError(UserError, ValueError):
    pass


def opt(default, help: str, **meta):
    """A config field with its ``--help`` text (``positional=True`` or ``choices=[...]`` optional)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def check(problems: list[str], owner: str) -> None:
    if problems:
        raise ConfigError(f"invalid {owner} options:\n  " + "\n  ".join(problems))


def choices_problems(cfg) -> list[str]:
    """Values outside a field's ``choices``, and non-finite numbers in any float field; a value of the wrong
    type is raised at once (the other checks compare values)."""
    check(type_problems(cfg), type(cfg).__name__)
    out = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"{f.name}: must be a finite number, got {v}")
        ch = f.metadata.get("choices")
        if ch and getattr(cfg, f.name) is not None and getattr(cfg, f.name) not in ch:
            out.append(f"{f.name}: must be one of {', '.join(map(str, ch))}, got {getattr(cfg, f.name)!r}")
    return out


def long_texts_opt():
    """The ``--long-texts`` option of every command that scores texts (one definition for all)."""
    return opt("truncate", "'truncate' scores a text's first max_length tokens; 'windows' scores every text "
                           "in overlapping windows of --window-length tokens (default: the model's own, which "
                           "can be shorter than max_length) and averages their probabilities",
               choices=["truncate", "windows"])


def window_overlap_opt():
    return opt(None, "tokens shared by consecutive windows (default: a quarter of --window-length)")


def window_length_opt():
    return opt(None, "tokens in one window, special tokens included (default: the model's own, as long as 90%% of "
                     "its training texts; max_length for older models)")


def window_options(cfg) -> dict:
    """The long-text keyword arguments of ``SentimentClassifier.from_pretrained`` from a command's config."""
    return {"long_texts": cfg.long_texts, "window_length": cfg.window_length, "window_overlap": cfg.window_overlap}


def below(cfg, names, minimum: int = 1) -> list[str]:
    """A problem for each of the fields ``names`` that is set and below ``minimum``."""
    return [f"{n}: must be >= {minimum}, got {getattr(cfg, n)}" for n in names
            if getattr(cfg, n) is not None and getattr(cfg, n) < minimum]


def to_dict(cfg) -> dict:
    return asdict(cfg)


MAX_OPSET = 20  # torch 2.13's TorchScript exporter (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
RUNTIME_CHOICES = ["torch", "onnx", "onnx-int8", "numpy"]  # = sst2.inference.RUNTIMES (not imported: heavier)


@dataclass
class EvaluateConfig:
    model_dir: str = opt("runs/efficient/model", "a saved model directory (RUN/model)")
    data: str | None = opt(None, "data folder or file (default: the data the model's run trained on, split as "
                                 "it split them; else $SST2_DATA, else ../shared/data/sst2-sentences)")
    split: str | None = opt(None, "which split of --data to score (default: test)", choices=["train", "dev", "test"])
    file: str | None = opt(None, "score this labelled file (.tsv .csv .jsonl .parquet) instead of a split of --data")
    format: str | None = opt(None, "the file's format when its extension does not say",
                             choices=["tsv", "csv", "jsonl", "parquet"])
    text_column: str | None = opt(None, "the text column (default: the first of sentence, text, review)")
    label_column: str | None = opt(None, "the label column (default: the first of label, labels, sentiment)")
    runtime: str = opt("torch", "inference runtime; onnx / onnx-int8 need 'sst2 export' first",
                       choices=RUNTIME_CHOICES)
    long_texts: str = long_texts_opt()
    window_length: int | None = window_length_opt()
    window_overlap: int | None = window_overlap_opt()
    batch_size: int = opt(64, "inference batch size")
    json: bool = opt(False, "print the metrics as JSON")
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")

    def __post_init__(self):
        problems = choices_problems(self)
        problems += below(self, ("batch_size", "threads"))
        if self.file is not None:  # both were ignored without a word
            problems += [f"--{name} {v}: --file scores that file alone; drop one of them"
                         for name, v in (("data", self.data), ("split", self.split)) if v is not None]
        check(problems, "evaluate")
        self.split = self.split or "test"


@dataclass
class PredictConfig:
    texts: list[str] = opt([], "texts to classify (default: one per line from --input, else standard input)",
                           positional=True)
    model_dir: str = opt("runs/efficient/model", "a saved model directory (RUN/model)")
    input: str | None = opt(None, "a text file with one text per line ('-' = standard input; UTF-8, lines split at "
                                  "\\n only; one output per line, an empty line is an error), or a table "
                                  "(.tsv .csv .jsonl .parquet) whose every column is kept; with --engine ray also "
                                  "a glob (quote it: 'reviews/*.parquet')")
    output: str | None = opt(None, "write the predictions here, in the format its extension names (none: the "
                                   "input's; default: JSON lines on standard output); with --engine ray the "
                                   "folder to create")
    overwrite: bool = opt(False, "replace an existing --output file (--engine ray: a folder it wrote before)")
    format: str | None = opt(None, "the input table's format when its extension does not say",
                             choices=["tsv", "csv", "jsonl", "parquet"])
    text_column: str | None = opt(None, "the input table's text column (default: the first of sentence, text, "
                                        "review)")
    runtime: str | None = opt(None, "inference runtime (default: torch; onnx-int8 with --engine ray); onnx / "
                                    "onnx-int8 need 'sst2 export' first", choices=RUNTIME_CHOICES)
    long_texts: str = long_texts_opt()
    window_length: int | None = window_length_opt()
    window_overlap: int | None = window_overlap_opt()
    batch_size: int = opt(64, "inference batch size (texts are length-sorted into batches)")
    threads: int | None = opt(None, "intra-op threads per model call (default: torch's choice; physical cores "
                                    "for onnx, divided among --workers; --engine ray: 1 per actor)")
    workers: int = opt(1, "model calls run at once, each in its own thread: 2 single-threaded calls gave more "
                          "sentences/s than 1 two-threaded call on 2 cores (README)")
    chunk: int = opt(1024, "texts read, scored and written at a time: memory stays bounded whatever the input size "
                           "(--engine ray: rows per actor call)")
    quiet: bool = opt(False, "no progress bar")
    engine: str = opt("local", "local: score in this process; ray: on Ray Data, reading --input (a path or glob) in "
                               "Ray tasks, scoring on a pool of actors and writing the folder --output "
                               "(predictions/, errors/, summary.json; docs/distributed.md)", choices=["local", "ray"])
    ray_address: str | None = opt(None, "--engine ray: a running Ray cluster, HOST:PORT of its head node (or "
                                        "ray://HOST:PORT, or auto); default: start a local Ray with this machine's CPUs")
    actors: int | None = opt(None, "--engine ray: scoring actors, each loading the model once (default: the "
                                   "cluster's CPUs divided by --threads)")
    output_format: str | None = opt(None, "--engine ray: format of the output files (default: parquet)",
                                    choices=["parquet", "jsonl", "csv"])
    retries: int | None = opt(None, "--engine ray: an actor that dies is restarted, and its call retried, this many "
                                    "times; then the run fails naming the rows not written (default: 3)")

    def __post_init__(self):
        problems = choices_problems(self)
        if self.texts and self.input is not None:
            problems.append("texts: give texts as arguments or --input FILE, not both")
        if self.engine == "ray":
            if self.texts or self.input in (None, "-"):
                problems.append("input: --engine ray reads files: give --input PATH_OR_GLOB")
            if self.output is None:
                problems.append("output: --engine ray writes a folder: give --output DIR")
            if self.workers != 1:
                problems.append("workers: goes with --engine local (with --engine ray, use --actors)")
        else:
            if self.output is not None and (self.input is None or self.input == "-"):
                problems.append("output: goes with an --input table")
            text_lines = self.input in (None, "-")  # arguments and standard input: one text a line
            if text_lines and self.format is not None:  # a traceback, or "-: file not found"
                problems.append("format: goes with an --input table file; arguments and standard input are "
                                "read one text a line")
            plain = text_lines or (self.format is None and Path(self.input).suffix.lower() not in TABLE_EXTENSIONS)
            if plain and self.text_column is not None:  # it was ignored without a word
                problems.append("text_column: goes with an --input table (a .tsv, .csv, .jsonl or .parquet file, or "
                                "--format); this input is one text a line")
            for name in ("ray_address", "actors", "output_format", "retries"):
                if getattr(self, name) is not None:
                    problems.append(f"{name}: goes with --engine ray")
        problems += below(self, ("batch_size", "threads", "workers", "chunk", "actors"))
        problems += below(self, ("retries",), minimum=0)
        check(problems, "predict")


@dataclass
class ExportConfig:
    model_dir: str = opt("runs/efficient/model", "a saved model directory; model.onnx is written into it")
    int8: bool = opt(False, "also write model.int8.onnx (dynamic int8 quantization of the MatMul weights)")
    fuse: bool = opt(False, "fuse the encoder into onnxruntime's transformer ops (Attention, SkipLayerNormalization, "
                            "BiasGelu, EmbedLayerNormalization); measured faster or slower depending on the "
                            "CPU's state (README), so off by default")
    per_channel: bool = opt(True, "int8: one weight scale per output channel rather than per tensor")
    reduce_range: bool = opt(False, "int8: 7-bit weights (can help accuracy on CPUs without VNNI)")
    opset: int = opt(17, "ONNX opset version")
    threads: int | None = opt(None, "intra-op threads for the parity check")
    json: bool = opt(False, "print the export report as JSON")
    quiet: bool = opt(False, "print nothing on success")

    def __post_init__(self):
        problems = choices_problems(self)
        if not 14 <= self.opset <= MAX_OPSET:
            problems.append(f"opset: must be from 14 to {MAX_OPSET} (the TorchScript exporter's newest), got {self.opset}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads: must be >= 1, got {self.threads}")
        check(problems, "export")


@dataclass
class ServeConfig:
    model_dir: str = opt("runs/efficient/model", "a saved model directory (RUN/model)")
    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0 exposes the API to the network)")
    port: int = opt(8000, "TCP port (0 = any free port)")
    runtime: str = opt("torch", "inference runtime; onnx / onnx-int8 need 'sst2 export' first",
                       choices=RUNTIME_CHOICES)
    threads: int | None = opt(None, "intra-op threads of one model call (default: torch's choice; physical cores "
                                    "for onnx; with --workers N, the physical cores divided by N)")
    workers: int | None = opt(None, "micro-batches run through the model at once, each in its own thread: with "
                                    "2, the next batch is gathered and run while the previous one still runs "
                                    "(default: 2 with 2+ physical cores, else 1)")
    long_texts: str = long_texts_opt()
    window_length: int | None = window_length_opt()
    window_overlap: int | None = window_overlap_opt()
    max_batch: int = opt(64, "micro-batching: most texts run through the model at once")
    max_wait_ms: float = opt(1.0, "micro-batching: longest wait for more requests before running a batch")
    max_texts: int = opt(64, "most texts accepted in one request")
    max_chars: int = opt(2000, "most characters accepted in one text")
    log_level: str = opt("warning", "log level of uvicorn and sst2.serve; 'info' adds one access log line per "
                                    "request (method, path, status, texts, latency ms, request id)",
                         choices=["critical", "error", "warning", "info", "debug"])
    max_connections: int = opt(1000, "cap on open connections (and on requests in progress): while it is "
                                     "reached, new requests get 503 with Retry-After, logged and counted")
    keep_alive_timeout: float = opt(30.0, "seconds an idle keep-alive connection stays open between requests")
    request_timeout: float = opt(10.0, "seconds a client has to send a whole request, headers and body, counted "
                                       "from the connection opening or the first byte of the request; a "
                                       "connection that sends nothing, or too slowly, is closed then")
    api_key_file: str | None = opt(None, "file holding an API key that /predict and /metrics then require, as "
                                         "'Authorization: Bearer KEY' or 'X-API-Key: KEY' (401 without it); "
                                         "/health stays open. Default: $SST2_API_KEY if set, else no key")
    cors_origin: list[str] | None = opt(None, "browser origins (scheme://host[:port]) allowed to call the API "
                                              "(CORS), e.g. --cors-origin https://a.example https://b.example "
                                              "(default: none)")

    def __post_init__(self):
        problems = choices_problems(self)
        if not 0 <= self.port <= 65535:
            problems.append(f"port: must be in 0..65535, got {self.port}")
        for name in ("threads", "workers", "max_batch", "max_texts", "max_chars", "max_connections"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name}: must be >= 1, got {v}")
        if self.max_wait_ms < 0:
            problems.append(f"max_wait_ms: must be >= 0, got {self.max_wait_ms}")
        for name in ("keep_alive_timeout", "request_timeout"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}: must be > 0 seconds, got {getattr(self, name)}")
        import re  # here, not at the top: only ServeConfig needs it

        for origin in self.cors_origin or []:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                problems.append(f"cors_origin: {origin!r} is not an origin like https://host[:port] (no path)")
        check(problems, "serve")


BENCH_CASES = ("train_step", "latency", "train_cost")


@dataclass
class BenchConfig:
    out: str = opt("runs/bench", "folder for bench.json, bench.md and the plots (an earlier bench's files are "
                                 "replaced; other files of those names are refused)")
    quick: bool = opt(False, "a small sweep (lengths 16 64 128, batch 1 and 4, short budgets, no BERT-base) "
                             "that finishes in under a minute")
    backbone: str = opt("all-MiniLM-L6-v2", "encoder: a local directory or a Hugging Face name "
                                            "(all-MiniLM-L6-v2 is the packaged one, fully offline)")
    cases: list[str] | None = opt(None, "cases to run; every row also records its peak memory "
                                        "(default: all)", choices=list(BENCH_CASES))
    lengths: list[int] | None = opt(None, "sequence lengths in tokens, the inputs are exactly this long "
                                          "(default: 8 16 32 64 128 256 512; --quick: 16 64 128)")
    batch_sizes: list[int] | None = opt(None, "inference batch sizes of the latency case "
                                              "(default: 1 64; --quick: 1 4)")
    train_batch_size: int | None = opt(None, "batch size of the training-cost case (default: 16; --quick: 4)")
    step_batch_size: int | None = opt(None, "batch size of the training-step case (default: 128, as the "
                                            "reference; --quick: 16)")
    step_length: int = opt(32, "sequence length of the training-step case (SST-2 train: mean 25, max 80 tokens)")
    bert_base: bool = opt(True, "add a BERT-base-sized random-weight encoder to the training-step case "
                                "(always off with --quick)")
    max_tokens: int = opt(8192, "skip inference cases with batch size x length above this (recorded as skipped)")
    max_train_tokens: int = opt(4096, "skip fine-tune cases with batch size x length above this (a step costs "
                                      "about three forward passes)")
    warmup: int = opt(3, "warm-up iterations per case (at least 1; fewer if they take half the time budget)")
    iters: int | None = opt(None, "most timed iterations per case (default: 30; --quick: 5); at least 3 always run")
    seconds: float | None = opt(None, "timing budget per case in seconds: timing stops at --iters or here, "
                                      "whichever comes first (default: 1.5; --quick: 0.25)")
    fit_from: int = opt(128, "fit the log-log complexity slopes on lengths from this one up (fewer than two "
                             "lengths there: on the top three)")
    device: str = opt("cpu", "device to run on", choices=["cpu", "cuda"])
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")
    quiet: bool = opt(False, "no per-case progress lines")

    def __post_init__(self):
        problems = [p for p in choices_problems(self) if not p.startswith("cases:")]
        bad = [c for c in self.cases or [] if c not in BENCH_CASES]
        if bad:
            problems.append(f"cases: each must be one of {', '.join(BENCH_CASES)}, got {', '.join(bad)}")
        for name in ("lengths", "batch_sizes"):
            v = getattr(self, name)
            if v is not None and (not v or min(v) < 1):
                problems.append(f"{name}: must be integers >= 1, got {v}")
        problems += below(self, ("train_batch_size", "step_batch_size", "step_length", "max_tokens",
                                 "max_train_tokens", "warmup", "iters", "fit_from", "threads"))
        if self.seconds is not None and not self.seconds > 0:
            problems.append(f"seconds: must be > 0, got {self.seconds}")
        check(problems, "bench")

    def resolved(self) -> dict:
        """The full or quick sweep with explicit options filled in."""
        quick = self.quick
        return {
            "quick": quick,
            "cases": list(self.cases or BENCH_CASES),
            "lengths": sorted(set(self.lengths or ([16, 64, 128] if quick else [8, 16, 32, 64, 128, 256, 512]))),
            "batch_sizes": sorted(set(self.batch_sizes or ([1, 4] if quick else [1, 64]))),
            "train_batch_size": self.train_batch_size or (4 if quick else 16),
            "step_batch_size": self.step_batch_size or (16 if quick else 128),
            "step_length": self.step_length,
            "bert_base": self.bert_base and not quick,
            "max_tokens": self.max_tokens,
            "max_train_tokens": self.max_train_tokens,
            "warmup": self.warmup,
            "iters": self.iters or (5 if quick else 30),
            "seconds": self.seconds or (0.25 if quick else 1.5),
            "fit_from": self.fit_from,
            "device": self.device,
        }


@dataclass
class CompareConfig:
    runs: list[str] = opt([], "run directories written by 'sst2 train' (single runs or --seeds runs)",
                          positional=True)
    out: str = opt("runs/compare", "folder for compare.md, compare.json and compare.png (an earlier compare's files "
                                   "are replaced; other files of those names are refused)")
    labels: list[str] | None = opt(None, "row names, one per run directory (default: model and preset)")
    latency: bool = opt(True, "measure inference ms per sentence at batch 1 and batch --batch-size on the saved "
                              "models (--no-latency: only read the runs' metrics)")
    data: str | None = opt(None, "data folder whose dev split is timed (any format) (default: $SST2_DATA, "
                                 "else ../shared/data/sst2-sentences)")
    runtime: str = opt("torch", "inference runtime for the timing (onnx / onnx-int8 need 'sst2 export' first)",
                       choices=RUNTIME_CHOICES)
    runtimes: list[str] | None = opt(None, "one runtime per run directory in place of --runtime (for example onnx "
                                           "for the encoder models and numpy for the static tier)")
    calls: int = opt(200, "batch-1 timing: number of dev sentences, each one call")
    warmup: int = opt(20, "batch-1 timing: warm-up calls")
    batch_size: int = opt(64, "batched timing: batch size")
    repeats: int = opt(3, "batched timing: passes over the dev sentences (the median is reported)")
    rounds: int = opt(1, "time every model this many times in turn (all loaded first), so that a change of the "
                         "machine's speed falls on all alike; medians over all rounds")
    threads: int | None = opt(None, "intra-op threads (default: torch's choice)")
    fasttext: bool = opt(False, "add fastText, trained on the data folder's train split and timed here, as an "
                                "external anchor row (needs sst2[bench])")
    quiet: bool = opt(False, "do not print the table")

    def __post_init__(self):
        problems = choices_problems(self)
        if not self.runs:
            problems.append("runs: give at least one run directory")
        if self.labels is not None and len(self.labels) != len(self.runs):
            problems.append(f"labels: give one per run directory ({len(self.runs)}), got {len(self.labels)}")
        if self.runtimes is not None:
            if len(self.runtimes) != len(self.runs):
                problems.append(f"runtimes: give one per run directory ({len(self.runs)}), got {len(self.runtimes)}")
            problems += [f"runtimes: must be one of {', '.join(RUNTIME_CHOICES)}, got {r!r}" for r in self.runtimes
                         if r not in RUNTIME_CHOICES]
        problems += below(self, ("calls", "batch_size", "repeats", "rounds", "threads"))
        if self.warmup < 0:
            problems.append(f"warmup: must be >= 0, got {self.warmup}")
        check(problems, "compare")
