"""Reading and validating SST-2 style TSV splits.

A data folder holds ``train.tsv``, ``dev.tsv`` and ``test.tsv``. Labelled files have the header
``sentence<TAB>label`` (label 0 = negative, 1 = positive); an unlabelled test file (GLUE) has
``index<TAB>sentence``. Every problem is reported with file and line; no row is ever dropped.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sst2.errors import UserError

SPLITS = ("train", "dev", "test")
LABELLED_HEADER = ("sentence", "label")
UNLABELLED_HEADER = ("index", "sentence")
LABEL_NAMES = ("negative", "positive")
DATA_ENV = "SST2_DATA"
# Where the data lives in this repository layout: ../shared/data beside the project root.
DEFAULT_DATA_HINT = "../shared/data/sst2-sentences"
MAX_REPORTED = 20


def quote(text: str, limit: int = 60) -> str:
    """``text`` in quotes for an error message, cut to ``limit`` characters (a file with CR-only line
    endings is one huge line). A lone surrogate (JSON may escape one) is shown escaped, ``\\ud800``: as it
    is, the message could not be written as UTF-8 (a JSON answer, a log file)."""
    shown = text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"
    shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
    return "'" + shown.replace("\r", "\\r") + "'"


class DataError(UserError, ValueError):
    """Bad input data; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Split:
    name: str
    path: Path | None  # None for texts given in memory (``sst2.data.dataset.from_lists``)
    texts: list[str]
    labels: list[int] | None  # class indexes into ``label_names``; None for an unlabelled split (GLUE test)
    sha256: str
    label_names: tuple[str, ...] = LABEL_NAMES  # the classes, in index order

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> bool:
        return self.labels is not None


def resolve_data_dir(data: str | os.PathLike | None) -> Path:
    """``--data`` if given, else ``$SST2_DATA``, else the repository-layout default."""
    if data:
        return Path(data)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(DEFAULT_DATA_HINT)


def read_split(path: str | os.PathLike, name: str | None = None, *, require_labels: bool = True) -> Split:
    """Read one TSV split, raising :class:`DataError` listing every bad line."""
    path = Path(path)
    name = name or path.stem
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":  # the final newline ends the last row; it is not a row
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file is empty (expected a header line)")

    problems: list[str] = []

    def problem(lineno: int, msg: str) -> None:
        problems.append(f"{path}:{lineno}: {msg}")

    def decode(lineno: int, line: bytes) -> str | None:
        try:
            return line.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            problem(lineno, f"invalid UTF-8 at byte {exc.start + 1} of the line ({exc.reason})")
            return None

    header_text = decode(1, lines[0])
    if header_text is None:
        raise DataError(problems[0])
    header = tuple(header_text.removeprefix("\ufeff").split("\t"))
    if header == LABELLED_HEADER:
        labelled = True
    elif header == UNLABELLED_HEADER and not require_labels:
        labelled = False
    else:
        expected = "'sentence<TAB>label'" + ("" if require_labels else " or 'index<TAB>sentence'")
        got = header_text.replace("\t", "<TAB>")
        raise DataError(f"{path}:1: bad header: expected {expected}, got {quote(got)}")

    texts, labels = _parse_rows(lines, labelled, decode, problem)
    if problems:
        shown = problems[:MAX_REPORTED]
        more = len(problems) - len(shown)
        tail = f"\n... and {more} more problem(s)" if more else ""
        raise DataError("\n".join(shown) + tail)
    if not texts:
        raise DataError(f"{path}: no data rows after the header")
    return Split(name, path, texts, labels if labelled else None, hashlib.sha256(raw).hexdigest())


def _parse_rows(lines: list[bytes], labelled: bool, decode, problem) -> tuple[list[str], list[int]]:
    """The rows after the header: ``(texts, labels)``; each bad row is reported through ``problem``."""
    texts: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(lines[1:], start=2):
        text = decode(lineno, line)
        if text is None:
            continue
        cols = text.split("\t")
        if len(cols) != 2:
            problem(lineno, f"expected 2 tab-separated columns, got {len(cols)}")
            continue
        if labelled:
            sentence, label = cols
            if label not in ("0", "1"):
                problem(lineno, f"label must be 0 or 1, got {quote(label)}")
                continue
        else:
            index, sentence = cols
            if index != str(len(texts)):
                problem(lineno, f"index must be {len(texts)}, got {quote(index)}")
                continue
        # GLUE train/dev sentences end with one space before the tab; strip outer whitespace only.
        sentence = sentence.strip()
        if not sentence:
            problem(lineno, "empty sentence")
            continue
        texts.append(sentence)
        if labelled:
            labels.append(int(label))

    return texts, labels
