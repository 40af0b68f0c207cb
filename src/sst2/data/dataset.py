"""A training data set from the user's files: a folder of splits, or one labelled file split by ratio.

* A folder holds ``train`` and ``dev`` (and optionally ``test``) in any supported format
  (``train.tsv``, ``train.csv``, ``train.jsonl``, ``train.parquet``); the SST folders of
  ``../shared/data`` are such folders. ``--train-file`` replaces the folder's train split.
* A single labelled file is split into train, dev (``dev_ratio``, default 0.1) and optionally test
  (``test_ratio``): stratified by label and seeded; the row indexes of each split are returned so the
  run directory records them (``splits.json``). A folder without a dev file is split the same way.
  ``dev_ratio = 0`` trains without a dev split (the last epoch is kept, as ``sst2.fit`` does without dev).
* ``from_lists`` makes the same splits from in-memory lists (``sst2.fit``).

The label set comes from the training split (``sst2.data.labels``); dev and test labels are encoded
against it, so a label training never saw is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sst2.data.labels import LabelSet, stratified_split
from sst2.data.formats import EXTENSIONS, raise_problems
from sst2.data.readers import RawTable, label_value, read_table
from sst2.data.splits import DATA_ENV, DEFAULT_DATA_HINT, DataError, Split, quote
from sst2.data.text import text_problem

SPLITS = ("train", "dev", "test")
DEFAULT_DEV_RATIO = 0.1


def find_split_file(folder: Path, name: str) -> Path | None:
    """``folder/name.EXT`` for a supported extension; two of them is an error (which one is meant?)."""
    found = [folder / f"{name}{ext}" for ext in EXTENSIONS if (folder / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: {', '.join(p.name for p in found)}: more than one {name} file; keep one")
    return found[0] if found else None


def _split(name: str, table: RawTable, labels: LabelSet, rows: list[int] | None = None, sha256: str | None = None):
    rows = list(range(len(table))) if rows is None else rows
    encoded = labels.encode_table(table) if table.labels is not None else None
    return Split(name, table.path, [table.texts[i] for i in rows],
                 None if encoded is None else [encoded[i] for i in rows], sha256 or table.sha256, labels.names)


def _read(path: Path, opts: dict, require_labels: bool = True, named: bool = False) -> RawTable:
    """``path`` as a table; ``named``: a folder's own split file, whose extension names its format
    (``--format`` is for the one file whose extension does not say: ``--train-file`` or ``--data FILE``)."""
    return read_table(path, None if named else opts.get("format"), opts.get("text_column"),
                      opts.get("label_column"), require_labels=require_labels)


def _from_folder(folder: Path, opts: dict, train_file: str | None) -> tuple[dict[str, Split], dict | None]:
    paths = {name: find_split_file(folder, name) for name in SPLITS}
    if train_file is not None:
        paths["train"] = Path(train_file)
        if not paths["train"].is_file():
            raise DataError(f"{paths['train']}: training file not found (--train-file)")
    if paths["train"] is None:
        raise DataError(f"{folder}: no train file (a data folder holds train, dev and test files: "
                        f"{', '.join('train' + e for e in ('.tsv', '.csv', '.jsonl', '.parquet'))})")
    train = _read(paths["train"], opts, named=train_file is None)
    labels = LabelSet.from_table(train, opts.get("labels"))
    for split, key in (("dev", "dev_ratio"), ("test", "test_ratio")):
        if paths[split] is not None and opts.get(key) is not None:
            raise DataError(f"{folder}: data.{key} is {opts[key]}, but the folder has its own {split} file "
                            f"({paths[split].name}); drop one of them")
    test = _maybe_test(paths["test"], opts, labels)
    if paths["dev"] is None:
        if opts.get("dev_ratio") is None:
            raise DataError(f"{folder}: no dev file; add one, split the training file with --dev-ratio, or "
                            "train without dev with --dev-ratio 0")
        if opts["dev_ratio"] or opts.get("test_ratio"):
            return _by_ratio(train, labels, opts, test=test)
    if paths["dev"] is not None and opts.get("test_ratio"):  # the folder's dev; test cut off the training file
        cut, info = _by_ratio(train, labels, {**opts, "dev_ratio": 0})
        dev = _split("dev", _read(paths["dev"], opts, named=True), labels)
        return {"train": cut["train"], "dev": dev, "test": cut["test"]}, info
    splits = {"train": _split("train", train, labels)}
    if paths["dev"] is not None:
        splits["dev"] = _split("dev", _read(paths["dev"], opts, named=True), labels)
    if test is not None:
        splits["test"] = test
    return splits, None


def _maybe_test(path: Path | None, opts: dict, labels: LabelSet) -> Split | None:
    if path is None:
        return None
    return _split("test", _read(path, opts, require_labels=False, named=True), labels)


def _by_ratio(table: RawTable, labels: LabelSet, opts: dict, test: Split | None = None):
    dev_ratio = DEFAULT_DEV_RATIO if opts.get("dev_ratio") is None else opts["dev_ratio"]
    ratios = {"dev": dev_ratio} if dev_ratio else {}  # 0: no dev split (the last epoch is kept)
    if opts.get("test_ratio"):
        ratios["test"] = opts["test_ratio"]
    encoded = labels.encode_table(table)
    try:
        rows = (stratified_split(encoded, ratios, opts.get("seed", 0), list(labels.names)) if ratios
                else {"train": list(range(len(table)))})
    except DataError as exc:
        raise DataError(f"{table.path}: {exc}") from None
    # each split's own fingerprint: the file's and the rows it took (the feature cache keys on it)
    splits = {name: _split(name, table, labels, idx,
                           hashlib.sha256(f"{table.sha256}:{name}:{idx}".encode()).hexdigest())
              for name, idx in rows.items()}
    if test is not None:
        splits["test"] = test
    info = {"file": str(table.path), "sha256": table.sha256, "seed": opts.get("seed", 0), "ratios": ratios,
            "rows": {name: idx for name, idx in rows.items()}, "labels": list(labels.names)}
    return splits, info


def load_data(path: str | os.PathLike, train_file: str | None = None, **opts) -> tuple[dict[str, Split], dict | None]:
    """The splits of a data folder or a single file; ``opts``: ``format``, ``text_column``,
    ``label_column``, ``labels`` (an order), ``dev_ratio``, ``test_ratio``, ``seed``. Returns
    ``(splits, split_info)``; ``split_info`` holds the row indexes when a file was split by ratio."""
    path = Path(path)
    if path.is_dir():
        return _from_folder(path, opts, train_file)
    if path.is_file():
        if train_file is not None:
            raise DataError(f"{path}: --train-file goes with a data folder, not a single data file")
        table = _read(path, opts)
        return _by_ratio(table, LabelSet.from_table(table, opts.get("labels")), opts)
    raise DataError(f"{path}: data folder or file not found (pass --data PATH or set {DATA_ENV}; in this "
                    f"repository layout the data is in {DEFAULT_DATA_HINT})")


def shared_with_train(splits: dict[str, Split]) -> list[str]:
    """A note for each split other than train that holds training texts (a duplicate row split both ways, or
    a test file overlapping the training file): those rows are not held out, so their accuracy is not either."""
    train = set(splits["train"].texts) if "train" in splits else set()
    notes = []
    for name, split in splits.items():
        shared = [t for t in split.texts if t in train]
        if name != "train" and shared:
            notes.append(f"note: {len(shared):,} of {len(split):,} {name} texts are also training texts (first: "
                         f"{quote(shared[0])}); they are not held out")
    return notes


def load_splits(path: str | os.PathLike, train_file: str | None = None, **opts) -> dict[str, Split]:
    """:func:`load_data` without the split record."""
    return load_data(path, train_file, **opts)[0]


# --- in memory -------------------------------------------------------------------------------------------

def _labels(labels) -> list | None:
    """The labels as a file's reader reads them (``sst2.data.readers.label_value``: NumPy integers, whole
    floats and integer strings are ints, strings are stripped, ``""`` and NaN are no label); a value it
    refuses is kept as it is, for the label set's checks to name."""
    if labels is None:
        return None
    out = []
    for y in labels:
        y = y.item() if hasattr(y, "item") and not isinstance(y, (str, bytes)) else y  # NumPy scalars
        try:
            out.append(label_value(y))
        except (TypeError, ValueError):
            out.append(y)
    return out


def from_lists(lists: dict[str, tuple], order=None) -> dict[str, Split]:
    """Splits from in-memory ``(texts, labels)`` by split name: ``train`` (labelled), and ``dev`` and ``test``
    (labels may be None). The labels are integers or strings, as in a file: the label set comes from the
    training labels (sorted, or in ``order``) and the other splits are encoded against it. Every problem is
    reported by list and index (``train_texts[3]``, ``dev_labels[0]``); nothing is dropped."""
    problems, raw = [], {}
    for name, (texts, labels) in lists.items():
        for what, values in (("texts", texts), ("labels", labels)):
            if isinstance(values, (str, bytes)):
                raise DataError(f"{name}_{what}: expected a list, got a single {type(values).__name__} "
                                f"({quote(values if isinstance(values, str) else repr(values))})")
            if hasattr(values, "columns"):  # a DataFrame iterates over its column names
                columns = list(values.columns)
                raise DataError(f"{name}_{what} is a table ({type(values).__name__}): pass one of its columns"
                                + (f", such as df[{columns[0]!r}]" if columns else ""))
        texts = list(texts)
        labels = _labels(labels)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                problems.append(f"{name}_texts[{i}]: expected a string, got {type(t).__name__}")
            elif problem := text_problem(t):
                problems.append(f"{name}_texts[{i}]: {problem}")
        if not texts:
            problems.append(f"{name}_texts: no texts")
        if labels is not None and len(labels) != len(texts):
            problems.append(f"{name}_labels: {len(texts)} texts but {len(labels)} labels")
        raw[name] = texts, labels
    try:
        label_set, ints = _encoded(raw, order)
    except DataError as exc:  # the label problems after the text problems, in one error
        raise_problems(problems + [str(exc)])
        raise
    raise_problems(problems)
    splits = {}
    for name, (texts, _) in raw.items():
        blob = "\n".join(f"{t}\t{y}" for t, y in zip(texts, ints[name] or [""] * len(texts)))
        splits[name] = Split(name, None, [t.strip() for t in texts], ints[name],
                             hashlib.sha256(f"{label_set.names}\n{blob}".encode()).hexdigest(), label_set.names)
    return splits


def _encoded(raw: dict[str, tuple], order) -> tuple[LabelSet, dict[str, list[int] | None]]:
    """The label set of the training labels and every split's labels as class indexes."""
    train_labels = raw["train"][1]
    label_set = LabelSet.from_training(train_labels, order, "train_labels", range(len(train_labels)), "index")
    return label_set, {name: None if labels is None else
                       label_set.encode(labels, f"{name}_labels", range(len(labels)), "index")
                       for name, (_, labels) in raw.items()}
