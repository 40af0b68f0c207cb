"""Trainable heads over encoder token states (the ``forward_head`` half of a model).

Every head maps ``states (B, T, K, H)`` plus true ``lengths (B,)`` to one logit per sentence ``(B,)``.
Padding positions never reach a result: the LSTM directions are causal over each sentence's own
tokens (see ``LSTMHead``) and pooling is masked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

POOLINGS = ("last", "maxmean", "cls", "mean")


@dataclass
class HeadConfig:
    kind: str = "lstm"  # "lstm": the efficient head; "linear": a pooled linear classifier (vanilla)
    hidden_size: int = 384  # encoder width H
    num_states: int = 1  # K encoder layers fed in; K > 1 adds a learned softmax-weighted mix
    proj_size: int = 256
    dropout: float = 0.1
    lstm_size: int = 256
    bidirectional: bool = False
    pooling: str = "last"
    combine: str = "mix"  # K > 1 states: "mix" = learned softmax-weighted sum; "concat" = project their concatenation
    num_labels: int = 1  # 1: one logit (two classes, sigmoid); k > 2: k logits (softmax)
    filters: int = 256  # "cnn": output channels per kernel size
    kernel_sizes: tuple[int, ...] = (1, 2, 3)  # "cnn": n-gram widths

    def __post_init__(self):
        self.kernel_sizes = tuple(self.kernel_sizes)  # a JSON spec gives a list

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kernel_sizes"] = list(self.kernel_sizes)
        return out


def logits_of(out: torch.Tensor) -> torch.Tensor:
    """``(B, 1)`` -> ``(B,)`` (one logit, two classes), ``(B, k)`` as it is. ``[:, 0]`` rather than
    ``squeeze()``: a batch of one stays a batch."""
    return out[:, 0] if out.shape[1] == 1 else out


def lengths_to_mask(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    return torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]  # (B, T) bool


def masked_pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``x (B, T, D)`` over valid positions only."""
    if how == "cls":
        return x[:, 0]
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    mean = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "mean":
        return mean
    if how == "maxmean":
        mx = x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)
        return torch.cat([mx, mean], dim=-1)
    raise ValueError(f"unknown pooling {how!r}")


class ScalarMix(nn.Module):
    """Softmax-weighted sum of K layers times a learned scale (as in ELMo)."""

    def __init__(self, k: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(k))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, T, K, H) -> (B, T, H)
        w = torch.softmax(self.weights, 0)
        return self.gamma * torch.einsum("btkh,k->bth", states, w)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x (B, T, D)`` within its own length; padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    lens = lengths.to(x.device)[:, None]  # (B, 1)
    idx = torch.where(t < lens, lens - 1 - t, t)  # (B, T); the map is its own inverse
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class LSTMHead(nn.Module):
    """Linear "reshape" to ``proj_size``, dropout, LSTM, then a linear layer to one logit.

    With ``pooling="last"`` the feature is the LSTM output at each sentence's true last token;
    ``"maxmean"`` / ``"mean"`` pool the outputs at valid positions only.

    Padding invariance without packed sequences: a forward LSTM is causal, so its outputs at valid
    positions never see the padding that follows them; the backward direction (when bidirectional) is a
    second forward LSTM run on each sentence reversed within its own length. Padded batches use the
    fused CPU LSTM kernel, several times faster than packed sequences here (see README).
    """

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.pooling not in ("last", "maxmean", "mean"):
            raise ValueError(f"the lstm head supports pooling last, mean or maxmean, not {cfg.pooling!r}")
        if cfg.combine not in ("mix", "concat"):
            raise ValueError(f"combine must be mix or concat, not {cfg.combine!r}")
        self.cfg = cfg
        concat = cfg.combine == "concat"
        self.mix = ScalarMix(cfg.num_states) if cfg.num_states > 1 and not concat else None
        self.proj = nn.Linear(cfg.hidden_size * (cfg.num_states if concat else 1), cfg.proj_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.proj_size, cfg.lstm_size, num_layers=1, batch_first=True)
        self.lstm_rev = (
            nn.LSTM(cfg.proj_size, cfg.lstm_size, num_layers=1, batch_first=True) if cfg.bidirectional else None
        )
        d = cfg.lstm_size * (2 if cfg.bidirectional else 1)
        self.fc = nn.Linear(d * (2 if cfg.pooling == "maxmean" else 1), cfg.num_labels)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cfg.combine == "concat":
            x = states.flatten(2)  # (B, T, K * H)
        else:
            x = self.mix(states) if self.mix is not None else states[:, :, 0]  # (B, T, H)
        x = self.dropout(self.proj(x))  # (B, T, P)
        out, _ = self.lstm(x)  # (B, T, S)
        if self.lstm_rev is not None:
            back, _ = self.lstm_rev(reverse_padded(x, lengths))
            out = torch.cat([out, reverse_padded(back, lengths)], -1)  # (B, T, 2S), aligned by position
        if self.cfg.pooling == "last":
            last = (lengths - 1).to(out.device)
            fwd = out[torch.arange(out.shape[0]), last, : self.cfg.lstm_size]  # (B, S) at the last real token
            # the backward direction ends its pass over the sentence at position 0
            feat = torch.cat([fwd, out[:, 0, self.cfg.lstm_size :]], -1) if self.lstm_rev is not None else fwd
        else:
            feat = masked_pool(out, lengths_to_mask(lengths.to(out.device), out.shape[1]), self.cfg.pooling)
        return logits_of(self.fc(self.dropout(feat)))


class LinearHead(nn.Module):
    """Pool the (mixed) token states and apply dropout + one linear layer (the vanilla classifier)."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.pooling not in ("cls", "mean", "maxmean"):
            raise ValueError(f"the linear head supports pooling cls, mean or maxmean, not {cfg.pooling!r}")
        self.cfg = cfg
        self.mix = ScalarMix(cfg.num_states) if cfg.num_states > 1 else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(cfg.hidden_size * (2 if cfg.pooling == "maxmean" else 1), cfg.num_labels)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.mix(states) if self.mix is not None else states[:, :, 0]
        feat = masked_pool(x, lengths_to_mask(lengths, x.shape[1]), self.cfg.pooling)
        return logits_of(self.fc(self.dropout(feat)))


class CNNHead(nn.Module):
    """Dropout, one 1-D convolution per n-gram width over the (single) state, ReLU, masked max and mean
    pooling over the windows that touch a real token, dropout, a linear layer (Kim 2014, for the
    static tier: cheap enough to keep static embeddings at fastText speed, and it sees word order,
    "not good" included).

    Each convolution pads ``width - 1`` zeros on both sides; padded positions of the input are set to
    zeros too, so a window that reaches past a sentence's end sees exactly what it would without batch
    padding, and the result does not depend on the batch."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        if cfg.pooling not in ("maxmean", "mean"):
            raise ValueError(f"the cnn head supports pooling maxmean or mean, not {cfg.pooling!r}")
        self.cfg = cfg
        self.dropout = nn.Dropout(cfg.dropout)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.hidden_size, cfg.filters, w, padding=w - 1) for w in cfg.kernel_sizes)
        width = cfg.filters * len(cfg.kernel_sizes) * (2 if cfg.pooling == "maxmean" else 1)
        self.fc = nn.Linear(width, cfg.num_labels)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = lengths_to_mask(lengths.to(states.device), states.shape[1]).unsqueeze(-1)  # (B, T, 1)
        x = self.dropout(states[:, :, 0] * valid).transpose(1, 2)  # (B, H, T), zeros at padding
        feats = []
        for conv, w in zip(self.convs, self.cfg.kernel_sizes):
            out = torch.relu(conv(x)).transpose(1, 2)  # (B, T + w - 1, F)
            feats.append(masked_pool(out, lengths_to_mask(lengths + (w - 1), out.shape[1]), self.cfg.pooling))
        return logits_of(self.fc(self.dropout(torch.cat(feats, -1))))


def build_head(cfg: HeadConfig) -> nn.Module:
    if cfg.kind == "lstm":
        return LSTMHead(cfg)
    if cfg.kind == "cnn":
        return CNNHead(cfg)
    if cfg.kind == "linear":
        return LinearHead(cfg)
    raise ValueError(f"unknown head kind {cfg.kind!r}")


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)``: the one way parameters are counted everywhere in sst2."""
    seen: set[int] = set()
    trainable = total = 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
