"""``SentimentClassifier``: tokenizer + one runtime (``sst2.inference.runtimes``) over a saved model.

    clf = SentimentClassifier.from_pretrained("runs/efficient/model", runtime="onnx-int8")
    clf.predict("a gorgeous , witty movie .")     # "positive"
    clf.predict_proba(["a great film", "dull"])  # (2, 2) array, columns in clf.labels order
    clf.save_pretrained("my-model")              # a model directory with its model card

Texts are normalized as in training, tokenized, sorted by length so each batch pads little, scored,
and returned in input order.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sst2.calibration import probabilities
from sst2.data.batching import pad_batch, score
from sst2.data.text import normalize_texts
from sst2.inference.runtimes import (RUNTIMES, OnnxRunner, RuntimeUnavailableError, TorchRunner, onnx_path,
                                     physical_cores)
from sst2.modeling.modeldir import CARD_FILE, load_tokenizer, read_spec

DEFAULT_LABELS = ("negative", "positive")


@dataclass(frozen=True)
class Prediction:
    label: str  # the most probable label name
    probabilities: dict  # label name -> calibrated probability, in label order
    truncated: bool  # the text had more tokens than the model's max_length; the rest were ignored

    @property
    def positive_prob(self) -> float:
        """Two classes: the probability of the second label ("positive" for SST-2)."""
        return list(self.probabilities.values())[-1]

    def to_dict(self) -> dict:
        """``label``, ``probabilities``, ``truncated``, and for two classes ``positive_prob`` too."""
        out = {"label": self.label}
        if len(self.probabilities) == 2:
            out["positive_prob"] = self.positive_prob
        return {**out, "probabilities": dict(self.probabilities), "truncated": self.truncated}


class SentimentClassifier:
    """A trained sentiment model ready to predict; see the module docstring."""

    def __init__(self, tokenizer, runner, spec: dict, runtime: str = "torch", model_dir: str | Path | None = None,
                 batch_size: int = 64, workers: int = 1, model=None, card: dict | None = None,
                 pad_id: int | None = None):
        """``tokenizer``: a Hugging Face fast tokenizer, or a ``tokenizers.Tokenizer`` with ``pad_id``."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.tokenizer = tokenizer
        self.runner = runner
        self.spec = spec
        self.runtime = runtime
        self.model_dir = None if model_dir is None else str(model_dir)
        self.batch_size = batch_size
        self.workers = workers  # model calls run at once (see ``from_pretrained``)
        self.model = model  # the SentimentModel (torch runtime)
        self.card = card  # training info for the model card, when trained in this process
        self.pad_id = (getattr(tokenizer, "pad_token_id", None) or 0) if pad_id is None else pad_id
        # The Rust tokenizer itself (the one behind a fast tokenizer, copied so that its truncation setting
        # is ours alone): the same ids as the Hugging Face wrapper, without transformers on the ONNX path.
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self._encoder = Tokenizer.from_str(backend.to_str())
        self._encoder.no_padding()
        self._encoder.enable_truncation(self.max_length)

    # --- loading and saving -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, runtime: str = "torch", threads: int | None = None,
                        batch_size: int = 64, workers: int = 1, spin: bool = True) -> "SentimentClassifier":
        """Load a model directory. ``threads``: intra-op threads of one model call (default: torch's
        choice, or the physical cores for onnx; with ``workers`` > 1 the cores divided among them).
        ``workers``: batches run this many at a time, each in its own thread; on a few cores two
        single-threaded calls keep the cores busier than one two-threaded call, for more sentences/s
        on large inputs. ``spin=False``: idle onnx pool threads sleep (see ``onnx_session_options``)."""
        if runtime not in RUNTIMES:
            raise RuntimeUnavailableError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if threads is None and workers > 1:
            threads = max(1, physical_cores() // workers)
        path = Path(path)
        if runtime == "torch":
            from sst2.modeling.model import SentimentModel
            from sst2.system import set_threads

            set_threads(threads)
            model = SentimentModel.load(path)
            return cls(model.tokenizer, TorchRunner(model), model.spec, runtime, path, batch_size, workers, model)
        # The ONNX runtimes need only the tokenizer and the spec, not the PyTorch weights (nor torch).
        spec = read_spec(path)
        onnx_file = onnx_path(path, runtime)
        try:
            runner = OnnxRunner(onnx_file, threads, spin)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeUnavailableError(f"runtime {runtime!r} needs onnxruntime: pip install 'sst2[onnx]'") from exc
        tokenizer, pad_id = load_tokenizer(path)
        return cls(tokenizer, runner, spec, runtime, path, batch_size, workers, pad_id=pad_id)

    @classmethod
    def from_model(cls, model, card: dict | None = None, batch_size: int = 64) -> "SentimentClassifier":
        """A classifier over a ``SentimentModel`` in memory (what ``sst2.fit`` returns)."""
        model.eval()
        return cls(model.tokenizer, TorchRunner(model), model.spec, "torch", None, batch_size, model=model, card=card)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a self-contained model directory (weights, tokenizer, spec, model card ``README.md``)."""
        path = Path(path)
        if self.model is not None:
            return self.model.save(path, card=self.card)
        src = Path(self.model_dir)  # an ONNX-loaded classifier: its directory is the model
        if path.resolve() != src.resolve():
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
        encodings = self._encoder.encode_batch(normalize_texts(list(texts), self.normalize), add_special_tokens=True)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def logits_from_ids(self, ids: list[list[int]], batch_size: int | None = None, progress=None) -> np.ndarray:
        """Logits ``(N,)`` in input order: length-sorted batches of ``batch_size``, each split further
        where its lengths spread so much that padding would cost more than another model call."""
        return score([len(x) for x in ids], batch_size or self.batch_size,
                     lambda idx: self.runner(*pad_batch([ids[i] for i in idx], self.pad_id)),
                     split=True, progress=progress, workers=self.workers).astype(np.float32, copy=False)

    def predict_logits(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.empty(0, dtype=np.float32)
        ids, _ = self.tokenize(texts)
        return self.logits_from_ids(ids, batch_size)

    @property
    def temperature(self) -> float:
        """Logits are divided by it before the sigmoid or softmax (fitted on dev; ``sst2.calibration``)."""
        return float(self.spec.get("temperature", 1.0))

    def predict_proba(self, texts: str | list[str], batch_size: int | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(N, n_classes)``, columns in :attr:`labels` order; rows sum to 1."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.empty((0, len(self.labels)))
        return probabilities(self.predict_logits(texts, batch_size), self.temperature)

    def predict(self, texts: str | list[str], batch_size: int | None = None) -> str | list[str]:
        """The label name of a text, or a list of them for a list of texts."""
        single = isinstance(texts, str)
        proba = self.predict_proba(texts, batch_size)
        names = [self.labels[int(k)] for k in proba.argmax(1)] if len(proba) else []
        return names[0] if single else names

    def predict_details(self, texts: list[str], batch_size: int | None = None, progress=None) -> list[Prediction]:
        """One :class:`Prediction` per text (label, positive probability, truncated), in input order.
        ``progress(n)`` is called after each model call with its number of texts."""
        if isinstance(texts, str):
            raise TypeError("predict_details expects a list of texts, not a single string")
        if not texts:
            return []
        ids, truncated = self.tokenize(texts)
        probs = probabilities(self.logits_from_ids(ids, batch_size, progress), self.temperature)
        names = self.labels
        return [Prediction(names[int(row.argmax())], dict(zip(names, map(float, row))), t)
                for row, t in zip(probs, truncated)]

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


def accuracy(clf: SentimentClassifier, texts: list[str], labels: list[int], batch_size: int | None = None) -> float:
    preds = clf.predict_proba(texts, batch_size).argmax(1)
    return float(np.mean(preds == np.asarray(labels))) if len(labels) else float("nan")
