"""A whole classifier: backbone (encoder) + head, and its self-contained ``model/`` directory.

Layout of a saved model directory::

    model/
      sst2_model.json     # what to build: model type, head config, layers kept, max length, text normalization
      head.safetensors    # head weights
      encoder/            # the encoder and its tokenizer (Hugging Face save_pretrained format)
      README.md           # the model card (sst2.modeling.card)

It is loadable without the training data and without network access.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sst2.modeling.backbone import Backbone, load_backbone_parts
from sst2.errors import UserError, one_line
from sst2.system import as_umask_allows
from sst2.modeling.heads import HeadConfig, build_head
from sst2.modeling.static import StaticBackbone
from sst2.modeling.modeldir import (CARD_FILE, ENCODER_DIR, FORMAT, HEAD_FILE, SPEC_FILE, ModelDirError,
                                    clear_for_model, read_spec)



class SentimentModel(nn.Module):
    """``forward(input_ids, attention_mask) -> logits (B,)``; positive class when logit > 0."""

    def __init__(self, backbone: Backbone, head: nn.Module, spec: dict):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spec = spec

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    @property
    def max_length(self) -> int:
        return int(self.spec["max_length"])

    @property
    def text_normalization(self) -> str:
        """Applied to every text before tokenization (``sst2.text``); older model directories: none."""
        return self.spec.get("text_normalization", "none")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids, attention_mask)  # (B, T, K, H)
        return self.head(states, attention_mask.sum(1))

    def save(self, path: str | Path, card: dict | None = None) -> Path:
        """Write the model directory; ``card``: training info for the model card (``sst2.modeling.card``)."""
        from sst2.modeling.card import render

        path = Path(path)
        clear_for_model(path)
        path.mkdir(parents=True, exist_ok=True)
        if isinstance(self.backbone, StaticBackbone):
            self.backbone.save(path / ENCODER_DIR)
        else:
            self.backbone.encoder.save_pretrained(path / ENCODER_DIR)
            self.backbone.tokenizer.save_pretrained(path / ENCODER_DIR)
        state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, path / HEAD_FILE, metadata={"format": FORMAT})
        for weights in path.rglob("*.safetensors"):  # safetensors writes them 0600
            as_umask_allows(weights)
        (path / SPEC_FILE).write_text(json.dumps({"format": FORMAT, **self.spec}, indent=2) + "\n")
        (path / CARD_FILE).write_text(render(self.spec, card))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SentimentModel":
        path = Path(path)
        spec = read_spec(path)
        encoder_dir = path / ENCODER_DIR
        if not encoder_dir.is_dir():  # never looked up as a hub name
            raise ModelDirError(f"{encoder_dir}: missing (a model directory holds the encoder it was trained with)")
        static = spec["model"] == "static"
        if not (encoder_dir / "tokenizer.json").is_file():  # transformers would build an empty vocabulary
            raise ModelDirError(f"{encoder_dir / 'tokenizer.json'}: missing (a model directory holds the tokenizer "
                                "it was trained with)")
        try:  # the encoder's own files: a missing or damaged one is named as such
            parts = StaticBackbone.load(encoder_dir) if static else load_backbone_parts(encoder_dir)
        except (OSError, TypeError, ValueError, UserError) as exc:
            raise ModelDirError(f"{encoder_dir}: cannot load the encoder ({one_line(exc)})") from None
        try:
            if static:
                backbone = parts
            else:
                encoder, tokenizer, source = parts
                backbone = Backbone(encoder, tokenizer, tuple(spec["layers"]), source=spec.get("backbone", source))
            head = build_head(HeadConfig(**spec["head"]))
        except (TypeError, ValueError, UserError) as exc:
            raise ModelDirError(f"{path / SPEC_FILE}: does not describe a model this encoder can run "
                                f"({one_line(exc)})") from None
        head_file = path / HEAD_FILE
        if not head_file.is_file():
            raise ModelDirError(f"{head_file}: missing")
        try:
            head.load_state_dict(load_file(head_file))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ModelDirError(f"{head_file}: cannot load the head weights ({one_line(exc)})") from None
        model = cls(backbone, head, spec)
        model.requires_grad_(False)
        return model.eval()
