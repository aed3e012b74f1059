"""``cam.method=esol``: ESOL's expansion and shrinkage samplers after IRNet's CAM training.

ESOL re-implemented from the abstract and the official figure (Li et al., NeurIPS 2022), not a
reproduction: the official code was never released and the paper body could not be read, so
the recipe below is our design [R] wherever the figure is silent (docs/esol.md). One round:

1. ``cam_train`` (stage 0): the project's IRNet CAM training, unchanged (with CONTA's context
   channel from round 1 on), shared with ``cam.method=irn``;
2. ``cam_expand``: the clip value tau is fixed from ``esol.clip_images`` training crops, then
   the expansion sampler (offset conv 1) ascends the classification loss through a
   gradient-reversal layer whose weight ramps 0 -> ``esol.lambda_rev_max`` (DANN), while the
   expansion head descends it; the trunk is frozen (reading A) unless ``esol.train_backbone``;
   checkpoint ``cam_expand.pt``;
3. ``cam_shrink``: everything of stage 2 frozen; the shrinkage sampler and head descend the
   classification loss plus ``esol.lambda_area`` times the area loss; checkpoint
   ``cam_shrink.pt``;
4. ``esol_eval`` (``esol.diagnostics``): stage-0 and expansion CAMs of the evaluation split,
   scored like the round's CAMs (best-threshold mIoU, precision, recall, context figures);
   the shrinkage CAMs are the round's own (stage ``cams``).

CONTA's context channel attaches to whichever head is being trained and never enters the
samplers; its attention (W_1, W_2) trains in stage 0 only.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import ExperimentConfig
from ..data import build_dataset
from ..data.transforms import Compose, TrainTransform, TransformView, normalize
from ..errors import ConfigError
from ..models.context import ContextCamNet
from ..models.esol_net import EsolCamNet, area_loss
from ..runtime import DistInfo, loader_workers, seed_everything, stage_seed, wrap_ddp
from ..stages.cam_train import cam_batch_forward
from ..stages.cams import stage_cam_eval, stage_cams
from ..stages.models import build_cam_model
from ..train import build_optimizer, fit, make_loader, poly_lambda, set_epoch
from .base import CamMethod, CamRound, CamStages, StageSpec
from .irn import train_irn_cams

EVAL_KEYS = ("cam_miou", "cam_miou_best", "cam_threshold_best", "precision_best", "recall_best",
             "contrast_context", "leakage", "leakage_background", "precision_best_fp_context")
"""Figures of the stage-0 and expansion CAMs kept by ``esol_eval`` (and the report entry)."""


class ReversalRamp:
    """Callback: sets the expansion sampler's training progress (the lambda ramp) after every
    step, and halves the reversed-gradient weight when more than ``guard`` of the taps read
    outside the map (the degeneracy guard; the counters are buffers, saved with the model)."""

    def __init__(self, sampler: nn.Module, guard: float, logger) -> None:
        self.sampler, self.guard, self.logger = sampler, guard, logger

    def on_step(self, state) -> None:
        s = self.sampler
        s.progress.fill_(state.step / max(1, state.max_step))
        if self.guard > 0 and float(s.outside_share) > self.guard:
            s.lambda_scale.mul_(0.5)
            s.halvings.add_(1)
            self.logger.warning("esol expand: %.0f%% of the sampling taps read outside the map "
                                "(> %.0f%%): lambda_rev halved to %.3g x the ramp (step %d)",
                                100 * float(s.outside_share), 100 * self.guard,
                                float(s.lambda_scale), state.step)
            s.outside_share.zero_()


class EpochMonitor:
    """Callback: one log line per epoch with the loss parts and the sampler's monitor."""

    def __init__(self, name: str, sampler: nn.Module, parts: dict, logger) -> None:
        self.name, self.sampler, self.parts, self.logger = name, sampler, parts, logger
        self.epochs: list[dict] = []

    def on_epoch_end(self, state) -> None:
        n = max(1, self.parts.get("n", 0))
        row = {"epoch": state.epoch + 1, "loss": state.epoch_loss,
               "cls": self.parts.get("cls", 0.0) / n, "area": self.parts.get("area", 0.0) / n,
               "mean_abs_offset": float(self.sampler.mean_abs_offset),
               "outside_share": float(self.sampler.outside_share),
               "lambda_rev": self.sampler.lambda_rev() if self.sampler.reverse else 0.0}
        self.epochs.append(row)
        self.parts.clear()
        self.logger.info("esol %s epoch %d: loss %.4f (cls %.4f, area %.4f), mean |offset| %.3f "
                         "cells, %.1f%% taps outside, lambda_rev %.3f", self.name, row["epoch"],
                         row["loss"], row["cls"], row["area"], row["mean_abs_offset"],
                         100 * row["outside_share"], row["lambda_rev"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.cam_net if isinstance(model, ContextCamNet) else model


@torch.no_grad()
def calibrate_clip(net: nn.Module, loader, *, q: float, images: int, device: torch.device,
                   max_values: int = 16384, seed: int = 0) -> dict:
    """Fix the Clip Op: tau = per-channel ``q``-quantile of F1 (offsets at zero, i.e. the
    box-blurred trunk features) over the first ``images`` training crops of epoch 0."""
    was = net.training
    net.eval()
    set_epoch(loader, 0)
    chunks, seen = [], 0
    for batch in loader:
        x = normalize(batch["image"].to(device))
        f1 = net.expand(net.trunk(x)).float()  # (B, C, h, w)
        chunks.append(f1.permute(1, 0, 2, 3).flatten(1).cpu())  # (C, B*h*w)
        seen += x.shape[0]
        if seen >= images:
            break
    net.train(was)
    values = torch.cat(chunks, dim=1)
    if values.shape[1] > max_values:
        g = torch.Generator().manual_seed(seed)
        values = values[:, torch.randperm(values.shape[1], generator=g)[:max_values]]
    tau = net.clip.calibrate(values, q)
    return {"clip_q": q, "clip_images": seen, "tau_mean": float(tau.mean()),
            "tau_max": float(tau.max())}


def stage_esol_train(cfg, model: nn.Module, phase: str, round_: CamRound) -> dict:
    """Train the expansion (``phase="expand"``) or shrinkage network; checkpoints
    ``cam_<phase>.pt`` every epoch and resumes from it."""
    e, c = cfg.esol, cfg.cam
    device, logger = round_.device, round_.logger
    net = _unwrap(model)
    net.set_phase(phase)
    net.freeze_for_phase()
    dataset = TransformView(round_.train_set, Compose(round_.pre_transform, TrainTransform(
        c.crop_size, resize_long=c.resize_long, seed=cfg.seed)))
    loader = make_loader(dataset, batch_size=c.batch_size, seed=cfg.seed,
                         num_workers=loader_workers(cfg.data.num_workers, device),
                         dist_info=round_.dist_info,
                         pin_memory=device.type == "cuda")
    checkpoint = round_.round_dir / f"cam_{phase}.pt"
    result: dict = {"phase": phase}
    sampler = net.expand if phase == "expand" else net.shrink
    if phase == "expand" and not checkpoint.is_file():
        sampler.lambda_scale.fill_(e.lambda_rev_max)
        if e.clip_q > 0:  # every rank reads the same crops (an unsharded loader): same tau
            whole = make_loader(dataset, batch_size=c.batch_size, seed=cfg.seed,
                                num_workers=loader_workers(cfg.data.num_workers, device),
                                dist_info=DistInfo())
            result["clip"] = calibrate_clip(net, whole, q=e.clip_q, images=e.clip_images,
                                            device=device, seed=cfg.seed)
            logger.info("esol clip: tau = %.3g on average (the %.2f-quantile of F1 over %d "
                        "crops)", result["clip"]["tau_mean"], e.clip_q,
                        result["clip"]["clip_images"])
    optimizer = build_optimizer(net.param_groups(e.lr_head, e.lr_offset, e.lr_backbone),
                                name="sgd", lr=e.lr_head, weight_decay=c.weight_decay,
                                momentum=e.momentum)
    epochs = e.epochs_expand if phase == "expand" else e.epochs_shrink
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  poly_lambda(epochs * len(loader), c.poly_power))
    with_context = isinstance(model, ContextCamNet)
    parts: dict = {}

    def loss_fn(m: nn.Module, batch: dict) -> torch.Tensor:
        labels = batch["labels"].to(device)
        out = cam_batch_forward(m, batch, device, with_context=with_context)
        loss = F.multilabel_soft_margin_loss(out.logits.float(), labels)
        parts["cls"] = parts.get("cls", 0.0) + float(loss.detach())
        if phase == "shrink" and e.lambda_area > 0:
            area = area_loss(net.class_maps(out.features), labels)
            parts["area"] = parts.get("area", 0.0) + float(area.detach())
            loss = loss + e.lambda_area * area
        parts["n"] = parts.get("n", 0) + 1
        return loss

    monitor = EpochMonitor(phase, sampler, parts, logger)
    callbacks = [monitor]
    if phase == "expand":
        callbacks.insert(0, ReversalRamp(sampler, e.guard_outside, logger))
    model.to(device)
    state = fit(wrap_ddp(model, device, round_.dist_info), loader, optimizer, epochs=epochs, loss_fn=loss_fn, device=device,
                scheduler=scheduler, checkpoint_path=checkpoint, config=cfg.to_dict(),
                amp=c.amp, callbacks=callbacks, progress=round_.progress,
                desc=f"esol {phase} epoch", dist_info=round_.dist_info)
    result.update({"epochs": epochs, "history": state.history,
                   "final_loss": state.history[-1]["loss"] if state.history else None,
                   "monitor": monitor.epochs,  # the epochs this process ran (log.txt has all)
                   "mean_abs_offset": float(sampler.mean_abs_offset),
                   "outside_share": float(sampler.outside_share),
                   "lambda_rev_final": sampler.lambda_rev() if sampler.reverse else 0.0,
                   "lambda_halvings": int(sampler.halvings)})
    if e.guard_outside > 0 and result["outside_share"] > e.guard_outside:
        logger.warning("esol %s: %.0f%% of the taps still read outside the map at the end; "
                       "lower esol.r_max or esol.lambda_rev_max", phase,
                       100 * result["outside_share"])
    return result


def stage_esol_eval(round_: CamRound, stage0_model: nn.Module, model: nn.Module) -> dict:
    """Score the stage-0 and the expansion CAMs of the evaluation split like the round's CAMs
    (their caches are deleted afterwards); the shrinkage weights are loaded back at the end."""
    cfg, rd, device = round_.cfg, round_.round_dir, round_.device
    eval_ds = round_.sets["eval"]
    ctx_fn = round_.context_fn(model) if round_.context_fn is not None else None
    net = _unwrap(model)
    out: dict = {}
    for variant, source, which in (("stage0", "cam_net.pt", stage0_model),
                                   ("expand", "cam_expand.pt", model)):
        t0 = time.perf_counter()
        load_checkpoint(rd / source, model=which, map_location=device)
        net.set_phase("expand")
        cache = rd / "esol_cams" / variant
        if round_.dist_info.is_main:
            shutil.rmtree(cache, ignore_errors=True)
        stage_cams(cfg, which, [eval_ds], cache, device=device, dist_info=round_.dist_info,
                   progress=round_.progress, context_fn=ctx_fn)
        scores = stage_cam_eval(cfg, eval_ds, cache, device=device, dist_info=round_.dist_info,
                                progress=round_.progress)
        out[variant] = {k: scores.get(k) for k in EVAL_KEYS}
        out[variant]["seconds"] = time.perf_counter() - t0
        round_.logger.info("esol %s CAMs: mIoU %.1f at the best threshold %.2f, precision %.3f, "
                           "recall %.3f", variant, scores["cam_miou_best"],
                           scores["cam_threshold_best"], scores["precision_best"],
                           scores.get("recall_best", float("nan")))
    if round_.dist_info.is_main:
        shutil.rmtree(rd / "esol_cams", ignore_errors=True)
    load_checkpoint(rd / "cam_shrink.pt", model=model, map_location=device)
    return out


def train_esol_cams(round_: CamRound) -> CamStages:
    """Stage 0 (IRNet CAM), then ``cam_expand``, ``cam_shrink`` and ``esol_eval``."""
    cfg, e, rd, device = round_.cfg, round_.cfg.esol, round_.round_dir, round_.device
    stage0 = train_irn_cams(round_)
    seed_everything(stage_seed(cfg.seed, "esol"))
    net = EsolCamNet(round_.cam_net, r_max=e.r_max, ramp=e.lambda_rev, op=e.sampler_op,
                     train_backbone=e.train_backbone, sampler=e.sampler)
    # the round's wrapper (CONTA's ContextCamNet, or a subclass such as the appearance one)
    model = type(round_.model)(net) if isinstance(round_.model, ContextCamNet) else net
    model.to(device)
    timed = round_.timed
    expand = timed("cam_expand", lambda: stage_esol_train(cfg, model, "expand", round_))
    load_checkpoint(rd / "cam_expand.pt", model=model, map_location=device)
    net.set_phase("shrink")
    net.start_shrink()
    shrink = timed("cam_shrink", lambda: stage_esol_train(cfg, model, "shrink", round_))
    load_checkpoint(rd / "cam_shrink.pt", model=model, map_location=device)
    summary = {"esol_expand_mean_abs_offset": expand.get("mean_abs_offset"),
               "esol_expand_outside_share": expand.get("outside_share"),
               "esol_shrink_mean_abs_offset": shrink.get("mean_abs_offset"),
               "esol_shrink_outside_share": shrink.get("outside_share")}
    if e.diagnostics:
        diag = timed("esol_eval", lambda: stage_esol_eval(round_, stage0.model, model))
        for variant in ("stage0", "expand"):
            for key in EVAL_KEYS:
                summary[f"esol_{variant}_{key}"] = diag.get(variant, {}).get(key)
    net.set_phase(e.extract_from)
    net.eval()
    return CamStages(stage0.record, model, summary)


SHRINK_ONLY_KEYS = frozenset({"lambda_area", "epochs_shrink", "extract_from"})
"""``esol.*`` keys that stage 0 (``cam_train``), ``cam_expand`` and ``esol_eval`` never read:
two runs differing only in these share those stages bit for bit (the shrinkage's loader and
crops are seeded by ``cfg.seed`` alone, and its head starts as a copy of the expansion head).
:func:`causal_wsss.evidence.share_esol_stages` uses it for the protocol's ablations."""

METHOD = CamMethod(
    name="esol",
    description="ESOL re-implemented from the abstract and the official figure: expansion and "
                "shrinkage deformable samplers after IRNet's CAM (docs/esol.md)",
    train=train_esol_cams,
    stages=(StageSpec("cam_expand", files=(("cam_expand.pt", "zip"),),
                      inputs=((0, "cam_train"), (0, "confounders"))),
            StageSpec("cam_shrink", files=(("cam_shrink.pt", "zip"),),
                      inputs=((0, "cam_expand"),)),
            # it scores the stage-0 and expansion networks only (it runs after the shrinkage)
            StageSpec("esol_eval", inputs=((0, "cam_train"), (0, "cam_expand")),
                      makes_cam_net=False,
                      enabled=lambda cfg: cfg.esol.diagnostics)),
)


def load_esol_round(run_dir, r: int = 0, *, device: str | torch.device = "cpu"):
    """``(cfg, stage0, esol)``: the networks of round ``r`` of a finished ``cam.method=esol`` run,
    in eval mode: the stage-0 CamNet (``cam_net.pt``) and the EsolCamNet (``cam_shrink.pt``,
    phase ``shrink``; ``esol.set_phase("expand")`` gives the expansion network). Round 0 only:
    later rounds need their context module (use the run's cached CAMs instead)."""
    run_dir = Path(run_dir)
    cfg = ExperimentConfig.load(run_dir / "config.json")
    if cfg.cam.method != "esol":
        raise ConfigError(f"{run_dir} is a cam.method={cfg.cam.method} run; expected esol")
    if r != 0:
        raise ConfigError("load_esol_round reads round 0 only (later rounds need the context "
                          "module of their confounder dictionary)")
    d = cfg.data
    num_fg = build_dataset(d.dataset, d.root, d.eval_split, max_images=d.max_images).num_classes - 1
    e = cfg.esol
    stage0 = build_cam_model(cfg, num_fg)
    load_checkpoint(run_dir / f"round_{r}" / "cam_net.pt", model=stage0, map_location="cpu")
    base = build_cam_model(cfg, num_fg)
    esol = EsolCamNet(base, r_max=e.r_max, ramp=e.lambda_rev, op=e.sampler_op,
                      train_backbone=e.train_backbone, sampler=e.sampler)
    load_checkpoint(run_dir / f"round_{r}" / "cam_shrink.pt", model=esol, map_location="cpu")
    esol.set_phase("shrink")
    return cfg, stage0.to(device).eval(), esol.to(device).eval()
