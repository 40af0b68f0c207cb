"""``lora``: low-rank adapters (peft) on the encoder's Linear layers, and the classifier, train; the
adapters are merged into the saved encoder, so the saved model is a plain encoder."""

from __future__ import annotations

from sst2.errors import UserError
from sst2.modeling.backbone import Backbone
from sst2.training.engine import Job
from sst2.training.recipes.common import check_max_length, freeze_pooler, linear_head, num_outputs
from sst2.training.recipes.full import token_job


def attach_lora(cfg, backbone: Backbone) -> dict:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UserError("the lora recipe needs the peft package: pip install 'sst2[peft]'") from exc
    m = cfg.model
    freeze_pooler(backbone.encoder)
    lcfg = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                      target_modules=list(m.lora_targets), bias="none")
    try:
        backbone.encoder = get_peft_model(backbone.encoder, lcfg)
    except ValueError as exc:  # peft: no module matched the targets
        raise UserError(f"model.lora_targets {m.lora_targets}: {exc}") from exc
    adapters, _ = backbone.encoder.get_nb_trainable_parameters()
    return {"lora_r": m.lora_r, "lora_alpha": m.lora_alpha, "lora_targets": list(m.lora_targets),
            "adapter_params": adapters}


def setup(cfg, splits, ctx) -> Job:
    backbone = Backbone.load(cfg.model.backbone, (-1,))
    check_max_length(cfg, backbone)
    head = linear_head(cfg, backbone, num_outputs(splits))
    extra = attach_lora(cfg, backbone)
    job = token_job(cfg, splits, backbone, head, **extra)

    def merge():  # the saved model is a plain encoder with the adapters folded into its weights
        backbone.encoder = backbone.encoder.merge_and_unload()

    job.finish = merge
    return job
