"""Stages ``ir_labels``, ``irn_train``, ``pseudo`` and ``pseudo_eval``: IRNet's relation network
(optional refinement), the pseudo-masks of the round's CAMs and their mIoU."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import ExperimentConfig
from ..data.base import read_label_png
from ..errors import CausalWSSSError, ConfigError
from ..irn import make_ir_label_files, make_irn_refiner, train_irn
from ..metrics import ConfusionMatrix, iou_by_class
from ..pseudo_masks import import_densecrf, make_pseudo_masks, register_refiner
from ..runtime import seed_everything, stage_seed
from ..train import LogEpochs


def check_optional_packages(cfg: ExperimentConfig) -> None:
    """Fail before any training when the config needs the dense CRF and it is not installed."""
    p = cfg.pseudo
    if p.refine not in ("none", "crf", "irn"):
        raise ConfigError(f"config key 'pseudo.refine' is {p.refine!r}; expected none, crf or irn")
    if p.refine == "crf" or (p.refine == "irn" and p.ir_crf):

        try:
            import_densecrf()
        except CausalWSSSError as exc:
            key = "pseudo.refine=crf" if p.refine == "crf" else "pseudo.ir_crf=true (IRNet's IR labels)"
            raise ConfigError(f"{key} needs the dense CRF, which is not installed: {exc}; or "
                              "override it (pseudo.ir_crf=false keeps IRN without the CRF)") from exc


def stage_pseudo(cfg: ExperimentConfig, datasets: list, cache_dir: Path, out_dir: Path, *,
                 dist_info, progress: bool) -> dict:
    """Pseudo-masks for every image of ``datasets`` (palette PNGs, resumable)."""
    t0 = time.perf_counter()
    for ds in datasets:
        make_pseudo_masks(ds, cache_dir, out_dir, bg_threshold=cfg.pseudo.bg_threshold,
                          refine=cfg.pseudo.refine, progress=progress, rank=dist_info.rank,
                          world_size=dist_info.world_size, num_workers=cfg.data.num_workers)
    return {"refine": cfg.pseudo.refine, "seconds": time.perf_counter() - t0}


def irn_stages(cfg: ExperimentConfig, cam_net: nn.Module, train_ds, cache_dir: Path,
                round_dir: Path, timed: Callable, *, device: torch.device, dist_info,
                progress: bool, logger) -> None:
    """IRNet's relation stage (method.md 4): IR labels, the boundary network, the random walk."""
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
            "iou_per_class": iou_by_class(scores, dataset.classes)}
