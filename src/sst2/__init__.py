"""sst2: efficient transformer sentiment classifiers for SST-2, fast on a plain CPU."""

__version__ = "0.1.0"
