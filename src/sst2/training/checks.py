"""The checks of a :class:`~sst2.training.config.TrainConfig`: every problem, as ``group.field: ...`` lines,
reported at once when the config is built.
"""

from __future__ import annotations

import math
from dataclasses import fields

from sst2.data.text import NORMALIZERS
from sst2.training.config import GROUPS, POOLINGS, RECIPES, DistillConfig, TrainConfig
from sst2.typed import type_problems


def _positive(problems, name, v, minimum=1):
    if v is not None and v < minimum:
        problems.append(f"{name}: must be >= {minimum}, got {v}")


def validate(cfg: TrainConfig) -> list[str]:
    """Every problem of ``cfg``, as ``group.field: ...`` lines."""
    problems = [p for group in GROUPS for p in type_problems(getattr(cfg, group), f"{group}.")]
    if problems:
        return problems  # the checks below compare values: they need the right types
    for group in GROUPS:
        for f in fields(GROUPS[group]):
            v = getattr(getattr(cfg, group), f.name)
            if isinstance(v, float) and not math.isfinite(v):
                problems.append(f"{group}.{f.name}: must be a finite number, got {v}")
    d, m, o, r = cfg.data, cfg.model, cfg.optim, cfg.run
    if d.normalize not in NORMALIZERS:
        problems.append(f"data.normalize: must be one of {', '.join(NORMALIZERS)}, got {d.normalize!r}")
    _positive(problems, "data.max_length", d.max_length, 3)
    if d.dev_ratio is not None and not 0 <= d.dev_ratio < 1:
        problems.append(f"data.dev_ratio: must be in [0, 1) (0: no dev split), got {d.dev_ratio}")
    if d.test_ratio is not None and not 0 < d.test_ratio < 1:
        problems.append(f"data.test_ratio: must be in (0, 1), got {d.test_ratio}")
    if d.format is not None and d.format not in ("tsv", "csv", "jsonl", "parquet"):
        problems.append(f"data.format: must be one of tsv, csv, jsonl, parquet, got {d.format!r}")
    if m.recipe not in RECIPES:
        problems.append(f"model.recipe: must be one of {', '.join(RECIPES)}, got {m.recipe!r}")
    if m.combine not in ("concat", "mix"):
        problems.append(f"model.combine: must be concat or mix, got {m.combine!r}")
    if m.pooling not in POOLINGS:
        problems.append(f"model.pooling: must be one of {', '.join(POOLINGS)}, got {m.pooling!r}")
    elif m.pooling == "last" and m.recipe in ("vanilla", "partial", "lora"):  # their linear head has no LSTM
        problems.append(f"model.pooling: 'last' (the LSTM's last state) goes with the efficient recipe; {m.recipe} "
                        "pools cls, mean or maxmean")
    if m.layers != "all" and (not isinstance(m.layers, list) or not m.layers
                              or not all(isinstance(i, int) and not isinstance(i, bool) for i in m.layers)
                              or len(set(m.layers)) != len(m.layers)):
        problems.append(f"model.layers: expected \"all\" or a list of distinct integers such as [-2, -1], "
                        f"got {m.layers!r}")
    if not m.kernel_sizes or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in m.kernel_sizes):
        problems.append(f"model.kernel_sizes: expected a list of widths >= 1 such as [1, 2, 3], got {m.kernel_sizes!r}")
    if m.depth is not None and m.recipe != "efficient":
        problems.append(f"model.depth: applies to the efficient recipe, not {m.recipe!r}")
    for name in ("proj_size", "lstm_size", "unfreeze", "lora_r", "lora_alpha", "static_dims", "filters", "depth"):
        _positive(problems, f"model.{name}", getattr(m, name))
    for name, v in (("model.dropout", m.dropout), ("model.lora_dropout", m.lora_dropout),
                    ("optim.warmup_ratio", o.warmup_ratio), ("optim.ema", o.ema)):
        if not 0 <= v < 1:
            problems.append(f"{name}: must be in [0, 1), got {v}")
    if m.recipe == "lora" and not m.lora_targets:
        problems.append("model.lora_targets: give at least one module name")
    for name in ("epochs", "batch_size"):
        _positive(problems, f"optim.{name}", getattr(o, name))
    for name in ("lr", "mix_lr_scale"):
        if not getattr(o, name) > 0:
            problems.append(f"optim.{name}: must be > 0, got {getattr(o, name)}")
    for name in ("weight_decay", "grad_clip"):
        if getattr(o, name) < 0:
            problems.append(f"optim.{name}: must be >= 0, got {getattr(o, name)}")
    if o.schedule not in ("constant", "linear"):
        problems.append(f"optim.schedule: must be constant or linear, got {o.schedule!r}")
    for name in ("seeds", "threads", "encode_actors"):
        _positive(problems, f"run.{name}", getattr(r, name))
    if r.encode not in ("local", "ray"):
        problems.append(f"run.encode: must be local or ray, got {r.encode!r}")
    _positive(problems, "run.seed", r.seed, 0)
    return problems + _distill_problems(cfg.distill)


def _teacher_problems(teacher) -> list[str]:
    if teacher is None:
        return []
    members = [teacher] if isinstance(teacher, str) else teacher
    if not isinstance(members, list) or not members or not all(isinstance(x, str) and x for x in members):
        return [f"distill.teacher: expected a model directory or a non-empty list of them, got {teacher!r}"]
    if len(set(members)) != len(members):
        return [f"distill.teacher: an ensemble lists each model once, got {teacher!r}"]
    return []


def _distill_problems(t: DistillConfig) -> list[str]:
    problems = _teacher_problems(t.teacher)
    _positive(problems, "distill.copies", t.copies, 0)
    _positive(problems, "distill.neighbours", t.neighbours)
    _positive(problems, "distill.transfer_seed", t.transfer_seed, 0)
    for name in ("p_mask", "p_replace", "p_ngram"):
        if not 0 <= getattr(t, name) <= 1:
            problems.append(f"distill.{name}: must be in [0, 1], got {getattr(t, name)}")
    if t.p_mask + t.p_replace > 1:
        problems.append(f"distill.p_mask + distill.p_replace: must be at most 1, got {t.p_mask + t.p_replace}")
    if t.loss not in ("mse", "kl"):
        problems.append(f"distill.loss: must be mse or kl, got {t.loss!r}")
    if not t.temperature > 0:
        problems.append(f"distill.temperature: must be > 0, got {t.temperature}")
    if not 0 <= t.hard_weight <= 1:
        problems.append(f"distill.hard_weight: must be in [0, 1], got {t.hard_weight}")
    if t.teacher_runtime not in ("torch", "onnx", "onnx-int8"):
        problems.append(f"distill.teacher_runtime: must be torch, onnx or onnx-int8, got {t.teacher_runtime!r}")
    return problems
