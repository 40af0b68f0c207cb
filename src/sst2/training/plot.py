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
