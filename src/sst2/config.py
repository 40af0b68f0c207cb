"""Typed configs, one dataclass per command. Field ``help`` metadata becomes ``--help`` text.

Each config validates itself in ``__post_init__`` and reports every problem at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .errors import UserError


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
    out = []
    for f in fields(cfg):
        ch = f.metadata.get("choices")
        if ch and getattr(cfg, f.name) is not None and getattr(cfg, f.name) not in ch:
            out.append(f"{f.name}: must be one of {', '.join(map(str, ch))}, got {getattr(cfg, f.name)!r}")
    return out


def to_dict(cfg) -> dict:
    return asdict(cfg)


# Head/optimisation presets of the efficient model. ``seed`` is the reference design, with its
# defects fixed; ``fast`` is the measured default (see README, "Results").
PRESETS: dict[str, dict] = {
    "seed": dict(
        layers=[-1], proj_size=256, lstm_size=256, bidirectional=False, pooling="last", dropout=0.1,
        epochs=10, batch_size=128, lr=1e-3,
    ),
    "improved": dict(
        layers=[-4, -3, -2, -1], proj_size=256, lstm_size=128, bidirectional=True, pooling="maxmean",
        dropout=0.1, epochs=10, batch_size=128, lr=1e-3,
    ),
}
DEFAULT_PRESET = "improved"
MODELS = ("efficient",)


@dataclass
class TrainConfig:
    data: str | None = opt(None, "data folder with train.tsv, dev.tsv, test.tsv (default: $SST2_DATA, "
                                 "else ../shared/data/sst2-sentences)")
    out: str = opt("runs/efficient", "run directory to write (config, history, metrics, plot, model)")
    model: str = opt("efficient", "model type", choices=MODELS)
    preset: str = opt(DEFAULT_PRESET, "efficient-head preset: 'seed' is the reference design", choices=list(PRESETS))
    backbone: str = opt("all-MiniLM-L6-v2", "encoder: a local directory or a Hugging Face name "
                                            "(default: the packaged all-MiniLM-L6-v2, fully offline)")
    epochs: int | None = opt(None, "training epochs (default: the preset's)")
    batch_size: int | None = opt(None, "training batch size (default: the preset's)")
    lr: float | None = opt(None, "Adam learning rate (default: the preset's)")
    dropout: float | None = opt(None, "head dropout (default: the preset's)")
    layers: str | None = opt(None, "encoder hidden states fed to the head, comma-separated, negative = from "
                                   "the top, 0 = embeddings (default: the preset's)")
    grad_clip: float = opt(1.0, "gradient norm clipping (0 = off)")
    max_length: int = opt(128, "maximum tokens per sentence, special tokens included (longer ones are truncated)")
    seed: int = opt(0, "random seed (runs are deterministic on CPU for a given seed)")
    cache: bool = opt(True, "reuse frozen-encoder token states from the on-disk cache; --no-cache runs the "
                            "encoder on every batch like the reference")
    cache_dir: str | None = opt(None, "feature cache folder (default: $SST2_CACHE, else ~/.cache/sst2/features)")
    bucket: bool = opt(True, "group training batches by length (shuffled) so short sentences are not "
                             "padded to long ones")
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")
    overwrite: bool = opt(False, "replace an existing run directory")
    quiet: bool = opt(False, "no progress bars or per-epoch lines")

    def __post_init__(self):
        problems = choices_problems(self)
        for name in ("epochs", "batch_size", "max_length", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name}: must be >= 1, got {v}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr: must be > 0, got {self.lr}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.grad_clip < 0:
            problems.append(f"grad_clip: must be >= 0, got {self.grad_clip}")
        if self.max_length < 3:
            problems.append(f"max_length: must be >= 3, got {self.max_length}")
        if self.layers is not None:
            try:
                parsed = [int(x) for x in str(self.layers).split(",")]
                if not parsed or len(set(parsed)) != len(parsed):
                    raise ValueError
            except ValueError:
                problems.append(f"layers: expected distinct comma-separated integers such as -4,-3,-2,-1, "
                                f"got {self.layers!r}")
        check(problems, "train")

    def resolved(self) -> dict:
        """The preset filled in with explicit overrides."""
        p = dict(PRESETS[self.preset])
        for name in ("epochs", "batch_size", "lr", "dropout"):
            if getattr(self, name) is not None:
                p[name] = getattr(self, name)
        if self.layers is not None:
            p["layers"] = [int(x) for x in str(self.layers).split(",")]
        return p


@dataclass
class EvaluateConfig:
    model_dir: str = opt("runs/efficient/model", "a saved model directory (RUN/model)")
    data: str | None = opt(None, "data folder (default: $SST2_DATA, else ../shared/data/sst2-sentences)")
    split: str = opt("test", "which split to score", choices=["train", "dev", "test"])
    batch_size: int = opt(64, "inference batch size")
    json: bool = opt(False, "print the metrics as JSON")
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")

    def __post_init__(self):
        problems = choices_problems(self)
        if self.batch_size < 1:
            problems.append(f"batch_size: must be >= 1, got {self.batch_size}")
        check(problems, "evaluate")
