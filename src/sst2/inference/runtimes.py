"""Runtimes: each maps padded ``input_ids, attention_mask (B, T) int64`` to ``logits (B,)``.

* ``torch``: the ``SentimentModel`` itself (the reference path);
* ``onnx``: ``model.onnx`` (encoder + head, written by ``sst2 export``) on onnxruntime;
* ``onnx-int8``: ``model.int8.onnx``, the same graph with dynamically quantized int8 MatMul weights;
* ``numpy``: the static tier only, its convolutions folded into lookup tables (``sst2.inference.folded``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sst2.errors import UserError, one_line
from sst2.modeling.modeldir import ONNX_FILES

RUNTIMES = ("torch", "onnx", "onnx-int8", "numpy")
# The command that writes each ONNX file, for the error message when it is missing.
EXPORT_COMMANDS = {"onnx": "sst2 export --model-dir {dir}", "onnx-int8": "sst2 export --model-dir {dir} --int8"}


def runtimes_for(spec: dict) -> tuple[str, ...]:
    """The runtimes that can run a model of this ``sst2_model.json`` spec: ``numpy`` only for the static
    tier (a static model with a cnn head), the others for every model."""
    static = spec.get("model") == "static" and (spec.get("head") or {}).get("kind") == "cnn"
    return RUNTIMES if static else tuple(r for r in RUNTIMES if r != "numpy")


class RuntimeUnavailableError(UserError, RuntimeError):
    """The requested runtime cannot be used with this model directory or environment."""


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class TorchRunner:
    """The reference path: ``SentimentModel.forward`` under inference mode."""

    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))  # (B,)
        return logits.float().numpy()


def onnx_session_options(threads: int | None = None, spin: bool = True):
    """Settings measured to be fastest here for a small encoder on a few CPU cores: all graph
    fusions, one intra-op pool sized to the physical cores (hyper-threads only contend for the same
    vector units), and sequential execution (the graph is a chain; parallel branches add overhead).

    ``spin=False`` makes idle pool threads sleep instead of busy-waiting between ops: slightly slower
    on an idle machine, but a server's event loop (or any other process) then gets the cores back.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or physical_cores()
    so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: the quantized graph makes onnxruntime warn about shapes
    return so


class OnnxRunner:
    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True):
        import onnxruntime as ort

        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), onnx_session_options(threads, spin),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own error types for damaged graphs
            raise RuntimeUnavailableError(f"{path}: not a loadable ONNX model ({one_line(exc)}); re-run "
                                          f"'sst2 export' to write it again") from None
        self.threads = threads or physical_cores()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return logits.astype(np.float32, copy=False)  # (B,)


def onnx_path(model_dir: str | Path, runtime: str) -> Path:
    """The ONNX file of ``runtime``; a clear error naming the export command if it is missing."""
    path = Path(model_dir) / ONNX_FILES[runtime]
    if not path.is_file():
        cmd = EXPORT_COMMANDS[runtime].format(dir=model_dir)
        raise RuntimeUnavailableError(f"runtime {runtime!r} needs {path}, which does not exist: run '{cmd}' first")
    return path
