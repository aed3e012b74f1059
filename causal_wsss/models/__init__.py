"""Networks: the CAM classifier (``cam_net``); the context adjustment and segmentation networks live beside it."""

from __future__ import annotations

from .cam_net import BACKBONES, CamNet, CamOutput, build_cam_net

__all__ = ["BACKBONES", "CamNet", "CamOutput", "build_cam_net"]
