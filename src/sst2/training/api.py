"""``sst2 train``: fit a model and write a complete run directory.

* ``efficient`` trains only its head; the frozen encoder's token states come from the feature cache
  (computed once per key) or, with ``--no-cache``, from running the encoder on every batch as the
  reference implementation did.
* ``vanilla`` fine-tunes the whole encoder with a linear head on mean-pooled states.
* ``partial`` fine-tunes the top ``--unfreeze`` layers; the frozen layers below run once, through the
  same feature cache, so an epoch only runs the top layers.
* ``lora`` trains low-rank adapters (peft) and the head; the adapters are merged into the saved encoder.

Every model type writes the same run directory and saves the same ``model/`` format.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sst2.modeling.backbone import Backbone
from sst2.features.cache import (ENCODE_BATCH_SIZE, ENCODE_BATCH_TOKENS, FeatureCache, Features, cache_key, drop_positions,
                    encode_texts)
from sst2.config import DEFAULT_PRESET, PRESETS, TrainConfig, to_dict
from sst2.data.splits import Split, load_splits, resolve_data_dir
from sst2.training import rundir
from sst2.errors import UserError
from sst2.modeling.heads import HeadConfig, LinearHead, build_head, count_parameters, lengths_to_mask
from sst2.modeling.model import SentimentModel, pad_batch
from sst2.data.text import normalize_texts
from sst2.system import environment, peak_rss_mb, progress_enabled, seed_everything, set_threads

RUN_FILES = ("config.json", "history.csv", "epochs.csv", "metrics.json", "plot.png", "model", rundir.MARKER)
EPOCH_FIELDS = ("epoch", "train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "seconds")
HISTORY_FIELDS = ("epoch", "step", "loss")


def log(cfg, msg: str) -> None:
    if not cfg.quiet:
        print(msg, file=sys.stderr, flush=True)


def _tqdm(cfg, **kw):
    from tqdm.auto import tqdm

    return tqdm(disable=not progress_enabled(cfg.quiet), leave=False, dynamic_ncols=True, **kw)


# --- where token states come from -----------------------------------------------------------------
class CachedStates:
    """Token states read from precomputed :class:`Features`."""

    def __init__(self, features: Features):
        self.features = features
        self.lengths = features.lengths

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features.batch(idx)


class TokenDropout:
    """Word dropout for training: each token between the first and the last ([CLS] and [SEP]) is removed
    from its sentence with probability ``p`` before the head sees it. Sentences get shorter (the kept
    tokens move up, in order); nothing is masked, so the head sees the same kind of input as at test time.
    Cached states are dropped while still in their stored dtype, before they are widened."""

    def __init__(self, inner, p: float, rng: np.random.Generator):
        self.inner, self.p, self.rng = inner, p, rng
        self.lengths = inner.lengths

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths[idx]
        t = np.arange(int(lengths.max()))[None, :]
        drop = (t > 0) & (t < lengths[:, None] - 1) & (self.rng.random((len(idx), t.shape[1])) < self.p)
        if isinstance(self.inner, CachedStates):
            return self.inner.features.batch(idx, drop=drop)
        states, lens = self.inner(idx)
        out, new_lengths = drop_positions(states.numpy(), lens.numpy(), drop)
        return torch.from_numpy(out), torch.from_numpy(new_lengths.astype(np.int64))


class TokenBatches:
    """Token ids of a split, padded per batch: ``(input_ids, attention_mask)`` for a fine-tuned encoder."""

    def __init__(self, tokenizer, texts: list[str], max_length: int):
        self.ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        self.lengths = np.array([len(x) for x in self.ids], dtype=np.int64)
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_batch([self.ids[i] for i in idx], self.pad_id)


class EncoderStates(TokenBatches):
    """Token states from running the frozen encoder on each batch (the reference behaviour)."""

    def __init__(self, backbone: Backbone, texts: list[str], max_length: int):
        super().__init__(backbone.tokenizer, texts, max_length)
        self.backbone = backbone

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = super().__call__(idx)
        with torch.no_grad():
            states = self.backbone(input_ids, mask)
        return states, mask.sum(1)


def count_truncated(tokenizer, texts: list[str], max_length: int) -> int:
    """Sentences with more than ``max_length`` tokens (special tokens included)."""
    lengths = tokenizer(list(texts), truncation=False, add_special_tokens=True, return_length=True,
                        verbose=False)["length"]
    return int(sum(n > max_length for n in lengths))


def make_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, bucket: bool) -> list[np.ndarray]:
    """Shuffled batches. With ``bucket``, each run of 20 batches is sorted by length before being cut,
    so a batch holds sentences of similar length; the order of batches is then shuffled again."""
    perm = rng.permutation(len(lengths))
    if not bucket:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    span = batch_size * 20
    batches = []
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


# --- the loops -------------------------------------------------------------------------------------
class WeightAverage:
    """Exponential moving average of the trainable weights (Polyak averaging), updated after every step.

    The average starts from zero and is divided by ``1 - decay ** n`` after ``n`` updates (the bias
    correction Adam uses for its moments), so it weighs the last ``~1 / (1 - decay)`` steps from the first
    update on, with no pull towards the initial weights. ``applied()`` swaps the averaged weights into the
    model for scoring and saving and restores the trained ones afterwards."""

    def __init__(self, params: list[nn.Parameter], decay: float):
        self.params = list(params)
        self.decay = decay
        self.updates = 0
        self.shadow = [torch.zeros_like(q, memory_format=torch.preserve_format) for q in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        for s, q in zip(self.shadow, self.params):
            s.lerp_(q.detach(), 1.0 - self.decay)

    def averaged(self) -> list[torch.Tensor]:
        correction = 1.0 - self.decay**self.updates
        return [s / correction for s in self.shadow]

    @contextmanager
    def applied(self):
        if self.updates == 0:
            yield
            return
        backup = [q.detach().clone() for q in self.params]
        with torch.no_grad():
            for q, a in zip(self.params, self.averaged()):
                q.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for q, b in zip(self.params, backup):
                    q.copy_(b)


def bernoulli_sym_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` per example for Bernoulli distributions given as logits."""
    la, lb = nn.functional.logsigmoid(a), nn.functional.logsigmoid(b)  # log p
    na, nb = nn.functional.logsigmoid(-a), nn.functional.logsigmoid(-b)  # log (1 - p)
    pa, pb = la.exp(), lb.exp()
    return ((pa - pb) * (la - lb) + ((1 - pa) - (1 - pb)) * (na - nb)) / 2


def train_one_epoch(forward, inputs, labels: torch.Tensor, batches, optimizer, grad_clip: float, epoch: int,
                    step: int, progress=None, scheduler=None, params=None,
                    average: WeightAverage | None = None, rdrop: float = 0.0) -> tuple[dict, list[dict]]:
    """One pass over ``batches``: ``forward(*inputs(idx)) -> logits (B,)``; the loss applies the one sigmoid.

    ``params`` are the parameters whose gradient norm is clipped (default: the optimizer's); ``average``
    is updated after every optimizer step. A module ``forward`` is put in training mode; for any other
    callable the caller sets the modes."""
    if isinstance(forward, nn.Module):
        forward.train()
    params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total_loss = correct = seen = 0.0
    rows = []
    for idx in batches:
        y = labels[idx]
        if rdrop:
            # the batch twice in one call: two dropout masks; loss = mean of both + rdrop * symmetric KL
            both = forward(*(torch.cat([x, x]) for x in inputs(idx)))
            l1, l2 = both.float().chunk(2)
            loss = (loss_fn(l1, y) + loss_fn(l2, y)) / 2 + rdrop * bernoulli_sym_kl(l1, l2).sum()
            logits = (l1 + l2) / 2
        else:
            logits = forward(*inputs(idx))
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        (loss / len(idx)).backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        if average is not None:
            average.update()
        if scheduler is not None:
            scheduler.step()
        step += 1
        batch_loss = loss.item() / len(idx)
        rows.append({"epoch": epoch, "step": step, "loss": round(batch_loss, 6)})
        total_loss += loss.item()
        correct += ((logits.detach() > 0).float() == y).sum().item()
        seen += len(idx)  # count examples: the last batch may be short
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{batch_loss:.4f}")
    return {"train_loss": total_loss / seen, "train_accuracy": correct / seen}, rows


@torch.no_grad()
def evaluate_states(forward, inputs, labels: torch.Tensor | None, batch_size: int = 256) -> dict:
    """Loss and accuracy over a whole split (length-sorted batches; examples counted exactly)."""
    if isinstance(forward, nn.Module):
        forward.eval()
    order = np.argsort(inputs.lengths, kind="stable")
    logits = torch.empty(len(order))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        logits[idx] = forward(*inputs(idx)).float()
    out = {"n": len(order), "logits": logits}
    if labels is not None:
        out["loss"] = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
        out["accuracy"] = ((logits > 0).float() == labels).float().mean().item()
    return out


# --- LP-FT: the head first, on the features of the untrained model ---------------------------------
class _Rows:
    """``idx -> (rows,)`` over a tensor, with the ``lengths`` the batching code reads."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.lengths = np.ones(len(x), dtype=np.int64)

    def __call__(self, idx: np.ndarray) -> tuple[torch.Tensor]:
        return (self.x[torch.from_numpy(np.asarray(idx))],)


@torch.no_grad()
def classifier_inputs(forward, inputs, fc: nn.Module, batch_size: int = 256) -> torch.Tensor:
    """What ``fc`` receives for every example of a split, in order, with every module in eval mode:
    the pooled features of the model as it stands. Read with a forward pre-hook, so it works whatever
    runs below the head (a whole encoder, the top layers over cached states, a LoRA-wrapped encoder)."""
    order = np.argsort(inputs.lengths, kind="stable")
    out: torch.Tensor | None = None
    seen: list[torch.Tensor] = []
    handle = fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float()))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            seen.clear()
            forward(*inputs(idx))
            if out is None:
                out = torch.empty(len(order), seen[0].shape[-1])
            out[torch.from_numpy(idx)] = seen[0]
    finally:
        handle.remove()
    return out


def fit_probe(job: Job, inputs, labels: torch.Tensor, epochs: int, lr: float, batch_size: int,
              rng: np.random.Generator) -> dict:
    """The first stage of LP-FT (Kumar et al., ICLR 2022): train the head's classifier alone on the
    pooled features of the model before any fine-tuning (encoder as loaded), then fine-tune everything
    from there. A random head sends random gradients into the encoder during the first steps; a fitted
    one does not, so fine-tuning starts from a working classifier. The features are computed once (one
    forward pass over the training split); the classifier is trained with Adam at constant ``lr`` with
    the head's dropout on them. Only the classifier's weights change."""
    head = job.model.head
    if not isinstance(head, LinearHead):
        raise UserError("probe_epochs: the head must be the linear classifier (not the LSTM head)")
    fc = head.fc
    t0 = time.perf_counter()
    job.model.eval()
    feats = classifier_inputs(job.forward, inputs, fc)
    encode_seconds = time.perf_counter() - t0
    rows = _Rows(feats)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return fc(head.dropout(x))[:, 0]

    optimizer = torch.optim.Adam(fc.parameters(), lr=lr)
    head.train()
    for epoch in range(1, epochs + 1):
        batches = make_batches(rows.lengths, batch_size, rng, bucket=False)
        tr, _ = train_one_epoch(forward, rows, labels, batches, optimizer, 0.0, epoch, 0)
    head.eval()
    with torch.no_grad():
        acc = ((fc(feats)[:, 0] > 0).float() == labels).float().mean().item()
    return {"probe_epochs": epochs, "probe_lr": lr, "probe_train_accuracy": acc, "probe_train_loss": tr["train_loss"],
            "probe_encode_seconds": round(encode_seconds, 3), "probe_seconds": round(time.perf_counter() - t0, 3)}


# --- features --------------------------------------------------------------------------------------
@dataclass
class FeatureReport:
    seconds: float
    hits: dict[str, bool]
    nbytes: int


def prepare_features(cfg: TrainConfig, backbone: Backbone, splits: dict[str, Split], max_length: int | None = None,
                     dtype: str = "float16") -> tuple[dict[str, Features], FeatureReport]:
    max_length = max_length or cfg.resolved()["max_length"]
    cache = FeatureCache(cfg.cache_dir, log=lambda m: log(cfg, m))
    t0 = time.perf_counter()
    base = {
        "backbone_weights": backbone.weights_fingerprint(),
        "tokenizer": backbone.tokenizer_fingerprint(),
        "max_length": max_length,
        "layers": list(backbone.layers),
        "dtype": dtype,
        "text_normalization": cfg.normalize,
        "encode_batch": {"tokens": ENCODE_BATCH_TOKENS, "sentences": ENCODE_BATCH_SIZE},
    }
    feats, hits = {}, {}
    for name, split in splits.items():
        # the texts as encoded (after normalization), not only the file: a changed normalizer misses too
        texts_sha = hashlib.sha256("\n".join(split.texts).encode()).hexdigest()
        fields = {**base, "data_sha256": split.sha256, "texts_sha256": texts_sha}
        key = cache_key(**fields)
        f = cache.load(key)
        hits[name] = f is not None
        if f is None:
            with _tqdm(cfg, total=len(split), desc=f"encode {name}", unit="sent") as bar:
                f = cache.build(key, {**fields, "source": backbone.source, "file": str(split.path)},
                                lambda path: encode_texts(backbone, split.texts, max_length, dtype=dtype,
                                                          batch_tokens=ENCODE_BATCH_TOKENS,
                                                          batch_size=ENCODE_BATCH_SIZE, progress=bar, out=path))
        feats[name] = f
    report = FeatureReport(time.perf_counter() - t0, hits, sum(f.nbytes for f in feats.values()))
    states = ", ".join(f"{k}={'hit' if v else 'miss'}" for k, v in hits.items())
    log(cfg, f"features: {'cache hit' if all(hits.values()) else 'encoded'} ({states}), "
             f"{report.nbytes / 2**20:.0f} MiB in {report.seconds:.1f} s, cache {cache.root}")
    return feats, report


# --- what trains -----------------------------------------------------------------------------------
@dataclass
class Job:
    """Everything the training loop needs for one model type."""

    model: SentimentModel  # what is saved (and, for fine-tuned models, what trains)
    forward: object  # forward(*inputs(idx)) -> logits (B,)
    inputs: dict[str, object]  # split -> callable idx -> batch tuple, with a ``lengths`` array
    params: list[nn.Parameter]  # the trainable parameters
    train_modules: list[nn.Module]  # put in training mode for each epoch (everything else: eval mode)
    spec: dict
    cache_seconds: float = 0.0
    cache_hits: dict | None = None
    extra: dict = field(default_factory=dict)  # model-specific metrics
    finish: object = None  # called once after training, before the final evaluation (LoRA: merge)


def _linear_head(backbone: Backbone, p: dict) -> nn.Module:
    return build_head(HeadConfig(kind="linear", hidden_size=backbone.hidden_size, num_states=1,
                                 pooling="mean", dropout=p["dropout"]))


def _spec(cfg: TrainConfig, p: dict, backbone: Backbone, head: nn.Module, **extra) -> dict:
    return {"model": cfg.model, "preset": cfg.preset if cfg.model == "efficient" else None,
            "backbone": cfg.backbone, "layers": list(backbone.layers), "max_length": p["max_length"],
            "text_normalization": cfg.normalize,
            "head": head.cfg.to_dict(), "labels": ["negative", "positive"], **extra}


def _freeze_pooler(encoder: nn.Module) -> None:
    """No head reads BERT's pooler (a dense layer on [CLS]): it would never get a gradient."""
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise UserError(f"--model partial needs a BERT-style encoder (encoder.encoder.layer); "
                        f"{type(encoder).__name__} has no such layer list")
    return layers


class TopLayers(nn.Module):
    """The top transformer layers of an encoder, run on the hidden states of the layer below them."""

    def __init__(self, encoder: nn.Module, start: int):
        super().__init__()
        self.config = encoder.config
        self.layers = transformer_layers(encoder)[start:]

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(hidden, lengths)[-1]

    def all_outputs(self, hidden: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """The output of every top layer, bottom to top (each ``(B, T, H)``)."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = lengths_to_mask(lengths, hidden.shape[1]).long()
        attn = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        outs = []
        for layer in self.layers:
            hidden = layer(hidden, attn)
            outs.append(hidden)
        return outs


def _setup_efficient(cfg: TrainConfig, p: dict, splits: dict[str, Split]) -> Job:
    backbone = Backbone.load(cfg.backbone, p["layers"] if p["layers"] == "all" else tuple(p["layers"]))
    backbone.requires_grad_(False)
    backbone.eval()
    head = build_head(HeadConfig.lstm(p, backbone.hidden_size, len(backbone.layers)))
    spec = _spec(cfg, p, backbone, head)
    model = SentimentModel(backbone, head, spec)
    job = Job(model, head, {}, list(head.parameters()), [head], spec)
    if cfg.cache:
        feats, frep = prepare_features(cfg, backbone, splits, p["max_length"])
        job.inputs = {k: CachedStates(f) for k, f in feats.items()}
        job.cache_seconds, job.cache_hits = frep.seconds, frep.hits
    else:
        job.inputs = {k: EncoderStates(backbone, s.texts, p["max_length"]) for k, s in splits.items()}
    return job


def _setup_finetune(cfg: TrainConfig, p: dict, splits: dict[str, Split]) -> Job:
    backbone = Backbone.load(cfg.backbone, (-1,))
    head = _linear_head(backbone, p)
    encoder = backbone.encoder
    extra: dict = {}
    if cfg.model == "vanilla":
        encoder.requires_grad_(True)
        _freeze_pooler(encoder)
    elif cfg.model == "lora":
        extra = _attach_lora(cfg, backbone)
    spec = _spec(cfg, p, backbone, head, **{k: v for k, v in extra.items() if k.startswith("lora_")})
    model = SentimentModel(backbone, head, spec)
    params = [q for q in model.parameters() if q.requires_grad]
    job = Job(model, model, {k: TokenBatches(backbone.tokenizer, s.texts, p["max_length"]) for k, s in splits.items()},
              params, [model], spec, extra=extra)
    if cfg.model == "lora":
        def merge():  # the saved model is a plain encoder with the adapters folded into its weights
            backbone.encoder = backbone.encoder.merge_and_unload()

        job.finish = merge
    return job


def _attach_lora(cfg: TrainConfig, backbone: Backbone) -> dict:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UserError("--model lora needs the peft package: pip install 'sst2[peft]'") from exc
    _freeze_pooler(backbone.encoder)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none")
    try:
        backbone.encoder = get_peft_model(backbone.encoder, lcfg)
    except ValueError as exc:  # peft: no module matched the targets
        raise UserError(f"lora_targets {cfg.lora_targets}: {exc}") from exc
    adapters, _ = backbone.encoder.get_nb_trainable_parameters()
    return {"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_targets": list(cfg.lora_targets),
            "adapter_params": adapters}


def _setup_partial(cfg: TrainConfig, p: dict, splits: dict[str, Split]) -> Job:
    lstm = cfg.head == "lstm"
    backbone = Backbone.load(cfg.backbone, "all" if lstm else (-1,))
    n = backbone.num_layers
    if cfg.unfreeze > n:
        raise UserError(f"unfreeze: the encoder has {n} layers, cannot train the top {cfg.unfreeze}")
    start = n - cfg.unfreeze  # hidden state index below the first trained layer (0 = embeddings)
    backbone.requires_grad_(False)
    backbone.eval()
    top = TopLayers(backbone.encoder, start)
    top.requires_grad_(True)
    if lstm:  # the efficient head over every hidden state: the cached frozen ones and the trained top ones
        e = dict(PRESETS[DEFAULT_PRESET], dropout=p["dropout"], combine="concat")
        head = build_head(HeadConfig.lstm(e, backbone.hidden_size, n + 1))
    else:
        head = _linear_head(backbone, p)
    spec = _spec(cfg, p, backbone, head, unfreeze=cfg.unfreeze)
    model = SentimentModel(backbone, head, spec)
    # the frozen lower layers: their output (hidden state ``start``; with the lstm head every hidden state
    # up to it) is cached or computed per batch
    lower = Backbone(backbone.encoder, backbone.tokenizer, tuple(range(start + 1)) if lstm else (start,),
                     source=backbone.source)

    def forward(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if lstm:
            trained = torch.stack(top.all_outputs(states[:, :, -1], lengths), 2)  # (B, T, K, H)
            return head(torch.cat([states, trained], 2), lengths)
        return head(top(states[:, :, -1], lengths).unsqueeze(2), lengths)

    params = list(top.parameters()) + list(head.parameters())
    job = Job(model, forward, {}, params, [top, head], spec, extra={"unfreeze": cfg.unfreeze})
    if cfg.cache:
        feats, frep = prepare_features(cfg, lower, splits, p["max_length"])
        job.inputs = {k: CachedStates(f) for k, f in feats.items()}
        job.cache_seconds, job.cache_hits = frep.seconds, frep.hits
    else:
        job.inputs = {k: EncoderStates(lower, s.texts, p["max_length"]) for k, s in splits.items()}
    return job


SETUPS = {"efficient": _setup_efficient, "vanilla": _setup_finetune, "lora": _setup_finetune,
          "partial": _setup_partial}


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def _depth(name: str, n_layers: int) -> int:
    """How far below the top encoder layer a parameter sits: 0 for the top layer and the head,
    ``n_layers`` for the embeddings (the exponent of ``layer_lr_decay``)."""
    if ".embeddings." in name:
        return n_layers
    m = _LAYER.search(name)
    return n_layers - 1 - int(m.group(1)) if m else 0


def _optimizer(job: Job, p: dict, total_steps: int):
    """Adam (AdamW when there is weight decay: none on biases, LayerNorm weights and the layer mix), and
    with the linear schedule a warm-up then a linear decay to 0. The ``seed`` preset is the reference
    protocol: Adam at a constant learning rate.

    The layer-mix weights get ``mix_lr_scale`` times the learning rate: they start at a uniform mix,
    and at the head's rate they barely leave it in a few hundred steps (softmax weights within 0.13-0.15
    after 8 epochs), so the "learned" mix would be a plain average. The fused kernels: on CPU an AdamW
    step over MiniLM's 22.6M parameters takes 11 ms fused against 82 ms with the per-tensor loop."""
    names = {id(q): n for n, q in job.model.named_parameters()}
    grouped: dict[tuple[float, float], list[nn.Parameter]] = {}
    n_layers = job.model.backbone.num_layers
    for q in job.params:
        name = names.get(id(q), "")
        mix = name.rpartition(".")[0].endswith("mix")
        base = p["head_lr"] if (p.get("head_lr") and name.startswith("head.")) else p["lr"]
        lr = base * (p["mix_lr_scale"] if mix else 1.0) * p["layer_lr_decay"] ** _depth(name, n_layers)
        decay = 0.0 if (mix or q.ndim < 2 or "LayerNorm" in name) else p["weight_decay"]
        grouped.setdefault((lr, decay), []).append(q)
    groups = [{"params": qs, "lr": lr, "weight_decay": decay} for (lr, decay), qs in grouped.items()]
    adam = torch.optim.AdamW if p["weight_decay"] else torch.optim.Adam
    opt = adam(groups, lr=p["lr"], fused=True)
    if p["schedule"] == "constant":
        return opt, None
    from transformers import get_linear_schedule_with_warmup

    return opt, get_linear_schedule_with_warmup(opt, int(p["warmup_ratio"] * total_steps), total_steps)


# --- the command -----------------------------------------------------------------------------------
def _prepare_out(cfg: TrainConfig, data_dir: Path) -> tuple[Path, Path]:
    """Check ``--out`` (``sst2.rundir``) and create this run's marked temporary folder beside it."""
    from sst2.features.cache import default_cache_dir

    out = Path(cfg.out)
    protected = {"the data folder": data_dir, "the training file": Path(cfg.train_file) if cfg.train_file else None,
                 "the feature cache": Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()}
    rundir.check_out(out, cfg.overwrite, protected)
    rundir.clean_stale(out, log=lambda m: log(cfg, m))
    return out, rundir.begin(out)


def write_csv(path: Path, fields, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)


def train(cfg: TrainConfig) -> dict:
    """Train, evaluate and write the run directory; returns the metrics dict (with ``--seeds N``:
    one run directory per seed under OUT/seed-S/ and the summary dict, also written as summary.json)."""
    t_start = time.perf_counter()
    threads = set_threads(cfg.threads)
    p = cfg.resolved()
    data_dir = resolve_data_dir(cfg.data)
    splits = {k: dataclasses.replace(s, texts=normalize_texts(s.texts, cfg.normalize))
              for k, s in load_splits(data_dir, cfg.train_file).items()}
    out, partial = _prepare_out(cfg, data_dir)
    try:
        if cfg.seeds == 1:
            result = _train_run(cfg, p, splits, partial, threads, t_start, data_dir)
        else:
            runs = []
            for k in range(cfg.seeds):
                seed = cfg.seed + k
                log(cfg, f"--- seed {seed} ({k + 1}/{cfg.seeds}) ---")
                one = dataclasses.replace(cfg, seed=seed, seeds=1)
                runs.append(_train_run(one, p, splits, partial / f"seed-{seed}", threads, time.perf_counter(),
                                       data_dir))
                rundir.mark_run(partial / f"seed-{seed}")
            result = summarize_seeds(runs)
            result["total_seconds"] = round(time.perf_counter() - t_start, 3)
            (partial / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    except BaseException:
        rundir.abort(partial)  # never leave a half-written run behind
        raise
    rundir.finish(out, partial)
    if cfg.seeds == 1:
        log(cfg, f"wrote {out}/ ({', '.join(RUN_FILES)})")
    elif cfg.quiet:
        print(json.dumps({"model": result["model"], "seeds": result["seeds"],
                          **{k: result[k] and {s: result[k][s] for s in ("mean", "std")}
                             for k in ("dev_accuracy", "test_accuracy")}, "total_seconds": result["total_seconds"]}))
    else:
        log(cfg, f"{cfg.seeds} seeds: dev accuracy {_pm(result['dev_accuracy'])} | test accuracy "
                 f"{_pm(result['test_accuracy'])} | wrote {out}/ (summary.json, seed-*/)")
    return result


SUMMARY_KEYS = ("dev_accuracy", "test_accuracy", "best_epoch", "train_seconds", "seconds_per_epoch", "total_seconds",
                "cache_seconds", "peak_rss_mb")


def summarize_seeds(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) over seeds of the per-run metrics."""
    first = runs[0]
    out = {k: first[k] for k in ("model", "preset", "backbone", "data", "train_file", "trainable_params",
                                 "total_params", "epochs")}
    out["seeds"] = [r["seed"] for r in runs]
    out["runs"] = [f"seed-{r['seed']}" for r in runs]
    for key in SUMMARY_KEYS:
        values = [r[key] for r in runs]
        if any(v is None for v in values):
            out[key] = None
            continue
        arr = np.asarray(values, dtype=float)
        out[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                    "values": values}
    return out


def _pm(stat: dict | None) -> str:
    return "n/a" if stat is None else f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _train_run(cfg: TrainConfig, p: dict, splits: dict[str, Split], run_dir: Path, threads: int, t_start: float,
               data_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    job = SETUPS[cfg.model](cfg, p, splits)
    model, spec = job.model, job.spec
    trainable, total = count_parameters(model)
    backbone = model.backbone
    what = f"{cfg.model}/{cfg.preset}" if cfg.model == "efficient" else cfg.model
    log(cfg, f"model: {what} on {cfg.backbone} (hidden {backbone.hidden_size}, {backbone.num_layers} layers)"
             + (f", top {cfg.unfreeze} trained" if cfg.model == "partial" else "")
             + (f", LoRA r={cfg.lora_r} on {','.join(cfg.lora_targets)}" if cfg.model == "lora" else ""))
    log(cfg, f"trainable params: {trainable:,} | total params: {total:,} | threads: {threads}")
    labels = {k: torch.tensor(s.labels, dtype=torch.float32) if s.labelled else None for k, s in splits.items()}
    truncated = {k: count_truncated(backbone.tokenizer, s.texts, p["max_length"]) for k, s in splits.items()}

    torch.manual_seed(cfg.seed)  # same dropout stream whatever happened above
    rng = np.random.default_rng(cfg.seed)
    train_inputs = job.inputs["train"]
    if p.get("token_dropout"):
        train_inputs = TokenDropout(train_inputs, p["token_dropout"], np.random.default_rng([cfg.seed, 1]))
    train_lengths = train_inputs.lengths
    steps_per_epoch = -(-len(train_lengths) // p["batch_size"])
    optimizer, scheduler = _optimizer(job, p, steps_per_epoch * p["epochs"])
    trainable_names = [n for n, q in model.named_parameters() if q.requires_grad]
    average = WeightAverage(job.params, p["ema"]) if p["ema"] else None
    scored = average.applied if average is not None else nullcontext  # the weights that are scored and saved
    history, epochs = [], []
    best_acc, best_epoch, best_state = -1.0, 0, None
    step = 0
    t_train = time.perf_counter()
    probe = {}
    if p.get("probe_epochs"):
        probe = fit_probe(job, job.inputs["train"], labels["train"], p["probe_epochs"], p["probe_lr"],
                          p["batch_size"], np.random.default_rng([cfg.seed, 2]))
        torch.manual_seed(cfg.seed)  # fine-tuning sees the same dropout stream as without the probe
        log(cfg, f"probe: classifier fitted alone for {p['probe_epochs']} epochs on the untrained model's "
                 f"features (train accuracy {probe['probe_train_accuracy']:.4f}) in {probe['probe_seconds']:.1f} s")
    for epoch in range(1, p["epochs"] + 1):
        t_ep = time.perf_counter()
        batches = make_batches(train_lengths, p["batch_size"], rng, cfg.bucket)
        model.eval()
        for m in job.train_modules:
            m.train()
        with _tqdm(cfg, total=len(batches), desc=f"epoch {epoch}/{p['epochs']}", unit="batch") as bar:
            tr, rows = train_one_epoch(job.forward, train_inputs, labels["train"], batches, optimizer,
                                       cfg.grad_clip, epoch, step, bar, scheduler=scheduler, params=job.params,
                                       average=average, rdrop=p["rdrop"])
        step += len(rows)
        history += rows
        model.eval()
        for m in job.train_modules:
            m.eval()
        with scored():
            dev = evaluate_states(job.forward, job.inputs["dev"], labels["dev"])
            row = {"epoch": epoch, **tr, "dev_loss": dev["loss"], "dev_accuracy": dev["accuracy"],
                   "seconds": time.perf_counter() - t_ep}
            epochs.append(row)
            if dev["accuracy"] > best_acc:
                best_acc, best_epoch = dev["accuracy"], epoch
                params = dict(model.named_parameters())
                best_state = {n: params[n].detach().clone() for n in trainable_names}
        log(cfg, f"epoch {epoch:>2}: train loss {tr['train_loss']:.4f} acc {tr['train_accuracy']:.4f} | "
                 f"dev loss {dev['loss']:.4f} acc {dev['accuracy']:.4f} | {row['seconds']:.1f} s")
    train_seconds = time.perf_counter() - t_train
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in best_state.items():
            params[n].copy_(v)
    del best_state
    if job.finish is not None:
        job.finish()
    model.eval()
    if job.finish is not None:  # the model changed form: score what is saved, end to end
        final = {k: TokenBatches(backbone.tokenizer, s.texts, p["max_length"]) for k, s in splits.items()}
        forward = model
    else:
        final, forward = job.inputs, job.forward
    dev = evaluate_states(forward, final["dev"], labels["dev"])
    test = evaluate_states(forward, final["test"], labels["test"])
    test_acc = test.get("accuracy")
    log(cfg, f"best epoch {best_epoch}: dev accuracy {dev['accuracy']:.4f} | test accuracy "
             f"{'n/a (unlabelled)' if test_acc is None else f'{test_acc:.4f}'}")

    model.save(run_dir / "model")
    total_seconds = time.perf_counter() - t_start
    metrics = {
        "model": cfg.model,
        "preset": spec["preset"],
        "backbone": cfg.backbone,
        "data": str(data_dir),
        "train_file": cfg.train_file,
        "trainable_params": trainable,
        "total_params": total,
        **job.extra,
        **probe,
        "epochs": p["epochs"],
        "best_epoch": best_epoch,
        "dev_accuracy": dev["accuracy"],
        "test_accuracy": test_acc,
        "dev_loss": dev["loss"],
        "test_loss": test.get("loss"),
        "train_size": len(splits["train"]),
        "dev_size": len(splits["dev"]),
        "test_size": len(splits["test"]),
        "max_length": p["max_length"],
        "truncated_sentences": truncated,
        "cache": cfg.cache if cfg.model in ("efficient", "partial") else None,
        "cache_hits": job.cache_hits,
        "cache_seconds": round(job.cache_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(train_seconds / p["epochs"], 3),
        "total_seconds": round(total_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads,
        "seed": cfg.seed,
    }
    config = {"command": "train", "config": to_dict(cfg), "resolved": p, "model_spec": spec,
              "data_files": {k: {"path": str(s.path), "sha256": s.sha256, "rows": len(s)} for k, s in splits.items()},
              "environment": environment()}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_csv(run_dir / "history.csv", HISTORY_FIELDS, history)
    write_csv(run_dir / "epochs.csv", EPOCH_FIELDS, [{k: round(v, 6) if isinstance(v, float) else v
                                                       for k, v in r.items()} for r in epochs])
    from sst2.evaluation.plots import plot_run

    plot_run(run_dir)
    # metrics.json last: its presence marks a complete run directory
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if cfg.quiet:
        print(json.dumps({k: metrics[k] for k in ("model", "dev_accuracy", "test_accuracy", "total_seconds")}))
    return metrics
