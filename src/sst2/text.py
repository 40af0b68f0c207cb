"""Text normalization applied before tokenization, in training and at inference alike.

The SST files hold Penn-Treebank-tokenized text: brackets written ``-lrb-`` / ``-rrb-``, escaped
slashes and stars (``\\/``, ``\\*``), LaTeX-style quotes (``\u0060\u0060`` / ``''``) and contractions
split off their word (``does n't``, ``it 's``). A WordPiece encoder pre-trained on ordinary text
sees ``-lrb-`` as ``- l ##rb -`` and ``does n't`` as ``does n ' t``. ``ptb`` undoes that
tokenization so the encoder reads text as it was written; on ordinary text (what users send to
``predict`` and ``serve``) it changes nothing that matters, so one model serves both.
"""

from __future__ import annotations

import re
from typing import Callable

_REPLACE = (
    ("-lrb-", "("), ("-rrb-", ")"), ("-lsb-", "["), ("-rsb-", "]"), ("-lcb-", "{"), ("-rcb-", "}"),
    ("\\/", "/"), ("\\*", "*"), ("`` ", '"'), (" ''", '"'), ("``", '"'), ("''", '"'),
)
# "does n't" -> "doesn't", "it 's" -> "it's"; also "wan na" -> "wanna" and "got ta" -> "gotta" (GLUE)
_CLITIC = re.compile(r"(?<=\w) (n't|'s|'re|'ve|'m|'ll|'d)\b", re.IGNORECASE)
_SPLIT_WORDS = re.compile(r"\b(wan|gon|got) (na|ta)\b", re.IGNORECASE)
# no space before closing punctuation or after an opening bracket
_BEFORE = re.compile(r" ([.,!?;:%)\]}])")
_AFTER = re.compile(r"([(\[{$]) ")
_SPACES = re.compile(r"\s+")


def normalize_ptb(text: str) -> str:
    """Undo Penn Treebank tokenization (see the module docstring); idempotent."""
    for old, new in _REPLACE:
        text = text.replace(old, new)
    text = _CLITIC.sub(r"\1", text)
    text = _SPLIT_WORDS.sub(r"\1\2", text)
    text = _BEFORE.sub(r"\1", text)
    text = _AFTER.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


NORMALIZERS: dict[str, Callable[[str], str]] = {"none": lambda s: s, "ptb": normalize_ptb}


def normalize_texts(texts: list[str], how: str) -> list[str]:
    try:
        fn = NORMALIZERS[how]
    except KeyError:
        raise ValueError(f"unknown text normalization {how!r}: choose one of {', '.join(NORMALIZERS)}") from None
    return [fn(t) for t in texts]
