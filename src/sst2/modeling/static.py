"""Static token embeddings in place of an encoder: the backbone of the ``static`` tier.

The embeddings come from model2vec's distillation of a transformer encoder (each vocabulary token run
through the encoder alone, mean-pooled, reduced by PCA and weighted by SIF; model2vec's own tokenizer
goes with them). ``forward(input_ids, attention_mask)`` returns ``(B, T, 1, D)`` like
:class:`~sst2.modeling.backbone.Backbone`, so every head and the feature-free training path work on it
unchanged; the whole model then exports to one small ONNX graph that needs neither torch nor
transformers at inference.

Saved as ``encoder/`` inside a model directory: ``static.safetensors`` (the table), ``static.json`` and
the tokenizer files, so the torch-free path reads ``encoder/tokenizer.json`` as for any model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from sst2.errors import UserError, one_line
from sst2.modeling.modeldir import tokenizer_config

WEIGHTS_FILE = "static.safetensors"
CONFIG_FILE = "static.json"


class StaticBackboneError(UserError, RuntimeError):
    pass


def _hf_tokenizer(tokenizer, truncation_side: str | None = None):
    """A ``tokenizers.Tokenizer`` wrapped as the Hugging Face fast tokenizer the training code calls, cutting
    long texts on ``truncation_side`` (that of the encoder it came from: the runtimes read it back)."""
    from transformers import PreTrainedTokenizerFast

    vocab = tokenizer.get_vocab()
    special = {name: tok for name, tok in (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("mask_token", "[MASK]"))
               if tok in vocab}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, truncation_side=truncation_side or "right", **special)


class StaticBackbone(nn.Module):
    """A token-embedding table with the tokenizer it belongs to."""

    def __init__(self, embeddings: torch.Tensor, tokenizer, source: str = "", info: dict | None = None):
        super().__init__()
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding.from_pretrained(embeddings.float(), freeze=False)
        self.source = source
        self.info = dict(info or {})
        self.layers = (0,)
        self.num_states = 1

    @classmethod
    def distill(cls, encoder_name: str | None, dims: int = 256, progress: bool = True) -> "StaticBackbone":
        """Distill static embeddings from a transformer encoder with model2vec (PCA to ``dims``).
        ``progress=False`` hides model2vec's progress bar, which has no option of its own."""
        try:
            import model2vec.distill.inference as m2v_inference
            from model2vec.distill import distill_from_model
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise StaticBackboneError("the static model needs model2vec: pip install 'sst2[static]'") from exc
        from unittest import mock

        from sst2.modeling.backbone import load_backbone_parts

        encoder, tokenizer, source = load_backbone_parts(encoder_name)
        dims = min(dims, encoder.config.hidden_size)
        bar = getattr(m2v_inference, "tqdm", None)
        quiet_bar = mock.patch.object(m2v_inference, "tqdm", functools.partial(bar, disable=True)) if (
            bar is not None and not progress) else contextlib.nullcontext()
        with quiet_bar:
            # token_remove_pattern=None: keep every vocabulary entry (model2vec drops [unusedN] by default)
            static = distill_from_model(encoder, tokenizer, pca_dims=dims, token_remove_pattern=None)
        table = torch.from_numpy(static.embedding.astype("float32"))
        info = {"distilled_from": source, "pca_dims": int(table.shape[1]), "vocab_size": int(table.shape[0]),
                "library": "model2vec"}
        return cls(table, _hf_tokenizer(static.tokenizer, getattr(tokenizer, "truncation_side", None)), source, info)

    @property
    def hidden_size(self) -> int:
        return self.embedding.embedding_dim

    @property
    def num_layers(self) -> int:
        return 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embedding(input_ids) * attention_mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        return x.unsqueeze(2)  # (B, T, 1, D); padding positions are zeros

    # --- saving -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"embedding": self.embedding.weight.detach().contiguous()}, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps({"source": self.source, **self.info}, indent=2) + "\n")
        self.tokenizer.save_pretrained(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StaticBackbone":
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            table = load_file(path / WEIGHTS_FILE)["embedding"]
            info = json.loads((path / CONFIG_FILE).read_text())
            tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # missing or damaged files: safetensors, json and tokenizers raise their own
            raise StaticBackboneError(f"{path}: cannot load the static embeddings ({one_line(exc)})") from None
        side = tokenizer_config(path).get("truncation_side")
        return cls(table, _hf_tokenizer(tokenizer, side), info.pop("source", ""), info)

    # --- fingerprints (the same interface as Backbone) ------------------------------------------
    def weights_fingerprint(self) -> str:
        w = self.embedding.weight.detach().contiguous()
        return hashlib.sha256(w.numpy().tobytes()).hexdigest()

    def tokenizer_fingerprint(self) -> str:
        blob = f"{self.tokenizer.backend_tokenizer.to_str()}\ntruncation_side={self.tokenizer.truncation_side}"
        return hashlib.sha256(blob.encode()).hexdigest()
