"""Label sets of users' data, and stratified train / dev / test splits.

The label set comes from the training labels: sorted (integers numerically, strings alphabetically), or in
the order the user gives (``--labels neg,neu,pos``). Integer labels are named by their decimal string, except
that a binary 0 / 1 dataset keeps SST-2's names ("negative", "positive").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sst2.data.formats import raise_problems
from sst2.data.formats import where as _where
from sst2.data.readers import RawTable
from sst2.data.splits import LABEL_NAMES, DataError, quote
from sst2.errors import one_line

SPLIT_NAMES = ("train", "dev", "test")


def _lines(raw: list, lines) -> list[int]:
    return list(lines) if lines is not None else list(range(1, len(raw) + 1))


def _kind(raw: list, where, lines: list[int], unit: str) -> type:
    """``int`` or ``str``, the one kind of the labels; a mix, a missing label or another type is an error."""
    first: dict[type, int] = {}
    problems = []
    for i, y in enumerate(raw):
        if y is None:
            problems.append(f"{_where(where, lines[i], unit)}: no label")
        elif isinstance(y, bool) or not isinstance(y, (int, str)):
            problems.append(f"{_where(where, lines[i], unit)}: label {quote(repr(y))} is not an integer or a string")
        else:
            first.setdefault(type(y), i)
    if int in first and str in first:
        i, s = first[int], first[str]
        problems.insert(0, f"{where}: the labels mix integers and strings (integer {raw[i]} at {unit} {lines[i]}, "
                           f"string {quote(raw[s])} at {unit} {lines[s]}); use one kind")
    raise_problems(problems)
    return str if str in first else int


@dataclass(frozen=True)
class LabelSet:
    """Label ``names`` in index order, and the raw training ``values`` they stand for (int or str)."""

    names: tuple[str, ...]
    values: tuple

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_training(cls, raw_labels, order=None, where="the training data", lines=None,
                      unit: str = "line") -> LabelSet:
        """The label set of the training labels ``raw_labels`` (from ``where``, at ``lines``), sorted or in
        ``order`` (label names such as ``["neg", "neu", "pos"]``; integer labels by their digits)."""
        raw = list(raw_labels)
        lines = _lines(raw, lines)
        if not raw:
            raise DataError(f"{where}: no training labels")
        kind = _kind(raw, where, lines, unit)
        seen = dict.fromkeys(raw)
        if order is None:
            values = sorted(seen)
            _refuse_case_twins(values, where)
        else:
            values = _ordered(seen, list(order), kind, raw, where, lines, unit)
        if len(values) < 2:
            raise DataError(f"{where}: every training example has the label {quote(str(values[0]))}; "
                            "a classifier needs at least two labels")
        binary = kind is int and set(values) == {0, 1}
        names = tuple(LABEL_NAMES[v] if binary else str(v) for v in values)
        return cls(names, tuple(values))

    @classmethod
    def of_model(cls, names) -> LabelSet:
        """The label set of a trained model from its label names: "negative" / "positive" stand for 0 / 1,
        digit names for their integers, other names for themselves."""
        names = tuple(names)
        if sorted(names) == sorted(LABEL_NAMES):  # in either order (--labels 1,0 gives positive, negative)
            return cls(names, tuple(LABEL_NAMES.index(n) for n in names))
        return cls(names, tuple(int(n) if n.lstrip("-").isdigit() else n for n in names))

    @classmethod
    def from_table(cls, table: RawTable, order=None) -> LabelSet:
        return cls.from_training(table.labels, order, table.path, table.lines, table.unit)

    def _index(self) -> dict:
        index = {v: i for i, v in enumerate(self.values)}
        index.update((n, i) for i, n in enumerate(self.names))  # "negative" / "positive", or "3" for 3
        if sorted(self.names) == sorted(LABEL_NAMES) and all(isinstance(v, str) for v in self.values):
            index.update((LABEL_NAMES.index(n), i) for i, n in enumerate(self.names))  # and 0 / 1 for them
        return index

    def encode(self, raw_labels, where="the data", lines=None, unit: str = "line") -> list[int]:
        """The label index of each raw label; a value never seen in training is an error (file:line)."""
        raw = list(raw_labels)
        lines = _lines(raw, lines)
        index, out, problems = self._index(), [], []
        for i, y in enumerate(raw):
            j = None if y is None or isinstance(y, bool) else index.get(y)
            if j is None:
                problems.append(f"{_where(where, lines[i], unit)}: " + (
                    "no label" if y is None else
                    f"label {quote(str(y))} is not one of the training labels ({', '.join(self.names)})"))
            out.append(j)
        raise_problems(problems)
        return out

    def encode_table(self, table: RawTable) -> list[int]:
        if table.labels is None:
            raise DataError(f"{table.path}: the file has no labels")
        return self.encode(table.labels, table.path, table.lines, table.unit)


def _refuse_case_twins(values: list, where) -> None:
    """Labels that differ only in case or outer spaces (``Pos`` and ``pos``) are most likely one class
    typed two ways: an error, unless ``--labels`` lists them (then they are taken as distinct classes)."""
    folded: dict[str, list[str]] = {}
    for v in values:
        if isinstance(v, str):
            folded.setdefault(v.strip().casefold(), []).append(v)
    twins = [group for group in folded.values() if len(group) > 1]
    if twins:
        shown = "; ".join(" and ".join(map(quote, g)) for g in twins[:5])
        raise DataError(f"{where}: the labels {shown} differ only in case; write each class one way, or list "
                        f"them in --labels (in Python labels=[...]) to keep them apart")


def _ordered(seen: dict, order: list, kind: type, raw: list, where, lines: list[int], unit: str) -> list:
    """The training values in the given ``order``; every label must be in it, and have an example."""
    names = [str(o).strip() for o in order]
    if not names or "" in names:
        raise DataError(f"--labels {','.join(names)!r} lists " + ("no label" if not names else "an empty label name")
                        + "; list every training label, comma-separated (neg,neu,pos), or leave --labels out for the "
                          "training labels, sorted")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"--labels lists {', '.join(map(quote, dupes))} more than once")
    if kind is int:
        aliases = dict(zip(LABEL_NAMES, (0, 1))) if set(seen) <= {0, 1} else {}
        values = [int(n) if n.lstrip("+-").isdigit() else aliases.get(n, n) for n in names]
    else:
        values = names
    problems = [f"{_where(where, lines[raw.index(v)], unit)}: label {quote(str(v))} is not one of --labels "
                f"({', '.join(names)})" for v in seen if v not in values]
    problems += [f"label {quote(n)} has no training example in {where}"
                 for n, v in zip(names, values) if v not in seen]
    raise_problems(problems)
    return values


def stratified_split(labels: list[int], ratios: dict[str, float], seed: int,
                     names: list[str] | None = None) -> dict[str, list[int]]:
    """Row indexes (in file order) of ``train``, ``dev`` and, if asked, ``test``: each split takes its ratio of
    every label (scikit-learn's stratified ``train_test_split``), the same for the same ``seed``.

    ``ratios`` gives ``dev`` and / or ``test`` (``{"dev": 0.1, "test": 0.1}``); train gets the rest. ``names``
    are the label names, for messages."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    unknown = [k for k in ratios if k not in ("dev", "test")]
    if unknown or not ratios:
        raise DataError(f"split ratios must give dev and / or test (train gets the rest), got {sorted(ratios)}")
    for split, r in ratios.items():
        if not 0 < r < 1:
            raise DataError(f"the {split} ratio must be between 0 and 1 (both excluded), got {r}")
    if sum(ratios.values()) >= 1:
        raise DataError(f"the split ratios sum to {sum(ratios.values()):g}; they must sum to less than 1 "
                        "to leave rows for training")
    y = np.asarray(labels)
    counts = Counter(labels)
    parts = 1 + len(ratios)
    small = [f"label {quote(names[c] if names else str(c))} has {k} example(s)"
             for c, k in sorted(counts.items()) if k < parts]
    if small:
        raise DataError(f"cannot split stratified into {', '.join(SPLIT_NAMES[:parts])}: " + "; ".join(small)
                        + f" (each label needs at least {parts})")
    sizes = {s: round(len(y) * r) for s, r in ratios.items()}
    for split, size in sizes.items():
        if size < len(counts):
            raise DataError(f"the {split} split would have {size} row(s), fewer than the {len(counts)} labels; "
                            f"raise its ratio or bring more data")
    rest, out = np.arange(len(y)), {}
    try:
        for split in ("test", "dev"):
            if split in ratios:
                rest, part = train_test_split(rest, test_size=sizes[split], stratify=y[rest], random_state=seed)
                out[split] = sorted(part.tolist())
    except ValueError as exc:
        raise DataError(f"cannot split stratified ({one_line(exc)})") from None
    return {s: sorted(rest.tolist()) if s == "train" else out[s] for s in SPLIT_NAMES if s == "train" or s in out}
