"""A whole classifier: backbone (encoder) + head, and its self-contained ``model/`` directory.

Layout of a saved model directory::

    model/
      sst2_model.json     # what to build: model type, head config, layers kept, max length, text normalization
      head.safetensors    # head weights
      encoder/            # the encoder and its tokenizer (Hugging Face save_pretrained format)

It is loadable without the training data and without network access.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sst2.modeling.backbone import Backbone, load_backbone_parts
from sst2.errors import UserError
from sst2.modeling.heads import HeadConfig, build_head
from sst2.data.text import normalize_texts

SPEC_FILE = "sst2_model.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
FORMAT = "sst2-model/1"


class ModelDirError(UserError, RuntimeError):
    pass


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

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.encoder.save_pretrained(path / ENCODER_DIR)
        self.backbone.tokenizer.save_pretrained(path / ENCODER_DIR)
        state = {k: v.detach().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, path / HEAD_FILE, metadata={"format": FORMAT})
        (path / SPEC_FILE).write_text(json.dumps({"format": FORMAT, **self.spec}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SentimentModel":
        path = Path(path)
        spec_file = path / SPEC_FILE
        if not spec_file.is_file():
            raise ModelDirError(f"{path}: not an sst2 model directory ({SPEC_FILE} not found)")
        spec = json.loads(spec_file.read_text())
        if spec.pop("format", None) != FORMAT:
            raise ModelDirError(f"{spec_file}: unsupported format (expected {FORMAT})")
        encoder, tokenizer, source = load_backbone_parts(path / ENCODER_DIR)
        backbone = Backbone(encoder, tokenizer, tuple(spec["layers"]), source=spec.get("backbone", source))
        head = build_head(HeadConfig(**spec["head"]))
        head.load_state_dict(load_file(path / HEAD_FILE))
        model = cls(backbone, head, spec)
        model.requires_grad_(False)
        return model.eval()

    @torch.inference_mode()
    def predict_logits(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Logits for ``texts`` in their order; batches are length-sorted to avoid padding work."""
        texts = normalize_texts(list(texts), self.text_normalization)
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids))
        pad_id = self.tokenizer.pad_token_id or 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in idx], pad_id)
            out[idx] = self(input_ids, mask).float()
        return out


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest: ``(B, T)`` ids and attention mask."""
    t_max = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t_max), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask
