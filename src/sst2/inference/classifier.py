"""Fast inference: ``Classifier`` = tokenizer + one of three runtimes over the same saved model.

* ``torch``: the ``SentimentModel`` itself (the reference path).
* ``onnx``: ``model.onnx`` (encoder + head, written by ``sst2 export``) on onnxruntime.
* ``onnx-int8``: ``model.int8.onnx``, the same graph with dynamically quantized int8 MatMul weights.

Every runtime maps padded ``input_ids, attention_mask (B, T) int64`` to ``logits (B,)``; the
classifier tokenizes, sorts texts by length so each batch pads little, and restores input order.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sst2.data.splits import LABEL_NAMES
from sst2.errors import UserError
from sst2.data.text import normalize_texts

RUNTIMES = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# The command that writes each ONNX file, for the error message when it is missing.
EXPORT_COMMANDS = {"onnx": "sst2 export --model-dir {dir}", "onnx-int8": "sst2 export --model-dir {dir} --int8"}


class RuntimeUnavailableError(UserError, RuntimeError):
    """The requested runtime cannot be used with this model directory or environment."""


@dataclass(frozen=True)
class Prediction:
    label: str  # "negative" or "positive"
    positive_prob: float
    truncated: bool  # the text had more tokens than the model's max_length; the rest were ignored

    def to_dict(self) -> dict:
        return asdict(self)


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class TorchRunner:
    """The reference path: ``SentimentModel.forward`` under inference mode."""

    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))  # (B,)
        return logits.float().numpy()


def onnx_session_options(threads: int | None = None, spin: bool = True):
    """Settings measured to be fastest here for a small encoder on a few CPU cores: all graph
    fusions, one intra-op pool sized to the physical cores (hyper-threads only contend for the same
    vector units), and sequential execution (the graph is a chain; parallel branches add overhead).

    ``spin=False`` makes idle pool threads sleep instead of busy-waiting between ops: slightly slower
    on an idle machine, but a server's event loop (or any other process) then gets the cores back.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: the quantized graph makes onnxruntime warn about shapes
    return so


class OnnxRunner:
    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True):
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), onnx_session_options(threads, spin),
                                            providers=["CPUExecutionProvider"])
        self.threads = threads or physical_cores()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return logits.astype(np.float32, copy=False)  # (B,)


def onnx_path(model_dir: str | Path, runtime: str) -> Path:
    """The ONNX file of ``runtime``; a clear error naming the export command if it is missing."""
    path = Path(model_dir) / ONNX_FILES[runtime]
    if not path.is_file():
        cmd = EXPORT_COMMANDS[runtime].format(dir=model_dir)
        raise RuntimeUnavailableError(f"runtime {runtime!r} needs {path}, which does not exist: run '{cmd}' first")
    return path


# The fixed cost of one model call (session run, padding, head set-up) in padded-token units: a
# measured order of magnitude on this CPU, where one token row costs ~0.1-0.3 ms and a call ~1 ms.
CALL_COST_TOKENS = 8


def split_padded(lengths: list[int], call_cost: int = CALL_COST_TOKENS) -> list[tuple[int, int]]:
    """Cut sorted ``lengths`` into contiguous ``[lo, hi)`` runs minimising the total computed tokens,
    ``sum(call_cost + rows * longest)`` (dynamic programming; O(n^2) for a batch of n <= a few hundred)."""
    n = len(lengths)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest cost of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + call_cost + (j - i) * lengths[j - 1]  # sorted: row j-1 is the longest of [i, j)
            if c < best[j]:
                best[j], cut[j] = c, i
    runs, j = [], n
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow warnings


class Classifier:
    """``Classifier.load(model_dir, runtime=...)``; ``predict(texts) -> list[Prediction]`` in input order."""

    def __init__(self, tokenizer, runner, max_length: int, runtime: str = "torch", model_dir: str | Path = "",
                 batch_size: int = 64, normalize: str = "none", workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.tokenizer = tokenizer
        self.workers = workers  # model calls run at once (see ``load``)
        self.normalize = normalize  # text normalization before tokenization, as in training (sst2.text)
        self.runner = runner
        self.max_length = int(max_length)
        self.runtime = runtime
        self.model_dir = str(model_dir)
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id or 0

    @classmethod
    def load(cls, model_dir: str | Path, runtime: str = "torch", threads: int | None = None,
             batch_size: int = 64, spin: bool = True, workers: int = 1) -> "Classifier":
        """``threads``: intra-op threads of one model call (default: torch's choice, or the physical
        cores for onnx; with ``workers`` > 1, the physical cores divided among the workers).
        ``workers``: batches run this many at a time, each in its own thread; on a few cores, two
        single-threaded calls at once keep the cores busier than one two-threaded call (the LSTM and
        the element-wise ops parallelise poorly), for more sentences/s on large inputs but no gain on
        a single batch. ``spin=False``: onnx pool threads sleep when idle (see ``onnx_session_options``)."""
        from sst2.modeling.model import ModelDirError, SentimentModel, SPEC_FILE

        if runtime not in RUNTIMES:
            raise RuntimeUnavailableError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if threads is None and workers > 1:
            threads = max(1, physical_cores() // workers)
        model_dir = Path(model_dir)
        if runtime == "torch":
            from sst2.system import set_threads

            set_threads(threads)
            model = SentimentModel.load(model_dir)
            return cls(model.tokenizer, TorchRunner(model), model.max_length, runtime, model_dir, batch_size,
                       model.text_normalization, workers)
        # The ONNX runtimes need only the tokenizer and max_length, not the PyTorch weights.
        spec_file = model_dir / SPEC_FILE
        if not spec_file.is_file():
            raise ModelDirError(f"{model_dir}: not an sst2 model directory ({SPEC_FILE} not found)")
        path = onnx_path(model_dir, runtime)
        try:
            runner = OnnxRunner(path, threads, spin)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeUnavailableError(f"runtime {runtime!r} needs onnxruntime: pip install 'sst2[onnx]'") from exc
        from sst2.modeling.model import ENCODER_DIR
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir / ENCODER_DIR, local_files_only=True)
        spec = json.loads(spec_file.read_text())
        return cls(tokenizer, runner, spec["max_length"], runtime, model_dir, batch_size,
                   spec.get("text_normalization", "none"), workers)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids (special tokens included, at most ``max_length``) and whether each text was cut."""
        enc = self.tokenizer(normalize_texts(list(texts), self.normalize), truncation=True, max_length=self.max_length,
                             return_overflowing_tokens=True, return_attention_mask=False)
        # With overflow on, a text longer than max_length yields extra rows (its continuation);
        # the first row of each text is exactly what plain truncation gives.
        ids: list[list[int] | None] = [None] * len(texts)
        truncated = [False] * len(texts)
        for row, i in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
            if ids[i] is None:
                ids[i] = row
            else:
                truncated[i] = True
        return ids, truncated  # type: ignore[return-value]

    def pad(self, seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the longest: ``(B, T)`` int64 ids and attention mask."""
        t_max = max(len(s) for s in seqs)
        ids = np.full((len(seqs), t_max), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), t_max), dtype=np.int64)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
        return ids, mask

    def logits_from_ids(self, ids: list[list[int]], batch_size: int | None = None, progress=None) -> np.ndarray:
        """Logits ``(N,)`` in input order.

        Texts are length-sorted, cut into batches of ``batch_size``, and each batch is split further
        where its lengths spread so much that padding would cost more than another model call
        (``split_padded``); a server's micro-batch of random sentences benefits most.
        """
        batch_size = batch_size or self.batch_size
        out = np.empty(len(ids), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        calls = []  # the rows of each model call
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            calls += [idx[lo:hi] for lo, hi in split_padded([len(ids[i]) for i in idx])]

        def run(rows: list[int]) -> tuple[list[int], np.ndarray]:
            return rows, self.runner(*self.pad([ids[i] for i in rows]))

        pool = None
        if self.workers > 1 and len(calls) > 1:
            from concurrent.futures import ThreadPoolExecutor

            # onnxruntime sessions and torch modules in inference mode take concurrent calls, and both
            # release the GIL while they compute.
            pool = ThreadPoolExecutor(min(self.workers, len(calls)), thread_name_prefix="sst2-batch")
        try:
            for rows, logits in (pool.map if pool else map)(run, calls):
                out[rows] = logits
                if progress is not None:
                    progress(len(rows))
        finally:
            if pool is not None:
                pool.shutdown()
        return out

    def predict_logits(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.empty(0, dtype=np.float32)
        ids, _ = self.tokenize(texts)
        return self.logits_from_ids(ids, batch_size)

    def predict(self, texts: list[str], batch_size: int | None = None, progress=None) -> list[Prediction]:
        """One ``Prediction`` per text, in input order. ``progress(n)`` is called after each model call
        with its number of texts."""
        if isinstance(texts, str):
            raise TypeError("predict expects a list of texts, not a single string")
        if not texts:
            return []
        ids, truncated = self.tokenize(texts)
        probs = sigmoid(self.logits_from_ids(ids, batch_size, progress))
        return [Prediction(LABEL_NAMES[int(p > 0.5)], float(p), t) for p, t in zip(probs, truncated)]

    def __repr__(self) -> str:
        return f"Classifier(model_dir={self.model_dir!r}, runtime={self.runtime!r}, max_length={self.max_length})"


def accuracy(clf: Classifier, texts: list[str], labels: list[int], batch_size: int | None = None) -> float:
    preds = clf.predict_logits(texts, batch_size) > 0
    return float(np.mean(preds.astype(int) == np.asarray(labels))) if len(labels) else math.nan
