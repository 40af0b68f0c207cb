"""The transfer set: the texts a student learns the teacher from.

It holds the training texts, the texts of ``distill.transfer_files`` (e.g. GLUE's 67,349 phrases of the
same training sentences) and augmented copies of the training texts (``sst2.distillation.augment``), each
text once, in that order. A text's hard label is kept where one is known (-1 elsewhere); the teacher's
logits (``sst2.distillation.teacher``) are the targets.

The student reads each text after its own normalizer (``data.normalize``); the teacher is given the text
as read from its file (``teacher_texts``) and applies its own, as at inference: a teacher trained with
another normalizer would otherwise label texts it never saw in that form (``contractions`` sees ``(``
where its training data had ``-lrb-``). An augmented copy is made from the student's form and has no
other: the teacher is given that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sst2.data.formats import EXTENSIONS
from sst2.data.labels import LabelSet
from sst2.data.readers import read_table
from sst2.data.splits import DataError, Split
from sst2.data.text import normalize_texts, texts_sha256
from sst2.distillation.augment import AugmentOptions, augment, embedding_neighbours
from sst2.training.config import TrainConfig

UNLABELLED = -1


@dataclass
class TransferSet:
    texts: list[str]  # as the student reads them (after data.normalize)
    teacher_texts: list[str]  # as read from their files, for the teacher's own normalizer; one per text
    hard: list[int]  # the class index of a text with a known label, else UNLABELLED
    sizes: dict  # texts from each source: {"train": n, "files": {path: n}, "augmented": n}

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def sha256(self) -> str:
        return texts_sha256(self.texts)

    @property
    def teacher_sha256(self) -> str:
        return texts_sha256(self.teacher_texts)

    def as_split(self, classes: list[int], label_names: tuple[str, ...]) -> Split:
        """The training split a student trains on; ``classes`` are the teacher's (the targets are its logits)."""
        return Split("train", None, self.texts, list(classes), self.sha256, label_names)


def _file_texts(path: str, cfg: TrainConfig, labels: LabelSet) -> tuple[list[str], list[str], list[int]]:
    """A transfer file's texts (normalized like the training texts), the same texts as read, and labels
    (-1 where it has none, and everywhere with ``distill.hard_weight`` 0: they are not used, so they are
    not checked): a table read with the training data's columns if it has them, else with the default
    names; a ``.txt`` file, one text a line."""
    d = cfg.data
    if Path(path).suffix.lower() == ".txt":  # one text a line, as sst2 predict reads it: unlabelled
        from sst2.data.rows import LINES, iter_numbered

        lines = [r.row["text"].strip() for rows in iter_numbered(path, LINES) for r in rows]
        return normalize_texts(lines, d.normalize), lines, [UNLABELLED] * len(lines)
    fmt = None if Path(path).suffix.lower() in EXTENSIONS else d.format  # as for a folder's own files
    try:  # the training data's columns, else the file's own (the default names)
        table = read_table(path, fmt, d.text_column, d.label_column, require_labels=False)
    except DataError:
        if d.text_column is None and d.label_column is None:
            raise
        table = read_table(path, fmt, require_labels=False)
    texts = normalize_texts(table.texts, d.normalize)
    if table.labels is None or not cfg.distill.hard_weight or any(v is None for v in table.labels):
        return texts, list(table.texts), [UNLABELLED] * len(texts)
    return texts, list(table.texts), labels.encode_table(table)


def build_transfer(cfg: TrainConfig, train: Split, vocab: dict[str, int], embeddings: np.ndarray,
                   mask_token: str, log=lambda msg: None, held_out=(), raw_train: list[str] | None = None
                   ) -> TransferSet:
    """The transfer set of ``cfg.distill`` over the (normalized) training split ``train``, whose texts as
    read are ``raw_train`` (None: the same). A text of ``held_out`` (dev and test) never enters it, from a
    transfer file or as an augmented copy: the student would train on the texts it is scored on (and, with
    ``hard_weight``, on their labels). Texts are told apart as the student reads them."""
    t = cfg.distill
    texts = list(train.texts)
    teacher_texts = list(train.texts if raw_train is None else raw_train)
    if len(teacher_texts) != len(texts):
        raise ValueError(f"raw_train holds {len(teacher_texts)} texts, the training split {len(texts)}")
    hard = list(train.labels) if train.labelled else [UNLABELLED] * len(texts)
    held = set(held_out) - set(texts)  # a text in train and dev too stays, as training used it anyway
    seen = set(texts) | held
    labels = LabelSet.of_model(train.label_names)
    files = {}
    for path in t.transfer_files:
        added = 0
        for text, raw, y in zip(*_file_texts(path, cfg, labels)):
            if text not in seen:
                seen.add(text)
                texts.append(text)
                teacher_texts.append(raw)
                hard.append(y)
                added += 1
        files[str(path)] = added
    opts = AugmentOptions(t.copies, t.p_mask, t.p_replace, t.p_ngram, t.neighbours)
    words = {w.lower() for text in train.texts for w in text.split()}
    neighbours = embedding_neighbours(words, vocab, embeddings, t.neighbours) if t.p_replace > 0 and t.copies else {}
    copies = augment(train.texts, opts, t.transfer_seed, mask_token, neighbours, exclude=seen) if t.copies else []
    texts += copies
    teacher_texts += copies
    hard += [UNLABELLED] * len(copies)
    sizes = {"train": len(train), "files": files, "augmented": len(copies), "total": len(texts),
             "words_with_neighbours": len(neighbours), "held_out_texts": len(held)}
    log(f"transfer set: {len(texts):,} texts ({len(train):,} training"
        + "".join(f", {n:,} more from {p}" for p, n in files.items()) + f", {len(copies):,} augmented)")
    return TransferSet(texts, teacher_texts, hard, sizes)
