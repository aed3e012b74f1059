"""Segmentation networks trained on pseudo-masks: DeepLab-v2 (CONTA's choice), torchvision DeepLab-v3, a tiny CNN."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models import segmentation as tvseg
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError, WeightsError
from ..runtime import speedups_enabled
from .fold import FoldedCopy
from .mobilenet import MobileNetV2Trunk, features_state
from .weights import load_state_dict_file

ARCHS = ("deeplabv2", "deeplabv3", "tiny")
DEEPLABV2_TEST_SCALES = (1.0, 0.5, 0.75)
"""DeepLab-v2's test-time scales, combined by pixel-wise max (method.md 4); pass to :func:`predict`."""

_RESNETS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
}
_BACKBONES = {
    "deeplabv2": ("resnet101", "resnet50"),
    "deeplabv3": ("resnet101", "resnet50"),
    "tiny": ("tiny", "resnet18", "mobilenet_v2"),
}


def imagenet_state_dict(backbone: str, *, option: str = "seg.weights",
                        progress: bool = False) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet weights (``IMAGENET1K_V1``) of ``backbone``, from the hub cache or a download.

    Offline, the file must already lie in ``$TORCH_HOME/hub/checkpoints``; otherwise a
    :class:`WeightsError` names that file and the ``option=/path`` alternative.
    """
    enum = _RESNETS[backbone][1]
    try:
        return enum.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - URLError, OSError, hash mismatch: all mean "no weights"
        expected = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        raise WeightsError(
            f"cannot load ImageNet weights for {backbone} ({type(exc).__name__}: {exc}). "
            f"Download {enum.url} to {expected}, or pass {option}=/path/to/{Path(enum.url).name} "
            f"(a torchvision ResNet state dict), or {option}=none to train from scratch") from exc


def _load_trunk(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a ResNet state dict into ``module`` (the classification ``fc`` is not needed)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = {k for k in module.state_dict() if not k.startswith("fc.")}
    missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in set(state) - expected if not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise WeightsError(f"weights from {source} do not fit the ResNet trunk: {len(missing)} "
                           f"missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) "
                           f"{unexpected[:5]}; expected a torchvision ResNet state dict "
                           "(keys like 'conv1.weight', 'layer1.0.bn1.weight')")
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"weights from {source} do not fit the ResNet trunk: {exc}") from exc


def _resnet_state(backbone: str, weights: str) -> tuple[dict | None, str]:
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        return imagenet_state_dict(backbone), f"torchvision {backbone} IMAGENET1K_V1"
    return load_state_dict_file(weights), str(weights)


class ASPP(nn.Module):
    """DeepLab-v2 atrous spatial pyramid pooling: parallel 3x3 convs with dilations ``rates``, outputs summed.

    ``ASPP(x) = sum_r conv3x3_r(x)`` (DeepLab-v2, Chen et al. TPAMI 2017; deeplab-pytorch ``_ASPP``),
    not DeepLab-v3's concatenation; weights ~ N(0, 0.01), biases 0.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out  # (B, num_classes, h, w)


class DeepLabV2(nn.Module):
    """DeepLab-v2: ResNet trunk at output stride 8 (layer3/4 dilated), frozen BN, ASPP rates 6/12/18/24.

    ``param_groups(lr)`` follows deeplab-pytorch (CONTA's segmentation code, method.md 4):
    trunk at ``lr``, ASPP weights at ``10 lr``, ASPP biases at ``20 lr`` without weight decay.
    """

    output_stride = 8

    def __init__(self, num_classes: int, backbone: str = "resnet101",
                 state: dict[str, torch.Tensor] | None = None, source: str = "none"):
        super().__init__()
        resnet = _RESNETS[backbone][0](weights=None, norm_layer=FrozenBatchNorm2d,
                                       replace_stride_with_dilation=[False, True, True])
        if state is not None:
            _load_trunk(resnet, state, source)
        self.backbone = nn.Sequential(OrderedDict(
            (name, getattr(resnet, name)) for name in
            ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))
        self.aspp = ASPP(resnet.fc.in_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.aspp(self.backbone(images))  # (B, 3, H, W) -> (B, num_classes, H/8, W/8)

    def param_groups(self, lr: float) -> list[dict]:
        """Trunk 1x, ASPP weights 10x, ASPP biases 20x with ``weight_decay=0`` (DeepLab-v2 solver)."""
        trunk = [p for p in self.backbone.parameters() if p.requires_grad]
        weights = [conv.weight for conv in self.aspp.branches]
        biases = [conv.bias for conv in self.aspp.branches]
        return [{"params": trunk, "lr": lr}, {"params": weights, "lr": 10 * lr},
                {"params": biases, "lr": 20 * lr, "weight_decay": 0.0}]


class DeepLabV3(nn.Module):
    """torchvision's DeepLab-v3 (ResNet-50/101 at output stride 8, ASPP with image pooling, concat).

    ``forward`` returns the classifier's output before torchvision's final upsampling, so that
    every architecture here returns logits at its output stride; one learning rate for all
    parameters, as in torchvision's segmentation reference recipe.
    """

    output_stride = 8

    def __init__(self, num_classes: int, backbone: str = "resnet101",
                 state: dict[str, torch.Tensor] | None = None, source: str = "none"):
        super().__init__()
        builder = tvseg.deeplabv3_resnet101 if backbone == "resnet101" else tvseg.deeplabv3_resnet50
        self.net = builder(weights=None, weights_backbone=None, num_classes=num_classes,
                           aux_loss=False)
        if state is not None:
            _load_trunk(self.net.backbone, state, source)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.net.backbone(images)["out"]  # (B, 2048, H/8, W/8)
        return self.net.classifier(features)  # (B, num_classes, H/8, W/8)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


def _conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinySegNet(nn.Module):
    """DeepLab-v2 in miniature for smoke and CPU runs: a small trunk plus a summed ASPP (rates 1/2/3/4).

    ``backbone="tiny"``: five 3x3 conv-BN-ReLU layers (16-64 channels, the last two dilated),
    output stride 4. ``backbone="resnet18"``: torchvision ResNet-18 up to layer3, with layer3's
    stride replaced by dilation 2 (output stride 8, 256 channels). ``backbone="mobilenet_v2"``:
    the MobileNetV2 features (:mod:`causal_wsss.models.mobilenet`) dilated to output stride 16
    (1280 channels), its stem (conv1 + layer1) frozen. Otherwise trained BN, one learning rate.
    """

    def __init__(self, num_classes: int, backbone: str = "tiny",
                 state: dict[str, torch.Tensor] | None = None, source: str = "none"):
        super().__init__()
        self.stem: nn.Module | None = None
        self.stem_fold = FoldedCopy()  # the frozen stem, folded (not a submodule: no state)
        if backbone == "mobilenet_v2":
            trunk = MobileNetV2Trunk(output_stride=16, trunk_depth=4, state=state)
            # Frozen stem (conv1 + layer1: BN in eval mode, no gradient), as IRNet freezes the
            # CAM network's: the backward pass through the stride-2/4 layers is most of the
            # cost on a CPU.
            self.stem = nn.Sequential(OrderedDict((n, getattr(trunk, n)) for n in ("conv1", "layer1")))
            self.stem.requires_grad_(False)
            self.backbone = nn.Sequential(OrderedDict(
                (name, getattr(trunk, name)) for name in ("layer2", "layer3", "layer4")))
            channels, self.output_stride = trunk.out_channels, 16
        elif backbone == "tiny":
            self.backbone = nn.Sequential(_conv_bn(3, 16, stride=2), _conv_bn(16, 32, stride=2),
                                          _conv_bn(32, 32), _conv_bn(32, 64, dilation=2),
                                          _conv_bn(64, 64, dilation=4))
            channels, self.output_stride = 64, 4
        else:
            resnet = tvm.resnet18(weights=None)
            if state is not None:
                _load_trunk(resnet, state, source)
            for block in resnet.layer3:
                block.conv1.stride = (1, 1)
                for conv in (block.conv1, block.conv2):
                    conv.dilation, conv.padding = (2, 2), (2, 2)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
            self.backbone = nn.Sequential(OrderedDict(
                (name, getattr(resnet, name)) for name in
                ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))
            channels, self.output_stride = 256, 8
        self.aspp = ASPP(channels, num_classes, rates=(1, 2, 3, 4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            stem = self.stem_fold.get(self.stem) if speedups_enabled() else None
            with torch.no_grad():
                images = (stem if stem is not None else self.stem)(images)
        return self.aspp(self.backbone(images))  # (B, num_classes, H/os, W/os)

    def train(self, mode: bool = True) -> TinySegNet:
        super().train(mode)
        if self.stem is not None:
            self.stem.eval()  # frozen BN statistics
        return self

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


def build_seg_net(num_classes: int, *, arch: str = "deeplabv2", backbone: str = "resnet101",
                  weights: str = "imagenet") -> nn.Module:
    """Build a segmentation network returning logits ``(B, num_classes, H/os, W/os)``.

    - ``arch="deeplabv2"``: DeepLab-v2 (CONTA, method.md 4), ``backbone`` resnet101 | resnet50;
    - ``arch="deeplabv3"``: torchvision DeepLab-v3, resnet101 | resnet50;
    - ``arch="tiny"``: :class:`TinySegNet`, ``backbone`` tiny | resnet18.

    ``weights``: ``"imagenet"`` (torchvision ``IMAGENET1K_V1`` trunk weights), ``"none"``, or a
    path to a ResNet state dict. Every model has ``output_stride`` and ``param_groups(lr)``.
    """
    if arch not in ARCHS:
        raise ConfigError(f"config key 'seg.arch': unknown architecture '{arch}'; expected one of "
                          + ", ".join(ARCHS))
    if backbone not in _BACKBONES[arch]:
        raise ConfigError(f"config key 'seg.backbone': '{backbone}' does not fit seg.arch={arch}; "
                          "expected one of " + ", ".join(_BACKBONES[arch]))
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2 (background plus objects), got {num_classes}")
    if backbone == "tiny" and weights != "none":
        raise ConfigError(f"config key 'seg.weights': the tiny CNN has no pretrained weights "
                          f"(got '{weights}'); use seg.weights=none or seg.backbone=resnet18")
    if backbone == "mobilenet_v2":
        state, source = features_state(weights, option="seg.weights"), weights
    elif backbone != "tiny":
        state, source = _resnet_state(backbone, weights)
    else:
        state, source = None, "none"
    cls = {"deeplabv2": DeepLabV2, "deeplabv3": DeepLabV3, "tiny": TinySegNet}[arch]
    return cls(num_classes, backbone, state=state, source=source)


def predict(model: nn.Module, images: torch.Tensor, out_size: tuple[int, int], *,
            scales: Sequence[float] = (1.0,), flip: bool = False, combine: str = "max",
            output: str = "probs") -> torch.Tensor:
    """Multi-scale (and flip) inference: ``(B, 3, H, W)`` normalised images -> ``(B, C, *out_size)``.

    Each scale's logits are upsampled bilinearly to ``out_size`` (a flipped copy is mirrored back
    and averaged with the unflipped one), then combined over scales pixel-wise by ``"max"``
    (DeepLab-v2 test protocol: max over scales {1, 0.5, 0.75}, method.md 4) or ``"mean"``.
    Returns softmax probabilities (``output="probs"``) or the combined logits (``"logits"``).
    The caller sets ``model.eval()``, ``torch.no_grad()`` and autocast.
    """
    if combine not in ("max", "mean"):
        raise ConfigError(f"predict: combine must be 'max' or 'mean', got {combine!r}")
    if output not in ("probs", "logits"):
        raise ConfigError(f"predict: output must be 'probs' or 'logits', got {output!r}")
    batch, _, height, width = images.shape
    combined = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])  # (2B, 3, h, w)
        logits = F.interpolate(model(x).float(), size=out_size, mode="bilinear",
                               align_corners=False)  # (B or 2B, C, *out_size)
        if flip:
            logits = (logits[:batch] + logits[batch:].flip(-1)) / 2
        if combined is None:
            combined = logits
        elif combine == "max":
            combined = torch.maximum(combined, logits)
        else:
            combined = combined + logits
    if combine == "mean":
        combined = combined / len(scales)
    return combined.softmax(1) if output == "probs" else combined
