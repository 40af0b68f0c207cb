"""Process-level facts and settings shared by training, evaluation and benchmarks.

torch is imported only by the functions that need it, so the ONNX inference path never loads it."""

from __future__ import annotations

import functools
import os
import platform
import random
import resource
import sys



def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


def current_rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("sst2", "torch", "transformers", "tokenizers", "safetensors", "numpy", "peft", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def environment() -> dict:
    return {
        "versions": versions(),
        "threads": _torch_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
    }


LOG_INTERVAL = 60.0  # seconds between the progress lines written when stderr is not a terminal
LOG_FORMAT = "{desc}: {percentage:.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def progress_enabled(quiet: bool) -> bool:
    """Whether to draw progress bars: on a terminal, without --quiet."""
    return not quiet and sys.stderr.isatty()


def progress_bar(total: int | None = None, desc: str | None = None, *, quiet: bool = False, shown: bool = True,
                 interval: float | None = None, **kwargs):
    """A tqdm progress bar on stderr. On a terminal it is the usual bar. Otherwise (a log file, a pipe, a
    scheduler's output) it writes one plain line every ``interval`` seconds (default ``LOG_INTERVAL``) and
    nothing for work that ends sooner, so a long run says how far it is and a short one stays silent.
    ``quiet``, or ``shown`` false (a distributed run's other ranks), gives a bar that draws nothing."""
    from tqdm.auto import tqdm

    if quiet or not shown or sys.stderr.isatty():
        return tqdm(total=total, desc=desc, disable=quiet or not shown, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    interval = LOG_INTERVAL if interval is None else interval
    return _line_bar()(total=total, desc=desc, file=sys.stderr, delay=interval, mininterval=interval, miniters=1,
                       **({"bar_format": LOG_FORMAT} if total else {}), **kwargs)


@functools.cache
def _line_bar():
    from tqdm import tqdm

    class LineBar(tqdm):
        """Each refresh is a whole line; closing writes nothing (there is no bar on screen to clear)."""

        def display(self, msg=None, pos=None):
            if msg is not None:
                return False
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
            return True

    return LineBar


def as_umask_allows(path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666 / 0777 less the umask): ``mkdtemp`` makes
    folders 0700 and safetensors writes files 0600, so a model could not be read by another user or a
    container's user."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (for recognising what a killed process left)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def host_tag() -> str:
    """8 hex digits of this machine's name: a folder on a shared disk holds the temporaries of other machines
    too, whose process ids mean nothing here."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def process_tag() -> str:
    """``HOST-PID``, naming a temporary as this process's (HOST: :func:`host_tag`)."""
    return f"{host_tag()}-{os.getpid()}"


def remove_orphans(folder, prefix: str, suffix: str, dirs: bool) -> list:
    """Remove the temporaries in ``folder`` that killed processes of this machine left: exactly the names
    ``prefix`` + :func:`process_tag` + ``suffix`` (a regular expression), folders if ``dirs`` else files, whose
    process no longer runs. Any other name is the user's and is kept, however alike it looks."""
    import glob
    import re
    import shutil
    from pathlib import Path

    pattern = re.compile(re.escape(prefix) + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)" + suffix)
    removed = []
    for tmp in Path(folder).glob(glob.escape(prefix) + "*"):
        match = pattern.fullmatch(tmp.name)
        if (match is None or match["host"] != host_tag() or tmp.is_symlink() or tmp.is_dir() != dirs
                or pid_alive(int(match["pid"]))):
            continue
        shutil.rmtree(tmp, ignore_errors=True) if dirs else tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def check_own_outputs(out, names, marker: str, is_ours, command: str) -> None:
    """Refuse a folder ``out`` in which any of the files ``names`` exists but was not written by ``command``:
    its ``marker`` file is missing, or ``is_ours(marker_path)`` says it is not that command's. A folder of an
    earlier run of the command is replaced as before; a user's own ``compare.md`` is not."""
    from pathlib import Path

    from sst2.errors import UserError

    out = Path(out)
    existing = [n for n in names if (out / n).exists()]
    if not existing or ((out / marker).is_file() and is_ours(out / marker)):
        return
    raise UserError(f"--out {out}: it holds {', '.join(existing)}, which sst2 {command} did not write (no {marker} "
                    f"of its own beside them); move them or choose another --out")
