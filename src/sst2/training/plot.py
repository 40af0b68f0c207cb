"""The training plot of a run, drawn from its CSV files, so a plot never needs a re-run."""

from __future__ import annotations

import csv
from pathlib import Path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``plot.png``: training loss per batch (left), train and dev accuracy per epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    history = read_csv(run_dir / "history.csv")
    epochs = read_csv(run_dir / "epochs.csv")
    out = Path(out) if out else run_dir / "plot.png"

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([int(r["step"]) for r in history], [float(r["loss"]) for r in history], lw=0.8)
    ax_loss.set(title="Training loss per batch", xlabel="step (batch)", ylabel="BCE loss")
    ax_loss.grid(alpha=0.3)
    ep = [int(r["epoch"]) for r in epochs]
    ax_acc.plot(ep, [float(r["train_accuracy"]) for r in epochs], "o-", label="train")
    if all(r["dev_accuracy"] for r in epochs):  # a run without a dev split has none
        ax_acc.plot(ep, [float(r["dev_accuracy"]) for r in epochs], "s-", label="dev")
    ax_acc.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    ax_acc.set_xticks(ep)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_reliability(run_dir: str | Path, calibration: dict) -> Path:
    """``reliability.png``: accuracy against confidence in 15 equal-width bins, before the diagonal of a
    perfectly calibrated model, for dev and test after temperature scaling (``sst2.calibration``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [k for k in ("dev", "test") if k in calibration]
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4.4), squeeze=False)
    for ax, name in zip(axes[0], splits):
        rows = [r for r in calibration[name]["reliability_after"] if r["n"]]
        width = 1 / calibration["bins"]
        ax.bar([r["lo"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge", alpha=0.7,
               edgecolor="black", label="accuracy")
        ax.plot([r["confidence"] for r in rows], [r["confidence"] for r in rows], "o", ms=3, color="tab:red",
                label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
        c = calibration[name]
        ax.set(title=f"{name}: ECE {c['ece_before']:.3f} -> {c['ece_after']:.3f} (T = {calibration['temperature']:.2f})",
               xlabel="confidence (largest probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = Path(run_dir) / "reliability.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


MAX_CONFUSION_CLASSES = 40  # beyond, no confusion.png: 150 classes drew for 94 s in 12.8 GB (metrics.json has it)
COUNTED_CLASSES = 20  # up to this many classes every cell shows its count


def plot_confusion(run_dir: str | Path, confusion: list[list[int]], labels: list[str], split: str) -> Path | None:
    """``confusion.png``: the confusion matrix of ``split`` (rows true, columns predicted), for 2 < k <=
    ``MAX_CONFUSION_CLASSES`` (None above: the figure would take minutes and gigabytes), at most 24 inches wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(labels)
    if k > MAX_CONFUSION_CLASSES:
        return None
    fig, ax = plt.subplots(figsize=(min(1.2 * k + 2, 24), min(1.1 * k + 1.5, 22)))
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=labels).plot(
        ax=ax, colorbar=k > COUNTED_CLASSES, include_values=k <= COUNTED_CLASSES,
        xticks_rotation="vertical" if k > COUNTED_CLASSES else "horizontal")
    ax.set_title(f"{split}: confusion matrix")
    fig.tight_layout()
    out = Path(run_dir) / "confusion.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
