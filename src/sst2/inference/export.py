"""``sst2 export``: the whole model after tokenization (encoder + head) as one ONNX graph.

``input_ids, attention_mask (B, T) int64 -> logits (B,) float32``, with batch and sequence axes
dynamic, written into the model directory as ``model.onnx``; ``--int8`` also writes
``model.int8.onnx`` with dynamically quantized weights (onnxruntime.quantization). Each file is
checked against the PyTorch model on fixed sentences before the command reports success.

With ``--fuse`` the encoder's subgraphs are fused into onnxruntime's transformer kernels (one
``Attention`` op per layer instead of ~20 reshapes, transposes, matmuls and a softmax; embeddings +
LayerNorm, residual + LayerNorm, bias + GELU) with ``onnxruntime.transformers.optimizer``. The
encoder is traced with its eager attention for that: the fusion recognises the eager pattern, not
the one of PyTorch's fused scaled-dot-product attention. On the 2-core machine of the README the
fused int8 graph was 12% faster in one state of the CPU and 4-10% slower in the other, more
frequent one, so the plain graph is the default.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from sst2.config import ExportConfig
from sst2.errors import UserError
from sst2.inference.classifier import SentimentClassifier
from sst2.inference.runtimes import ONNX_FILES, OnnxRunner, TorchRunner

EXPORT_PREFIX = ".export-"  # MODEL/.export-PID-XXXX: an export's files until their parity checks pass

# Fixed sentences for the parity check: short and long, positive and negative, one with padding
# to a much longer neighbour in its batch.
PARITY_SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine .",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales .",
    "bad",
    "the story is boring , the plot is dull and the ending is silly .",
    "good film",
]
FP32_TOLERANCE = 1e-4  # max |probability difference| accepted between model.onnx and PyTorch


class ExportError(UserError, RuntimeError):
    pass


@contextlib.contextmanager
def eager_attention(encoder):
    """Run ``encoder`` with its eager attention inside the block (restored after), when it has one."""
    config = getattr(encoder, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(encoder, "set_attn_implementation"):
        yield
        return
    encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        encoder.set_attn_implementation(before)


def export_onnx(model, path: str | Path, opset: int = 17, eager: bool = False) -> Path:
    """Trace ``model(input_ids, attention_mask) -> logits`` into ``path`` (TorchScript exporter).

    The TorchScript-based exporter is used (``dynamo=False``): it handles the LSTM and the
    length-dependent gathers of the head as plain ONNX ops, and tracing with a padded batch of two
    keeps the attention-mask path in the graph. ``eager``: trace the encoder's eager attention
    (the form :func:`fuse_transformer` recognises); the model itself is left as it was.
    """
    import torch

    path = Path(path)
    # (2, 8): row 0 padded, row 1 full, so neither padding nor a full row is specialised away.
    ids = torch.tensor([[101, 7, 8, 9, 102, 0, 0, 0], [101, 7, 8, 9, 10, 11, 12, 102]]) % model.tokenizer.vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])
    axes = {0: "batch", 1: "sequence"}
    encoder = getattr(model.backbone, "encoder", None)  # the static tier has none
    attention = eager_attention(encoder) if eager and encoder is not None else contextlib.nullcontext()
    with torch.inference_mode(), warnings.catch_warnings(), attention:
        # Tracer warnings about Python-level branches on shapes (attention-mask padding, LSTM batch
        # size) are expected: the branches are shape-independent here, and parity is checked after.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return path


def fuse_transformer(src: str | Path, dst: str | Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse the encoder's subgraphs into onnxruntime's transformer ops; returns {fused op: count}.

    Only patterns the optimizer recognises are replaced, so an unfamiliar architecture gets a graph
    that is correct but less fused; the caller checks parity with PyTorch either way.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # opt_level 0: the fusions only; onnxruntime applies its own graph optimizations at load time
        fused = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0)
    fused.save_model_to_file(str(dst))
    return {op: n for op, n in fused.get_fused_operator_statistics().items() if n}


def quantize_int8(src: str | Path, dst: str | Path, per_channel: bool = True, reduce_range: bool = False,
                  keep_fp32: tuple[str, ...] = ()) -> Path:
    """Dynamic int8 quantization of the MatMul weights (activations quantized on the fly).

    MatMul and (with ``--fuse``) Attention are quantized: they hold nearly all encoder and
    head-projection FLOPs, while the LSTM's recurrence is small and quantizing it costs accuracy for no
    measurable speed. Per-channel scales keep the accuracy of the 384-wide projections; ``reduce_range``
    (7-bit weights) is only needed on CPUs without VNNI where saturation of the int16 accumulation in
    AVX2 kernels can hurt accuracy. ``keep_fp32``: regular expressions; the ops whose node names match
    one of them stay in fp32 (``scripts/int8_agreement.py`` measures such choices).
    """
    import re

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference + graph cleanup first, as the quantization tools recommend.
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_optimization=False, skip_symbolic_shape=True)
        exclude = []
        if keep_fp32:
            graph = onnx.load(str(pre), load_external_data=False).graph
            exclude = [n.name for n in graph.node if any(re.search(k, n.name) for k in keep_fp32)]
        quantize_dynamic(
            str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
            per_channel=per_channel, reduce_range=reduce_range, nodes_to_exclude=exclude,
            # ONNX shape inference does not type the outputs of onnxruntime's fused ops; they are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return Path(dst)


def parity(reference: SentimentClassifier, candidate: SentimentClassifier, texts: list[str] | None = None) -> dict:
    """Agreement of ``candidate`` with ``reference`` on fixed sentences: label matches and max |dp|."""
    texts = texts or PARITY_SENTENCES
    ref = reference.predict_details(texts, batch_size=4)  # batches of 4 mix lengths, so padding is exercised
    got = candidate.predict_details(texts, batch_size=4)
    return {
        "n": len(texts),
        "same_labels": sum(a.label == b.label for a, b in zip(ref, got)),
        "max_abs_prob_diff": max(abs(pa - pb) for a, b in zip(ref, got)
                                 for pa, pb in zip(a.probabilities.values(), b.probabilities.values())),
    }


def _write_checked(cfg: ExportConfig, model, reference, model_dir: Path, tmp: Path, threads, report: dict) -> None:
    """Write each ONNX file into ``tmp``, check it against PyTorch, then move it into ``model_dir``: an
    interrupted or failed export leaves no unchecked file and keeps the earlier export."""
    t0 = time.perf_counter()
    fp32, final = tmp / ONNX_FILES["onnx"], model_dir / ONNX_FILES["onnx"]
    fused: dict[str, int] = {}
    if cfg.fuse and getattr(model.backbone, "encoder", None) is None:
        raise ExportError("--fuse fuses a transformer encoder's subgraphs; this static model has no encoder")
    if cfg.fuse:
        traced = export_onnx(model, tmp / "traced.onnx", cfg.opset, eager=True)
        enc_cfg = model.backbone.encoder.config
        fused = fuse_transformer(traced, fp32, enc_cfg.num_attention_heads, enc_cfg.hidden_size)
    else:
        export_onnx(model, fp32, cfg.opset)
    check = parity(reference, SentimentClassifier(model.tokenizer, OnnxRunner(fp32, threads), model.spec, "onnx"))
    if check["same_labels"] != check["n"] or check["max_abs_prob_diff"] > FP32_TOLERANCE:
        raise ExportError(f"the exported graph does not match the PyTorch model ({check}); nothing was written")
    report["files"]["onnx"] = {"path": str(final), "mb": round(fp32.stat().st_size / 2**20, 2),
                               "seconds": round(time.perf_counter() - t0, 2), "fused_ops": fused, "parity": check}
    if cfg.int8:
        t0 = time.perf_counter()
        q = quantize_int8(fp32, tmp / ONNX_FILES["onnx-int8"], per_channel=cfg.per_channel,
                          reduce_range=cfg.reduce_range)
        check = parity(reference, SentimentClassifier(model.tokenizer, OnnxRunner(q, threads), model.spec, "onnx-int8"))
        # int8 is approximate by design: its accuracy change is measured on dev by scripts/latency.py.
        report["files"]["onnx-int8"] = {"path": str(model_dir / q.name), "mb": round(q.stat().st_size / 2**20, 2),
                                        "seconds": round(time.perf_counter() - t0, 2), "parity": check}
        os.replace(q, model_dir / q.name)
    os.replace(fp32, final)


def _remove_stale_temporaries(model_dir: Path) -> None:
    """The temporary folders of exports that were killed (``kill -9``): their process no longer runs."""
    from sst2.system import remove_orphans

    remove_orphans(model_dir, EXPORT_PREFIX, r"-[a-z0-9_]{8}", dirs=True)  # tempfile's 8 random characters


def export(cfg: ExportConfig) -> dict:
    from sst2.modeling.model import SentimentModel
    from sst2.system import process_tag, set_threads

    threads = set_threads(cfg.threads)
    model_dir = Path(cfg.model_dir)
    model = SentimentModel.load(model_dir)
    reference = SentimentClassifier(model.tokenizer, TorchRunner(model), model.spec, "torch", model_dir)
    report: dict = {"model_dir": str(model_dir), "files": {}}

    _remove_stale_temporaries(model_dir)
    # the files are renamed into place once checked; the folder's name carries this process's id
    with tempfile.TemporaryDirectory(prefix=f"{EXPORT_PREFIX}{process_tag()}-", dir=model_dir) as tmp:
        _write_checked(cfg, model, reference, model_dir, Path(tmp), threads, report)
    if not cfg.quiet and not cfg.json:  # with --json, stdout holds the JSON alone
        for name, info in report["files"].items():
            p = info["parity"]
            fused = ", ".join(f"{n} {op}" for op, n in info.get("fused_ops", {}).items())
            print(f"{name}: wrote {info['path']} ({info['mb']} MB, {info['seconds']} s"
                  f"{'; fused: ' + fused if fused else ''}); on {p['n']} check sentences {p['same_labels']} "
                  f"labels agree with PyTorch, max |prob diff| {p['max_abs_prob_diff']:.2e}")
    if cfg.json:
        print(json.dumps(report, indent=2))
    return report

