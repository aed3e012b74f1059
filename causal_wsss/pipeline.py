"""The CONTA pipeline: round 0 (the IRNet-style baseline) and CONTA rounds 1..T, each stage cached.

One round (method.md section 4, Fig. 4 of the paper):

0. (rounds >= 1) build the confounder dictionary C and prior P(c) from the previous round's
   segmentation predictions on the training images (:mod:`causal_wsss.confounders`);
1. train the CAM classifier, with the context adjustment of Eq. 3 concatenated at the last
   features from round 1 on (:mod:`causal_wsss.models.context`);
2. multi-scale + flip CAMs of the training images (:mod:`causal_wsss.cam`) and their evaluation
   (mIoU at the fixed background threshold and the best over a sweep, leakage);
3. pseudo-masks (threshold, optionally CRF or IRN refinement) and their mIoU;
4. train the segmentation model on the pseudo-masks, evaluate on ``val``, predict the training
   images for the next round's dictionary.

Every network is retrained from its initialisation in every round (method.md 7.10). Each stage
writes ``round_k/<stage>.json`` when it is finished; a rerun skips finished stages and resumes an
interrupted one (checkpoints per epoch, per-image files skipped). ``report.json`` holds one entry
per finished round, mIoU in percent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ExperimentConfig
from .errors import ConfigError, DataError
from .io import write_json
from .methods import CamRound, get_method, method_stages
from .models.context import ContextCamNet  # noqa: F401  (re-exported: it used to live here)

STAGES = ("confounders", "cam_train", *method_stages(), "cams", "cam_eval", "twin_eval",
          "ir_labels", "irn_train", "pseudo", "pseudo_eval", "seg_train", "seg_eval", "seg_predict")
"""Every stage a round may run; the CAM methods' own stages (``cam_expand`` ... of
:mod:`causal_wsss.methods`) follow ``cam_train`` and run only for their ``cam.method``."""


# --------------------------------------------------------------------------------------------
# building blocks


def build_cam_model(cfg: ExperimentConfig, num_classes_fg: int, *, context: nn.Module | None = None,
                    with_context: bool = False):
    """The CAM network of the config; with ``context`` (a ContextAdjustment) the CONTA variant.

    ``with_context=True`` builds the network with its context channel but leaves attaching the
    ContextAdjustment (``net.new_modules["context"] = ...``) to the caller.
    """
    from .models.cam_net import build_cam_net

    with_context = with_context or context is not None
    if with_context and cfg.context.fuse_at != "layer4":
        raise ConfigError(
            f"config key 'context.fuse_at' is {cfg.context.fuse_at!r}; only 'layer4' (the last "
            "backbone features) is implemented: with IRNet's frozen stem and detached stage 2 an "
            "input-level M channel would never be trained (method.md section 3)")
    c = cfg.cam
    net = build_cam_net(num_classes_fg, backbone=c.backbone, weights=c.weights,
                        output_stride=c.output_stride, trunk_depth=c.trunk_depth,
                        freeze_bn=c.freeze_bn, freeze_stem=c.freeze_stem,
                        context_channels=1 if with_context else 0)
    if context is not None:
        net.new_modules["context"] = context
    return net



def initial_cam_model(cfg: ExperimentConfig, num_classes_fg: int, *, with_context: bool = False):
    """The CAM network a round starts from: :func:`build_cam_model` right after seeding with
    ``stage_seed(cfg.seed, "cam")``. Every round, a resumed run and a notebook that trains the
    network itself (notebook 03) thus start from the same weights, so the same seed gives the
    same round 0 wherever it is trained (the paired comparison of docs/method.md 7.10)."""
    from .runtime import seed_everything, stage_seed

    seed_everything(stage_seed(cfg.seed, "cam"))
    return build_cam_model(cfg, num_classes_fg, with_context=with_context)

def _train_split(cfg: ExperimentConfig) -> str:
    return cfg.data.train_split


def load_datasets(cfg: ExperimentConfig) -> dict[str, Any]:
    """The train / eval / val data sets of the config (train_aug falls back to train)."""
    from .data import build_dataset

    d = cfg.data
    if not d.root:
        raise ConfigError("config key 'data.root' is empty; pass --root or set CAUSAL_WSSS_DATA")
    sets = {}
    try:
        sets["train"] = build_dataset(d.dataset, d.root, d.train_split, max_images=d.max_images)
    except DataError:
        if d.train_split != "train_aug":
            raise
        sets["train"] = build_dataset(d.dataset, d.root, "train", max_images=d.max_images)
    if sets["train"].split == d.eval_split:  # e.g. COCO: one read of the large JSON
        sets["eval"] = sets["train"]
    else:
        sets["eval"] = build_dataset(d.dataset, d.root, d.eval_split, max_images=d.max_images)
    sets["val"] = build_dataset(d.dataset, d.root, d.val_split, max_images=d.max_images)
    twins = _twins_dataset(cfg, sets["val"])
    if twins is not None:
        sets["twins"] = twins
    return sets


def _twins_dataset(cfg: ExperimentConfig, val_ds):
    """The do(context) twins split (``data.twins_split``) of a VOC-layout synthetic set written
    with ``causal-wsss synth --twins``, or None when the set has none (real VOC, COCO)."""
    from .data import build_dataset

    split = cfg.data.twins_split
    voc_root = getattr(val_ds, "voc_root", None)
    if not split or cfg.data.dataset not in ("voc", "synthetic") or voc_root is None:
        return None
    if not (voc_root / "ImageSets" / "Segmentation" / f"{split}.txt").is_file() \
            or not (voc_root / "synthetic.json").is_file():
        return None
    return build_dataset(cfg.data.dataset, cfg.data.root, split)


def query_datasets(sets: dict) -> tuple[list, list]:
    """``(cam_sets, query_sets)``: the sets whose CAMs and pseudo-masks a round makes (train,
    plus eval when it has other images), and those that also get context maps and
    segmentation predictions (plus the twins, when present)."""
    train_names = set(sets["train"].names)
    extra_eval = any(n not in train_names for n in sets["eval"].names)
    cam_sets = [sets["train"]] + ([sets["eval"]] if extra_eval else [])
    return cam_sets, cam_sets + ([sets["twins"]] if "twins" in sets else [])


def _names_of(datasets: list) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for ds in datasets:
        for n in ds.names:
            if n not in seen:
                seen.add(n)
                names.append(n)
    return names


def _iou_by_class(scores, classes) -> dict[str, float | None]:
    """{class: IoU in percent} for the classes present (absent classes are left out)."""
    per = scores.as_dict(list(classes))["per_class"]
    return {k: 100 * v["iou"] for k, v in per.items() if v["iou"] is not None}


class _StageLog:
    """Reads and writes ``round_k/<stage>.json``: a stage is done when its file exists.

    Each record carries ``inputs`` (the data and config fingerprints of
    :func:`causal_wsss.runfolder.run_inputs`), checked when a run folder is resumed.
    """

    def __init__(self, round_dir: Path, is_main: bool, inputs: dict | None = None) -> None:
        self.dir, self.is_main, self.inputs = round_dir, is_main, inputs

    def get(self, stage: str) -> dict | None:
        from .runfolder import read_record

        return read_record(self.dir / f"{stage}.json")

    def put(self, stage: str, result: dict) -> dict:
        if self.inputs is not None:
            result = {**result, "inputs": self.inputs}
        if self.is_main:
            write_json(self.dir / f"{stage}.json", result)
        return result


# --------------------------------------------------------------------------------------------
# stages


def stage_confounders(cfg: ExperimentConfig, prev_dir: Path, round_dir: Path,
                      query_names: list[str], train_labels: np.ndarray, classes, *,
                      progress: bool, datasets: list | None = None) -> dict:
    """Build C, P(c) and the query grids from the previous round's predictions.

    With ``context.source=gt`` (an upper bound, not weak supervision: the paper's ablation of
    the mask source) the ground-truth masks of ``datasets`` replace the predictions.
    """
    from .confounders import (
        build_confounder_dictionary,
        ground_truth_grids,
        load_label_grids,
        save_label_grids,
    )

    if cfg.context.source == "gt":
        grids = ground_truth_grids(datasets or [], query_names, cfg.context.grid,
                                   progress=progress)
    else:
        grids = load_label_grids(prev_dir / "pred", query_names, cfg.context.grid,
                                 progress=progress)
    n_train = train_labels.shape[0]
    dictionary = build_confounder_dictionary(grids[:n_train], train_labels, classes=classes,
                                             prior=cfg.context.prior,
                                             agree_with_labels=cfg.context.agree_with_labels)
    if not dictionary.valid.any():
        from .errors import DataError

        where = "the ground-truth masks" if cfg.context.source == "gt" else \
            f"the segmentation predictions in {prev_dir / 'pred'}"
        raise DataError(
            f"the confounder dictionary is empty: {where} show no foreground class "
            + ("that agrees with the image labels " if cfg.context.agree_with_labels else "")
            + "in any training image, so Eq. 3 has nothing to attend to. The previous round's "
            "segmentation model is too weak (train it longer: seg.iterations)"
            + (", or set context.agree_with_labels=false" if cfg.context.agree_with_labels else ""))
    folder = round_dir / "confounders"
    dictionary.save(folder)
    save_label_grids(folder / "queries.npy", grids)
    return {"classes_with_masks": int(dictionary.valid.sum()),
            "prior_max": float(dictionary.prior.max()), "grid": cfg.context.grid}


def check_context_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError naming the key if a ``context.*`` value is not one the code knows."""
    c = cfg.context
    for key, value, allowed in (("prior", c.prior, ("freq", "uniform")),
                                ("query", c.query, ("binary", "onehot")),
                                ("m_scale", c.m_scale, ("identity", "max")),
                                ("attention", c.attention, ("learned", "uniform")),
                                ("source", c.source, ("seg", "gt")),
                                ("adjustment", c.adjustment, ("nwgm", "exact")),
                                ("optimizer", c.optimizer, ("same", "sgd", "adamw")),
                                ("fuse_at", c.fuse_at, ("layer4",))):
        if value not in allowed:
            raise ConfigError(f"config key 'context.{key}' is {value!r}; expected one of: "
                              + ", ".join(allowed)
                              + (" (layer3 and input are not implemented: with IRNet's frozen "
                                 "stem an input-level channel would never be trained, method.md "
                                 "section 3)" if key == "fuse_at" else ""))
    if c.grid < 1:
        raise ConfigError(f"config key 'context.grid' is {c.grid}; expected a positive grid size")
    return cfg


def check_optional_packages(cfg: ExperimentConfig) -> None:
    """Fail before any training when the config needs the dense CRF and it is not installed."""
    p = cfg.pseudo
    if p.refine not in ("none", "crf", "irn"):
        raise ConfigError(f"config key 'pseudo.refine' is {p.refine!r}; expected none, crf or irn")
    if p.refine == "crf" or (p.refine == "irn" and p.ir_crf):
        from .errors import CausalWSSSError
        from .pseudo_masks import _import_densecrf

        try:
            _import_densecrf()
        except CausalWSSSError as exc:
            key = "pseudo.refine=crf" if p.refine == "crf" else "pseudo.ir_crf=true (IRNet's IR labels)"
            raise ConfigError(f"{key} needs the dense CRF, which is not installed: {exc}; or "
                              "override it (pseudo.ir_crf=false keeps IRN without the CRF)") from exc


def load_context_module(cfg: ExperimentConfig, round_dir: Path, num_classes: int):
    """The round's ContextAdjustment, with its dictionary, prior and query buffer."""
    from .confounders import ConfounderDictionary, queries_from_grids
    from .models.context import ContextAdjustment

    folder = round_dir / "confounders"
    dictionary = ConfounderDictionary.load(folder)
    try:
        grids = np.load(folder / "queries.npy")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"query grids {folder / 'queries.npy'} are missing or unreadable ({exc}); "
                        "expected the .npy the confounders stage writes. Delete it: the next run "
                        "redoes that stage") from exc
    queries = queries_from_grids(grids, mode=cfg.context.query, num_classes=num_classes)
    c = check_context_config(cfg).context
    attention = "exact" if c.adjustment == "exact" else c.attention
    return ContextAdjustment(dictionary.masks, dictionary.prior, queries=queries,
                             valid=dictionary.valid, m_scale=c.m_scale,
                             l2_normalize=c.l2_normalize, attention=attention)


def stage_cam_train(cfg: ExperimentConfig, model: nn.Module, train_ds, round_dir: Path, *,
                    device: torch.device, dist_info=None, progress: bool = True, logger=None,
                    callbacks: tuple = ()) -> dict:
    """Train the (context-adjusted) CAM classifier with the multi-label soft-margin loss.

    Checkpoints ``round_dir/cam_net.pt`` every epoch and resumes from it. ``callbacks`` (e.g.
    :class:`causal_wsss.train.LossHistory`) see every step.
    """
    from .runtime import get_dist, setup_logging

    dist_info = dist_info or get_dist()
    logger = logger or setup_logging(None)
    from .data.transforms import TrainTransform
    from .train import LogEpochs, fit, make_loader, poly_lambda, split_optimizer

    c = cfg.cam
    dataset = _with_transform(train_ds, TrainTransform(c.crop_size, resize_long=c.resize_long,
                                                       seed=cfg.seed))
    loader = make_loader(dataset, batch_size=c.batch_size, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, dist_info=dist_info,
                         pin_memory=device.type == "cuda")
    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    model = model.to(device)
    if device.type == "cuda" and c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ctx_cfg = cfg.context
    optimizer = split_optimizer(
        cam_net.param_groups(c.lr, c.head_lr_mult, context_lr=ctx_cfg.lr or None),
        name=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum,
        special="context", special_name=ctx_cfg.optimizer)
    total = c.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(total, c.poly_power))
    wrapped = _ddp(model, device, dist_info)
    with_context = isinstance(model, ContextCamNet)
    if with_context:
        callbacks = (ContextMonitor(cam_net, logger), *callbacks)

    def loss_fn(net: nn.Module, batch: dict) -> torch.Tensor:
        out = cam_batch_forward(net, batch, device, with_context=with_context,
                                channels_last=device.type == "cuda" and c.channels_last)
        return F.multilabel_soft_margin_loss(out.logits.float(), batch["labels"].to(device))

    state = fit(wrapped, loader, optimizer, epochs=c.epochs, loss_fn=loss_fn, device=device,
                scheduler=scheduler, checkpoint_path=round_dir / "cam_net.pt",
                config=cfg.to_dict(), amp=c.amp, callbacks=[LogEpochs(logger, "cam"), *callbacks],
                progress=progress, desc="cam epoch", dist_info=dist_info)
    final = state.history[-1]["loss"] if state.history else None  # NaN-free on a resumed run
    result = {"epochs": c.epochs, "final_loss": final, "history": state.history}
    if with_context:
        weight = cam_net.context_weight()[:, 0]  # (K,)
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
    from .data.transforms import normalize

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
    from .checkpoint import load_checkpoint
    from .errors import CausalWSSSError
    from .io import torch_save

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
    import torch.nn.functional as F_

    valid = context.valid
    dictionary = context.dictionary
    stds, ranges = [], []
    for start in range(0, context.queries.shape[0], batch_size):
        query = context.queries[start:start + batch_size].float()
        if context.l2_normalize:
            query = F_.normalize(query, dim=-1)
            dictionary = F_.normalize(context.dictionary, dim=-1)
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
    from .data.transforms import normalize
    from .runtime import autocast

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
    weight = cam_net.classifier.weight.float()[:, :, 0, 0]  # (K, C + 1)
    total = torch.einsum("kc,bchw->bkhw", weight, features).abs().mean(dim=(2, 3))  # (B, K)
    ctx = (weight[:, -1][None, :, None, None] * features[:, -1:]).abs().mean(dim=(2, 3))  # (B, K)
    positive = batch["labels"].to(device) > 0
    model.train()
    return float(ctx[positive].sum() / total[positive].sum().clamp_min(1e-12))


def _ddp(model: nn.Module, device: torch.device, dist_info) -> nn.Module:
    if not dist_info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class _TransformView(torch.utils.data.Dataset):
    """A data set seen through a transform, without copying or mutating the original."""

    def __init__(self, base, transform) -> None:
        self.base, self.transform = base, transform
        self.names = base.names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return self.transform(self.base[i])


def _with_transform(dataset, transform):
    return _TransformView(dataset, transform)


def context_fn_for(model: nn.Module, rows_by_name: dict[str, int]) -> Callable[[list[dict]], torch.Tensor]:
    """``make_cams`` hook: the image-aligned m of a group of items, looked up by image name."""
    context = model.context

    def fn(items: list[dict]) -> torch.Tensor:
        rows = torch.tensor([rows_by_name[it["name"]] for it in items])
        with torch.no_grad():
            return context(index=rows).m  # (b, 1, g, g): the grid covers the whole image
    return fn


def stage_cams(cfg: ExperimentConfig, model: nn.Module, datasets: list, cache_dir: Path, *,
               device: torch.device, dist_info, progress: bool,
               context_fn: Callable | None) -> dict:
    """Cache multi-scale + flip CAMs for every image of ``datasets`` (sharded by rank)."""
    from .cam import make_cams

    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    total = {"written": 0, "skipped": 0}
    t0 = time.perf_counter()
    for ds in datasets:
        counts = make_cams(cam_net, ds, cache_dir, batch_size=cfg.cam_infer.batch_size,
                           num_workers=cfg.data.num_workers,
                           scales=cfg.cam_infer.scales, flip=cfg.cam_infer.flip, device=device,
                           amp=cfg.cam.amp, progress=progress, rank=dist_info.rank,
                           world_size=dist_info.world_size, context_fn=context_fn)
        for k in total:
            total[k] += counts.get(k, 0)
    total["seconds"] = time.perf_counter() - t0
    return total


def stage_cam_eval(cfg: ExperimentConfig, eval_ds, cache_dir: Path, *, device: torch.device,
                   dist_info, progress: bool) -> dict:
    """CAM mIoU at the fixed threshold and the best over the sweep, leakage, contrast and precision.

    mIoU runs over the data set's own classes (``eval_ds.used_classes``, listed in the result);
    the leakage has the value a uniform map would score beside it (``leakage_uniform``); the
    contrast (:class:`~causal_wsss.metrics.ContrastMeter`) and the precision of the thresholded
    CAM, split into false positives on context and on other objects
    (:func:`~causal_wsss.metrics.precision_split`), at the fixed and at the best threshold.
    """
    from .cam import CamCache
    from .metrics import (
        ContrastMeter,
        LeakageMeter,
        ThresholdSweep,
        foreground_recall,
        precision_split,
        threshold_grid,
    )
    from .runtime import progress_bar

    num_classes = eval_ds.num_classes
    used = tuple(getattr(eval_ds, "used_classes", range(num_classes)))
    names = list(eval_ds.classes)
    grid = sorted(set(threshold_grid(*cfg.cam_infer.sweep)) | {round(cfg.cam_infer.bg_threshold, 10)})
    sweep = ThresholdSweep(num_classes, grid, device=device, classes=used)  # runs on the device
    leak = LeakageMeter(num_classes, device=device)
    contrast = ContrastMeter(num_classes, device=device)
    cache = CamCache(cache_dir)
    labels_all = eval_ds.label_matrix()
    indices = range(dist_info.rank, len(eval_ds), dist_info.world_size)
    for i in progress_bar(indices, desc="eval CAMs", disable=not progress, leave=False):
        mask = eval_ds.load_mask(i)
        if mask is None:
            raise DataError(f"split '{cfg.data.eval_split}' has no ground-truth masks; CAM "
                            "evaluation needs them (set data.eval_split to a split with masks)")
        cams = cache.get(eval_ds.names[i]).dense(num_classes - 1)[None].to(device).float()
        target = torch.from_numpy(mask.astype(np.int64))[None].to(device)  # (1, H, W)
        labels = torch.tensor(labels_all[i], dtype=torch.float32, device=device)[None]
        sweep.update(cams, target)
        leak.update(cams, target, labels)
        contrast.update(cams, target, labels)
    sweep.all_reduce()
    leak.all_reduce()
    contrast.all_reduce()
    fixed_t = round(cfg.cam_infer.bg_threshold, 10)
    fixed = sweep.at(fixed_t)
    best_t, best = sweep.best()
    leakage = leak.compute(class_names=names)
    contrasts = contrast.compute(class_names=names)
    conf = sweep.confusion_matrices()
    prec_fixed = precision_split(conf[grid.index(fixed_t)], used, names)
    prec_best = precision_split(conf[grid.index(best_t)], used, names)
    return {"cam_miou": 100 * fixed.miou, "cam_threshold": cfg.cam_infer.bg_threshold,
            "cam_miou_best": 100 * best, "cam_threshold_best": best_t,
            "miou_classes": [names[c] for c in used],
            "leakage": leakage["leakage"], "leakage_cooccur": leakage["leakage_cooccur"],
            "leakage_background": leakage["leakage_background"],
            "leakage_uniform": contrasts["leakage_uniform"],
            "contrast_context": contrasts["contrast_context"],
            "contrast_partner": contrasts["contrast_partner"],
            "precision": prec_fixed["precision"], "precision_fp_context": prec_fixed["fp_context"],
            "precision_fp_objects": prec_fixed["fp_objects"],
            "precision_best": prec_best["precision"],
            "precision_best_fp_context": prec_best["fp_context"],
            "precision_best_fp_objects": prec_best["fp_objects"],
            "recall": foreground_recall(conf[grid.index(fixed_t)], used),
            "recall_best": foreground_recall(conf[grid.index(best_t)], used),
            "cam_iou_per_class": _iou_by_class(fixed, eval_ds.classes),
            "per_class": {n: {**contrasts["per_class"][n],
                              "leakage": leakage["per_class"][n]["leakage"],
                              "precision": prec_fixed["per_class"][n]["precision"],
                              "precision_best": prec_best["per_class"][n]["precision"]}
                          for n in (names[c] for c in used if c != 0)},
            "sweep": [[t, 100 * v] for t, v in sweep.compute()]}


def stage_twin_eval(cfg: ExperimentConfig, model: nn.Module, twins_ds, cache_dir: Path,
                    threshold: float, *, device: torch.device, dist_info, progress: bool,
                    context_fn: Callable | None) -> dict:
    """The do(context) figures of this round's CAM network on the twins split.

    Scores (:func:`causal_wsss.context_effects.twin_logits`, one full-image pass) give the
    context effect, the false-positive rates on context alone and the partner effect; the
    twins' CAMs (the round's multi-scale inference, cached in ``cache_dir``, images of kind
    ``twin`` only) give CAM mIoU in and out of context at ``threshold`` (the round's best on the
    evaluation split). Each rank computes the scores of the whole split (it is small); the CAMs
    are sharded over ranks as in :func:`causal_wsss.cam.make_cams`.
    """
    import shutil

    from .cam import make_cams
    from .context_effects import context_effects, twin_cam_miou, twin_logits
    from .data.synthetic import load_meta
    from .runtime import barrier

    if dist_info.is_main:  # CAMs of an earlier attempt may come from another network
        shutil.rmtree(cache_dir, ignore_errors=True)
    barrier()
    meta = load_meta(twins_ds.voc_root)
    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    logits = twin_logits(cam_net, twins_ds, device=device, amp=cfg.cam.amp,
                         context_fn=context_fn, batch_size=cfg.cam_infer.batch_size, meta=meta)
    result = context_effects(logits, twins_ds.names, meta, twins_ds.classes)
    kinds = {img["name"]: img.get("kind") for img in meta["images"]}
    twin_view = twins_ds.subset([n for n in twins_ds.names if kinds.get(n) == "twin"])
    make_cams(cam_net, twin_view, cache_dir, batch_size=cfg.cam_infer.batch_size,
              num_workers=cfg.data.num_workers, scales=cfg.cam_infer.scales,
              flip=cfg.cam_infer.flip, device=device, amp=cfg.cam.amp, progress=progress,
              rank=dist_info.rank, world_size=dist_info.world_size, context_fn=context_fn)
    barrier()
    result.update(twin_cam_miou(twin_view, cache_dir, meta, threshold, device=device))
    result["twin_images"] = len(twins_ds)
    return result


ROUND_CAM_KEYS = ("miou_classes", "leakage_uniform", "contrast_context", "contrast_partner",
                  "precision", "precision_fp_context", "precision_fp_objects", "precision_best",
                  "precision_best_fp_context", "precision_best_fp_objects", "recall",
                  "recall_best")
"""cam_eval figures copied into each round's report entry (beside the mIoUs and leakage)."""

ROUND_TWIN_KEYS = ("context_effect", "fp_rate_preferred", "fp_rate_other", "partner_effect",
                   "cam_miou_in_context", "cam_miou_out_of_context", "cam_miou_context_gap")
"""twin_eval figures copied into each round's report entry when the data carry twins."""


def stage_pseudo(cfg: ExperimentConfig, datasets: list, cache_dir: Path, out_dir: Path, *,
                 dist_info, progress: bool) -> dict:
    """Pseudo-masks for every image of ``datasets`` (palette PNGs, resumable)."""
    from .pseudo_masks import make_pseudo_masks

    t0 = time.perf_counter()
    for ds in datasets:
        make_pseudo_masks(ds, cache_dir, out_dir, bg_threshold=cfg.pseudo.bg_threshold,
                          refine=cfg.pseudo.refine, progress=progress, rank=dist_info.rank,
                          world_size=dist_info.world_size, num_workers=cfg.data.num_workers)
    return {"refine": cfg.pseudo.refine, "seconds": time.perf_counter() - t0}


def _irn_stages(cfg: ExperimentConfig, cam_net: nn.Module, train_ds, cache_dir: Path,
                round_dir: Path, timed: Callable, *, device: torch.device, dist_info,
                progress: bool, logger) -> None:
    """IRNet's relation stage (method.md 4): IR labels, the boundary network, the random walk."""
    from .irn import make_ir_label_files, make_irn_refiner, train_irn
    from .pseudo_masks import register_refiner
    from .runtime import seed_everything, stage_seed
    from .train import LogEpochs

    p = cfg.pseudo
    timed("ir_labels", lambda: make_ir_label_files(
        train_ds, cache_dir, round_dir / "ir_label", fg_threshold=p.conf_fg_threshold,
        bg_threshold=p.conf_bg_threshold, crf=p.ir_crf, progress=progress, rank=dist_info.rank,
        world_size=dist_info.world_size, num_workers=cfg.data.num_workers))
    seed_everything(stage_seed(cfg.seed, "irn"))
    timed("irn_train", lambda: train_irn(
        cam_net, train_ds, round_dir / "ir_label", p, crop_size=cfg.cam.crop_size, device=device,
        out_dir=round_dir, seed=cfg.seed, progress=progress, dist_info=dist_info,
        num_workers=cfg.data.num_workers, momentum=cfg.cam.momentum,
        callbacks=[LogEpochs(logger, "irn")]))
    register_refiner("irn", make_irn_refiner(cam_net, round_dir / "irn.pt", p, device=device),
                     in_workers=False)


def score_label_folder(dataset, folder: Path, *, dist_info, progress: bool,
                       void_to_background: bool = True) -> dict:
    """mIoU of the label PNGs ``folder/<name>.png`` against the data set's masks.

    As IRNet's evaluation, 255 in a prediction counts as background.
    """
    from tqdm.auto import tqdm

    from .data.base import read_label_png
    from .metrics import ConfusionMatrix

    conf = ConfusionMatrix(dataset.num_classes, classes=getattr(dataset, "used_classes", None))
    for i in tqdm(range(dist_info.rank, len(dataset), dist_info.world_size), desc="score masks",
                  disable=not progress, leave=False):
        pred = read_label_png(folder / f"{dataset.names[i]}.png", 256).astype(np.int64)
        if void_to_background:
            pred[pred == 255] = 0
        mask = dataset.load_mask(i)
        conf.update(torch.from_numpy(pred), torch.from_numpy(mask.astype(np.int64)))
    conf.all_reduce()
    scores = conf.compute()
    return {"miou": 100 * scores.miou,
            "iou_per_class": _iou_by_class(scores, dataset.classes)}


def stage_seg_train(cfg: ExperimentConfig, train_ds, pseudo_dir: Path, round_dir: Path, *,
                    device: torch.device, dist_info, progress: bool):
    """Train the segmentation network on the pseudo-masks (255 ignored)."""
    from .models.seg_net import build_seg_net
    from .pseudo_masks import PseudoMaskDataset
    from .runtime import seed_everything, stage_seed
    from .segmentation import train_segmentation

    s = cfg.seg
    seed_everything(stage_seed(cfg.seed, "seg"))  # the same initial weights in every round
    model = build_seg_net(train_ds.num_classes, arch=s.arch, backbone=s.backbone, weights=s.weights)
    dataset = PseudoMaskDataset(train_ds, pseudo_dir)
    result = train_segmentation(model, dataset, s, device=device, out_dir=round_dir,
                                seed=cfg.seed, progress=progress, dist_info=dist_info,
                                num_workers=cfg.data.num_workers)
    return model, result


# --------------------------------------------------------------------------------------------
# rounds


def run_round(cfg: ExperimentConfig, r: int, out: Path, sets: dict, *, device: torch.device,
              dist_info, progress: bool, logger, inputs: dict | None = None) -> dict:
    """Run (or resume) round ``r``; returns its report entry. ``inputs``: stored in each record."""
    from .checkpoint import load_checkpoint
    from .runtime import barrier

    round_dir = out / f"round_{r}"
    round_dir.mkdir(parents=True, exist_ok=True)
    log = _StageLog(round_dir, dist_info.is_main, inputs)
    train_ds, eval_ds, val_ds = sets["train"], sets["eval"], sets["val"]
    classes = train_ds.classes
    num_fg = len(classes) - 1
    cam_datasets, query_sets = query_datasets(sets)
    query_names = _names_of(query_sets)  # train first: the dictionary is built from its rows
    rows_by_name = {n: i for i, n in enumerate(query_names)}
    twins_ds = sets.get("twins")
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], dict]) -> dict:
        done = log.get(stage)
        if done is not None:
            return done
        logger.info("round %d: %s", r, stage)
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.init()  # the peak-memory counters need an initialised CUDA context
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = fn()
        result["seconds"] = result.get("seconds", time.perf_counter() - t0)
        if on_cuda:  # this process's peak GPU memory in the stage, for sizing a run
            result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            logger.info("round %d: %s took %.1f s, peak GPU memory %.0f MiB", r, stage,
                        result["seconds"], result["cuda_peak_mib"])
        timings[stage] = result["seconds"]
        barrier()
        return log.put(stage, result)

    from .runtime import seed_everything, stage_seed

    if r > 0:
        timed("confounders", lambda: stage_confounders(
            cfg, out / f"round_{r - 1}", round_dir, query_names, train_ds.label_matrix(), classes,
            progress=progress, datasets=query_sets))
    # Same initial trunk in every round (only the context channel differs), and the same on a
    # resumed run as on an uninterrupted one.
    cam_net = initial_cam_model(cfg, num_fg, with_context=r > 0)
    model = cam_net
    if r > 0:
        seed_everything(stage_seed(cfg.seed, f"context_{r}"))
        cam_net.new_modules["context"] = load_context_module(cfg, round_dir, len(classes))
        if cfg.context.adjustment == "exact":
            cam_net.set_context_mixture(cam_net.new_modules["context"].mixture_weights())
        model = ContextCamNet(cam_net)

    # the CAM method (cam.method) trains stage 0 (cam_train) and its own stages
    trained = get_method(cfg.cam.method).train(CamRound(
        cfg=cfg, r=r, round_dir=round_dir, model=model, cam_net=cam_net, sets=sets, timed=timed,
        device=device, dist_info=dist_info, progress=progress, logger=logger,
        rows_by_name=rows_by_name))
    cam_train, model = trained.record, trained.model
    ctx_fn = context_fn_for(model, rows_by_name) if r > 0 else None
    cache_dir = round_dir / "cams"
    timed("cams", lambda: stage_cams(cfg, model, cam_datasets, cache_dir, device=device,
                                     dist_info=dist_info, progress=progress, context_fn=ctx_fn))
    cam_eval = timed("cam_eval", lambda: stage_cam_eval(cfg, eval_ds, cache_dir, device=device,
                                                        dist_info=dist_info, progress=progress))
    twin_eval = None
    if twins_ds is not None:
        twin_eval = timed("twin_eval", lambda: stage_twin_eval(
            cfg, model, twins_ds, round_dir / "twin_cams", cam_eval["cam_threshold_best"],
            device=device, dist_info=dist_info, progress=progress, context_fn=ctx_fn))
    if cfg.pseudo.refine == "irn":
        _irn_stages(cfg, cam_net, train_ds, cache_dir, round_dir, timed, device=device,
                    dist_info=dist_info, progress=progress, logger=logger)
    pseudo_dir = round_dir / "pseudo"
    timed("pseudo", lambda: stage_pseudo(cfg, cam_datasets, cache_dir, pseudo_dir,
                                         dist_info=dist_info, progress=progress))
    pseudo_eval = timed("pseudo_eval", lambda: score_label_folder(
        eval_ds, pseudo_dir, dist_info=dist_info, progress=progress))

    seg_holder: dict[str, nn.Module] = {}

    def seg_train() -> dict:
        model_, result = stage_seg_train(cfg, train_ds, pseudo_dir, round_dir, device=device,
                                         dist_info=dist_info, progress=progress)
        seg_holder["model"] = model_
        return result

    timed("seg_train", seg_train)

    def seg_model() -> nn.Module:
        if "model" not in seg_holder:
            from .models.seg_net import build_seg_net

            s = cfg.seg
            net = build_seg_net(len(classes), arch=s.arch, backbone=s.backbone, weights="none")
            load_checkpoint(round_dir / "seg.pt", model=net, map_location=device)
            seg_holder["model"] = net.to(device)
        return seg_holder["model"]

    def seg_eval() -> dict:
        from .segmentation import evaluate_segmentation

        scores = evaluate_segmentation(seg_model(), val_ds, device=device,
                                       num_classes=len(classes), batch_size=1,
                                       progress=progress, dist_info=dist_info)
        return {"seg_miou": 100 * scores.miou,
                "iou_per_class": _iou_by_class(scores, classes)}

    seg_eval_res = timed("seg_eval", seg_eval)
    if r < cfg.rounds:
        def seg_predict() -> dict:
            from .segmentation import predict_masks

            for ds in query_sets:
                predict_masks(seg_model(), ds, round_dir / "pred", device=device,
                              progress=progress, rank=dist_info.rank,
                              world_size=dist_info.world_size)
            return {"images": len(query_names)}

        timed("seg_predict", seg_predict)

    entry = {"round": r, "cam_miou": cam_eval["cam_miou"], "cam_threshold": cam_eval["cam_threshold"],
             "cam_miou_best": cam_eval["cam_miou_best"],
             "cam_threshold_best": cam_eval["cam_threshold_best"],
             "pseudo_miou": pseudo_eval["miou"], "seg_miou": seg_eval_res["seg_miou"],
             "leakage": cam_eval["leakage"], "leakage_cooccur": cam_eval["leakage_cooccur"],
             "leakage_background": cam_eval["leakage_background"],
             **{key: cam_eval[key] for key in ROUND_CAM_KEYS if key in cam_eval}}
    if twin_eval is not None:
        entry.update({key: twin_eval[key] for key in ROUND_TWIN_KEYS if key in twin_eval})
    entry.update(trained.summary)  # the method's own figures (ESOL: stage-0 and expansion CAMs)
    for key in ("context_weight_mean_abs", "context_weight_vs_feature_weight", "context_share",
                "alpha_max_mean", "alpha_top_class_share", "m_spread"):
        if key in cam_train:
            entry[key] = cam_train[key]
    # a figure with nothing to average (no pairs, nothing predicted) is null, not NaN
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in entry.items()}


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Run round 0 and CONTA rounds 1..``cfg.rounds`` into ``out``; returns the report.

    Rerunning with the same config resumes; a different config for an existing ``out`` with
    results is an error naming the keys (only ``rounds`` may differ; finished rounds beyond
    ``rounds`` stay in the report). ``data.root`` is made absolute first, so the same folder
    named relatively (a notebook's ``../data/synth``) or absolutely is the same config.

    Nothing is written before the config values, the data sets, the networks' names and ``out``
    are checked. ``out`` is then locked (:class:`causal_wsss.runfolder.RunLock`) and checked
    against the data and config (:func:`causal_wsss.runfolder.check_stages`): changed inputs
    are refused, and stages whose files are missing or unreadable are redone.
    """
    from .config import check_config
    from .runfolder import check_out_folder, open_run_folder
    from .runtime import init_distributed, seed_everything

    if cfg.data.root:
        cfg = replace(cfg, data=replace(cfg.data, root=str(Path(cfg.data.root).expanduser().resolve())))
    check_config(cfg)
    check_context_config(cfg)
    get_method(cfg.cam.method)  # an unknown cam.method is refused before anything is written
    check_optional_packages(cfg)
    if cfg.cam.checkpoint and cfg.cam.method != "irn":
        raise ConfigError(f"config key 'cam.checkpoint' works with cam.method=irn only (this run "
                          f"has cam.method={cfg.cam.method!r})")
    if cfg.cam.checkpoint and not Path(cfg.cam.checkpoint).is_file():
        raise ConfigError(f"config key 'cam.checkpoint' is {cfg.cam.checkpoint!r}, which is not a "
                          "file; expected a round's cam_net.pt (or \"\" to train round 0)")
    out = check_out_folder(out)
    dist_info, device = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    sets = load_datasets(cfg)
    check_masks(cfg, sets)
    check_networks(cfg, sets["train"].num_classes)
    with open_run_folder(out, cfg, sets, is_main=dist_info.is_main) as folder:
        logger = folder.logger
        backend = torch.distributed.get_backend() if dist_info.group else "none"
        logger.info("data: %s train=%d eval=%d val=%d; device %s, world size %d, process group %s",
                    cfg.data.dataset, len(sets["train"]), len(sets["eval"]), len(sets["val"]),
                    device, dist_info.world_size, backend)
        report = {"dataset": cfg.data.dataset, "preset": cfg.preset, "seed": cfg.seed, "rounds": []}
        for r in range(cfg.rounds + 1):
            report["rounds"].append(run_round(cfg, r, out, sets, device=device,
                                              dist_info=dist_info, progress=progress,
                                              logger=logger, inputs=folder.inputs))
            if dist_info.is_main:
                write_json(out / "report.json", folder.report(report))
        return folder.report(report)


def check_masks(cfg: ExperimentConfig, sets: dict) -> None:
    """Fail before any training when a split that is scored (or, with ``context.source=gt``,
    read for the confounders) has no ground-truth masks."""
    d = cfg.data
    needs = [("data.eval_split", d.eval_split, sets["eval"], "CAM and pseudo-mask evaluation"),
             ("data.val_split", d.val_split, sets["val"], "segmentation evaluation")]
    if cfg.rounds > 0 and cfg.context.source == "gt":
        needs.append(("data.train_split", sets["train"].split, sets["train"],
                      "context.source=gt (the confounders from the true masks)"))
    for key, split, ds, use in needs:
        if not ds.has_masks:
            raise ConfigError(f"config key '{key}' is {split!r}, a split without ground-truth "
                              f"masks; {use} needs them (choose a split with masks)")


def check_networks(cfg: ExperimentConfig, num_classes: int) -> None:
    """Build the CAM and segmentation networks on the meta device (no memory, no weights read)
    so that an unknown backbone or architecture is refused before anything is written; a
    ``weights`` path must be a file."""
    from .errors import CausalWSSSError, WeightsError
    from .models.seg_net import build_seg_net

    for key, weights in (("cam.weights", cfg.cam.weights), ("seg.weights", cfg.seg.weights)):
        if weights not in ("imagenet", "none") and not Path(weights).expanduser().is_file():
            raise WeightsError(f"config key '{key}' is {weights!r}: no such file; expected "
                               "imagenet, none or the path of a torchvision state dict")
    # ImageNet weights are fetched (and a weights file read) where the networks are really
    # built; the tiny backbones keep their value, since they refuse any but 'none'.
    cam = replace(cfg, cam=replace(cfg.cam, weights=cfg.cam.weights if cfg.cam.backbone == "tiny"
                                   else "none"))
    seg_weights = cfg.seg.weights if cfg.seg.backbone == "tiny" else "none"
    try:
        with torch.device("meta"):
            build_cam_model(cam, num_classes - 1)
            build_seg_net(num_classes, arch=cfg.seg.arch, backbone=cfg.seg.backbone,
                          weights=seg_weights)
    except CausalWSSSError:
        raise
    except Exception:  # noqa: BLE001 - an initialisation the meta device cannot run: the
        pass  # names were checked before it; the real build reports anything else


def format_report_table(report: dict) -> str:
    """A readable per-round table of a report (mIoU in percent).

    Columns: CAM mIoU at the fixed threshold and the best (its threshold), pseudo-mask and
    segmentation mIoU (all over the data set's classes), the CAM mass leakage with the value a
    uniform map scores, the contrast (mean CAM on the object over the context), the precision of
    the CAM at the best threshold and, when the data carry twins, the context effect on the
    scores (logit on the preferred context minus the others, objects fixed).
    """
    def num(value, fmt: str, width: int) -> str:
        return f"{value:{width}{fmt}}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    head = (f"{'round':>5} {'CAM mIoU@t':>11} {'CAM best (t)':>14} {'pseudo':>7} {'seg val':>8} "
            f"{'leak (unif)':>13} {'contrast':>9} {'prec':>5} {'ctx eff':>8}")
    lines = [f"{report['dataset']} / preset {report['preset']} / seed {report['seed']}", head,
             "-" * len(head)]
    for e in report["rounds"]:
        lines.append(
            f"{e['round']:>5} {e['cam_miou']:>6.1f}@{e['cam_threshold']:<4.2f} "
            f"{e['cam_miou_best']:>8.1f} ({e['cam_threshold_best']:.2f}) {e['pseudo_miou']:>7.1f} "
            f"{e['seg_miou']:>8.1f} {e['leakage']:>6.3f} ({num(e.get('leakage_uniform'), '.3f', 5)})"
            f" {num(e.get('contrast_context'), '.2f', 9)} {num(e.get('precision_best'), '.2f', 5)}"
            f" {num(e.get('context_effect'), '.2f', 8)}")
    return "\n".join(lines)

