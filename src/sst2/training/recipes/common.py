"""What the recipes share: the saved model's spec and the linear classifier of the fine-tuned models."""

from __future__ import annotations

from torch import nn

from sst2.errors import UserError
from sst2.modeling.backbone import Backbone
from sst2.modeling.heads import HeadConfig, build_head
from sst2.training.config import TrainConfig




def label_names(splits) -> list[str]:
    """The classes of the training split, in index order."""
    return list(splits["train"].label_names)


def num_outputs(splits) -> int:
    """Head outputs: one logit for two classes (sigmoid), k logits for k > 2 (softmax)."""
    k = len(label_names(splits))
    return 1 if k == 2 else k


def model_spec(cfg: TrainConfig, backbone: Backbone, head: nn.Module, splits, **extra) -> dict:
    """What ``sst2_model.json`` records (``sst2.modeling.model``)."""
    m = cfg.model
    return {"model": m.recipe, "preset": cfg.preset,
            "backbone": m.backbone, "layers": list(backbone.layers), "max_length": cfg.data.max_length,
            "text_normalization": cfg.data.normalize, "head": head.cfg.to_dict(), "labels": label_names(splits),
            "temperature": 1.0, **extra}


def linear_head(cfg: TrainConfig, backbone: Backbone, num_labels: int = 1) -> nn.Module:
    """A linear classifier on the pooled last hidden state (the fine-tuned models' head)."""
    return build_head(HeadConfig(kind="linear", hidden_size=backbone.hidden_size, num_states=1,
                                 pooling=cfg.model.pooling, dropout=cfg.model.dropout, num_labels=num_labels))


def freeze_pooler(encoder: nn.Module) -> None:
    """No head reads BERT's pooler (a dense layer on [CLS]): it would never get a gradient."""
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)


def check_max_length(cfg: TrainConfig, backbone: Backbone) -> None:
    """``data.max_length`` within the encoder's position limit (BERT-style encoders: 512)."""
    limit = getattr(backbone.encoder.config, "max_position_embeddings", None)
    if isinstance(limit, int) and cfg.data.max_length > limit:
        raise UserError(f"data.max_length: {cfg.data.max_length} is more than the encoder's {limit} positions "
                        f"({cfg.model.backbone}); use at most {limit}")


def layers_of(cfg: TrainConfig):
    return cfg.model.layers if cfg.model.layers == "all" else tuple(cfg.model.layers)
