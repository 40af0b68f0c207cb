"""sst2: efficient transformer sentiment classifiers, fast on a plain CPU.

    from sst2 import SentimentClassifier, fit
    clf, report = fit(train_texts, train_labels, dev_texts=dev_texts, dev_labels=dev_labels)
    clf.predict("a gorgeous , witty movie .")   # "positive"
"""

__version__ = "0.2.0"
__all__ = ["SentimentClassifier", "fit", "train", "distill", "TrainConfig", "Classifier"]

# Lazy: ``import sst2`` stays cheap (no torch / transformers) until a name is used.
_NAMES = {"SentimentClassifier": "sst2.inference.classifier", "Classifier": "sst2.inference.classifier",
          "fit": "sst2.api", "distill": "sst2.api", "train": "sst2.training.api", "TrainConfig": "sst2.training.config"}


def __getattr__(name: str):
    if name in _NAMES:
        from importlib import import_module

        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'sst2' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))
