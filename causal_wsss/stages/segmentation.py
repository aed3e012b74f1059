"""Stages ``seg_train``, ``seg_eval`` and ``seg_predict``: the segmentation network trained on the
pseudo-masks, scored on ``val``, and its predictions for the next round's confounder dictionary."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..config import ExperimentConfig
from ..metrics import iou_by_class
from ..models.seg_net import build_seg_net
from ..pseudo_masks import PseudoMaskDataset
from ..runtime import loader_workers, seed_everything, stage_seed
from ..segmentation import evaluate_segmentation, predict_masks, train_segmentation


def stage_seg_train(cfg: ExperimentConfig, train_ds, pseudo_dir: Path, round_dir: Path, *,
                    device: torch.device, dist_info, progress: bool):
    """Train the segmentation network on the pseudo-masks (255 ignored)."""
    s = cfg.seg
    seed_everything(stage_seed(cfg.seed, "seg"))  # the same initial weights in every round
    model = build_seg_net(train_ds.num_classes, arch=s.arch, backbone=s.backbone, weights=s.weights)
    dataset = PseudoMaskDataset(train_ds, pseudo_dir)
    result = train_segmentation(model, dataset, s, device=device, out_dir=round_dir,
                                seed=cfg.seed, progress=progress, dist_info=dist_info,
                                num_workers=loader_workers(cfg.data.num_workers, device))
    return model, result


def load_seg_model(cfg: ExperimentConfig, num_classes: int, round_dir: Path, *,
                   device: torch.device) -> nn.Module:
    """The segmentation network trained by ``seg_train`` (``round_dir/seg.pt``), on ``device``."""
    s = cfg.seg
    net = build_seg_net(num_classes, arch=s.arch, backbone=s.backbone, weights="none")
    load_checkpoint(round_dir / "seg.pt", model=net, map_location=device)
    return net.to(device)


def stage_seg_eval(model: nn.Module, val_ds, *, device: torch.device, dist_info,
                   progress: bool) -> dict:
    """Segmentation mIoU (percent, the data set's classes) on ``val_ds``, and per class."""
    scores = evaluate_segmentation(model, val_ds, device=device, num_classes=val_ds.num_classes,
                                   batch_size=1, progress=progress, dist_info=dist_info)
    return {"seg_miou": 100 * scores.miou, "iou_per_class": iou_by_class(scores, val_ds.classes)}


def stage_seg_predict(model: nn.Module, datasets: list, out_dir: Path, *, device: torch.device,
                      dist_info, progress: bool) -> dict:
    """The network's label PNGs of every image of ``datasets`` in ``out_dir`` (the next round's
    confounder dictionary is built from them); resumable per image."""
    names: set[str] = set()
    for ds in datasets:
        predict_masks(model, ds, out_dir, device=device, progress=progress, rank=dist_info.rank,
                      world_size=dist_info.world_size)
        names.update(ds.names)
    return {"images": len(names)}
