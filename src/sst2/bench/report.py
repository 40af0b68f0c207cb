"""The benchmark's summaries (complexity slopes, cache speed-ups), its Markdown report and its plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst2.bench.cases import BERT_BASE, MIN_TIMED, TRAIN_SENTENCES, fit_slope, preset_config


def curve_key(r: dict) -> tuple:
    return (r["case"], r["model"], r["features"], r["backbone"], r["batch_size"])


def fit_slopes(rows: list[dict], fit_from: int) -> list[dict]:
    """One slope per curve over lengths >= ``fit_from`` (else its top three lengths)."""
    curves: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["case"] in ("latency", "train_cost") and r["status"] == "ok":
            curves.setdefault(curve_key(r), []).append(r)
    out = []
    for (case, model, features, backbone, b), rs in curves.items():
        rs = sorted(rs, key=lambda r: r["seq_len"])
        upper = [r for r in rs if r["seq_len"] >= fit_from]
        pts = upper if len(upper) >= 2 else rs[-3:]
        if len(pts) < 2:
            continue
        out.append({
            "case": case, "model": model, "features": features, "backbone": backbone, "batch_size": b,
            "fit_min_len": pts[0]["seq_len"], "fit_max_len": pts[-1]["seq_len"], "points": len(pts),
            "time_slope": round(fit_slope([r["seq_len"] for r in pts], [r["latency_ms_p50"] for r in pts]), 3),
        })
    return out


def cache_speedups(rows: list[dict]) -> list[dict]:
    """Training step with the encoder per batch versus cached states, per backbone and head."""
    ok = {(r["backbone"], r["head"], r["features"]): r for r in rows
          if r["case"] == "train_step" and r["status"] == "ok"}
    out = []
    for (backbone, head, features), enc in ok.items():
        cached = ok.get((backbone, head, "cached"))
        if features != "encoder" or cached is None:
            continue
        out.append({
            "backbone": backbone, "head": head, "batch_size": enc["batch_size"], "seq_len": enc["seq_len"],
            "batches_per_epoch": round(TRAIN_SENTENCES / enc["batch_size"], 2),
            "encoder_s_per_batch": round(enc["latency_ms_p50"] / 1e3, 4),
            "cached_s_per_batch": round(cached["latency_ms_p50"] / 1e3, 4),
            "encoder_s_per_epoch": enc["epoch_s_p50"], "cached_s_per_epoch": cached["epoch_s_p50"],
            "speedup": round(enc["latency_ms_p50"] / cached["latency_ms_p50"], 1),
        })
    return out



def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _pivot(rows: list[dict], case: str, value: str, lengths: list[int]) -> list[str]:
    """A markdown table: one line per curve, one column per length."""
    lines = ["| model | features | batch | " + " | ".join(map(str, lengths)) + " |",
             "|---|---|---:|" + "---:|" * len(lengths)]
    curves: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["case"] == case:
            curves.setdefault(curve_key(r), {})[r["seq_len"]] = r
    for (_, model, features, _, b), by_len in curves.items():
        cells = []
        for t in lengths:
            r = by_len.get(t)
            cells.append("-" if r is None else _fmt(r[value]) if r["status"] == "ok" else r["status"])
        lines.append(f"| {model} | {features} | {b} | " + " | ".join(cells) + " |")
    return lines


def _describe_preset(name: str) -> str:
    m = preset_config(name).model
    if m.layers == "all":
        layers = "all hidden states concatenated" if m.combine == "concat" else "a learned mix of all hidden states"
    else:
        layers = f"hidden states {m.layers}"
    lstm = f"{'bidirectional ' if m.bidirectional else ''}LSTM {m.lstm_size}"
    return f"{layers}, projection {m.proj_size}, {lstm}, {m.pooling} pooling"


def _conditions(result: dict) -> list[str]:
    """The report's "Conditions" section: machine, versions, inputs, timing and memory method."""
    env, s, rows = result["environment"], result["conditions"], result["rows"]
    v = env["versions"]
    methods = ", ".join(sorted({r["memory_method"] for r in rows if r["memory_method"]})) or "-"
    lines = [
        "# sst2 efficiency benchmark (measured)", "",
        f"Command: `{result['command']}` ({result['started']}, {result['duration_s']:.0f} s).", "",
        "## Conditions", "",
        f"- CPU: {env['cpu_model']}; {env['cpu_count']} logical CPUs; torch threads: {env['threads']}; "
        f"device: {s['device']}.",
        f"- Load average (1 min) at start / end: {env['load_avg_start']} / {env['load_avg_end']} "
        "(above 0 means other work shared the CPU).",
        f"- Versions: python {v.get('python')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
        f"sst2 {v.get('sst2')}.",
        f"- Backbone: {env['backbone']['name']} ({env['backbone']['layers']} layers, hidden "
        f"{env['backbone']['hidden_size']}, {env['backbone']['params']:,} parameters, weights as loaded).",
    ]
    if s["bert_base"]:
        lines.append(f"- {BERT_BASE}: 12 layers, hidden 768, about 109 M parameters; random weights are "
                     "enough to time it (same shapes and operations as trained weights).")
    lines += [
        "- Inputs: random token ids of exactly `seq_len` tokens, no padding, attention mask all ones.",
        f"- Timing: at least 1 and up to {s['warmup']} warm-up iterations, then at least {MIN_TIMED} and up "
        f"to {s['iters']} timed iterations or {s['seconds']} s per case, whichever first "
        "(`time.perf_counter()`); times are per iteration (a forward pass, or a whole training step).",
        f"- Memory: peak RSS of the case ({methods}: the kernel's RSS "
        "high-water mark, reset before each case); `delta` = peak minus the RSS before the case, "
        "with weights and inputs already loaded (= activations, gradients, optimizer state, workspace).",
        f"- Skipped (to bound the sweep's time): inference cases above {s['max_tokens']} tokens per batch "
        f"(`--max-tokens`), fine-tune steps above {s['max_train_tokens']} (`--max-train-tokens`).",
        f"- Efficient head: preset `improved` ({_describe_preset('improved')}); `seed` is the reference head "
        f"({_describe_preset('seed')}). Vanilla: the same encoder + a linear layer on mean-pooled states.",
        "",
    ]
    return lines


def render_markdown(result: dict) -> str:
    s, rows = result["conditions"], result["rows"]
    lines = _conditions(result)
    if result["cache_speedup"]:
        b = result["cache_speedup"][0]
        lines += [
            f"## 1. Training step: encoder per batch vs cached features (batch {b['batch_size']}, "
            f"{b['seq_len']} tokens)", "",
            f"An epoch is {TRAIN_SENTENCES:,} sentences = {b['batches_per_epoch']} batches of {b['batch_size']}. "
            f"Sequence length {b['seq_len']}: SST-2 train sentences average 25 tokens (max 80) with "
            "special tokens.", "",
            "| backbone | head | encoder per batch: s / batch | s / epoch | cached: s / batch | s / epoch | speed-up |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["cache_speedup"]:
            lines.append(f"| {r['backbone']} | {r['head']} | {r['encoder_s_per_batch']:.3f} | "
                         f"{r['encoder_s_per_epoch']:.1f} | {r['cached_s_per_batch']:.4f} | "
                         f"{r['cached_s_per_epoch']:.2f} | {r['speedup']:.1f}x |")
        lines.append("")
    lengths = s["lengths"]
    if any(r["case"] == "latency" for r in rows):
        lines += ["## 2. Inference latency (ms per batch, median)", ""]
        lines += _pivot(rows, "latency", "latency_ms_p50", lengths)
        lines += ["", "Samples per second:", ""] + _pivot(rows, "latency", "samples_per_s", lengths) + [""]
    if any(r["case"] == "train_cost" for r in rows):
        lines += [f"## 3. Training step cost (ms per step, median, batch {s['train_batch_size']})", "",
                  "`cached`: head step on cached token states; `encoder`: full fine-tune step (AdamW).", ""]
        lines += _pivot(rows, "train_cost", "latency_ms_p50", lengths) + [""]
    if any(r["case"] in ("latency", "train_cost") for r in rows):
        lines += ["## 4. Peak memory above the case's baseline (MB of RSS)", ""]
        for case in ("latency", "train_cost"):
            if any(r["case"] == case for r in rows):
                lines += [f"`{case}`:", ""] + _pivot(rows, case, "peak_rss_delta_mb", lengths) + [""]
    if result["slopes"]:
        lines += ["## 5. Fitted complexity: log-log slope of time against length", "",
                  "1 = linear in length, 2 = quadratic. Fitted on the median times over the range shown.", "",
                  "| case | model | features | batch | lengths | slope |", "|---|---|---|---:|---|---:|"]
        for r in result["slopes"]:
            lines.append(f"| {r['case']} | {r['model']} | {r['features']} | {r['batch_size']} | "
                         f"{r['fit_min_len']}-{r['fit_max_len']} | {r['time_slope']:.2f} |")
        lines.append("")
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        lines += ["## Errors", ""] + [f"- {r['case']} {r['model']} b={r['batch_size']} T={r['seq_len']}: "
                                      f"{r['error']}" for r in errors] + [""]
    lines += ["Plots: `latency_vs_length.png`, `memory_vs_length.png`. Every row: `bench.json`.", ""]
    return "\n".join(lines)


def plot(result: dict, out_dir: Path) -> list[Path]:
    """``latency_vs_length.png`` and ``memory_vs_length.png``: one panel per case and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok" and r["case"] in ("latency", "train_cost")]
    panels = sorted({(r["case"], r["batch_size"]) for r in rows}, key=lambda p: (p[0] != "latency", p[1]))
    paths = []
    for fname, key, ylabel in (("latency_vs_length.png", "latency_ms_p50", "ms per iteration (median)"),
                               ("memory_vs_length.png", "peak_rss_delta_mb", "peak RSS above baseline (MB)")):
        fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
        for ax, (case, b) in zip(axes[0], panels):
            curves: dict[tuple, list[dict]] = {}
            for r in rows:
                if (r["case"], r["batch_size"]) == (case, b):
                    curves.setdefault((r["model"], r["features"]), []).append(r)
            for (model, features), rs in curves.items():
                rs.sort(key=lambda r: r["seq_len"])
                label = f"{model} ({features})" if case == "train_cost" else model
                # log axes: an RSS delta of ~0 (a case that fits in memory already held) is drawn at 0.1 MB
                ax.plot([r["seq_len"] for r in rs], [max(r[key], 0.1) for r in rs], "o-", ms=3, label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ticks = sorted({r["seq_len"] for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            if key == "latency_ms_p50" and curves:  # guides: O(n) and O(n^2) through the slowest curve's top
                top = max((rs[-1] for rs in curves.values()), key=lambda r: r[key])
                xs = np.array(sorted({r["seq_len"] for r in rows}), float)
                for k, ls in ((1, ":"), (2, "--")):
                    ax.plot(xs, top[key] * (xs / top["seq_len"]) ** k, ls, color="grey", lw=0.8, label=f"O(n^{k})")
            title = "inference" if case == "latency" else "training step"
            ax.set(title=f"{title}, batch {b}", xlabel="sequence length (tokens)", ylabel=ylabel)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        paths.append(out_dir / fname)
    return paths
