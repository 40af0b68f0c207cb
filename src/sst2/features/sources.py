"""Where a training batch comes from: ``source(idx) -> tuple of tensors`` with a ``lengths`` array.

* :class:`CachedStates`: frozen-encoder states read from the feature cache (efficient, partial);
* :class:`EncoderStates`: the frozen encoder run on every batch, as the reference did (``run.cache = false``);
* :class:`TokenBatches`: padded token ids, for a model whose encoder trains (vanilla, LoRA).
"""

from __future__ import annotations

import numpy as np
import torch

from sst2.data.batching import pad_batch
from sst2.features.cache import Features


class CachedStates:
    """Token states read from precomputed :class:`Features`: ``(states (B, T, K, H), lengths (B,))``."""

    def __init__(self, features: Features):
        self.features = features
        self.lengths = features.lengths

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.batch(idx)


class SelectedStates(CachedStates):
    """Some of the cached hidden states (``states`` indexes into K): a shallower model read from the cache
    of the whole encoder, whose first hidden states are the same."""

    def __init__(self, features: Features, states: tuple[int, ...]):
        super().__init__(features)
        self.states = list(states)

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.features.batch(idx)
        return x[:, :, self.states], lengths


class TokenBatches:
    """Token ids of a list of texts, padded per batch: ``(input_ids, attention_mask)``."""

    def __init__(self, tokenizer, texts: list[str], max_length: int):
        self.ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad_batch([self.ids[i] for i in idx], self.pad_id)
        return torch.from_numpy(ids), torch.from_numpy(mask)


class EncoderStates(TokenBatches):
    """Token states from running the frozen encoder on each batch (the reference behaviour)."""

    def __init__(self, backbone, texts: list[str], max_length: int):
        super().__init__(backbone.tokenizer, texts, max_length)
        self.backbone = backbone

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = super().__call__(idx)
        with torch.no_grad():
            states = self.backbone(input_ids, mask)
        return states, mask.sum(1)


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    """Each text's length in tokens, special tokens included, without truncation."""
    return np.asarray(tokenizer(list(texts), truncation=False, add_special_tokens=True, return_length=True,
                                verbose=False)["length"], dtype=np.int64)


def window_length_for(train_lengths: np.ndarray, max_length: int) -> int:
    """The window length a model scores long texts with by default: as long as 90 % of its training texts
    (at least 16 tokens, at most ``max_length``). Windows of about the training texts' length scored long
    documents far better than windows of the whole ``max_length`` (docs/experiments/long-documents.md)."""
    if not len(train_lengths):
        return max_length
    return int(min(max_length, max(16, np.ceil(np.percentile(train_lengths, 90)))))
