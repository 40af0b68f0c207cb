"""``vanilla``: every encoder weight fine-tunes, with a linear classifier on the pooled last state."""

from __future__ import annotations

from sst2.features.sources import TokenBatches
from sst2.modeling.backbone import Backbone
from sst2.modeling.model import SentimentModel
from sst2.training.engine import Job
from sst2.training.recipes.common import check_max_length, freeze_pooler, linear_head, model_spec, num_outputs


def token_job(cfg, splits, backbone: Backbone, head, **extra) -> Job:
    """A job whose model runs end to end on padded token ids (vanilla and LoRA)."""
    spec = model_spec(cfg, backbone, head, splits, **{k: v for k, v in extra.items() if k.startswith("lora_")})
    model = SentimentModel(backbone, head, spec)
    params = [q for q in model.parameters() if q.requires_grad]
    inputs = {k: TokenBatches(backbone.tokenizer, s.texts, cfg.data.max_length) for k, s in splits.items()}
    return Job(model, model, inputs, params, [model], extra=extra)


def setup(cfg, splits, ctx) -> Job:
    backbone = Backbone.load(cfg.model.backbone, (-1,))
    check_max_length(cfg, backbone)
    head = linear_head(cfg, backbone, num_outputs(splits))
    backbone.encoder.requires_grad_(True)
    freeze_pooler(backbone.encoder)
    return token_job(cfg, splits, backbone, head)
