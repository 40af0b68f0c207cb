"""``partial``: only the top ``model.unfreeze`` transformer layers and the classifier fine-tune.

The frozen lower layers give the same output every epoch, so their top hidden state comes from the
feature cache (or, with ``run.cache = false``, from running them on every batch) and an epoch only runs
the trained layers. The saved model is the whole encoder with its trained top layers.
"""

from __future__ import annotations

import torch
from torch import nn

from sst2.errors import UserError
from sst2.features.sources import CachedStates, EncoderStates
from sst2.modeling.backbone import Backbone
from sst2.modeling.heads import lengths_to_mask
from sst2.modeling.model import SentimentModel
from sst2.training.engine import Job
from sst2.training.recipes.common import check_max_length, linear_head, model_spec, num_outputs


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(f"the partial recipe needs a BERT-style encoder (encoder.encoder.layer); "
                        f"{type(encoder).__name__} has no such layer list")
    return layers


class TopLayers(nn.Module):
    """The top transformer layers of an encoder, run on the hidden states of the layer below them."""

    def __init__(self, encoder: nn.Module, start: int):
        super().__init__()
        self.config = encoder.config
        self.layers = transformer_layers(encoder)[start:]

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = lengths_to_mask(lengths, hidden.shape[1]).long()
        attn = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.layers:
            hidden = layer(hidden, attn)
        return hidden


def setup(cfg, splits, ctx) -> Job:
    backbone = Backbone.load(cfg.model.backbone, (-1,))
    check_max_length(cfg, backbone)
    n = backbone.num_layers
    if cfg.model.unfreeze > n:
        raise UserError(f"model.unfreeze: the encoder has {n} layers, cannot train the top {cfg.model.unfreeze}")
    start = n - cfg.model.unfreeze  # hidden state index below the first trained layer (0 = embeddings)
    backbone.requires_grad_(False)
    backbone.eval()
    top = TopLayers(backbone.encoder, start)
    top.requires_grad_(True)
    head = linear_head(cfg, backbone, num_outputs(splits))
    model = SentimentModel(backbone, head, model_spec(cfg, backbone, head, splits, unfreeze=cfg.model.unfreeze))
    # the frozen lower layers: their top output (hidden state ``start``) is cached or computed per batch
    lower = Backbone(backbone.encoder, backbone.tokenizer, (start,), source=backbone.source)

    def forward(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return head(top(states[:, :, -1], lengths).unsqueeze(2), lengths)

    params = list(top.parameters()) + list(head.parameters())
    job = Job(model, forward, {}, params, [top, head], extra={"unfreeze": cfg.model.unfreeze})
    if cfg.run.cache:
        feats, report = ctx.features(lower, splits)
        job.inputs = {k: CachedStates(f) for k, f in feats.items()}
        job.cache_seconds, job.cache_hits = report.seconds, report.hits
    else:
        job.inputs = {k: EncoderStates(lower, s.texts, cfg.data.max_length) for k, s in splits.items()}
    return job
