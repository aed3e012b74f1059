"""Stage ``cam_train``: the CAM classifier (IRNet's, with CONTA's context channel from round 1 on)
trained with the multi-label soft-margin loss, or copied from a checkpoint; and what the context
adjustment learned (its weight, its attention, its share of the CAMs)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import ExperimentConfig
from ..data.transforms import Compose, TrainTransform, TransformView, normalize
from ..errors import CausalWSSSError, ConfigError
from ..io import torch_save
from ..models.context import ContextCamNet
from ..runtime import (
    autocast,
    get_dist,
    loader_workers,
    setup_logging,
    train_channels_last,
    wrap_ddp,
)
from ..train import LogEpochs, fit, make_loader, poly_lambda, split_optimizer


def stage_cam_train(cfg: ExperimentConfig, model: nn.Module, train_ds, round_dir: Path, *,
                    device: torch.device, dist_info=None, progress: bool = True, logger=None,
                    callbacks: tuple = (), pre_transform=None) -> dict:
    """Train the (context-adjusted) CAM classifier with the multi-label soft-margin loss.

    Checkpoints ``round_dir/cam_net.pt`` every epoch and resumes from it. ``callbacks`` (e.g.
    :class:`causal_wsss.train.LossHistory`) see every step. ``pre_transform``: an intervention's
    per-sample transform applied before the training crop (e.g. pasting an object).
    """
    dist_info = dist_info or get_dist()
    logger = logger or setup_logging(None)

    c = cfg.cam
    dataset = TransformView(train_ds, Compose(pre_transform, TrainTransform(
        c.crop_size, resize_long=c.resize_long, seed=cfg.seed)))
    loader = make_loader(dataset, batch_size=c.batch_size, seed=cfg.seed,
                         num_workers=loader_workers(cfg.data.num_workers, device),
                         dist_info=dist_info,
                         pin_memory=device.type == "cuda")
    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    model = model.to(device)
    channels_last = train_channels_last(device, c.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx_cfg = cfg.context
    optimizer = split_optimizer(
        cam_net.param_groups(c.lr, c.head_lr_mult, context_lr=ctx_cfg.lr or None),
        name=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum,
        special="context", special_name=ctx_cfg.optimizer)
    total = c.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total, c.poly_power))
    wrapped = wrap_ddp(model, device, dist_info)
    with_context = isinstance(model, ContextCamNet)
    if with_context:
        callbacks = (ContextMonitor(cam_net, logger), *callbacks)

    def loss_fn(net: nn.Module, batch: dict) -> torch.Tensor:
        out = cam_batch_forward(net, batch, device, with_context=with_context,
                                channels_last=channels_last)
        return F.multilabel_soft_margin_loss(out.logits.float(), batch["labels"].to(device))

    state = fit(wrapped, loader, optimizer, epochs=c.epochs, loss_fn=loss_fn, device=device,
                scheduler=scheduler, checkpoint_path=round_dir / "cam_net.pt",
                config=cfg.to_dict(), amp=c.amp, callbacks=[LogEpochs(logger, "cam"), *callbacks],
                progress=progress, desc="cam epoch", dist_info=dist_info)
    if channels_last:  # leave in the layout a resumed run loads the network in, so that the
        model.to(memory_format=torch.contiguous_format)  # next stages compute the same floats
    final = state.history[-1]["loss"] if state.history else None  # NaN-free on a resumed run
    result = {"epochs": c.epochs, "final_loss": final, "history": state.history}
    if with_context:
        weight = cam_net.context_weight()  # (K, Cc): CONTA's one column, or an appearance m's
        feat_w = cam_net.classifier.weight.detach()[:, : cam_net.feature_channels].abs().mean()
        result["context_weight_mean_abs"] = float(weight.abs().mean())
        result["context_weight_vs_feature_weight"] = float(weight.abs().mean() / feat_w)
        result["context_share"] = context_share(model, next(iter(loader)), device=device,
                                                amp=c.amp)
        logger.info("context channel: mean |w_M| = %.4g (%.3gx the mean feature weight); it "
                    "makes %.3g%% of the positive classes' pre-ReLU CAM magnitude",
                    result["context_weight_mean_abs"], result["context_weight_vs_feature_weight"],
                    100 * result["context_share"])
        result.update(attention_summary(cam_net.new_modules["context"]))
        logger.info("attention: mean max alpha %.3f (uniform: %.3f); %.0f%% of the images put "
                    "their largest weight on the same class; m varies across images by %.3g "
                    "of its mean", result["alpha_max_mean"], result["alpha_uniform"],
                    100 * result["alpha_top_class_share"], result["m_spread"])
    return result


def cam_batch_forward(net: nn.Module, batch: dict, device: torch.device, *, with_context: bool,
                      channels_last: bool = False):
    """The CAM network's output on a training batch: normalised images, plus the batch's
    query rows and crop geometry for a :class:`ContextCamNet` (``with_context``)."""
    images = normalize(batch["image"].to(device, non_blocking=True))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if with_context:
        return net(images, batch["index"].to(device), batch["crop_box"].to(device),
                   batch["flipped"].to(device))
    return net(images)


def stage_cam_transfer(cfg: ExperimentConfig, model: nn.Module, round_dir: Path) -> dict:
    """Round 0 with ``cam.checkpoint``: copy a CAM network trained elsewhere into the round
    (its weights must fit this config's network) instead of training one."""
    src = Path(cfg.cam.checkpoint)
    try:
        state = load_checkpoint(src, model=model, map_location="cpu")
    except (CausalWSSSError, RuntimeError) as exc:
        raise ConfigError(f"config key 'cam.checkpoint' = {src}: {str(exc).splitlines()[0]}; "
                          "expected the cam_net.pt of a round 0 with the same cam.* network "
                          "settings and classes") from exc
    torch_save(round_dir / "cam_net.pt", state)
    return {"transferred_from": str(src.resolve()), "epochs": 0, "final_loss": None,
            "history": list(state.get("extra", {}).get("history", []))}


class ContextMonitor:
    """Per epoch, what the context adjustment has learned, added to the epoch's history entry:
    ``w_m_abs`` (mean |w_M|, the classifier's weight on M), ``alpha_max_mean`` (mean largest
    alpha), and for the learned attention ``attention_logit_std`` / ``attention_logit_range``
    (the spread of the scores q K_i^T / sqrt(e) across the dictionary, averaged over images:
    0 means uniform attention, a few units a peaked one).
    """
    def __init__(self, cam_net: nn.Module, logger=None) -> None:
        self.cam_net, self.logger = cam_net, logger

    def on_history(self, state) -> None:
        context = self.cam_net.new_modules["context"]
        entry = {"w_m_abs": float(self.cam_net.context_weight().abs().mean())}
        entry.update({k: v for k, v in attention_summary(context).items()
                      if k in ("alpha_max_mean", "alpha_uniform")})
        entry.update(attention_logit_spread(context))
        if state.history:
            state.history[-1].update(entry)
        if self.logger is not None:
            self.logger.info("context epoch %d: mean |w_M| %.4g, mean max alpha %.3f (uniform "
                             "%.3f), attention logit std %.3g", state.epoch + 1, entry["w_m_abs"],
                             entry["alpha_max_mean"], entry["alpha_uniform"],
                             entry.get("attention_logit_std", float("nan")))


@torch.no_grad()
def attention_logit_spread(context: nn.Module, batch_size: int = 512) -> dict:
    """Spread of Eq. 3's attention scores across the valid entries, averaged over the images
    (empty for the uniform and exact modes, which have no scores)."""
    if getattr(context, "w1", None) is None or context.queries is None:
        return {}
    valid = context.valid
    dictionary = context.dictionary
    stds, ranges = [], []
    for start in range(0, context.queries.shape[0], batch_size):
        query = context.queries[start:start + batch_size].float()
        if context.l2_normalize:
            query = F.normalize(query, dim=-1)
            dictionary = F.normalize(context.dictionary, dim=-1)
        scores = (context.w1(query) @ context.w2(dictionary).T) / math.sqrt(context.embed_dim)
        scores = scores[:, valid]  # (B, n_valid)
        stds.append(scores.std(dim=1, unbiased=False))
        ranges.append(scores.amax(dim=1) - scores.amin(dim=1))
    return {"attention_logit_std": float(torch.cat(stds).mean()),
            "attention_logit_range": float(torch.cat(ranges).mean())}


@torch.no_grad()
def attention_summary(context: nn.Module, batch_size: int = 512) -> dict:
    """Does the learned attention of Eq. 3 depend on the image? Statistics over every query.

    ``alpha_max_mean``: mean over images of the largest alpha (``alpha_uniform`` = 1 / number of
    valid classes is the no-information value); ``alpha_top_class_share``: share of images whose
    largest alpha falls on the most common such class (1.0 = the same class for every image);
    ``m_spread``: the per-cell standard deviation of m across images, averaged over cells,
    divided by the mean of m (0 = one map for every image).
    """
    was_training = context.training
    context.eval()
    n = context.queries.shape[0]
    alphas, ms = [], []
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(n, start + batch_size), device=context.queries.device)
        out = context(index=rows)
        alphas.append(out.alpha.float().cpu())
        ms.append(out.m.float().flatten(1).cpu())
    context.train(was_training)
    alpha, m = torch.cat(alphas), torch.cat(ms)  # (N, n), (N, D)
    top = alpha.argmax(dim=1)
    return {"alpha_max_mean": float(alpha.max(dim=1).values.mean()),
            "alpha_uniform": float(1.0 / context.valid.sum().clamp_min(1)),
            "alpha_top_class_share": float(torch.bincount(top).max() / n),
            "m_spread": float(m.std(dim=0).mean() / m.mean().clamp_min(1e-12)) if n > 1 else 0.0}


@torch.no_grad()
def context_share(model: ContextCamNet, batch: dict, *, device: torch.device,
                  amp: bool = True) -> float:
    """How much the M channel moves the CAMs: mean |w_kM m| / mean |w_k . [F ; m]| (positive classes).

    A faithful m (at most max_i P(c_i)) next to hundreds of post-ReLU feature channels
    contributes a tiny share unless its weight grows to match: an independent CPU prototype
    (ResNet-18 from scratch) measured about 0.06%.
    """
    model.eval()
    images = normalize(batch["image"].to(device))
    with autocast(device, amp):
        out = model(images, batch["index"].to(device), batch["crop_box"].to(device),
                    batch["flipped"].to(device))
    cam_net = model.cam_net
    features = out.features.float()  # (B, C + 1, h, w); (B, C + n, h, w) under the exact sum
    if cam_net.context_mixture is not None:  # the share of the mixture's mean context map
        c = cam_net.feature_channels
        mix = cam_net.context_mixture.to(features.device)[None, :, None, None]
        features = torch.cat([features[:, :c], (features[:, c:] * mix).sum(1, keepdim=True)], 1)
    weight = cam_net.classifier.weight.float()[:, :, 0, 0]  # (K, C + Cc)
    c_feat = cam_net.feature_channels
    total = torch.einsum("kc,bchw->bkhw", weight, features).abs().mean(dim=(2, 3))  # (B, K)
    if features.shape[1] == c_feat + 1:  # one context channel (CONTA's m)
        ctx = (weight[:, -1][None, :, None, None] * features[:, -1:]).abs().mean(dim=(2, 3))
    else:  # an appearance m: the trunk's width of context channels
        ctx = torch.einsum("kc,bchw->bkhw", weight[:, c_feat:],
                           features[:, c_feat:]).abs().mean(dim=(2, 3))  # (B, K)
    positive = batch["labels"].to(device) > 0
    model.train()
    return float(ctx[positive].sum() / total[positive].sum().clamp_min(1e-12))
