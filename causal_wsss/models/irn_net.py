"""IRNet's class-boundary branch on a frozen copy of a trained CAM network's trunk (IRNet ``net/resnet50_irn.py``, edge branch only)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError

BRANCH_CHANNELS = 32
"""Channels of each stage's 1x1 projection in IRNet's edge branch (``fc_edge1..5``)."""

GROUPS = 4
"""GroupNorm groups of each projection (IRNet ``nn.GroupNorm(4, 32)``)."""

_PROBE = 64
"""Side of the zero image used once to read each stage's channels and stride."""


class BoundaryNet(nn.Module):
    """Class-boundary logits on the stride-4 grid from the multi-level features of a frozen trunk.

    IRNet's edge branch (method.md sections 4 and 8): every trunk stage (the stem
    conv1/bn1/relu/maxpool, then layer1..layer3 and layer4 where present) goes through a 1x1
    conv to 32 channels and GroupNorm(4, 32), is resampled to the stride-4 grid (bilinear
    upsampling by the integer stride ratio then cropped, as IRNet's ``Upsample`` + crop; average
    pooling for a finer stage, e.g. the tiny trunk's stride-2 stem), then ReLU; the maps are
    concatenated and a 1x1 conv with bias gives one boundary logit. The displacement branch is
    left out (CONTA skips IRNet's instance steps).

    The trunk is deep-copied, frozen (``requires_grad=False``), kept in eval mode (BatchNorm
    with running statistics) and run under ``no_grad``, so only the branch learns and the CAM
    network passed in is never modified. Its weights are part of :meth:`state_dict`, which makes
    a checkpoint self-contained.
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"):
            if not hasattr(trunk, name):
                raise ConfigError(f"BoundaryNet: the trunk has no '{name}'; expected a CamNet "
                                  "backbone with torchvision ResNet module names (conv1, bn1, relu, "
                                  "maxpool, layer1..layer3, optional layer4)")
        self.backbone = copy.deepcopy(trunk)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        channels, strides = self._probe()
        self.strides = strides
        self.edge_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, BRANCH_CHANNELS, 1, bias=False),
                          nn.GroupNorm(GROUPS, BRANCH_CHANNELS))
            for c in channels)
        self.fuse = nn.Conv2d(BRANCH_CHANNELS * len(channels), 1, 1, bias=True)

    def train(self, mode: bool = True) -> BoundaryNet:
        """Set train/eval mode of the branch; the trunk always stays in eval mode (IRNet)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def _probe(self) -> tuple[list[int], tuple[int, ...]]:
        """Channels and output stride of each stage, read from one zero image of 64 x 64."""
        param = next(self.backbone.parameters())
        probe = torch.zeros(1, 3, _PROBE, _PROBE, device=param.device, dtype=param.dtype)
        feats = self.stage_features(probe)
        channels = [int(f.shape[1]) for f in feats]
        strides = tuple(_PROBE // int(f.shape[-1]) for f in feats)
        bad = [s for s in strides if s < 1 or s & (s - 1)]
        if bad:
            raise ConfigError(f"BoundaryNet: trunk stage strides {strides}; expected powers of 2")
        return channels, strides

    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised images -> the trunk's stage outputs, computed without gradients."""
        t = self.backbone
        with torch.no_grad():
            x = t.maxpool(t.relu(t.bn1(t.conv1(images))))  # (B, C0, H/4, W/4) for ResNets
            feats = [x]
            for name in ("layer1", "layer2", "layer3", "layer4"):
                if hasattr(t, name):
                    x = getattr(t, name)(x)
                    feats.append(x)
        return feats

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1, ceil(H/4), ceil(W/4)) boundary logits."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"images have shape {tuple(images.shape)}; expected (B, 3, H, W)")
        grid = (math.ceil(images.shape[-2] / 4), math.ceil(images.shape[-1] / 4))
        maps = []
        for feat, stride, layer in zip(self.stage_features(images), self.strides,
                                       self.edge_layers):
            x = layer(feat)  # (B, 32, h_i, w_i)
            if stride > 4:
                x = F.interpolate(x, scale_factor=stride // 4, mode="bilinear",
                                  align_corners=False)
            elif stride < 4:
                x = F.avg_pool2d(x, 4 // stride, ceil_mode=True)
            maps.append(F.relu(x[..., :grid[0], :grid[1]]))  # (B, 32, h, w)
        return self.fuse(torch.cat(maps, dim=1))  # (B, 1, h, w)


def build_boundary_net(cam_net: nn.Module) -> BoundaryNet:
    """The boundary network on (a frozen copy of) ``cam_net.backbone`` (a :class:`CamNet`, or DDP-wrapped)."""
    net = cam_net.module if hasattr(cam_net, "module") else cam_net
    if not hasattr(net, "backbone"):
        raise ConfigError(f"build_boundary_net: {type(net).__name__} has no 'backbone'; expected "
                          "a causal_wsss.models.CamNet")
    return BoundaryNet(net.backbone)
