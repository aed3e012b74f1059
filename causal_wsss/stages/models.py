"""The networks a round builds: the CAM network of the config (the model factory), the network a
round starts from, and a check of every network name before anything is written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..config import ExperimentConfig
from ..errors import CausalWSSSError, ConfigError, WeightsError
from ..models.cam_net import build_cam_net
from ..models.seg_net import build_seg_net
from ..runtime import seed_everything, stage_seed


def build_cam_model(cfg: ExperimentConfig, num_classes_fg: int, *, context: nn.Module | None = None,
                    with_context: bool = False, context_channels: int = 1):
    """The CAM network of the config; with ``context`` (a ContextAdjustment) the CONTA variant.

    ``with_context=True`` builds the network with ``context_channels`` context channels (CONTA's
    one m; an appearance m has the trunk's width) but leaves attaching the adjustment
    (``net.new_modules["context"] = ...``) to the caller.
    """
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
                        context_channels=context_channels if with_context else 0)
    if context is not None:
        net.new_modules["context"] = context
    return net


def initial_cam_model(cfg: ExperimentConfig, num_classes_fg: int, *, with_context: bool = False,
                      context_channels: int = 1):
    """The CAM network a round starts from: :func:`build_cam_model` right after seeding with
    ``stage_seed(cfg.seed, "cam")``. Every round, a resumed run and a notebook that trains the
    network itself (notebook 03) thus start from the same weights, so the same seed gives the
    same round 0 wherever it is trained (the paired comparison of docs/method.md 7.10)."""
    seed_everything(stage_seed(cfg.seed, "cam"))
    return build_cam_model(cfg, num_classes_fg, with_context=with_context,
                           context_channels=context_channels)


def check_networks(cfg: ExperimentConfig, num_classes: int) -> None:
    """Build the CAM and segmentation networks on the meta device (no memory, no weights read)
    so that an unknown backbone or architecture is refused before anything is written; a
    ``weights`` path must be a file."""
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
