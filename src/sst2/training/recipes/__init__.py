"""One module per recipe; each has ``setup(cfg, splits, ctx) -> Job`` (``sst2.training.engine.Job``).

``ctx.features(backbone, splits)`` gives the frozen states of the splits (from the feature cache), so a
recipe does not need to know where the cache is or how progress is shown.
"""

from __future__ import annotations

from importlib import import_module

MODULES = {"efficient": "efficient", "vanilla": "full", "partial": "partial", "lora": "lora", "static": "static"}


def setup(cfg, splits, ctx):
    """The :class:`~sst2.training.engine.Job` of ``cfg.model.recipe``."""
    return import_module(f"{__name__}.{MODULES[cfg.model.recipe]}").setup(cfg, splits, ctx)
