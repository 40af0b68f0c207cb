"""Run directories: where ``sst2 train`` writes, and the rules that keep it from touching anything else.

A run is written into a fresh temporary folder beside ``OUT`` (``.OUT.partial-XXXXXXXX``, unique per
process) and renamed to ``OUT`` only when it is complete. Every folder sst2 writes this way carries a
marker file, ``.sst2-run``; the rules that follow from it:

* ``--overwrite`` replaces ``OUT`` only if it is empty or carries the marker of a finished run and holds
  only what that run wrote (the marker lists it); anything else is refused with a message naming what
  is in it. It never replaces the working directory or one of its parents, nor a folder holding the
  data, the feature cache, a local encoder, the teacher or a transfer file.
* Only temporaries that carry the marker are ever removed: the run's own, on failure, and stale ones
  left by a process that was killed (their marker names a process id that no longer runs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath

from sst2.errors import UserError
from sst2.modeling.modeldir import ONNX_FILES, SPEC_FILE
from sst2.system import as_umask_allows, pid_alive

MARKER = ".sst2-run"
MARKER_FORMAT = "sst2-run/1"
PARTIAL_INFIX = ".partial-"
MAX_LISTED = 5


class RunDirError(UserError, OSError):
    pass


def write_marker(path: Path, state: str) -> None:
    """The marker; a complete one lists what the folder holds, so that what is added later is not replaced."""
    info = {"format": MARKER_FORMAT, "state": state, "pid": os.getpid(), "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if state == "complete":  # every file, inside seed-*/ and model/ too (a file added there is the user's)
        info["files"] = sorted({p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} | {MARKER})
    (path / MARKER).write_text(json.dumps(info) + "\n")


def read_marker(path: Path) -> dict | None:
    """The marker of a folder sst2 wrote, or None (no marker, or a file that is not ours)."""
    try:
        info = json.loads((Path(path) / MARKER).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == MARKER_FORMAT else None


def _listing(path: Path, keep=lambda name: True) -> str:
    """The names in ``path`` (those ``keep`` accepts), folders with a slash, the first ``MAX_LISTED`` of them."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if keep(p.name))
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_out(out: Path, overwrite: bool, protected: dict[str, Path]) -> None:
    """Refuse an ``OUT`` that must not be written or replaced; ``protected`` maps a description
    (``"the data folder"``) to a path that ``OUT`` must not be or contain."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"run directory {out} is a file, not a directory")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if _is_within(cwd, resolved):
        what = "the working directory" if resolved == cwd else "a parent of the working directory"
        raise RunDirError(f"refusing to write the run into {out}: it is {what}")
    for what, path in protected.items():
        if path is not None and _is_within(Path(path).resolve(), resolved):
            raise RunDirError(f"refusing to write the run into {out}: it holds {what} ({path})")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise RunDirError(f"run directory {out} already exists and is not empty (pass --overwrite, in Python overwrite=True, to replace it)")
    marker = read_marker(out)
    if marker is None and is_legacy_run(out):
        return  # a run of sst2 0.1, which wrote no marker: exactly its files and nothing else
    if marker is None:
        raise RunDirError(f"refusing to replace {out}: it was not written by sst2 train (no {MARKER} marker); "
                          f"it holds {_listing(out)}")
    if marker.get("state") != "complete":
        raise RunDirError(f"refusing to replace {out}: its {MARKER} marker says {marker.get('state')!r}, not a "
                          f"finished run")
    if added := _added(out, marker):
        shown = ", ".join(added[:MAX_LISTED]) + (f" and {len(added) - MAX_LISTED} more" if len(added) > MAX_LISTED
                                                 else "")
        raise RunDirError(f"refusing to replace {out}: it holds what the run did not write ({shown}); move it "
                          "elsewhere first")


def _added(out: Path, marker: dict) -> list[str]:
    """What is in a finished run that it did not write: against its marker's list of every file; a marker
    of top-level names only (sst2 before that list was recursive) or none (the run's usual files) is
    compared by top-level name. ``sst2 export``'s files in the run's model directories are the run's own."""
    files = marker.get("files")
    if files is not None and any("/" in f for f in files):
        folders = {p.as_posix() for f in files for p in PurePosixPath(f).parents} - {"."}
        models = [PurePosixPath(f).parent for f in files if PurePosixPath(f).name == SPEC_FILE]
        files = set(files) | {(m / name).as_posix() for m in models for name in ONNX_FILES.values()}
        added: list[str] = []
        for p in sorted(out.rglob("*")):
            rel = p.relative_to(out).as_posix()
            if any(rel.startswith(a) for a in added if a.endswith("/")):
                continue  # inside a folder already named
            if p.is_dir() and rel not in folders:
                added.append(rel + "/")
            elif not p.is_dir() and rel not in files:
                added.append(rel)
        return added
    usual = set(RUN_FILES) | {"confusion.png", "summary.json", "splits.json"}
    return sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                  if not (p.name in files if files is not None else p.name in usual or p.name.startswith("seed-")))


LEGACY_FILES = {"config.json", "history.csv", "epochs.csv", "metrics.json", "plot.png", "model"}


def is_legacy_run(path: Path) -> bool:
    """A run directory of sst2 0.1 (before the marker): only the files it wrote, its metrics and its model
    spec present; or a multi-seed run of such runs and its summary."""
    names = {p.name for p in path.iterdir()}
    if names <= LEGACY_FILES:
        return {"metrics.json", "model"} <= names and (path / "model" / "sst2_model.json").is_file()
    seeds = {n for n in names if n.startswith("seed-") and (path / n).is_dir()}
    return "summary.json" in names and names == seeds | {"summary.json"} and all(is_legacy_run(path / n)
                                                                                  for n in seeds)


def clean_stale(out: Path, log=lambda msg: None) -> list[Path]:
    """Remove temporaries of ``out`` left by killed processes on this host; returns what was removed."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for tmp in out.parent.glob(f".{out.name}{PARTIAL_INFIX}*"):
        marker = read_marker(tmp) if tmp.is_dir() else None
        if marker is None or marker.get("state") != "writing" or marker.get("host") != socket.gethostname():
            continue
        if not pid_alive(int(marker.get("pid", -1))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log(f"removed {tmp}, left by an interrupted run (process {marker.get('pid')})")
    return removed


def begin(out: Path) -> Path:
    """A new, marked temporary folder beside ``out`` for this process's run."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_INFIX}", dir=out.parent))
    as_umask_allows(tmp, directory=True)  # it becomes OUT
    write_marker(tmp, "writing")
    return tmp


def mark_run(path: Path) -> None:
    """Mark a finished run folder (a single run, or one seed of a multi-seed run)."""
    path.mkdir(parents=True, exist_ok=True)
    write_marker(path, "complete")


def abort(tmp: Path) -> None:
    """Remove this process's temporary folder (only if it is one of ours)."""
    if read_marker(tmp) is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def finish(out: Path, tmp: Path) -> None:
    """Move the completed ``tmp`` to ``out``, replacing an empty or sst2-marked ``out`` (checked again
    here: it may have changed while the run was training)."""
    write_marker(tmp, "complete")
    if out.exists():
        if any(out.iterdir()) and (read_marker(out) or {}).get("state") != "complete" and not is_legacy_run(out):
            raise RunDirError(f"{out} changed while the run was training and is no longer an sst2 run; "
                              f"the finished run was left in {tmp}")
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / "run")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


# --- what a run directory holds --------------------------------------------------------------------
RUN_FILES = ("config.toml", "history.csv", "epochs.csv", "metrics.json", "plot.png", "reliability.png", "model",
             MARKER)  # and confusion.png for more than two classes
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "seconds")
HISTORY_FIELDS = ("epoch", "step", "loss")


def prepare(out: Path, cfg, data_dir: Path | None, log=lambda msg: None) -> Path:
    """Check ``out`` (:func:`check_out`), clean stale temporaries and create this run's temporary folder."""
    from sst2.features.cache import default_cache_dir

    train_file = cfg.data.train_file
    protected = {"the data folder": data_dir, "the training file": Path(train_file) if train_file else None,
                 "the feature cache": Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()}
    if Path(cfg.model.backbone).exists():  # a local encoder (else a hub name)
        protected["the encoder (model.backbone)"] = Path(cfg.model.backbone)
    for i, teacher in enumerate(cfg.distill.teacher_dirs()):
        protected[f"the teacher{f' {i + 1}' if i else ''}"] = Path(teacher)
    for i, path in enumerate(cfg.distill.transfer_files):
        protected[f"transfer file {i + 1}"] = Path(path)
    check_out(out, cfg.run.overwrite, protected)
    clean_stale(out, log=log)
    return begin(out)


def rerun_command(out: Path, command: str = "train") -> str:
    return f"sst2 {command} --config {out / 'config.toml'}"


def write_csv(path: Path, fields, rows) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)


def data_files(splits: dict) -> dict:
    return {k: {"path": None if s.path is None else str(s.path), "sha256": s.sha256, "rows": len(s)}
            for k, s in splits.items()}


def card_info(cfg, metrics: dict, splits: dict, command: str) -> dict:
    """What the model card (``sst2.modeling.card``) says about how the model was trained."""
    return {"metrics": metrics, "data_files": data_files(splits), "command": command,
            "config": cfg.to_dict(saved=True)}


def write_run(run_dir: Path, cfg, trained, splits: dict, command: str) -> None:
    """Every file of a finished run; ``metrics.json`` last (its presence marks a complete run)."""
    from safetensors import SafetensorError

    try:
        _write_files(run_dir, cfg, trained, splits, command)
    except (OSError, SafetensorError) as exc:  # a full disk, a file size limit, a folder that went away
        from sst2.errors import one_line

        raise RunDirError(f"cannot write the run into {run_dir} ({one_line(exc)}); nothing was kept") from exc


def _write_files(run_dir: Path, cfg, trained, splits: dict, command: str) -> None:
    from sst2.training.plot import plot_confusion, plot_reliability, plot_run

    run_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(run_dir / "model", card=card_info(cfg, trained.metrics, splits, command))
    (run_dir / "config.toml").write_text(cfg.to_toml())
    write_csv(run_dir / "history.csv", HISTORY_FIELDS, trained.fitted.history)
    epochs = trained.fitted.epochs
    fields = EPOCH_FIELDS + (("raw_dev_accuracy",) if any("raw_dev_accuracy" in r for r in epochs) else ())  # optim.ema
    write_csv(run_dir / "epochs.csv", fields, [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}
                                               for r in epochs])
    plot_run(run_dir)
    m = trained.metrics
    if m.get("calibration"):
        plot_reliability(run_dir, m["calibration"])
    split = "test" if m.get("test_confusion") else "dev"
    if len(m.get("labels", [])) > 2 and m.get(f"{split}_confusion"):
        plot_confusion(run_dir, m[f"{split}_confusion"], m["labels"], split)
    (run_dir / "metrics.json").write_text(json.dumps(trained.metrics, indent=2, allow_nan=False) + "\n")


def with_absolute_paths(cfg):
    """``cfg`` with its local paths absolute (the data, the training and transfer files, the cache, the
    teacher, a local encoder), so that the ``config.toml`` a run saves re-runs it from any working directory."""
    def absolute(p):
        return str(Path(p).expanduser().resolve()) if p else p

    replace = dataclasses.replace
    d, m, t = cfg.data, cfg.model, cfg.distill
    teacher = absolute(t.teacher) if isinstance(t.teacher, str) else t.teacher and [absolute(x) for x in t.teacher]
    backbone = absolute(m.backbone) if Path(m.backbone).expanduser().exists() else m.backbone  # else a hub name
    return replace(cfg, data=replace(d, path=absolute(d.path), train_file=absolute(d.train_file)),
                   model=replace(m, backbone=backbone), run=replace(cfg.run, cache_dir=absolute(cfg.run.cache_dir)),
                   distill=replace(t, teacher=teacher, transfer_files=[absolute(p) for p in t.transfer_files]))
