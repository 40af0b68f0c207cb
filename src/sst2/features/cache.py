"""On-disk cache of frozen-encoder token states.

A frozen encoder gives the same token states every epoch, so it runs once per key: (backbone weights,
tokenizer, data file contents, max length, layers kept, dtype). The states of all sentences of a split
are stored back to back in one ``(N_tokens, K, H)`` array with per-sentence lengths, so padding is
never stored and a batch is padded only to its own longest sentence.

An entry is written to a temporary folder and renamed into place in one atomic step, so an
interrupted encode never leaves an entry that looks complete, and two processes encoding the same key
at once both end with the one entry that was published first. Loading re-checks the key, the shapes and a checksum of every
file; a mismatch is reported and the entry rebuilt, never silently reused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sst2.errors import UserError, one_line
from sst2.system import pid_alive


FORMAT_VERSION = 1
TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner"


class CacheError(UserError, OSError):
    pass


def default_cache_dir() -> Path:
    if os.environ.get("SST2_CACHE"):
        return Path(os.environ["SST2_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sst2" / "features"


def _file_crc32(path: Path) -> str:
    """Integrity check of a cache file (corruption, truncation); CRC-32 reads ~1 GB/s here, twice sha256."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


class StatesFile:
    """Row slices of a ``.npy`` array read with ``pread`` on demand.

    Unlike a memory map, the rows read do not stay mapped into the process, so the resident set
    stays small even when the cached states are several GB (GLUE); the OS page cache still keeps
    them in RAM between epochs when there is room.
    """

    def __init__(self, path: Path, writable: bool = False):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.header_bytes = f.tell()
        if fortran:
            raise ValueError("unexpected Fortran-ordered array")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...], dtype) -> "StatesFile":
        """A new ``.npy`` file of ``shape`` (its body is written later with :meth:`write_rows`)."""
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            )
            f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return cls(path, writable=True)

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at row ``start``; rows already in this dtype and C-contiguous are not copied."""
        data = memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B")
        if os.pwrite(self.fd, data, self.header_bytes + start * self.row_bytes) != len(data):
            raise OSError(f"{self.path}: short write (disk full?)")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            self.close()

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("only contiguous row slices are supported")
        out = np.empty((max(stop - start, 0), *self.shape[1:]), dtype=self.dtype)
        self.read_into(start, out)
        return out

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Read rows ``start : start + len(out)`` straight into ``out`` (C-contiguous, this file's dtype),
        without an intermediate ``bytes`` copy."""
        if out.dtype != self.dtype or not out.flags.c_contiguous or out.shape[1:] != self.shape[1:]:
            raise ValueError(f"read_into needs a C-contiguous {self.dtype} array of rows {self.shape[1:]}")
        view = memoryview(out).cast("B")
        n = os.preadv(self.fd, [view], self.header_bytes + start * self.row_bytes)
        if n != len(view):
            raise OSError(f"{self.path}: short read (file truncated?)")

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


@dataclass
class Features:
    """Token states of one split: ``states[offsets[i]:offsets[i]+lengths[i]]`` is sentence i, (T_i, K, H)."""

    states: np.ndarray | StatesFile  # (N_tokens, K, H), float16 or float32; on disk when from the cache
    lengths: np.ndarray  # (N,) int64, number of tokens incl. special tokens
    offsets: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad sentences ``idx`` to their longest: ``(B, T, K, H)`` float32 and lengths ``(B,)``.

        Rows are gathered in the stored dtype and widened once by torch (numpy's float16 conversion is
        several times slower); padding positions are zeros."""
        lens = self.lengths[idx]
        t_max = int(lens.max())
        k, h = self.states.shape[1:]
        if isinstance(self.states, StatesFile):
            buf = np.zeros((len(idx), t_max, k, h), dtype=self.states.dtype)
            for row, i in enumerate(idx):
                self.states.read_into(int(self.offsets[i]), buf[row, : self.lengths[i]])
        else:  # in memory: one vectorized gather
            pos = np.arange(t_max)[None, :]
            rows = self.offsets[idx][:, None] + np.minimum(pos, lens[:, None] - 1)
            buf = self.states[rows]
            buf[pos >= lens[:, None]] = 0
        return torch.from_numpy(buf).float(), torch.from_numpy(lens.astype(np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.states.nbytes)


def cache_key(**fields) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class FeatureCache:
    def __init__(self, root: str | os.PathLike | None = None, log=print):
        self.root = Path(root) if root else default_cache_dir()
        self.log = log

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:24]

    def load(self, key: str) -> Features | None:
        """Return the entry for ``key``, or None if absent; a bad entry is removed and reported."""
        d = self.entry_dir(key)
        if not d.exists():
            return None
        try:
            meta = json.loads((d / "meta.json").read_text())
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            for name, digest in meta["crc32"].items():
                if _file_crc32(d / name) != digest:
                    raise ValueError(f"checksum mismatch in {name}")
            states = StatesFile(d / "states.npy")
            lengths = np.load(d / "lengths.npy")
            if states.shape != tuple(meta["shape"]) or int(lengths.sum()) != states.shape[0]:
                raise ValueError("shape mismatch")
        except Exception as exc:  # any damage: rebuild
            self.log(f"feature cache: entry {d} is invalid ({one_line(exc)}); rebuilding it")
            self._discard(d)
            return None
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return Features(states, lengths, offsets)

    def _discard(self, d: Path) -> None:
        """Move a bad entry out of the way atomically, then delete it (another process may publish anew)."""
        trash = self.root / f"{TMP_PREFIX}bad-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(d, trash)
        except OSError:
            return  # already gone or replaced
        shutil.rmtree(trash, ignore_errors=True)

    def build(self, key: str, key_fields: dict, make: Callable[[Path], Features]) -> Features:
        """Create the entry for ``key``: ``make(path)`` writes the states to ``path`` and returns them.

        The entry is written into a temporary folder and published with one atomic rename. If another
        process published the same key meanwhile, its entry is kept and ours discarded; a disk that
        fills up leaves no entry a later run would trust."""
        final = self.entry_dir(key)
        tmp = self.staging_dir()
        try:
            features = make(tmp / "states.npy")
            if isinstance(features.states, StatesFile):
                features.states.close()
            np.save(tmp / "lengths.npy", features.lengths.astype(np.int64))
            meta = {
                "key": key,
                "fields": key_fields,
                "shape": list(features.states.shape),
                "sentences": int(len(features.lengths)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "crc32": {n: _file_crc32(tmp / n) for n in ("states.npy", "lengths.npy")},
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            self._publish(tmp, final, key)
        except OSError as exc:
            raise CacheError(f"feature cache: cannot write the entry into {self.root} ({one_line(exc)}); free "
                             f"some space or choose another --cache-dir") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        stored = self.load(key)  # read back from disk: exactly what later runs will read
        if stored is None:
            raise CacheError(f"feature cache: could not read back the entry just written to {final}")
        return stored

    def staging_dir(self) -> Path:
        """A new temporary folder in the cache, marked with this process (removed by a later run if the process
        was killed); the caller removes it."""
        self._prepare_root()
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))
        (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        return tmp

    def _publish(self, tmp: Path, final: Path, key: str) -> None:
        for _ in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails if ``final`` exists and is not empty
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if self.load(key) is not None:  # another process published a valid entry: keep it
                return
        raise CacheError(f"feature cache: {final} keeps being replaced by another process; try again")

    def _prepare_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"feature cache folder {self.root} is a file, not a folder (--cache-dir)")
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(TMP_PREFIX + "*"):  # left by a process that was killed while writing
            if tmp.name.startswith(TMP_PREFIX + "bad-"):  # a bad entry set aside to be deleted
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            try:
                owner = json.loads((tmp / OWNER_FILE).read_text())
            except (OSError, ValueError):
                continue  # not ours
            if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1))):
                shutil.rmtree(tmp, ignore_errors=True)
                self.log(f"feature cache: removed {tmp}, left by an interrupted encode (process {owner['pid']})")

    def store(self, key: str, key_fields: dict, features: Features) -> Features:
        """Store features already in memory."""

        def write(path: Path) -> Features:
            np.save(path, np.ascontiguousarray(features.states))
            return features

        return self.build(key, key_fields, write)
