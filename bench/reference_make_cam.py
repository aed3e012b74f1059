"""A one-image-at-a-time reference of IRNet's CAM inference, step by step as IRNet's own code does it, to check and time ``causal_wsss.cam``.

Written from jiwoon-ahn/irn at a2ece00 (its last commit), not from ``causal_wsss.cam``:

- ``voc12/dataloader.py`` ``VOC12ClassificationDatasetMSF.__getitem__``: the 8-bit RGB image
  (H, W, 3) as read from disk; for each scale s, the image itself when s == 1, else
  ``misc/imutils.py`` ``pil_rescale``: target size ``int(np.round(H s)), int(np.round(W s))``,
  ``PIL.Image.fromarray(img).resize((w, h), BICUBIC)`` on the uint8 array (``pil_resize``
  returns the image unchanged when the size is the same; the width pass first, as the Pillow
  of IRNet's time: :func:`pil_rescale_bicubic`); then ``TorchvisionNormalize``
  (``(img / 255. - mean) / std`` per channel, in float64 numpy, stored as float32),
  ``HWC_to_CHW``, and ``np.stack([img, np.flip(img, -1)])``, a pair per scale.
- ``net/resnet50_cam.py`` ``CAM.forward``: trunk features, ``F.conv2d`` with the classifier's
  weights, ReLU, ``x[0] + x[1].flip(-1)``.
- ``step/make_cam.py`` ``_work``: ``strided_size = get_strided_size(size, 4)`` and
  ``strided_up_size = get_strided_up_size(size, 16)`` (``(n - 1) // stride + 1``, times the
  stride); every scale's (K, h, w) output bilinearly (align_corners=False) to ``strided_size``,
  and to ``strided_up_size`` then cropped to (H, W); both summed over scales; the positive
  classes kept (``torch.nonzero(label)``); each map divided by its
  ``F.adaptive_max_pool2d(..., (1, 1)) + 1e-5``.

Where this reference departs from IRNet, for the project's options only: the up-size stride
is the network's output stride (IRNet's 16 for output stride 16); ``flip=False`` runs one copy
per scale (IRNet always runs the pair); ``context`` appends CONTA's context channels (the
network attaches them). The model must be a ``causal_wsss.models.CamNet``; it runs in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def as_hwc_uint8(image) -> np.ndarray:
    """The 8-bit (H, W, 3) array IRNet reads from disk, from such an array or a (3, H, W)
    uint8 tensor."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 (3, H, W) tensor, got {image.dtype} "
                             f"{tuple(image.shape)}")
        return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    return image


def pil_rescale_bicubic(img: np.ndarray, scale: float) -> np.ndarray:
    """IRNet ``pil_rescale(img, scale, order=3)``: PIL bicubic on the uint8 array.

    IRNet calls ``Image.fromarray(img).resize((w, h), BICUBIC)`` once. The Pillow releases of
    its time ran the width pass, then the height pass; recent Pillow (13 here) may run the
    height first for some shapes (tall images being shrunk), which changes a few grey levels.
    Asking for the width, then the height, gives IRNet's order on every Pillow (each call is one
    pass, byte-identical to that pass of a single call).
    """
    h, w = img.shape[:2]
    new_h, new_w = int(np.round(h * scale)), int(np.round(w * scale))
    if (new_h, new_w) == (h, w):
        return img
    out = Image.fromarray(img)
    if new_w != w:
        out = out.resize((new_w, h), Image.BICUBIC)
    if new_h != h:
        out = out.resize((new_w, new_h), Image.BICUBIC)
    return np.asarray(out)


def torchvision_normalize(img: np.ndarray) -> np.ndarray:
    """IRNet ``TorchvisionNormalize``: float64 arithmetic per channel, float32 result."""
    out = np.empty(img.shape, np.float32)
    for c in range(3):
        out[..., c] = (img[..., c] / 255.0 - TORCHVISION_MEAN[c]) / TORCHVISION_STD[c]
    return out


def msf_inputs(image, scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
               flip: bool = True) -> list[np.ndarray]:
    """IRNet's multi-scale test images of one image: per scale a float32 (2, 3, h, w) array
    (the image and its mirror image; (1, 3, h, w) without ``flip``)."""
    img = as_hwc_uint8(image)
    out = []
    for s in scales:
        s_img = img if s == 1 else pil_rescale_bicubic(img, s)
        chw = torchvision_normalize(s_img).transpose(2, 0, 1)  # (3, h, w)
        out.append(np.stack([chw, np.flip(chw, -1)]) if flip else chw[None].copy())
    return out


def reference_cams_from_inputs(model: nn.Module, inputs: Sequence[np.ndarray],
                               size: tuple[int, int], label: torch.Tensor, *,
                               context: torch.Tensor | None = None,
                               device: torch.device | str = "cpu"
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IRNet ``make_cam`` on the arrays of :func:`msf_inputs` of an image of ``size`` (H, W)."""
    model.eval()
    height, width = size
    stride = model.output_stride
    strided_size = ((height - 1) // 4 + 1, (width - 1) // 4 + 1)
    strided_up_size = (((height - 1) // stride + 1) * stride, ((width - 1) // stride + 1) * stride)
    weight = model.classifier.weight
    outputs = []
    with torch.no_grad():
        for pair in inputs:
            x = torch.from_numpy(pair).to(device)  # (2, 3, h, w)
            ctx = None
            if context is not None:
                ctx = context.unsqueeze(0)
                ctx = torch.cat([ctx, ctx.flip(-1)]) if len(pair) == 2 else ctx
                ctx = ctx.to(device)
            features = model(x, ctx).features  # (2, C + Cc, h, w)
            cam = F.relu(F.conv2d(features, weight))  # (2, K, h, w)
            outputs.append(cam[0] + cam[1].flip(-1) if len(pair) == 2 else cam[0])
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


def reference_cams(model: nn.Module, image, label: torch.Tensor, *,
                   scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0), flip: bool = True,
                   context: torch.Tensor | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """One image's CAMs, as IRNet's data set + ``make_cam`` compute them.

    image: the 8-bit image, a uint8 (H, W, 3) array or (3, H, W) tensor; label: (K,)
    multi-hot; context: (Cc, Hc, Wc) or None. The resizing runs on the CPU (IRNet's data
    loader), the network and the upsampling on ``device``. Returns ``keys`` (P,),
    ``high_res`` (P, H, W), ``cam`` (P, ceil(H/4), ceil(W/4)), float32 on the CPU.
    """
    img = as_hwc_uint8(image)
    return reference_cams_from_inputs(model, msf_inputs(img, scales, flip), img.shape[:2],
                                      label, context=context, device=device)
