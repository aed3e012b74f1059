"""``cam.method=irn``: IRNet's CAM network (the project's baseline), trained by ``cam_train``."""

from __future__ import annotations

from ..checkpoint import load_checkpoint
from ..stages.cam_train import stage_cam_train, stage_cam_transfer
from .base import CamMethod, CamRound, CamStages


def train_irn_cams(round_: CamRound) -> CamStages:
    """Stage ``cam_train`` (:func:`causal_wsss.stages.cam_train.stage_cam_train`), then its weights."""
    if round_.r == 0 and round_.cfg.cam.checkpoint:  # a network trained elsewhere
        record = round_.timed("cam_train", lambda: stage_cam_transfer(
            round_.cfg, round_.model, round_.round_dir))
    else:
        record = round_.timed("cam_train", lambda: stage_cam_train(
            round_.cfg, round_.model, round_.train_set, round_.round_dir,
            device=round_.device, dist_info=round_.dist_info, progress=round_.progress,
            logger=round_.logger, pre_transform=round_.pre_transform))
    load_checkpoint(round_.round_dir / "cam_net.pt", model=round_.model,
                    map_location=round_.device)
    return CamStages(record, round_.model.to(round_.device))


METHOD = CamMethod(name="irn", description="IRNet's CAM: GAP + bias-free 1x1 classifier",
                   train=train_irn_cams)
