"""ESOL's expansion and shrinkage samplers on top of a trained CAM network (``cam.method=esol``).

ESOL (Li et al., "Expansion and Shrinkage of Localization for Weakly-Supervised Semantic
Segmentation", NeurIPS 2022) is **re-implemented from the abstract and the official figure**,
not reproduced: the authors never released their code, and the paper body could not be read
here. What the figure shows [V-fig]: two 3x3 deformable layers after the backbone; the first
("expansion sampler") is trained by an *inverse* classification signal (it maximises the
classification loss, so it samples less discriminative parts), followed by a Clip Op; the
second ("shrinkage sampler") reads the clipped, detached expansion features and is trained
with the classification loss plus an area loss; the final CAMs come from the shrinkage head.
Everything else (the gradient reversal, the offset bound, the clip value, the area-loss
formula, the kernels, the schedules) is our decision [R], each behind a key of
:class:`causal_wsss.config.EsolConfig`; docs/esol.md lists them.

Shapes, for a trunk of C channels at output stride os (h = H/os):

    F   = trunk(x)                          (B, C, h, w)   frozen in reading A (no_grad, eval)
    D1  = r_max tanh(offset_conv1(F.detach()) / r_max)   (B, 18, h, w), zero at init
    F1  = sample(F, GRL(D1))                (B, C, h, w)   frozen mean kernel: avg_pool at D1 = 0
    F1c = min(F1, tau)                      tau: (C,) per-channel quantile, fixed at E start
    E head:  logits = cls_expand(GAP([F1c ; m])),  CAM = ReLU(cls_expand * [F1c ; m])
    D2  = r_max tanh(offset_conv2(F1c.detach()) / r_max)
    F2  = sample(F1c.detach(), D2)
    S head:  logits = cls_shrink(GAP([F2 ; m])),   CAM = ReLU(cls_shrink * [F2 ; m])

CONTA's m (``context``) is appended *after* the samplers, at the active head only: it never
enters the samplers, the offset convolutions or the Clip Op (docs/esol.md).

:class:`EsolCamNet` has the interface of :class:`~causal_wsss.models.cam_net.CamNet` that CAM
extraction and CONTA use (``forward(images, context) -> CamOutput``, ``cam_maps``, ``cams``,
``classifier``, ``new_modules``, ``num_classes``, ``output_stride``, ``feature_channels``), so
multi-scale CAMs, :class:`~causal_wsss.models.context.ContextCamNet` and everything downstream work
unchanged.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .cam_net import CamOutput

KERNEL = 3
TAPS = KERNEL * KERNEL  # N = 9 sampling points, 2N = 18 offset channels (dy, dx per tap)


class GradReverse(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``-lam`` (a gradient-reversal
    layer, DANN). Put on the offsets, it makes a descending optimiser *ascend* the loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # noqa: D102
        ctx.lam = float(lam)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """``x`` forward, ``-lam * grad`` backward."""
    return GradReverse.apply(x, lam)


def dann_lambda(progress: float) -> float:
    """The DANN ramp 2 / (1 + exp(-10 p)) - 1: 0 at p = 0, 0.987 at p = 0.5, -> 1."""
    p = min(1.0, max(0.0, float(progress)))
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def _tap_grid(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-offset sampling positions of the 9 taps: (1, 9, h, 1) rows and (1, 9, 1, w) cols."""
    ky = torch.arange(KERNEL, device=device, dtype=dtype).repeat_interleave(KERNEL) - 1  # (9,)
    kx = torch.arange(KERNEL, device=device, dtype=dtype).repeat(KERNEL) - 1  # (9,)
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    return ys[None, None, :, None] + ky[None, :, None, None], xs[None, None, None, :] + kx[None, :, None, None]


def sample_positions(offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each tap reads: (B, 9, h, w) rows and columns, in feature cells.

    offsets: (B, 18, h, w), channel 2k = dy and 2k+1 = dx of tap k = i * 3 + j (torchvision's
    ``deform_conv2d`` layout; padding 1, stride 1, dilation 1).
    """
    b, _, h, w = offsets.shape
    off = offsets.view(b, TAPS, 2, h, w)
    base_y, base_x = _tap_grid(h, w, offsets.device, offsets.dtype)
    return base_y + off[:, :, 0], base_x + off[:, :, 1]


def deformable_mean(features: torch.Tensor, offsets: torch.Tensor, op: str = "grid_sample"
                    ) -> torch.Tensor:
    """A depthwise 3x3 deformable convolution (DCNv1, no mask) whose frozen kernel is 1/9 per tap.

    features: (B, C, h, w); offsets: (B, 18, h, w) -> (B, C, h, w). With zero offsets this is
    ``avg_pool2d(3, 1, 1, count_include_pad=True)``. ``op="deform_conv2d"`` runs torchvision's
    operator with the (C, 1, 3, 3) kernel; ``op="grid_sample"`` computes the same bilinear
    samples (zero outside the map, as torchvision) with one ``grid_sample``, which is about 6x
    faster on a CPU (torchvision's CPU kernel loops over the C depthwise groups). Values and
    gradients agree to float rounding (tests/test_esol.py).
    """
    dtype = features.dtype
    x, off = features.float(), offsets.float()
    b, c, h, w = x.shape
    if op == "deform_conv2d":
        from torchvision.ops import deform_conv2d

        weight = x.new_full((c, 1, KERNEL, KERNEL), 1.0 / TAPS)
        return deform_conv2d(x, off, weight, padding=1).to(dtype)
    if op != "grid_sample":
        raise ValueError(f"op must be 'grid_sample' or 'deform_conv2d', not {op!r}")
    py, px = sample_positions(off)  # (B, 9, h, w) each
    # cell p -> (2p + 1) / size - 1 with align_corners=False: exact for any size, 1 included
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)
    out = F.grid_sample(x, grid.reshape(b, TAPS * h, w, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.view(b, c, TAPS, h, w).mean(dim=2).to(dtype)


class DeformableSampler(nn.Module):
    """Offset branch (one 3x3 conv, zero init) + bound + the frozen mean kernel.

    ``reverse=True`` (the expansion sampler) puts a gradient-reversal layer on the offsets with
    weight ``lambda_scale * ramp(progress)``; ``progress`` (0..1) is set by the training loop's
    :class:`~causal_wsss.methods.esol.ReversalRamp` callback. The buffers (progress, weight,
    monitoring averages) live in the state dict, so a resumed run continues where it stopped.
    In training mode every forward updates exponential averages of the mean |offset| and of the
    share of taps that sample more than half a cell beyond the map's zero-padding ring, i.e.
    read only zeros (the degeneracy monitor; 0 at zero offsets).

    ``identity=True`` (``esol.sampler=identity``; a control of ours, not ESOL) returns the
    features unchanged: no offsets, no 3x3 mean (at zero offset the sampler is a box blur), so
    a stage trains only its head, on the features themselves.
    """

    def __init__(self, channels: int, *, r_max: float = 8.0, reverse: bool = False,
                 ramp: str = "dann", op: str = "grid_sample", identity: bool = False) -> None:
        super().__init__()
        self.identity = bool(identity)
        self.offset_conv = nn.Conv2d(channels, 2 * TAPS, KERNEL, padding=1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.r_max = float(r_max)
        self.reverse = bool(reverse)
        self.ramp = ramp
        self.op = op
        self.register_buffer("progress", torch.zeros(()))
        self.register_buffer("lambda_scale", torch.ones(()))
        self.register_buffer("halvings", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean_abs_offset", torch.zeros(()))
        self.register_buffer("outside_share", torch.zeros(()))

    def lambda_rev(self) -> float:
        """The current weight of the reversed gradient."""
        ramp = dann_lambda(float(self.progress)) if self.ramp == "dann" else 1.0
        return float(self.lambda_scale) * ramp

    def offsets(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> bounded offsets (B, 18, h, w), |D| <= r_max; reads detached features."""
        raw = self.offset_conv(features.detach())
        return self.r_max * torch.tanh(raw / self.r_max)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return features
        offsets = self.offsets(features)
        if self.training:
            self._monitor(offsets.detach())
        if self.reverse and torch.is_grad_enabled():
            offsets = grad_reverse(offsets, self.lambda_rev())
        return deformable_mean(features, offsets, self.op)

    @torch.no_grad()
    def _monitor(self, offsets: torch.Tensor, decay: float = 0.9) -> None:
        h, w = offsets.shape[-2:]
        py, px = sample_positions(offsets.float())
        # more than half a cell beyond the zero-padding ring: such a tap reads only zeros and
        # no ordinary 3x3 convolution samples there (zero or tiny offsets give 0%)
        outside = (py < -1.5) | (py > h + 0.5) | (px < -1.5) | (px > w + 0.5)
        self.mean_abs_offset.mul_(decay).add_((1 - decay) * offsets.abs().mean())
        self.outside_share.mul_(decay).add_((1 - decay) * outside.float().mean())


class FeatureClip(nn.Module):
    """The Clip Op: ``min(F, tau)`` with a per-channel ``tau`` (C,), +inf (no clip) until set."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("tau", torch.full((channels,), math.inf))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.minimum(features, self.tau.to(features.dtype)[None, :, None, None])

    @torch.no_grad()
    def calibrate(self, samples: torch.Tensor, q: float) -> torch.Tensor:
        """Set tau to the per-channel ``q``-quantile of ``samples`` (C, N); returns it."""
        values, _ = samples.float().sort(dim=1)
        index = min(values.shape[1] - 1, max(0, round(q * (values.shape[1] - 1))))
        self.tau.copy_(values[:, index].to(self.tau))
        return self.tau


def area_loss(cams: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The shrinkage stage's area term [R]: the mean coverage of each positive class's map.

    cams: (B, K, h, w) class maps before the ReLU (the head applied per position); labels:
    (B, K) multi-hot. Per positive (image, class): mean_x ReLU(A) / (max_x ReLU(A) + eps); the
    max is not detached, so the term is scale-free and only shrinks the map's extent.
    Averaged over an image's positive classes, then over the images that have any.
    """
    a = F.relu(cams.float())
    coverage = a.mean(dim=(2, 3)) / (a.amax(dim=(2, 3)) + eps)  # (B, K)
    positive = labels > 0
    counts = positive.sum(dim=1)  # (B,)
    has = counts > 0
    if not bool(has.any()):
        return cams.sum() * 0.0
    per_image = (coverage * positive).sum(dim=1)[has] / counts[has]
    return per_image.mean()


class EsolCamNet(nn.Module):
    """A trained CAM network (stage 0) plus ESOL's two samplers and heads.

    ``base`` is the stage-0 :class:`~causal_wsss.models.cam_net.CamNet` (its trunk, its context
    channel and its ``new_modules``, shared, not copied). ``phase`` chooses the active network:
    ``"expand"`` (sampler 1 + clip + ``cls_expand``) or ``"shrink"`` (the whole chain +
    ``cls_shrink``); ``classifier`` is the active head. Both heads start as copies of the
    stage-0 head (the shrinkage head is re-copied from the trained expansion head by
    :meth:`start_shrink`), the context column included.
    """

    def __init__(self, base: nn.Module, *, r_max: float = 8.0, ramp: str = "dann",
                 op: str = "grid_sample", train_backbone: bool = False,
                 sampler: str = "deformable") -> None:
        super().__init__()
        self.base = base
        channels = base.feature_channels
        self.num_classes = base.num_classes
        self.feature_channels = base.feature_channels
        self.context_channels = base.context_channels
        self.output_stride = base.output_stride
        self.train_backbone = bool(train_backbone)
        if sampler not in ("deformable", "identity"):
            raise ValueError(f"sampler must be 'deformable' or 'identity', not {sampler!r}")
        identity = sampler == "identity"
        self.expand = DeformableSampler(channels, r_max=r_max, reverse=True, ramp=ramp, op=op,
                                        identity=identity)
        self.clip = FeatureClip(channels)
        self.shrink = DeformableSampler(channels, r_max=r_max, op=op, identity=identity)
        self.cls_expand = copy.deepcopy(base.classifier)
        self.cls_shrink = copy.deepcopy(base.classifier)
        self.phase = "expand"

    @property
    def new_modules(self) -> nn.ModuleDict:
        """The stage-0 network's added modules (CONTA's context adjustment lives there)."""
        return self.base.new_modules

    @property
    def classifier(self) -> nn.Conv2d:
        """The active head: ``cls_expand`` or ``cls_shrink``."""
        return self.cls_expand if self.phase == "expand" else self.cls_shrink

    def set_phase(self, phase: str) -> EsolCamNet:
        if phase not in ("expand", "shrink"):
            raise ValueError(f"phase must be 'expand' or 'shrink', not {phase!r}")
        self.phase = phase
        return self.train(self.training)

    @torch.no_grad()
    def start_shrink(self) -> None:
        """Initialise the shrinkage head from the trained expansion head (before stage S).

        Through the state dict, not ``weight``: with a context channel the head is a
        :class:`~causal_wsss.models.cam_net.SplitHead`, whose ``weight`` is a concatenation made
        on each read, so copying into it would silently change nothing (it did, until
        2026-12-01: ESOL + CONTA's shrinkage head started from the stage-0 head)."""
        self.cls_shrink.load_state_dict(self.cls_expand.state_dict())

    def _backbone_trains(self) -> bool:
        return self.train_backbone and self.phase == "expand"

    def train(self, mode: bool = True) -> EsolCamNet:
        """Train mode for the active samplers and head; the stage-0 network stays in eval mode
        (frozen trunk, BatchNorm statistics untouched) unless the expansion trains it (reading B)."""
        super().train(mode)
        if not (mode and self._backbone_trains()):
            self.base.eval()
        if self.phase == "shrink":
            self.expand.eval()
            self.clip.eval()
        return self

    def trainable_parameters(self) -> list[tuple[str, list[nn.Parameter]]]:
        """(group name, parameters) trained in the current phase; everything else is frozen."""
        if self.phase == "expand":
            groups = [("offset", list(self.expand.offset_conv.parameters())),
                      ("head", list(self.cls_expand.parameters()))]
            if self.train_backbone:
                groups.append(("backbone", [p for p in self.base.backbone.parameters()
                                            if p.requires_grad]))
            return groups
        return [("offset", list(self.shrink.offset_conv.parameters())),
                ("head", list(self.cls_shrink.parameters()))]

    def freeze_for_phase(self) -> None:
        """requires_grad only on the parameters of :meth:`trainable_parameters` (the stage-0
        network's frozen stem stays frozen in reading B)."""
        trainable = {id(p) for _, ps in self.trainable_parameters() for p in ps}
        for p in self.parameters():
            p.requires_grad_(id(p) in trainable)

    def param_groups(self, lr_head: float, lr_offset: float, lr_backbone: float) -> list[dict]:
        lrs = {"offset": lr_offset, "head": lr_head, "backbone": lr_backbone}
        return [{"name": name, "params": ps, "lr": lrs[name]}
                for name, ps in self.trainable_parameters() if ps]

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Stage-0 trunk features; without gradient unless the expansion trains the trunk."""
        if self._backbone_trains() and torch.is_grad_enabled():
            return self.base.trunk_features(images)
        with torch.no_grad():
            return self.base.trunk_features(images)

    def expansion_features(self, images: torch.Tensor) -> torch.Tensor:
        """F1c = clip(sample_1(F)): (B, C, h, w)."""
        return self.clip(self.expand(self.trunk(images)))

    def sampler_features(self, images: torch.Tensor) -> torch.Tensor:
        """The active phase's features before the context channel: F1c or F2."""
        if self.phase == "expand":
            return self.expansion_features(images)
        with torch.no_grad():  # the stop-gradient after the expansion network
            f1c = self.expansion_features(images)
        return self.shrink(f1c.detach())

    def forward(self, images: torch.Tensor, context: torch.Tensor | None = None) -> CamOutput:
        """Logits of the active head on GAP([F1c or F2 ; m]) and that feature map."""
        features = self.base.attach_context(self.sampler_features(images), context)
        pooled = features.mean(dim=(2, 3), keepdim=True)
        logits = self.classifier(pooled).flatten(1)
        return CamOutput(logits, features)

    def class_maps(self, features: torch.Tensor) -> torch.Tensor:
        """The active head per position, before the ReLU: (B, K, h, w)."""
        return F.conv2d(features, self.classifier.weight)

    def cam_maps(self, features: torch.Tensor) -> torch.Tensor:
        """CAM_k = ReLU(W_k . [F ; m]) with the active head (as :meth:`CamNet.cam_maps`)."""
        return F.relu(self.class_maps(features))

    def cams(self, images: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.cam_maps(self.forward(images, context).features)

    def context_weight(self) -> torch.Tensor:
        """The active head's weights on the context channel(s): (K, Cc), detached."""
        return self.classifier.weight.detach()[:, self.feature_channels:, 0, 0].clone()
