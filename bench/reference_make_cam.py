"""A one-image-at-a-time reference of IRNet's ``make_cam`` step, written from its description, to check and time ``causal_wsss.cam``.

Per image, in fp32: for every scale the image is resized on the CPU, stacked with its mirror
image as a batch of 2 and sent to the device; CAM = ReLU(classifier weights * features); the
mirrored CAM is flipped back and added; all K classes are upsampled to the stride-4 grid and
to the output-stride-padded size (then cropped), summed over scales; only the positive
classes are kept and each map is divided by its max + 1e-5 (jiwoon-ahn/irn ``step/make_cam.py``,
``net/resnet50_cam.py``; method.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def reference_cams(model: nn.Module, image: torch.Tensor, label: torch.Tensor, *,
                   scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0), flip: bool = True,
                   context: torch.Tensor | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """One image's CAMs, IRNet style.

    image: normalised float (3, H, W) on the CPU; label: (K,) multi-hot; context: (Cc, Hc, Wc)
    or None. The network and the upsampling run on ``device`` (IRNet: the GPU). Returns
    ``keys`` (P,), ``high_res`` (P, H, W), ``cam`` (P, ceil(H/4), ceil(W/4)), float32 on the CPU.
    """
    model.eval()
    height, width = image.shape[-2:]
    stride = model.output_stride
    strided_size = (-(-height // 4), -(-width // 4))
    strided_up_size = (-(-height // stride) * stride, -(-width // stride) * stride)
    weight = model.classifier.weight
    outputs = []
    with torch.no_grad():
        for s in scales:
            target = (int(np.round(height * s)), int(np.round(width * s)))
            img = image.unsqueeze(0).float()  # (1, 3, H, W), CPU
            if target != (height, width):
                img = F.interpolate(img, size=target, mode="bilinear", align_corners=False,
                                    antialias=s < 1)
            pair = torch.cat([img, img.flip(-1)]) if flip else img  # (2, 3, h, w)
            ctx = None
            if context is not None:
                ctx = context.unsqueeze(0)
                ctx = torch.cat([ctx, ctx.flip(-1)]) if flip else ctx
                ctx = ctx.to(device)
            features = model(pair.to(device), ctx).features  # (2, C + Cc, h, w)
            x = F.relu(F.conv2d(features, weight))  # (2, K, h, w)
            x = x[0] + x[1].flip(-1) if flip else x[0]  # (K, h, w)
            outputs.append(x)
        strided_cam = torch.sum(torch.stack([
            F.interpolate(o.unsqueeze(0), strided_size, mode="bilinear", align_corners=False)[0]
            for o in outputs]), 0)  # (K, H/4, W/4)
        highres_cam = torch.sum(torch.stack([
            F.interpolate(o.unsqueeze(1), strided_up_size, mode="bilinear", align_corners=False)
            for o in outputs], 0), 0)[:, 0, :height, :width]  # (K, H, W)
        valid_cat = torch.nonzero(label.to(highres_cam.device))[:, 0]
        strided_cam = strided_cam[valid_cat]
        strided_cam /= F.adaptive_max_pool2d(strided_cam, (1, 1)) + 1e-5
        highres_cam = highres_cam[valid_cat]
        highres_cam /= F.adaptive_max_pool2d(highres_cam, (1, 1)) + 1e-5
    return valid_cat.cpu(), highres_cam.cpu(), strided_cam.cpu()
