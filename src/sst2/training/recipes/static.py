"""``static``: static token embeddings distilled from the backbone (model2vec) and a small CNN head,
trained end to end on token ids; inference runs no encoder at all (``sst2.modeling.static``)."""

from __future__ import annotations

from sst2.features.sources import TokenBatches
from sst2.modeling.heads import HeadConfig, build_head
from sst2.modeling.model import SentimentModel
from sst2.modeling.static import StaticBackbone
from sst2.training.engine import Job
from sst2.training.recipes.common import model_spec, num_outputs


def head_config(cfg, hidden_size: int, num_labels: int = 1) -> HeadConfig:
    m = cfg.model
    return HeadConfig(kind="cnn", hidden_size=hidden_size, num_states=1, dropout=m.dropout, pooling=m.pooling,
                      filters=m.filters, kernel_sizes=tuple(m.kernel_sizes), num_labels=num_labels)


def setup(cfg, splits, ctx) -> Job:
    ctx.log(f"static embeddings: distilling {cfg.model.backbone} with model2vec (PCA {cfg.model.static_dims})")
    backbone = StaticBackbone.distill(cfg.model.backbone, cfg.model.static_dims, progress=ctx.progress)
    backbone.embedding.weight.requires_grad_(cfg.model.train_embeddings)
    head = build_head(head_config(cfg, backbone.hidden_size, num_outputs(splits)))
    model = SentimentModel(backbone, head, model_spec(cfg, backbone, head, splits, static=backbone.info))
    params = [q for q in model.parameters() if q.requires_grad]
    inputs = {k: TokenBatches(backbone.tokenizer, s.texts, cfg.data.max_length) for k, s in splits.items()}
    return Job(model, model, inputs, params, [model], extra={"static": backbone.info})
