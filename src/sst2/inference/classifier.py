"""``SentimentClassifier``: tokenizer + one runtime (``sst2.inference.runtimes``) over a saved model.

    clf = SentimentClassifier.from_pretrained("runs/efficient/model", runtime="onnx-int8")
    clf.predict("a gorgeous , witty movie .")     # "positive"
    clf.predict_proba(["a great film", "dull"])  # (2, 2) array, columns in clf.labels order
    clf.save_pretrained("my-model")              # a model directory with its model card

Texts are normalized as in training, tokenized, sorted by length so each batch pads little, scored,
and returned in input order.
"""

from __future__ import annotations

import numbers
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sst2.calibration import probabilities
from sst2.data.batching import pad_batch, score
from sst2.data.text import normalize_texts, text_problem
from sst2.errors import UserError
from sst2.inference.runtimes import (RUNTIMES, OnnxRunner, RuntimeUnavailableError, TorchRunner, onnx_path,
                                     physical_cores)
from sst2.modeling.modeldir import CARD_FILE, load_tokenizer, read_spec

DEFAULT_LABELS = ("negative", "positive")


class OptionError(UserError, ValueError):
    """An option the classifier cannot take (workers, windows)."""


LONG_TEXTS = ("truncate", "windows")


@dataclass(frozen=True)
class Prediction:
    label: str  # the most probable label name
    probabilities: dict  # label name -> calibrated probability, in label order
    truncated: bool  # the text had more tokens than the model's max_length; the rest were ignored
    windows: int = 1  # windows scored (long_texts="windows"); 1 when truncating

    @property
    def positive_prob(self) -> float | None:
        """The probability of "positive" for SST-2's two labels (in either order); ``None`` for other labels
        (``pos`` / ``neg``, three classes): read ``probabilities`` by label name then."""
        if sorted(self.probabilities) == ["negative", "positive"]:
            return self.probabilities["positive"]
        return None

    def to_dict(self) -> dict:
        """``label``, ``probabilities``, ``truncated``, and ``positive_prob`` too for SST-2's two labels (for
        other labels, such as ``pos`` / ``neg``, it would name the second label's probability "positive")."""
        out = {"label": self.label}
        if self.positive_prob is not None:
            out["positive_prob"] = self.positive_prob
        return {**out, "probabilities": dict(self.probabilities), "truncated": self.truncated, "windows": self.windows}


class SentimentClassifier:
    """A trained sentiment model ready to predict; see the module docstring."""

    def __init__(self, tokenizer, runner, spec: dict, runtime: str = "torch", model_dir: str | Path | None = None,
                 batch_size: int = 64, workers: int = 1, model=None, card: dict | None = None,
                 pad_id: int | None = None, long_texts: str = "truncate", window_overlap: int | None = None,
                 window_length: int | None = None, truncation_side: str | None = None):
        """``tokenizer``: a Hugging Face fast tokenizer, or a ``tokenizers.Tokenizer`` with ``pad_id`` and
        ``truncation_side`` (default: the tokenizer's own, else ``right``; as in training).
        ``long_texts``: ``truncate`` scores a text's first ``max_length`` tokens (its last with ``left``
        truncation); ``windows`` scores every
        window of ``window_length`` tokens (default: the model's, as long as 90 % of its training texts;
        ``max_length`` for a model saved without one), overlapping by ``window_overlap``
        (default: a quarter of a window), and averages their probabilities. Windows about as long as the
        training texts score best (docs/experiments/long-documents.md)."""
        _check_count("workers", workers)
        _check_batch_size(batch_size)
        if long_texts not in LONG_TEXTS:
            raise OptionError(f"long_texts must be one of {', '.join(LONG_TEXTS)}, got {long_texts!r}")
        for name, value in (("window_length", window_length), ("window_overlap", window_overlap)):
            if value is not None and long_texts != "windows":  # it was ignored without a word
                raise OptionError(f"{name} goes with long_texts='windows' (--long-texts windows); "
                                  f"long_texts is {long_texts!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise OptionError(f"{name} must be an integer, got {value!r}")  # 20.5 failed inside tokenizers
        self.long_texts = long_texts
        self.tokenizer = tokenizer
        self.runner = runner
        self.spec = spec
        self.runtime = runtime
        self.model_dir = None if model_dir is None else str(model_dir)
        self.batch_size = batch_size
        self.workers = workers  # model calls run at once (see ``from_pretrained``)
        self.model = model  # the SentimentModel (torch runtime)
        self.card = card  # training info for the model card, when trained in this process
        self.card_text = None  # the model card of the directory it was loaded from, kept by save_pretrained
        self.pad_id = (getattr(tokenizer, "pad_token_id", None) or 0) if pad_id is None else pad_id
        # The Rust tokenizer itself (the one behind a fast tokenizer, copied so that its truncation setting
        # is ours alone): the same ids as the Hugging Face wrapper, without transformers on the ONNX path.
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self._encoder = Tokenizer.from_str(backend.to_str())
        self._encoder.no_padding()
        side = truncation_side or getattr(tokenizer, "truncation_side", None) or "right"
        if side not in ("left", "right"):
            raise OptionError(f"truncation_side must be left or right, got {side!r}")
        self._encoder.enable_truncation(self.max_length, direction=side)  # the end training kept
        length = spec.get("window_length", self.max_length) if window_length is None else int(window_length)
        if not 3 <= length <= self.max_length:  # [CLS], [SEP] and one token
            raise OptionError(f"window_length must be in 3..{self.max_length} (the model's max_length), got {length}")
        overlap = length // 4 if window_overlap is None else int(window_overlap)
        if not 0 <= overlap <= length - 3:  # a window holds [CLS], [SEP] and one token more than the overlap
            raise OptionError(f"window_overlap must be in 0..{length - 3}, got {overlap}")
        self.window_length, self.window_overlap = length, overlap
        self._windows = Tokenizer.from_str(backend.to_str())
        self._windows.no_padding()
        self._windows.enable_truncation(length, stride=overlap)

    # --- loading and saving -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, runtime: str = "torch", threads: int | None = None,
                        batch_size: int = 64, workers: int = 1, spin: bool = True, long_texts: str = "truncate",
                        window_overlap: int | None = None, window_length: int | None = None) -> "SentimentClassifier":
        """Load a model directory. ``threads``: intra-op threads of one model call (default: torch's
        choice, or the physical cores for onnx; with ``workers`` > 1 the cores divided among them).
        ``workers``: batches run this many at a time, each in its own thread; on a few cores two
        single-threaded calls keep the cores busier than one two-threaded call, for more sentences/s
        on large inputs. ``spin=False``: idle onnx pool threads sleep (see ``onnx_session_options``)."""
        if runtime not in RUNTIMES:
            raise RuntimeUnavailableError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        workers = _check_count("workers", workers)
        if threads is not None:  # 0 was taken as "torch's choice", -1 failed inside torch
            threads = _check_count("threads", threads)
        if threads is None and workers > 1:
            threads = max(1, physical_cores() // workers)
        path = Path(path)
        if runtime == "torch":
            from sst2.modeling.model import SentimentModel
            from sst2.system import set_threads

            set_threads(threads)
            model = SentimentModel.load(path)
            clf = cls(model.tokenizer, TorchRunner(model), model.spec, runtime, path, batch_size, workers, model,
                      long_texts=long_texts, window_overlap=window_overlap, window_length=window_length)
            if (path / CARD_FILE).is_file():
                clf.card_text = (path / CARD_FILE).read_text(encoding="utf-8")
            return clf
        # The ONNX and numpy runtimes need only the tokenizer, the spec and their own files (not torch).
        spec = read_spec(path)
        if runtime == "numpy":  # one thread a call; calls side by side on the cores (sst2.inference.folded)
            from sst2.inference.folded import FoldedStaticRunner

            runner = FoldedStaticRunner(path, spec)
            workers = workers if workers > 1 else (threads or physical_cores())
        else:
            onnx_file = onnx_path(path, runtime)
            try:
                runner = OnnxRunner(onnx_file, threads, spin)
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise RuntimeUnavailableError(f"runtime {runtime!r} needs onnxruntime: pip install 'sst2[onnx]'") from exc
        tokenizer, pad_id, side = load_tokenizer(path)
        return cls(tokenizer, runner, spec, runtime, path, batch_size, workers, pad_id=pad_id, long_texts=long_texts,
                   window_overlap=window_overlap, window_length=window_length, truncation_side=side)

    @classmethod
    def from_model(cls, model, card: dict | None = None, batch_size: int = 64) -> "SentimentClassifier":
        """A classifier over a ``SentimentModel`` in memory (what ``sst2.fit`` returns)."""
        model.eval()
        return cls(model.tokenizer, TorchRunner(model), model.spec, "torch", None, batch_size, model=model, card=card)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a self-contained model directory (weights, tokenizer, spec, model card ``README.md``) into a
        new or empty folder, or over an sst2 model directory (whose ONNX exports go: they were the old model's);
        another folder is refused."""
        path = Path(path)
        if self.model is not None:
            saved = self.model.save(path, card=self.card)
            if self.card is None and self.card_text is not None:  # its training record, as it was loaded
                (saved / CARD_FILE).write_text(self.card_text, encoding="utf-8")
            return saved
        src = Path(self.model_dir)  # an ONNX-loaded classifier: its directory is the model
        if path.resolve() != src.resolve():
            from sst2.modeling.modeldir import clear_for_model

            clear_for_model(path)
            shutil.copytree(src, path, dirs_exist_ok=True)
        return path

    # --- facts --------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.spec.get("labels", DEFAULT_LABELS))

    @property
    def max_length(self) -> int:
        return int(self.spec["max_length"])

    @property
    def normalize(self) -> str:
        return self.spec.get("text_normalization", "none")

    @property
    def model_card(self) -> str | None:
        if self.model_dir and (Path(self.model_dir) / CARD_FILE).is_file():
            return (Path(self.model_dir) / CARD_FILE).read_text()
        return None

    # --- scoring ----------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids (special tokens included, at most ``max_length``) and whether each text was cut."""
        encode = getattr(self._encoder, "encode_batch_fast", self._encoder.encode_batch)  # fast: without offsets
        encodings = encode(normalize_texts(list(texts), self.normalize), add_special_tokens=True)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def logits_from_ids(self, ids: list[list[int]], batch_size: int | None = None, progress=None) -> np.ndarray:
        """Logits ``(N,)`` in input order: length-sorted batches of ``batch_size``, each split further
        where its lengths spread so much that padding would cost more than another model call."""
        return score([len(x) for x in ids], self.batch_size if batch_size is None else _check_batch_size(batch_size),
                     lambda idx: self.runner(*pad_batch([ids[i] for i in idx], self.pad_id)),
                     split=True, progress=progress, workers=self.workers).astype(np.float32, copy=False)

    def predict_logits(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        texts = checked_texts(texts)
        if not texts:
            return np.empty(0, dtype=np.float32)
        ids, _ = self.tokenize(texts)
        return self.logits_from_ids(ids, batch_size)

    @property
    def temperature(self) -> float:
        """Logits are divided by it before the sigmoid or softmax (fitted on dev; ``sst2.calibration``)."""
        return float(self.spec.get("temperature", 1.0))

    def windows(self, texts: list[str]) -> list[list[list[int]]]:
        """Every text's windows of at most ``window_length`` tokens (special tokens included), overlapping by
        ``window_overlap`` tokens; a text that fits in one window is one window."""
        encodings = self._windows.encode_batch(normalize_texts(list(texts), self.normalize), add_special_tokens=True)
        return [[e.ids] + [o.ids for o in e.overflowing] for e in encodings]

    def score(self, texts: list[str], batch_size: int | None = None, progress=None):
        """``(probabilities (N, k), truncated, windows)``: calibrated class probabilities, whether a text
        was cut, and how many windows it took (``long_texts``)."""
        texts = checked_texts(texts)
        if self.long_texts == "truncate":
            ids, truncated = self.tokenize(texts)
            probs = probabilities(self.logits_from_ids(ids, batch_size, progress), self.temperature)
            return probs, truncated, [1] * len(texts)
        per_text = self.windows(texts)
        flat = [w for ws in per_text for w in ws]
        window_probs = probabilities(self.logits_from_ids(flat, batch_size, progress), self.temperature)
        counts = [len(ws) for ws in per_text]
        owner = np.repeat(np.arange(len(texts)), counts)
        probs = np.zeros((len(texts), window_probs.shape[1]))
        np.add.at(probs, owner, window_probs)
        return probs / np.asarray(counts)[:, None], [False] * len(texts), counts

    def predict_proba(self, texts: str | list[str], batch_size: int | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(N, n_classes)``, columns in :attr:`labels` order; rows sum to 1."""
        texts = [texts] if isinstance(texts, str) else text_list(texts)
        if not texts:
            return np.empty((0, len(self.labels)))
        return self.score(texts, batch_size)[0]

    def predict(self, texts: str | list[str], batch_size: int | None = None) -> str | list[str]:
        """The label name of a text, or a list of them for a list of texts."""
        single = isinstance(texts, str)
        proba = self.predict_proba(texts, batch_size)
        names = [self.labels[int(k)] for k in proba.argmax(1)] if len(proba) else []
        return names[0] if single else names

    def predict_details(self, texts: list[str], batch_size: int | None = None, progress=None) -> list[Prediction]:
        """One :class:`Prediction` per text (label, probabilities, truncated, windows), in input order.
        ``progress(n)`` is called after each model call with its number of texts (or windows)."""
        if isinstance(texts, str):
            raise TypeError("predict_details expects a list of texts, not a single string")
        texts = text_list(texts)
        if not texts:
            return []
        probs, truncated, counts = self.score(texts, batch_size, progress)
        names = self.labels
        return [Prediction(names[int(row.argmax())], dict(zip(names, map(float, row))), t, n)
                for row, t, n in zip(probs, truncated, counts)]

    def __repr__(self) -> str:
        where = self.model_dir or "in memory"
        return f"SentimentClassifier({where!r}, runtime={self.runtime!r}, labels={self.labels})"


class Classifier(SentimentClassifier):
    """The interface of sst2 0.1, kept for one version: ``Classifier.load(dir)`` and
    ``predict(texts) -> list[Prediction]``. Use :class:`SentimentClassifier`."""

    @classmethod
    def load(cls, model_dir, runtime: str = "torch", threads=None, batch_size: int = 64, spin: bool = True,
             workers: int = 1) -> "Classifier":
        warnings.warn("sst2.Classifier is deprecated; use sst2.SentimentClassifier.from_pretrained",
                      DeprecationWarning, stacklevel=2)
        return cls.from_pretrained(model_dir, runtime, threads, batch_size, workers, spin)

    def predict(self, texts, batch_size=None, progress=None):  # type: ignore[override]
        if isinstance(texts, str):
            raise TypeError("predict expects a list of texts, not a single string")
        return self.predict_details(texts, batch_size, progress)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_batch_size(batch_size) -> int:
    return _check_count("batch_size", batch_size)


def text_list(texts) -> list:
    """``texts`` (a list, tuple, generator, NumPy array or pandas Series of strings) as a list; a table or bytes
    are a TypeError rather than iterated (a DataFrame yields its column names, bytes their integers)."""
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts must be strings, not bytes: decode them first (texts.decode('utf-8'))")
    if hasattr(texts, "columns"):
        raise TypeError(f"texts is a table ({type(texts).__name__}): pass one of its columns, such as df['text']")
    return list(texts)


def checked_texts(texts) -> list[str]:
    """``texts`` as a list; a text that is not a string is a TypeError and one that cannot be classified (empty,
    not valid Unicode) a ValueError, each naming its index: no made-up prediction for it."""
    texts = text_list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected a string, got {type(t).__name__}")
        if problem := text_problem(t):
            raise ValueError(f"texts[{i}]: {problem}")
    return texts


def accuracy(clf: SentimentClassifier, texts: list[str], labels: list[int], batch_size: int | None = None) -> float:
    preds = clf.predict_proba(texts, batch_size).argmax(1)
    return float(np.mean(preds == np.asarray(labels))) if len(labels) else float("nan")
