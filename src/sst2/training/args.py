"""The flags of ``sst2 train`` and ``sst2 distill`` (the other commands' configs: ``sst2.config``).

Only the common training options are flags; every other setting comes from the config file
(``--config``, or the preset) or ``--set group.field=value`` (``sst2.training.config``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sst2.config import check, choices_problems, opt
from sst2.training.config import PRESET_DIR, RECIPES

PRESET_NAMES = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


@dataclass
class TrainArgs:
    """``sst2 train``'s flags: the common options; every other setting comes from the config file
    (``--config``, or the preset) or ``--set group.field=value`` (``sst2.training.config``)."""

    config: str | None = opt(None, "a TOML config file: a preset (configs/*.toml) or a run's config.toml, which "
                                   "re-runs that run; its 'preset' key names the preset it changes")
    preset: str | None = opt(None, "start from this preset: improved (the default efficient model), seed (the "
                                   "reference design, fixed), vanilla, partial, lora, teacher (vanilla on GLUE's "
                                   "phrases), teacher-distilled (its second stage, in sst2 distill), static (static "
                                   "embeddings + CNN), distill and distill-static (the students of sst2 distill)",
                          choices=PRESET_NAMES)
    model: str | None = opt(None, "the recipe: efficient (frozen encoder + trained LSTM head), vanilla (full "
                                  "fine-tune), partial (top layers fine-tuned), lora (LoRA adapters), static "
                                  "(static embeddings + CNN, no encoder at inference); alone, it picks the "
                                  "recipe's preset", choices=list(RECIPES))
    data: str | None = opt(None, "a data folder with train, dev and (optionally) test files in any supported format "
                                 "(.tsv .csv .jsonl .parquet), or one labelled file split by --dev-ratio (default: "
                                 "$SST2_DATA, else ../shared/data/sst2-sentences)")
    train_file: str | None = opt(None, "train on this labelled file instead of the folder's train file; dev and test "
                                       "still come from the folder (e.g. GLUE's phrase labels)")
    format: str | None = opt(None, "file format when the extension does not say", choices=["tsv", "csv", "jsonl",
                                                                                             "parquet"])
    text_column: str | None = opt(None, "the text column (default: the first of sentence, text, review)")
    label_column: str | None = opt(None, "the label column (default: the first of label, labels, sentiment)")
    labels: str | None = opt(None, "the label order, comma-separated (default: the training labels, sorted)")
    dev_ratio: float | None = opt(None, "split this share of the training file off as dev (stratified, seeded; a "
                                        "single data file: default 0.1; 0: no dev, the last epoch is kept); the rows go "
                                        "to RUN/splits.json")
    test_ratio: float | None = opt(None, "split this share off as test too")
    backbone: str | None = opt(None, "encoder: a local directory or a Hugging Face name (default: the packaged "
                                     "all-MiniLM-L6-v2, fully offline)")
    epochs: int | None = opt(None, "training epochs (default: the preset's)")
    batch_size: int | None = opt(None, "training batch size (default: the preset's)")
    lr: float | None = opt(None, "peak learning rate (default: the preset's)")
    max_length: int | None = opt(None, "tokens per text, special tokens included; longer texts are truncated "
                                       "(default: the preset's)")
    seed: int | None = opt(None, "random seed (runs are deterministic on one CPU for a given seed; default 0)")
    seeds: int | None = opt(None, "train this many seeds (seed, seed+1, ...) into OUT/seed-N/ and write "
                                  "OUT/summary.json with mean and std")
    out: str | None = opt(None, "run directory to write (default: the preset's, e.g. runs/efficient)")
    cache_dir: str | None = opt(None, "feature cache folder (default: $SST2_CACHE, else ~/.cache/sst2/features)")
    no_cache: bool = opt(False, "run the frozen encoder on every batch, as the reference did, instead of "
                                "reading its states from the feature cache")
    threads: int | None = opt(None, "torch intra-op threads (default: torch's choice)")
    overwrite: bool = opt(False, "replace an existing run directory written by sst2 train")
    quiet: bool = opt(False, "no progress bars or per-epoch lines; print the metrics as one JSON line")
    set: list[str] = opt([], "settings beyond the flags, as group.field=value (e.g. optim.warmup_ratio=0.2 "
                             "model.dropout=0.2 model.layers=[-2,-1]); every key: docs/usage.md, Configuration")

    def __post_init__(self):
        check(choices_problems(self), "train")

    FLAGS = {"data": "data.path", "train_file": "data.train_file", "max_length": "data.max_length",
             "format": "data.format", "text_column": "data.text_column", "label_column": "data.label_column",
             "dev_ratio": "data.dev_ratio", "test_ratio": "data.test_ratio",
             "backbone": "model.backbone", "epochs": "optim.epochs", "batch_size": "optim.batch_size",
             "lr": "optim.lr", "seed": "run.seed", "seeds": "run.seeds", "out": "run.out",
             "cache_dir": "run.cache_dir", "threads": "run.threads"}

    def overrides(self) -> dict:
        """The flags given, as ``group.field`` keys of the training config."""
        out = {key: getattr(self, flag) for flag, key in self.FLAGS.items() if getattr(self, flag) is not None}
        if self.labels is not None:
            out["data.labels"] = [x.strip() for x in self.labels.split(",")]
        for flag, key, value in (("no_cache", "run.cache", False), ("overwrite", "run.overwrite", True),
                                 ("quiet", "run.quiet", True)):
            if getattr(self, flag):
                out[key] = value
        return out


@dataclass
class DistillArgs(TrainArgs):
    """``sst2 distill``'s flags: ``sst2 train``'s, plus the teacher and the transfer set (the ``distill``
    group of the training config; every key also works with ``--set distill.KEY=VALUE``)."""

    teacher: list[str] = opt([], "the teacher's model directory (a trained sst2 model, e.g. runs/teacher/model); "
                                 "several (--teacher A B) make an ensemble, whose mean logits are the targets")
    transfer_file: list[str] = opt([], "more texts for the transfer set, any supported format; labels, if any, "
                                       "are used only with distill.hard_weight > 0 (e.g. GLUE's phrases)")
    copies: int | None = opt(None, "augmented copies of every training text (default: the preset's)")
    loss: str | None = opt(None, "soft-target loss: mse on the logits, or kl (temperature-scaled)",
                           choices=["mse", "kl"])
    hard_weight: float | None = opt(None, "weight of the hard-label loss on labelled texts, 0..1 (default: the "
                                          "preset's)")

    FLAGS = {**TrainArgs.FLAGS, "copies": "distill.copies", "loss": "distill.loss",
             "hard_weight": "distill.hard_weight"}

    def overrides(self) -> dict:
        out = super().overrides()
        if self.teacher:
            out["distill.teacher"] = self.teacher[0] if len(self.teacher) == 1 else list(self.teacher)
        if self.transfer_file:
            out["distill.transfer_files"] = list(self.transfer_file)
        return out
