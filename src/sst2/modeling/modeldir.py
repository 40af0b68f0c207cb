"""The model-directory format, read without torch: file names, the checked spec, the tokenizer.

``sst2.modeling.model.SentimentModel`` writes and loads a whole directory; the ONNX runtimes read
only what is here, so predicting with them never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from sst2.data.formats import json_kind
from sst2.data.splits import LABEL_NAMES
from sst2.data.text import NORMALIZERS
from sst2.errors import UserError, one_line

SPEC_FILE = "sst2_model.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
CARD_FILE = "README.md"
FORMAT = "sst2-model/1"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}  # written by sst2 export, beside the rest


class ModelDirError(UserError, RuntimeError):
    """A model directory is missing a file or holds a damaged one; the message names it."""


SPEC_FIELDS = {"model": str, "layers": list, "max_length": int, "head": dict}


def clear_for_model(path: Path) -> None:
    """Make ``path`` ready for a model to be written: a new or empty folder as it is; an sst2 model directory
    loses the files of its old model that the new one would not replace (its ONNX exports, its encoder
    folder), so they cannot be served with the new weights; any other folder is refused."""
    import shutil

    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not (path / SPEC_FILE).is_file():
        what = "a file" if not path.is_dir() else "not empty and not an sst2 model directory"
        raise ModelDirError(f"refusing to write a model into {path}: it is {what} (its files would be replaced)")
    for name in ONNX_FILES.values():
        (path / name).unlink(missing_ok=True)
    if (path / ENCODER_DIR).is_dir():
        shutil.rmtree(path / ENCODER_DIR)


def read_spec(path: str | Path) -> dict:
    """The checked ``sst2_model.json`` of a model directory (without its ``format`` field); any damage is
    a :class:`ModelDirError` naming the file and what is wrong."""
    path = Path(path)
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        hint = f"; a run directory: its model is {path / 'model'}" if (path / "model" / SPEC_FILE).is_file() else ""
        raise ModelDirError(f"{path}: not an sst2 model directory ({SPEC_FILE} not found){hint}")
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelDirError(f"{spec_file}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ModelDirError(f"{spec_file}: expected a JSON object, got {json_kind(spec)}")
    if spec.pop("format", None) != FORMAT:
        raise ModelDirError(f"{spec_file}: unsupported format (expected {FORMAT})")
    for name, tp in SPEC_FIELDS.items():
        if not isinstance(spec.get(name), tp) or isinstance(spec.get(name), bool):
            raise ModelDirError(f"{spec_file}: field {name!r} is missing or not a {tp.__name__}")
    if spec["max_length"] < 3:
        raise ModelDirError(f"{spec_file}: max_length must be >= 3, got {spec['max_length']}")
    limit = position_limit(path / ENCODER_DIR)
    if limit is not None and spec["max_length"] > limit:
        raise ModelDirError(f"{spec_file}: max_length {spec['max_length']} is more than the encoder's "
                            f"{limit} positions")
    window = spec.get("window_length", spec["max_length"])
    if not isinstance(window, int) or isinstance(window, bool) or not 3 <= window <= spec["max_length"]:
        raise ModelDirError(f"{spec_file}: window_length must be an integer in 3..max_length, got {window!r}")
    norm = spec.get("text_normalization", "none")
    if norm not in NORMALIZERS:
        raise ModelDirError(f"{spec_file}: unknown text_normalization {norm!r} (one of {', '.join(NORMALIZERS)})")
    _check_outputs(spec, spec_file)
    return spec


def _check_outputs(spec: dict, spec_file: Path) -> None:
    """The head's outputs, the label names and the temperature must agree: a label list of another length,
    a name twice or a temperature <= 0 gave wrong labels or probabilities without a word (or a traceback)."""
    import math

    outputs = spec["head"].get("num_labels", 1)
    if not isinstance(outputs, int) or isinstance(outputs, bool) or outputs < 1:
        raise ModelDirError(f"{spec_file}: head.num_labels must be an integer >= 1, got {outputs!r}")
    labels = spec.get("labels", list(LABEL_NAMES))  # a model saved without labels: SST-2's
    classes = 2 if outputs == 1 else outputs
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ModelDirError(f"{spec_file}: labels must be a list of label names (strings), got {labels!r}")
    if len(set(labels)) != len(labels) or len(labels) != classes:
        raise ModelDirError(f"{spec_file}: labels must be {classes} distinct names (the head has {outputs} "
                            f"output{'s' * (outputs > 1)}), got {labels!r}")
    t = spec.get("temperature", 1.0)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise ModelDirError(f"{spec_file}: temperature must be a finite number > 0, got {t!r}")


def tokenizer_config(encoder_dir: str | Path) -> dict:
    """The ``tokenizer_config.json`` of an encoder folder (its padding token, truncation side, ...), or {}."""
    try:
        config = json.loads((Path(encoder_dir) / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def load_tokenizer(path: str | Path):
    """The tokenizer of a model directory as a ``tokenizers.Tokenizer`` read from ``encoder/tokenizer.json``,
    its padding id and its truncation side (``tokenizer_config.json``; None if it does not say): what the
    ONNX runtimes need, loaded without transformers or torch."""
    from tokenizers import Tokenizer

    encoder_dir = Path(path) / ENCODER_DIR
    if not encoder_dir.is_dir():
        raise ModelDirError(f"{encoder_dir}: missing (a model directory holds the encoder it was trained with)")
    try:
        tokenizer = Tokenizer.from_file(str(encoder_dir / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises its own error types
        raise ModelDirError(f"{encoder_dir / 'tokenizer.json'}: cannot load the tokenizer ({one_line(exc)})") from None
    config = tokenizer_config(encoder_dir)
    pad = config.get("pad_token") or "[PAD]"
    pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else pad
    return tokenizer, tokenizer.token_to_id(str(pad)) or 0, config.get("truncation_side")


def position_limit(encoder_dir: str | Path) -> int | None:
    """The most tokens the encoder of ``encoder_dir`` takes (``max_position_embeddings``), if it says."""
    try:
        value = json.loads((Path(encoder_dir) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None
