"""Training from data files: :func:`train` (``sst2 train``), and :func:`run_one`, one seed of one recipe.

:func:`run_one` runs a recipe (``sst2.training.recipes``) through the engine (``sst2.training.engine``)
and scores the kept epoch on dev and test; :func:`train` reads the data, writes a complete run directory
(``sst2.training.rundir``) and trains every seed. Training on in-memory lists (``sst2.fit``) is
``sst2.training.inmemory``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sst2.data.dataset import load_data, shared_with_train
from sst2.data.splits import Split, resolve_data_dir
from sst2.data.text import normalize_texts
from sst2.stats import format_pm, seed_stat
from sst2.features.encode import prepare_features
from sst2.features.sources import TokenBatches, token_lengths, window_length_for
from sst2.modeling.heads import count_parameters
from sst2.system import environment, peak_rss_mb, progress_bar, progress_enabled, seed_everything, set_threads
from sst2.training import distributed, engine, recipes, rundir
from sst2.calibration import calibration_report, fit_temperature
from sst2.training.config import ConfigError, DistillConfig, TrainConfig, preset_path, read_toml
from sst2.training.recipes.common import label_names, num_outputs

SUMMARY_KEYS = ("dev_accuracy", "test_accuracy", "best_epoch", "train_seconds", "seconds_per_epoch", "total_seconds",
                "cache_seconds", "peak_rss_mb")


@dataclass
class Context:
    """What a run needs besides its config: where to log, how to show progress, and the training processes
    (``sst2.training.distributed``: only rank 0 logs and shows progress)."""

    cfg: TrainConfig
    group: distributed.Group = distributed.SINGLE

    def log(self, msg: str) -> None:
        if not self.cfg.run.quiet and self.group.is_main:
            print(msg, file=sys.stderr, flush=True)

    @property
    def progress(self) -> bool:
        """Progress bars: on a terminal, without --quiet, in the main process."""
        return progress_enabled(self.cfg.run.quiet) and self.group.is_main

    def bar(self, total: int, desc: str):
        """A progress bar on a terminal; in a log, a line a minute (``sst2.system.progress_bar``)."""
        return progress_bar(total, desc, quiet=self.cfg.run.quiet, shown=self.group.is_main, leave=False,
                            dynamic_ncols=True)

    def features(self, backbone, splits: dict[str, Split]):
        run = self.cfg.run
        encode_all = None
        if run.encode == "ray":  # the same batches, on Ray actors: the same cache entries
            import functools

            from sst2.features.ray_encode import encode_splits_ray

            encode_all = functools.partial(encode_splits_ray, address=run.ray_address, actors=run.encode_actors,
                                           quiet=run.quiet)
        # several processes: rank 0 fills the cache, the others then read the same entries
        return self.group.main_first(lambda: prepare_features(
            backbone, splits, self.cfg.data.max_length, self.cfg.data.normalize, run.cache_dir,
            progress=self.bar, log=self.log, encode_all=encode_all))


@dataclass
class SoftTargets:
    """Training targets other than the split's labels (distillation, ``sst2.distillation``): one row per
    training text, the engine's loss and train-accuracy classes for them, and what to record."""

    targets: torch.Tensor
    loss: object  # (logits, targets) -> summed loss
    classes: object  # targets -> class indexes
    info: dict


@dataclass
class Trained:
    model: torch.nn.Module  # the SentimentModel, weights of the kept epoch
    metrics: dict
    fitted: engine.Fitted


def _describe(cfg: TrainConfig, backbone) -> str:
    m = cfg.model
    what = f"efficient/{cfg.preset}" if m.recipe == "efficient" else m.recipe
    return (f"model: {what} on {m.backbone} (hidden {backbone.hidden_size}, {backbone.num_layers} layers)"
            + (f", top {m.unfreeze} trained" if m.recipe == "partial" else "")
            + (f", LoRA r={m.lora_r} on {','.join(m.lora_targets)}" if m.recipe == "lora" else ""))


def _final_scores(job: engine.Job, splits: dict[str, Split], labels: dict, max_length: int) -> dict:
    """Dev and test scored with the kept weights; end to end when the model changed form (LoRA merge)."""
    model = job.model
    if job.finish is not None:
        job.finish()
    model.eval()
    if job.finish is not None:
        inputs = {k: TokenBatches(model.backbone.tokenizer, s.texts, max_length) for k, s in splits.items()}
        forward = model
    else:
        inputs, forward = job.inputs, job.forward
    return {k: engine.evaluate(forward, inputs[k], labels[k]) for k in ("dev", "test") if k in splits}


def run_one(cfg: TrainConfig, splits: dict[str, Split], ctx: Context, t_start: float,
            soft: SoftTargets | None = None) -> Trained | None:
    """Train one seed on ``splits`` (``train`` required, ``dev`` and ``test`` optional) in memory; with
    ``soft``, on its targets rather than the training labels. With several training processes, only
    rank 0 scores the kept epoch and returns it (the others: None)."""
    seed_everything(cfg.run.seed)
    job = recipes.setup(cfg, splits, ctx)
    trainable, total = count_parameters(job.model)
    backbone = job.model.backbone
    ctx.log(_describe(cfg, backbone))
    ctx.log(f"trainable params: {trainable:,} | total params: {total:,} | threads: {torch.get_num_threads()}")
    k_out = num_outputs(splits)
    labels = {k: engine.label_tensor(s.labels, k_out) if s.labelled else None for k, s in splits.items()}
    if soft is not None:
        labels["train"], job.loss, job.target_classes = soft.targets, soft.loss, soft.classes
    lengths = {k: token_lengths(backbone.tokenizer, s.texts) for k, s in splits.items()}
    truncated = {k: int((n > cfg.data.max_length).sum()) for k, n in lengths.items()}
    job.model.spec["window_length"] = window_length_for(lengths["train"], cfg.data.max_length)
    group = ctx.group
    fitted = engine.fit(job, cfg.optim, labels, cfg.run.seed, bar=ctx.bar, log=ctx.log,
                        group=group if group.active else None)
    if not group.is_main:
        return None
    scores = _final_scores(job, splits, labels, cfg.data.max_length)
    dev, test = scores.get("dev", {}), scores.get("test", {})
    test_acc = test.get("accuracy")
    calibration = _calibrate(job.model, scores, splits, ctx)
    ctx.log(f"best epoch {fitted.best_epoch}: dev accuracy "
            f"{'n/a' if dev.get('accuracy') is None else format(dev['accuracy'], '.4f')} | test accuracy "
            f"{'n/a (unlabelled)' if test_acc is None else f'{test_acc:.4f}'}")
    m = cfg.model
    metrics = {
        "model": m.recipe, "preset": job.model.spec["preset"], "backbone": m.backbone,
        "data": cfg.data.path, "train_file": cfg.data.train_file,
        "trainable_params": trainable, "total_params": total, **job.extra,
        "epochs": cfg.optim.epochs, "best_epoch": fitted.best_epoch,
        "dev_accuracy": dev.get("accuracy"), "test_accuracy": test_acc,
        "dev_loss": dev.get("loss"), "test_loss": test.get("loss"),
        **_class_metrics(scores, splits),
        **({"distill": soft.info} if soft is not None else {}),
        "labels": label_names(splits), "temperature": job.model.spec["temperature"], "calibration": calibration,
        **{f"{k}_size": len(s) for k, s in splits.items()},
        "max_length": cfg.data.max_length, "truncated_sentences": truncated,
        "cache": cfg.run.cache if m.recipe in ("efficient", "partial") else None,
        "cache_hits": job.cache_hits, "cache_seconds": round(job.cache_seconds, 3),
        "train_seconds": round(fitted.train_seconds, 3),
        "seconds_per_epoch": round(fitted.train_seconds / cfg.optim.epochs, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(), "seed": cfg.run.seed,
        "processes": group.world,
        "data_files": rundir.data_files(splits), "environment": environment(),
    }
    return Trained(job.model, metrics, fitted)


def _class_metrics(scores: dict, splits: dict[str, Split]) -> dict:
    """Macro F1 and the confusion matrix (rows true, columns predicted) of each labelled split."""
    from sklearn.metrics import confusion_matrix, f1_score

    out = {}
    for k, score in scores.items():
        if "accuracy" not in score:
            continue
        preds, ks = engine.predicted(score["logits"]).tolist(), list(range(len(splits[k].label_names)))
        out[f"{k}_macro_f1"] = float(f1_score(splits[k].labels, preds, labels=ks, average="macro", zero_division=0))
        out[f"{k}_confusion"] = confusion_matrix(splits[k].labels, preds, labels=ks).tolist()
    return out


def _calibrate(model, scores: dict, splits: dict[str, Split], ctx: Context) -> dict | None:
    """Fit the temperature on dev (stored in the model's spec, applied by every runtime) and report the
    calibration error before and after on dev and test (``sst2.calibration``)."""
    if "loss" not in scores.get("dev", {}):
        return None
    logits = {k: v["logits"].numpy() for k, v in scores.items()}
    labels = {k: splits[k].labels for k in scores if splits[k].labelled}
    model.spec["temperature"] = fit_temperature(logits["dev"], labels["dev"])
    report = calibration_report(logits, labels, model.spec["temperature"])
    ctx.log(f"temperature {report['temperature']:.3f}: dev ECE {report['dev']['ece_before']:.4f} -> "
            f"{report['dev']['ece_after']:.4f}" + (f", test ECE {report['test']['ece_before']:.4f} -> "
                                                   f"{report['test']['ece_after']:.4f}" if "test" in report else ""))
    return report


def _normalized(splits: dict[str, Split], how: str) -> dict[str, Split]:
    return {k: dataclasses.replace(s, texts=normalize_texts(s.texts, how)) for k, s in splits.items()}


def _run_seeds(cfg: TrainConfig, splits: dict[str, Split], tmp: Path | None, ctx: Context, t_start: float,
               command: str, soft: SoftTargets | None = None) -> dict:
    main = ctx.group.is_main  # only rank 0 writes (tmp is None on the other ranks)
    if cfg.run.seeds == 1:
        trained = run_one(cfg, splits, ctx, t_start, soft)
        if main:
            rundir.write_run(tmp, cfg, trained, splits, command)
        return trained.metrics if main else None
    runs = []
    for k in range(cfg.run.seeds):
        seed = cfg.run.seed + k  # split as the run was: its seed-S/config.toml re-runs it, into seed-S/ alone
        one = cfg.with_run(seed=seed, seeds=1, out=str(Path(cfg.run.out) / f"seed-{seed}"))
        one = dataclasses.replace(one, data=dataclasses.replace(one.data, split_seed=cfg.data.split_seed
                                                                if cfg.data.split_seed is not None else cfg.run.seed))
        ctx.log(f"--- seed {one.run.seed} ({k + 1}/{cfg.run.seeds}) ---")
        trained = run_one(one, splits, ctx, time.perf_counter(), soft)
        if main:
            rundir.write_run(tmp / f"seed-{one.run.seed}", one, trained, splits, command)
            rundir.mark_run(tmp / f"seed-{one.run.seed}")
            runs.append(trained.metrics)
    if not main:
        return None
    result = summarize_seeds(runs)
    result["total_seconds"] = round(time.perf_counter() - t_start, 3)
    (tmp / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    (tmp / "config.toml").write_text(cfg.to_toml())
    return result


def _refuse_distill_settings(cfg: TrainConfig) -> None:
    """Without a teacher's targets, a [distill] setting would be silently ignored: refuse it."""
    if cfg.distill.teacher is not None:
        raise ConfigError(f"distill.teacher is set ({cfg.distill.teacher}): this config trains a student of that "
                          f"teacher; run it with sst2 distill (sst2.distillation)")
    default = DistillConfig()
    changed = {f"distill.{f.name}": getattr(cfg.distill, f.name) for f in dataclasses.fields(DistillConfig)
               if getattr(cfg.distill, f.name) != getattr(default, f.name)}
    if changed:
        shown = ", ".join(f"{k} = {v!r}" for k, v in changed.items())
        raise ConfigError(f"{shown}: distillation settings, which sst2 train does not use; run sst2 distill "
                          f"--teacher MODEL_DIR, or leave them out")


def train(cfg: TrainConfig, command: str | None = None, targets=None) -> dict | None:
    """Train from data files and write the run directory ``cfg.run.out``; returns the metrics (with
    ``run.seeds`` > 1: one run directory per seed under OUT/seed-S/ and the summary, also written as
    OUT/summary.json). ``targets(cfg, splits, ctx, raw) -> (splits, SoftTargets)`` (``raw``: the splits
    before ``data.normalize``) replaces the training split and its targets once the run directory is
    known to be writable (``sst2.distillation``).
    Started by torchrun, the processes train as one (``sst2.training.distributed``): rank 0 writes the
    run directory and returns the metrics, the other ranks return None."""
    if targets is None:
        _refuse_distill_settings(cfg)
    t_start = time.perf_counter()
    group = distributed.from_env()
    if group.active and targets is not None:
        group.close()
        raise ConfigError("sst2 distill runs in one process: its student trains on cached states in minutes; "
                          "start it without torchrun")
    try:
        result = _train(cfg, command, group, t_start, targets)
    except BaseException:
        group.close()
        raise
    group.close(finished=True)
    return result


def _check_preset_files(cfg: TrainConfig) -> None:
    """A file the preset names (in this repository's layout, ``../shared/data/...`` from the working
    directory) that is not there is an error saying where the path came from and how to give another; the
    bare "file not found" did not."""
    preset = read_toml(preset_path(cfg.preset))
    for group, key, given, how in (("data", "train_file", [cfg.data.train_file], "pass --train-file PATH"),
                                   ("distill", "transfer_files", cfg.distill.transfer_files,
                                    "pass --transfer-file PATH, or --set distill.transfer_files=[] for none")):
        raw = preset.get(group, {}).get(key)
        for p in [raw] if isinstance(raw, str) else raw or []:
            path = Path(p).expanduser().resolve()
            if str(path) in given and not path.exists():
                raise ConfigError(f"{path}: not found; it is the {cfg.preset} preset's {group}.{key} ({p}, a path "
                                  f"in this repository's layout, from the working directory); {how}")


def _train(cfg: TrainConfig, command: str | None, group: distributed.Group, t_start: float,
           targets=None) -> dict | None:
    set_threads(cfg.run.threads)
    data_dir = resolve_data_dir(cfg.data.path)
    cfg = rundir.with_absolute_paths(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data_dir))))
    _check_preset_files(cfg)
    ctx = Context(cfg, group)
    d = cfg.data
    splits, split_info = load_data(data_dir, d.train_file, format=d.format, text_column=d.text_column,
                                   label_column=d.label_column, labels=d.labels, dev_ratio=d.dev_ratio,
                                   test_ratio=d.test_ratio,
                                   seed=cfg.run.seed if d.split_seed is None else d.split_seed)
    raw, splits = splits, _normalized(splits, d.normalize)  # a teacher is given the texts as read
    for note in shared_with_train(splits):
        ctx.log(note)
    out = Path(cfg.run.out)
    if not group.is_main:  # the other ranks train their shares and write nothing
        return _run_seeds(cfg, splits, None, ctx, t_start, "")
    tmp = rundir.prepare(out, cfg, data_dir, ctx.log)
    try:
        if split_info is not None:
            (tmp / "splits.json").write_text(json.dumps(split_info) + "\n")
        soft = None
        if targets is not None:
            splits, soft = targets(cfg, splits, ctx, raw)
        command = command or rundir.rerun_command(out, "distill" if targets else "train")
        result = _run_seeds(cfg, splits, tmp, ctx, t_start, command, soft)
    except BaseException:
        rundir.abort(tmp)  # never leave a half-written run behind
        raise
    rundir.finish(out, tmp)
    _report(cfg, result, out, ctx)
    return result


def _report(cfg: TrainConfig, result: dict, out: Path, ctx: Context) -> None:
    if cfg.run.quiet:
        return  # the command line prints quiet_summary; the Python API prints nothing
    if cfg.run.seeds == 1:
        ctx.log(f"wrote {out}/ ({', '.join(rundir.RUN_FILES)})")
    else:
        ctx.log(f"{cfg.run.seeds} seeds: dev accuracy {format_pm(result['dev_accuracy'])} | test accuracy "
                f"{format_pm(result['test_accuracy'])} | wrote {out}/ (summary.json, seed-*/)")


def quiet_summary(cfg: TrainConfig, result: dict) -> dict:
    """The one JSON line ``sst2 train --quiet`` prints: the accuracies and the time (with seeds: mean and std)."""
    if cfg.run.seeds == 1:
        return {k: result[k] for k in ("model", "dev_accuracy", "test_accuracy", "total_seconds")}
    return {"model": result["model"], "seeds": result["seeds"],
            **{k: result[k] and {s: result[k][s] for s in ("mean", "std")} for k in ("dev_accuracy", "test_accuracy")},
            "total_seconds": result["total_seconds"]}


def summarize_seeds(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of the per-run metrics."""
    first = runs[0]
    out = {k: first[k] for k in ("model", "preset", "backbone", "data", "train_file", "trainable_params",
                                 "total_params", "epochs")}
    out["seeds"] = [r["seed"] for r in runs]
    out["runs"] = [f"seed-{r['seed']}" for r in runs]
    for key in SUMMARY_KEYS:
        s = seed_stat([r[key] for r in runs])
        out[key] = None if s is None else {k: s[k] for k in ("mean", "std", "values")}
    return out
