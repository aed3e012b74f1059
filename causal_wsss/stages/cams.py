"""Stages ``cams`` and ``cam_eval``: multi-scale + flip CAMs of the round's images, cached per image,
and their evaluation (mIoU at the fixed threshold and over a sweep, leakage, contrast, precision)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cam import CamCache, make_cams
from ..config import ExperimentConfig, cam_infer_amp
from ..errors import DataError
from ..metrics import (
    ContrastMeter,
    LeakageMeter,
    ThresholdSweep,
    foreground_recall,
    iou_by_class,
    precision_split,
    threshold_grid,
)
from ..models.context import ContextCamNet
from ..runtime import loader_workers, progress_bar


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
    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    total = {"written": 0, "skipped": 0}
    t0 = time.perf_counter()
    for ds in datasets:
        counts = make_cams(cam_net, ds, cache_dir, batch_size=cfg.cam_infer.batch_size,
                           num_workers=loader_workers(cfg.data.num_workers, device),
                           scales=cfg.cam_infer.scales, flip=cfg.cam_infer.flip, device=device,
                           amp=cam_infer_amp(cfg), progress=progress, rank=dist_info.rank,
                           world_size=dist_info.world_size, context_fn=context_fn,
                           work_long=cfg.cam_infer.work_long)
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
            "cam_iou_per_class": iou_by_class(fixed, eval_ds.classes),
            "per_class": {n: {**contrasts["per_class"][n],
                              "leakage": leakage["per_class"][n]["leakage"],
                              "precision": prec_fixed["per_class"][n]["precision"],
                              "precision_best": prec_best["per_class"][n]["precision"]}
                          for n in (names[c] for c in used if c != 0)},
            "sweep": [[t, 100 * v] for t, v in sweep.compute()]}


ROUND_CAM_KEYS = ("miou_classes", "leakage_uniform", "contrast_context", "contrast_partner",
                  "precision", "precision_fp_context", "precision_fp_objects", "precision_best",
                  "precision_best_fp_context", "precision_best_fp_objects", "recall",
                  "recall_best")
"""cam_eval figures copied into each round's report entry (beside the mIoUs and leakage)."""
