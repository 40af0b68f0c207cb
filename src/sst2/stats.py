"""Statistics over seeds: the one definition of "mean ± std" used by training summaries and compare."""

from __future__ import annotations

import numpy as np


def seed_stat(values: list) -> dict | None:
    """Mean, sample standard deviation (ddof=1; 0 for one value), n and the values; ``None`` if any
    value is missing."""
    if not values or any(v is None for v in values):
        return None
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": len(arr), "values": list(values)}


def format_pm(stat: dict | None, fmt: str = ".4f") -> str:
    return "n/a" if stat is None else f"{stat['mean']:{fmt}} ± {stat['std']:{fmt}}"
