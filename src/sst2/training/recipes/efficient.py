"""``efficient``: a frozen encoder and a trained LSTM head, reading states from the feature cache."""

from __future__ import annotations

from sst2.features.sources import CachedStates, EncoderStates, SelectedStates
from sst2.modeling.backbone import Backbone
from sst2.modeling.heads import HeadConfig, build_head
from sst2.modeling.model import SentimentModel
from sst2.training.engine import Job
from sst2.training.recipes.common import check_max_length, layers_of, model_spec, num_outputs


def head_config(cfg, hidden_size: int, num_states: int, num_labels: int = 1) -> HeadConfig:
    m = cfg.model
    return HeadConfig(kind="lstm", hidden_size=hidden_size, num_states=num_states, proj_size=m.proj_size,
                      dropout=m.dropout, lstm_size=m.lstm_size, bidirectional=m.bidirectional, pooling=m.pooling,
                      combine=m.combine, num_labels=num_labels)


def setup(cfg, splits, ctx) -> Job:
    if cfg.model.depth is not None:
        return _shallow(cfg, splits, ctx)
    backbone = Backbone.load(cfg.model.backbone, layers_of(cfg))
    check_max_length(cfg, backbone)
    backbone.requires_grad_(False)
    backbone.eval()
    head = build_head(head_config(cfg, backbone.hidden_size, len(backbone.layers), num_outputs(splits)))
    model = SentimentModel(backbone, head, model_spec(cfg, backbone, head, splits))
    job = Job(model, head, {}, list(head.parameters()), [head])
    max_length = cfg.data.max_length
    if cfg.run.cache:
        feats, report = ctx.features(backbone, splits)
        job.inputs = {k: CachedStates(f) for k, f in feats.items()}
        job.cache_seconds, job.cache_hits = report.seconds, report.hits
    else:
        job.inputs = {k: EncoderStates(backbone, s.texts, max_length) for k, s in splits.items()}
    return job


def _shallow(cfg, splits, ctx) -> Job:
    """``model.depth`` = L: the saved model keeps the encoder's first L layers and its head reads hidden
    states of those only; training reads them from the cache entry of the whole encoder's states (the
    same entry a full-depth run uses), so no depth needs an encode of its own."""
    full = Backbone.load(cfg.model.backbone, "all")
    check_max_length(cfg, full)
    full.requires_grad_(False)
    full.eval()
    backbone = full.truncated(cfg.model.depth, layers_of(cfg))
    head = build_head(head_config(cfg, backbone.hidden_size, len(backbone.layers), num_outputs(splits)))
    model = SentimentModel(backbone, head, model_spec(cfg, backbone, head, splits, depth=cfg.model.depth))
    job = Job(model, head, {}, list(head.parameters()), [head], extra={"depth": cfg.model.depth})
    if not cfg.run.cache:
        job.inputs = {k: EncoderStates(backbone, s.texts, cfg.data.max_length) for k, s in splits.items()}
        return job
    feats, report = ctx.features(full, splits)
    job.inputs = {k: SelectedStates(f, backbone.layers) for k, f in feats.items()}
    job.cache_seconds, job.cache_hits = report.seconds, report.hits
    return job
