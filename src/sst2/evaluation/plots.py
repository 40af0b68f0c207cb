"""The comparison plots (``sst2 compare``)."""

from __future__ import annotations

from pathlib import Path


def plot_compare(rows: list[dict], out: str | Path, batch_size: int = 64) -> Path:
    """``compare.png``: dev and test accuracy (± std over seeds), training time, inference time per sentence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["label"] for r in rows]
    y = np.arange(len(rows))
    timed = [r for r in rows if "b1_ms_p50" in r]
    fig, axes = plt.subplots(1, 3 if timed else 2, figsize=(15 if timed else 10, 1.2 + 0.6 * len(rows)),
                             sharey=True)

    def val(r, key):
        v = r.get(key)
        return np.nan if v is None else v

    ax = axes[0]
    h = 0.38
    for off, split in ((-h / 2, "dev"), (h / 2, "test")):
        ax.barh(y + off, [val(r, f"{split}_accuracy_mean") for r in rows], h,
                xerr=[val(r, f"{split}_accuracy_std") or 0 for r in rows], label=split, capsize=3)
    accs = [val(r, k) for r in rows for k in ("dev_accuracy_mean", "test_accuracy_mean")]
    lo, hi = (np.nanmin(accs), np.nanmax(accs)) if not np.all(np.isnan(accs)) else (0.5, 1.0)
    ax.set_xlim(max(0.0, np.floor((lo - 0.03) * 50) / 50), min(1.0, np.ceil((hi + 0.03) * 50) / 50))
    ax.set(title="Accuracy (mean ± std over seeds)", xlabel="accuracy", yticks=y, yticklabels=labels)
    ax.legend(loc="lower right")

    ax = axes[1]
    ax.barh(y, [val(r, "train_seconds_mean") for r in rows], 0.6, xerr=[val(r, "train_seconds_std") or 0 for r in rows],
            capsize=3, color="tab:gray")
    ax.set(title="Training time (training loop)", xlabel="seconds")

    if timed:
        ax = axes[2]
        key = f"b{batch_size}_ms_per_sentence_p50"
        ax.barh(y - h / 2, [val(r, "b1_ms_p50") for r in rows], h, label="batch 1")
        ax.barh(y + h / 2, [val(r, key) for r in rows], h, label=f"batch {batch_size}")
        ax.set(title="Inference time per sentence (median)", xlabel="ms per sentence")
        ax.legend(loc="lower right")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def plot_pareto(rows: list[dict], out: str | Path, batch_size: int = 64) -> Path:
    """``pareto.png``: test accuracy (dev where a run has no test score) against sentences per second at
    batch ``batch_size`` (log scale), with the models no other model beats on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"b{batch_size}_sentences_per_s"
    points = []
    for r in rows:
        acc = r.get("test_accuracy_mean") if r.get("test_accuracy_mean") is not None else r.get("dev_accuracy_mean")
        if r.get(key) and acc is not None:
            points.append((r[key], acc, r["label"], r.get("test_accuracy_mean") is None))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for speed, acc, label, dev_only in points:
        ax.scatter([speed], [acc], marker="s" if dev_only else "o", s=40)
        ax.annotate(label + (" (dev)" if dev_only else ""), (speed, acc), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in points)]
    front.sort()
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", alpha=0.7, label="Pareto front")
        ax.legend(loc="lower left")
    ax.set_xscale("log")
    ax.set(xlabel=f"sentences per second, batch {batch_size} (log scale)", ylabel="test accuracy",
           title="Accuracy against inference speed (measured in one process)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def plot_depth(rows: list[dict], out: str | Path, batch_size: int = 64) -> Path:
    """``depth.png``: accuracy (± std over seeds) and inference time per sentence against the number of encoder
    layers a model runs, one line per model kind; rows without an encoder (fastText, static) are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in rows if r.get("encoder_layers")), key=lambda r: r["encoder_layers"])
    fig, (acc_ax, ms_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model in dict.fromkeys(r.get("model") for r in rows):
        rs = [r for r in rows if r.get("model") == model]
        layers = [r["encoder_layers"] for r in rs]
        for split, marker in (("dev", "o"), ("test", "s")):
            means = [r.get(f"{split}_accuracy_mean") for r in rs]
            acc_ax.errorbar(layers, [float("nan") if m is None else m for m in means],
                            yerr=[r.get(f"{split}_accuracy_std") or 0 for r in rs], marker=marker, capsize=3,
                            label=f"{model}, {split}")
        for key, name in (("b1_ms_p50", "batch 1"), (f"b{batch_size}_ms_per_sentence_p50", f"batch {batch_size}")):
            if any(r.get(key) for r in rs):
                ms_ax.plot(layers, [r.get(key) or float("nan") for r in rs], marker="o", label=f"{model}, {name}")
    acc_ax.set(title="Accuracy against encoder depth", xlabel="encoder layers run", ylabel="accuracy")
    ms_ax.set(title="Inference time per sentence (median)", xlabel="encoder layers run", ylabel="ms per sentence")
    ms_ax.set_ylim(bottom=0)
    for ax in (acc_ax, ms_ax):
        ax.set_xticks(sorted({r["encoder_layers"] for r in rows}))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="gray")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
