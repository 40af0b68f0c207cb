"""Text normalization applied before tokenization, in training and at inference alike.

The SST files hold Penn-Treebank-tokenized text: brackets written ``-lrb-`` / ``-rrb-``, escaped
slashes and stars (``\\/``, ``\\*``), LaTeX-style quotes (two backquotes / two single quotes) and
``n't`` split off its word (``does n't``). A WordPiece encoder sees ``-lrb-`` as ``- l ##rb -``.

``treebank`` maps both the treebank files and ordinary text (what users send to ``predict`` and
``serve``) to one form: the escapes become the characters they stand for, and ``n't`` is split off
its word as the treebank does (``doesn't`` -> ``does n't``), so a model sees the same tokens for a
negation in training and in use. ``n't`` stays split rather than joined because joined forms turn
one shared negation marker (``n ' t``) into many word pieces (``doesn``, ``isn``, ``wasn``, ...): on
SST-2 the fully fine-tuned encoder scored lower with joined contractions (README, "Text
normalization"). Spacing around punctuation is left alone: the tokenizer splits punctuation anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Callable

_REPLACE = (
    ("-lrb-", "("), ("-rrb-", ")"), ("-lsb-", "["), ("-rsb-", "]"), ("-lcb-", "{"), ("-rcb-", "}"),
    ("-LRB-", "("), ("-RRB-", ")"), ("\\/", "/"), ("\\*", "*"), ("``", '"'), ("''", '"'),
)
_NEGATION = re.compile(r"(?<=\w)(n't)\b", re.IGNORECASE)  # "doesn't" -> "does n't"; "does n't" stays


def split_contractions(text: str) -> str:
    """Split ``n't`` off its word as the treebank does (``doesn't`` -> ``does n't``); idempotent.

    The SST files already have this form, so on them it changes nothing; it makes ordinary text
    (what users send to ``predict`` and ``serve``) tokenize like the training data.
    """
    return _NEGATION.sub(r" \1", text.replace("\u2019", "'"))


def normalize_treebank(text: str) -> str:
    """Undo the treebank's escapes and split ``n't`` as the treebank does (module docstring); idempotent."""
    for old, new in _REPLACE:
        text = text.replace(old, new)
    return split_contractions(text)


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s, "contractions": split_contractions, "treebank": normalize_treebank,
}


def normalize_texts(texts: list[str], how: str) -> list[str]:
    try:
        fn = NORMALIZERS[how]
    except KeyError:
        raise ValueError(f"unknown text normalization {how!r}: choose one of {', '.join(NORMALIZERS)}") from None
    return [fn(t) for t in texts]


_INVISIBLE = frozenset(("Cc", "Cf", "Co"))  # control, format (U+200B, U+FEFF, ...), private use


_MARKS = frozenset(("Mn",))  # combining marks (U+0301): with no letter to mark, an uncased BERT drops them too
_DROPPED = _INVISIBLE | _MARKS


def blank(text: str) -> bool:
    """True when ``text`` has nothing a tokenizer keeps: only whitespace, control, format or private-use
    characters, combining marks, or U+FFFD (what an undecodable byte became). BERT's tokenizer drops all of
    these, so such a text would be classified from ``[CLS] [SEP]`` alone."""
    return not any(not c.isspace() and c != "\ufffd" and unicodedata.category(c) not in _DROPPED for c in text)


def blank_kind(text: str) -> str:
    """What a :func:`blank` text that is not all whitespace holds, named by its first such character."""
    first = next(c for c in text if not c.isspace())
    return "combining marks" if unicodedata.category(first) in _MARKS else "invisible characters"


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be classified (empty, or a lone surrogate that is not valid Unicode text), or None."""
    if blank(text):
        if not text.strip():
            return "empty text"
        first = next(c for c in text if not c.isspace())
        return f"empty text (only {blank_kind(text)} such as U+{ord(first):04X})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode text (a lone surrogate at character {exc.start + 1})"
    return None


def texts_sha256(texts: list[str]) -> str:
    """sha256 of a list of texts, as a JSON array: ``["a\\nb"]`` and ``["a", "b"]`` differ (joined with
    newlines they would not, and a CSV or JSONL text may hold one)."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()
