"""The ``sst2`` console command. Each subcommand is a plain function taking one config dataclass;
its options are generated from the dataclass fields, so ``--help`` and the code cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import signal
import sys
import types
import typing

from sst2 import __version__

# name -> (config class, function, one-line description); imported only when the command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("sst2.training.args:TrainArgs", "sst2.cli:train_command", "train a model and write its run directory"),
    "distill": ("sst2.training.args:DistillArgs", "sst2.cli:distill_command",
                "train a student on a teacher's soft targets (transfer set, augmentation)"),
    "evaluate": ("sst2.config:EvaluateConfig", "sst2.evaluation.evaluate:evaluate", "score a saved model on a data split"),
    "bench": ("sst2.config:BenchConfig", "sst2.bench.bench:bench", "measure time and memory against sequence length"),
    "predict": ("sst2.config:PredictConfig", "sst2.inference.predict:predict", "classify texts; writes JSON lines"),
    "export": ("sst2.config:ExportConfig", "sst2.inference.export:export", "export the model to ONNX (--int8: also int8)"),
    "serve": ("sst2.config:ServeConfig", "sst2.serving.app:serve", "serve predictions over an HTTP JSON API"),
    "compare": ("sst2.config:CompareConfig", "sst2.evaluation.compare:compare",
                "compare finished runs: table and plot of cost and accuracy, inference timed"),
}


def _resolve(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _base_type(tp):
    """``int | None`` -> ``int``; plain types pass through."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _base_type(hints[f.name])
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict = {"help": help_}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("positional"):
            origin = typing.get_origin(tp)
            if origin is list:
                parser.add_argument(f.name, nargs="*", type=typing.get_args(tp)[0], default=default, **kwargs)
            else:
                parser.add_argument(f.name, type=tp, default=default, **kwargs)
            continue
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:  # --flag for default-off options; --flag/--no-flag for default-on ones
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, action=action, default=default, **kwargs)
        elif typing.get_origin(tp) is list:
            # repeatable (--set a=1 --set b=2 == --set a=1 b=2) unless the default is itself a list of values
            action = "extend" if not default else "store"
            parser.add_argument(flag, nargs="+", action=action, type=typing.get_args(tp)[0], default=default, **kwargs)
        else:
            if default is not None and "%(default)" not in help_:
                kwargs["help"] = f"{help_} (default: %(default)s)"
            parser.add_argument(flag, type=tp, default=default, dest=f.name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sst2", description="Efficient transformer sentiment classifiers on CPU.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"sst2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls_ref, _, desc) in COMMANDS.items():
        cls = _resolve(cls_ref)
        p = sub.add_parser(name, help=desc, description=desc, allow_abbrev=False)
        add_config_arguments(p, cls)
        p.set_defaults(_config_cls=cls, _command=name)
    return parser


def _train_config(args, preset: str | None):
    """The training config of ``sst2 train`` / ``sst2 distill``: preset, --config, flags, --set."""
    from sst2.training.config import resolve

    return resolve(preset=preset, config=args.config, recipe=args.model, overrides=args.overrides(), sets=args.set)


def train_command(args) -> dict:
    """``sst2 train``: resolve the config (preset, --config, flags, --set) and train."""
    import shlex

    from sst2.training.api import train
    from sst2.training.distributed import launched

    cfg = _train_config(args, args.preset)
    command = None
    if sys.argv[1:2] == ["train"]:
        import os

        launcher = f"torchrun --nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', '?')} -m " if launched() else ""
        command = launcher + "sst2 " + shlex.join(sys.argv[1:])
    return _print_quiet(cfg, train(cfg, command=command))


def _print_quiet(cfg, result: dict | None) -> dict | None:
    """With --quiet, one JSON line of the run's figures on stdout (under torchrun: rank 0's, the others return None)."""
    if cfg.run.quiet and result is not None:
        import json

        from sst2.training.api import quiet_summary

        print(json.dumps(quiet_summary(cfg, result)))
    return result


def distill_command(args) -> dict:
    """``sst2 distill``: as ``sst2 train``, from the ``distill`` preset unless --preset, --model or --config."""
    import shlex

    from sst2.distillation.api import distill

    cfg = _train_config(args, args.preset or (None if args.config or args.model else "distill"))
    return _print_quiet(cfg, distill(cfg, command="sst2 " + shlex.join(sys.argv[1:])
                                     if sys.argv[1:2] == ["distill"] else None))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _redeliver(previous, unraisable) -> None:
    """``sys.unraisablehook`` while a command runs. A signal's KeyboardInterrupt raised while the garbage
    collector runs a finalizer (a ``__del__`` or weakref callback, e.g. in a library being imported) is
    dropped by Python, and the command would run on to its end. Send SIGTERM (handled like Ctrl-C) from a
    thread a moment later: raised here, in the hook, it would be dropped too. Others go to the previous hook."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import os
        import threading

        again = threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM))
        again.daemon = True
        again.start()
        return
    previous(unraisable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The libraries' own loading/saving bars would interleave with ours; the CLI shows its own. (An
    # environment setting, read when transformers is imported: the ONNX path never imports it.)
    import functools
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before (a caller of main in the same process)
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    # SIGTERM (kill, a job scheduler, CI timeouts) unwinds like Ctrl-C, so a half-written run directory
    # is removed rather than left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_redeliver, hook)
    try:
        return _run(args)
    finally:
        sys.unraisablehook = hook


def _run(args) -> int:
    import os

    from sst2.errors import UserError

    cls = args._config_cls
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    try:
        cfg = cls(**values)
        _resolve(COMMANDS[args._command][1])(cfg)
    except UserError as exc:
        rank = os.environ.get("RANK", "0")  # under torchrun every process reports; say which one
        where = "" if rank == "0" else f" (rank {rank})"
        print(f"sst2 {args._command}{where}: error: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file or folder that cannot be read or written (no permission, a full disk, ...)
        if exc.filename is None:
            raise
        print(f"sst2 {args._command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return UserError.status
    except KeyboardInterrupt:
        print(f"sst2 {args._command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
