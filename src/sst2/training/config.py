"""The training configuration: five typed groups (data, model, optim, run, distill), read from TOML.

A preset is a TOML file in ``sst2/configs/`` (``configs/`` at the repository root): ``improved`` (the
default efficient model), ``seed`` (the reference design, fixed), ``vanilla``, ``partial``, ``lora``,
``static``, ``teacher`` and the students of ``sst2 distill``.
A config file names the preset it starts from (``preset = "seed"``; default: the recipe's own preset)
and overrides any of its values. Every run directory saves its resolved config as ``config.toml``, a
complete file, so ``sst2 train --config RUN/config.toml`` re-runs it.

Resolution order, later wins: preset file, ``--config`` file, command-line flags, ``--set key=value``.
Keys are ``group.field`` (``optim.lr``); every value is checked, and every problem reported at once.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sst2.config import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_PRESET = "improved"
RECIPES = ("efficient", "vanilla", "partial", "lora", "static")
RECIPE_PRESETS = {"efficient": DEFAULT_PRESET, "vanilla": "vanilla", "partial": "partial", "lora": "lora",
                  "static": "static"}
POOLINGS = ("last", "maxmean", "mean", "cls")


@dataclass
class DataConfig:
    path: str | None = None  # a data folder (train, dev, test files) or one labelled file; None: $SST2_DATA, else
    #                          ../shared/data/sst2-sentences
    train_file: str | None = None  # train on this file instead of the folder's train split
    format: str | None = None  # tsv, csv, jsonl, parquet (default: by extension)
    text_column: str | None = None  # default: the first of sentence, text, review
    label_column: str | None = None  # default: the first of label, labels, sentiment
    labels: list[str] | None = None  # the label order (default: the training labels, sorted)
    dev_ratio: float | None = None  # split dev off the training file (a single file: default 0.1; 0: no dev)
    test_ratio: float | None = None  # split test off it too
    split_seed: int | None = None  # the seed of that split (default: run.seed; each seed-S of a --seeds run: the base)
    normalize: str = "contractions"  # text normalization before tokenization (sst2.data.text)
    max_length: int = 128  # tokens per text, special tokens included; longer texts are truncated


@dataclass
class ModelConfig:
    recipe: str = "efficient"  # efficient | vanilla | partial | lora
    backbone: str = "all-MiniLM-L6-v2"  # a local directory or a Hugging Face name
    layers: str | list[int] = "all"  # hidden states the head reads: "all" or indexes (0 = embeddings, -1 = top)
    depth: int | None = None  # efficient: keep only the encoder's first `depth` layers (default: all of them)
    combine: str = "concat"  # several layers: "concat" projects their concatenation, "mix" a learned weighted sum
    proj_size: int = 128  # efficient head: width of the linear "reshape"
    lstm_size: int = 128  # efficient head: LSTM hidden size per direction
    bidirectional: bool = True
    pooling: str = "maxmean"  # last (the LSTM at the last real token), maxmean, mean, cls
    dropout: float = 0.1
    unfreeze: int = 2  # partial: the top layers that train
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "output.dense",
                                                             "intermediate.dense"])
    static_dims: int = 256  # static: width of the static embeddings distilled from the backbone (PCA)
    train_embeddings: bool = True  # static: the embedding table trains with the head
    filters: int = 256  # static: CNN channels per n-gram width
    kernel_sizes: list[int] = field(default_factory=lambda: [1, 2, 3])  # static: the CNN's n-gram widths


@dataclass
class OptimConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    mix_lr_scale: float = 30.0  # combine = "mix": the layer-mix weights learn this many times faster
    schedule: str = "linear"  # constant, or linear warm-up then linear decay to 0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0  # decoupled (AdamW); never on biases, LayerNorm or the layer mix
    grad_clip: float = 1.0  # gradient norm clipping (0 = off)
    bucket: bool = True  # batches of similar lengths (shuffled), so short texts are not padded to long ones
    ema: float = 0.0  # > 0: keep (and score dev with) a moving average of the weights with this decay, from the end of warm-up


@dataclass
class RunConfig:
    out: str = "runs/efficient"
    seed: int = 0
    seeds: int = 1  # train seeds seed, seed+1, ... into OUT/seed-N/ with OUT/summary.json
    cache: bool = True  # frozen states from the feature cache; false runs the encoder on every batch
    cache_dir: str | None = None  # default: $SST2_CACHE, else ~/.cache/sst2/features
    threads: int | None = None  # torch intra-op threads (default: torch's choice)
    overwrite: bool = False  # replace an existing run directory written by sst2
    quiet: bool = False  # no progress bars or per-epoch lines
    encode: str = "local"  # a cache miss is encoded here ("local") or by Ray actors ("ray"; pip install 'sst2[ray]')
    ray_address: str | None = None  # encode = "ray": a running cluster (HOST:PORT); default: a local Ray
    encode_actors: int | None = None  # encode = "ray": encoder actors (default: one per CPU of the cluster)


@dataclass
class DistillConfig:
    """Training on a teacher's soft targets over a transfer set (``sst2.distillation``); off without a teacher."""

    teacher: str | list[str] | None = None  # the teacher's model directory (a trained sst2 model), or a list of
    #                                         them: an ensemble, whose mean raw logits are the targets
    transfer_files: list[str] = field(default_factory=list)  # more texts for the transfer set (e.g. GLUE's phrases)
    copies: int = 4  # augmented copies of every training text
    p_mask: float = 0.1  # augmentation: a word becomes the mask token
    p_replace: float = 0.1  # augmentation: a word becomes one of its embedding neighbours
    p_ngram: float = 0.25  # augmentation: the copy is cut to a random n-gram (n = 1..5)
    neighbours: int = 10  # replacement candidates per word (nearest input embeddings of the encoder)
    loss: str = "mse"  # mse: squared error on the logits; kl: temperature-scaled KL divergence
    temperature: float = 2.0  # the kl loss's temperature
    hard_weight: float = 0.0  # weight of the hard-label loss on texts with a label (0: soft targets only)
    transfer_seed: int = 0  # the augmentation's seed (the same for every run.seed, so labelling runs once)
    teacher_runtime: str = "torch"  # the runtime that labels the transfer set

    def teacher_dirs(self) -> list[str]:
        """The teacher's model directories: one, or the members of an ensemble (none: not a distillation)."""
        return [] if self.teacher is None else [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


# Given for one command (--overwrite, overwrite=True), never kept in or read from a config file: a run's
# config.toml re-run with another --out would replace that folder unasked.
NOT_SAVED = ("run.overwrite",)

GROUPS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig,
          "distill": DistillConfig}


@dataclass
class TrainConfig:
    preset: str = DEFAULT_PRESET
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self):
        from sst2.training.checks import validate

        problems = validate(self)
        if problems:
            raise ConfigError("invalid training config:\n  " + "\n  ".join(problems))

    def to_dict(self, saved: bool = False) -> dict:
        """The nested dict of the TOML file (None values left out: TOML has no null); ``saved``: as a run
        directory keeps it, without the permission to replace a run (``NOT_SAVED``) and with the run directory
        absolute (a re-run from another working directory writes where the run was)."""
        out: dict[str, Any] = {"preset": self.preset}
        for name in GROUPS:
            if name == "distill" and self.distill.teacher is None:
                continue  # not a distillation run: no [distill] table
            out[name] = {k: v for k, v in asdict(getattr(self, name)).items()
                         if v is not None and not (saved and f"{name}.{k}" in NOT_SAVED)}
        if saved and self.run.out:
            out["run"]["out"] = str(Path(self.run.out).expanduser().resolve())
        return out

    def to_toml(self) -> str:
        """The run directory's ``config.toml``: ``to_dict(saved=True)``."""
        import tomli_w

        return tomli_w.dumps(self.to_dict(saved=True))

    def with_run(self, **changes) -> "TrainConfig":
        return replace(self, run=replace(self.run, **changes))


# --- reading -----------------------------------------------------------------------------------------
# keys that earlier versions wrote into a run's config.toml, and what became of them
REMOVED_KEYS = {
    "distill.seed": "was renamed distill.transfer_seed (the augmentation's seed; run.seed is the student's)",
    "model.linear_probe": "was removed (LP-FT lowered dev accuracy: docs/experiments/sst5.md); delete the line",
}


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
        raise ConfigError(f"unknown preset {name!r}: choose one of {names}")
    return path


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _merge(base: dict, overlay: dict, where: str) -> dict:
    """``overlay``'s groups onto ``base``'s; an unknown group or key is an error naming ``where``."""
    out = {g: dict(base.get(g, {})) for g in GROUPS}
    for key, value in overlay.items():
        if key == "preset":
            continue
        if key not in GROUPS or not isinstance(value, dict):
            raise ConfigError(f"{where}: unknown key {key!r} (expected preset or the tables "
                              f"{', '.join(f'[{g}]' for g in GROUPS)})")
        known = {f.name for f in fields(GROUPS[key])}
        for k, v in value.items():
            if k not in known and f"{key}.{k}" in REMOVED_KEYS:
                raise ConfigError(f"{where}: {key}.{k} {REMOVED_KEYS[f'{key}.{k}']}")
            if k not in known:
                raise ConfigError(f"{where}: unknown key {key}.{k} (known: {', '.join(sorted(known))})")
            out[key][k] = v
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``group.field=value`` (``--set``); the value is read as TOML (``2e-3``, ``true``, ``[-2, -1]``),
    else taken as a plain string (``all``, ``runs/x``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: expected group.field=value, e.g. optim.lr=2e-3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if not isinstance(value, (str, list, dict)) and _takes_text(key):
        value = raw.strip()  # run.out=2024, data.text_column=true: a name, not a number
    return key, value


def _takes_text(key: str) -> bool:
    """Whether the field ``group.name`` holds a string (maybe among other types)."""
    import typing

    group, _, name = key.partition(".")
    hint = typing.get_type_hints(GROUPS[group]).get(name) if group in GROUPS else None
    return hint is str or str in typing.get_args(hint)


def build(values: dict, preset: str) -> TrainConfig:
    """A :class:`TrainConfig` from nested ``values`` (type errors reported as config errors)."""
    try:
        groups = {g: GROUPS[g](**values.get(g, {})) for g in GROUPS}
    except TypeError as exc:
        raise ConfigError(f"invalid training config: {exc}") from None
    return TrainConfig(preset=preset, **groups)


def resolve(preset: str | None = None, config: str | Path | None = None, recipe: str | None = None,
            overrides: dict[str, Any] | None = None, sets: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The config a run uses: the preset (by name, else the one ``config`` names, else the recipe's
    own, else ``improved``), then the ``config`` file, then ``overrides`` (``{"optim.lr": 1e-3}``),
    then ``sets`` (``["optim.lr=1e-3"]``)."""
    file_values = read_toml(config) if config is not None else {}
    for group, _, name in (key.partition(".") for key in NOT_SAVED):  # older runs saved overwrite = true
        if isinstance(file_values.get(group), dict):
            file_values[group].pop(name, None)
    name = preset or file_values.get("preset") or RECIPE_PRESETS.get(recipe or "", DEFAULT_PRESET)
    if not isinstance(name, str):
        raise ConfigError(f"{config}: preset must be a string, got {name!r}")
    try:
        base = _merge({}, read_toml(preset_path(name)), str(preset_path(name)))
    except ConfigError as exc:
        if preset or "preset" not in file_values:
            raise
        raise ConfigError(f"{config}: {exc}") from None  # the name came from the file
    values = _merge(base, file_values, str(config)) if config is not None else base
    if recipe is not None:
        values["model"]["recipe"] = recipe
    assignments = list((overrides or {}).items()) + [parse_assignment(s) for s in sets]
    for key, value in assignments:
        group, _, name_ = key.partition(".")
        if group == "preset":
            raise ConfigError(f"--set {key}: the preset is not a table of settings; choose it with --preset "
                              f"(or preset = \"...\" in a config file)")
        values = _merge(values, {group: {name_: value}}, f"--set {key}")
    return build(values, name)


def _field_groups() -> dict[str, str]:
    """Each config field's group, by field name (``lr`` -> ``optim``); a field name must say which group it sets."""
    out: dict[str, str] = {}
    for group, cls in GROUPS.items():
        for f in fields(cls):
            if f.name in out:
                raise AssertionError(f"config field {f.name!r} is in groups {out[f.name]} and {group}")
            out[f.name] = group
    return out


FIELD_GROUP = _field_groups()


def config_for(recipe: str | None = None, config=None, preset: str | None = None, **overrides) -> TrainConfig:
    """A resolved config for the Python API: ``preset``, else the recipe's preset (or ``config``, a file or a
    :class:`TrainConfig`), then ``overrides`` by field name (``epochs=3``, ``lr=2e-3``) or dotted key
    (``{"optim.lr": 2e-3}``)."""
    dotted = {}
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if "." not in key:
            if key not in FIELD_GROUP:
                raise ConfigError(f"unknown option {key!r} (known: {', '.join(sorted(FIELD_GROUP))})")
            key = f"{FIELD_GROUP[key]}.{key}"
        dotted[key] = value
    if isinstance(config, TrainConfig):
        base = config.to_dict()
        for key, value in dotted.items():
            group, _, name = key.partition(".")
            base.setdefault(group, {})[name] = value
        return build({g: v for g, v in base.items() if g in GROUPS}, config.preset)
    return resolve(preset=preset, config=config, recipe=recipe if config is None else None, overrides=dotted)

