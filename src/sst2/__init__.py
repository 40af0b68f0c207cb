"""sst2: efficient transformer sentiment classifiers for SST-2, fast on a plain CPU."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import sst2`` stays cheap (no torch / transformers) until the classifier is used.
    if name == "Classifier":
        from sst2.inference.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'sst2' has no attribute {name!r}")
