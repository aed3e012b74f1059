"""Stage ``twin_eval``: the do(context) figures of the round's CAM network on the twins split
(:mod:`causal_wsss.context_effects`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..cam import make_cams
from ..config import ExperimentConfig, cam_infer_amp
from ..context_effects import context_effects, twin_cam_miou, twin_logits
from ..data.synthetic import load_meta
from ..models.context import ContextCamNet
from ..runtime import barrier, loader_workers, speedups_enabled


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
    if dist_info.is_main:  # CAMs of an earlier attempt may come from another network
        shutil.rmtree(cache_dir, ignore_errors=True)
    barrier()
    meta = load_meta(twins_ds.voc_root)
    cam_net = model.cam_net if isinstance(model, ContextCamNet) else model
    amp = cam_infer_amp(cfg)
    kinds = {img["name"]: img.get("kind") for img in meta["images"]}
    twin_view = twins_ds.subset([n for n in twins_ds.names if kinds.get(n) == "twin"])
    # the twins' scores come from their CAMs' scale-1 pass (one pass for both) with the
    # speed-ups, and from a pass of their own without
    shared = speedups_enabled() and 1.0 in cfg.cam_infer.scales and dist_info.world_size == 1
    scores: dict[str, torch.Tensor] | None = {} if shared else None
    make_cams(cam_net, twin_view, cache_dir, batch_size=cfg.cam_infer.batch_size,
              num_workers=loader_workers(cfg.data.num_workers, device),
              scales=cfg.cam_infer.scales,
              flip=cfg.cam_infer.flip, device=device, amp=amp, progress=progress,
              rank=dist_info.rank, world_size=dist_info.world_size, context_fn=context_fn,
              work_long=cfg.cam_infer.work_long, logits_out=scores)
    rest = twins_ds if scores is None else twins_ds.subset(
        [n for n in twins_ds.names if n not in scores])
    logits = twin_logits(cam_net, rest, device=device, amp=amp, context_fn=context_fn,
                         batch_size=cfg.cam_infer.batch_size, meta=meta,
                         work_long=cfg.cam_infer.work_long)
    if scores is not None:  # back in the split's order
        row = {n: i for i, n in enumerate(rest.names)}
        logits = np.stack([scores[n].numpy() if n in scores else logits[row[n]]
                           for n in twins_ds.names])
    result = context_effects(logits, twins_ds.names, meta, twins_ds.classes)
    barrier()
    result.update(twin_cam_miou(twin_view, cache_dir, meta, threshold, device=device))
    result["twin_images"] = len(twins_ds)
    return result


ROUND_TWIN_KEYS = ("context_effect", "fp_rate_preferred", "fp_rate_other", "partner_effect",
                   "cam_miou_in_context", "cam_miou_out_of_context", "cam_miou_context_gap")
"""twin_eval figures copied into each round's report entry when the data carry twins."""
