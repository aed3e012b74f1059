"""Batch-norm folding for inference: every BatchNorm that directly follows a convolution becomes
part of that convolution's weights and bias.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) * g + b``;
after a convolution ``x = W * z (+ c)`` the two are one convolution with
``W' = W g / sqrt(var + eps)`` and ``c' = (c - mean) g / sqrt(var + eps) + b``. The network then
skips one full read and write of every normalised feature map (on the ``cpu`` preset's
MobileNetV2 the BatchNorms took 19% of the CAM stage's time). The folded network computes the
same function up to float round-off (tests/test_fold.py; docs/benchmarks.md gives the effect on
a round's figures).

Two patterns are folded, the ones torchvision's networks and this project's use:

- in an :class:`~torch.nn.Sequential`, a ``Conv2d`` immediately followed by a ``BatchNorm2d``
  (MobileNetV2's ``Conv2dNormActivation`` and inverted residuals, ResNet downsample branches,
  the tiny CNNs);
- in any module, attributes ``conv<i>`` and ``bn<i>`` (ResNet's stem and blocks, whose
  ``forward`` applies ``bn<i>`` right after ``conv<i>``).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV_NAME = re.compile(r"conv(\d*)")


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def _fold_into(parent: nn.Module) -> int:
    """Fold the pairs among ``parent``'s direct children; returns how many were folded."""
    folded = 0
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if _foldable(conv, bn):
                parent._modules[a] = fuse_conv_bn_eval(conv, bn)
                parent._modules[b] = nn.Identity()
                folded += 1
        return folded
    for name in list(parent._modules):
        match = _CONV_NAME.fullmatch(name)
        if match is None:
            continue
        bn_name = f"bn{match.group(1)}"
        conv, bn = parent._modules[name], parent._modules.get(bn_name)
        if bn is not None and _foldable(conv, bn):
            parent._modules[name] = fuse_conv_bn_eval(conv, bn)
            parent._modules[bn_name] = nn.Identity()
            folded += 1
    return folded


@torch.no_grad()
def fold_batchnorm(module: nn.Module, *, copy_module: bool = True) -> nn.Module:
    """``module`` for inference with its conv-BatchNorm pairs folded (module doc), in eval mode.

    ``copy_module`` (default) folds a deep copy and leaves ``module`` as it was; False folds in
    place (the module's BatchNorms are replaced by identities: only for a network that is never
    trained again). The folded copy holds no reference to the original's parameters.
    """
    net = copy.deepcopy(module) if copy_module else module
    net.eval()
    for parent in list(net.modules()):
        _fold_into(parent)
    return net.requires_grad_(False)


def count_batchnorms(module: nn.Module) -> int:
    """How many BatchNorm layers ``module`` still has (0 after a complete fold)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _state_key(module: nn.Module) -> tuple:
    """What a folded copy of ``module`` depends on: every parameter's and buffer's storage,
    version counter (bumped by in-place writes such as ``load_state_dict``), device and layout,
    and the BatchNorms' modes."""
    tensors = [*module.parameters(), *module.buffers()]
    return (tuple((t.data_ptr(), t._version, t.device, t.stride()) for t in tensors),
            tuple(m.training for m in module.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm)))


class FoldedCopy:
    """A folded inference copy of a frozen sub-network (a trunk's stem), rebuilt whenever the
    original's weights, statistics, device or layout change.

    Not an ``nn.Module`` attribute of its owner on purpose: the copy is no part of the owner's
    state dict or parameters, so checkpoints, optimisers and DDP see the network as before.
    ``get`` returns None while a BatchNorm of the original is in training mode (its batch
    statistics cannot be folded).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._copy: nn.Module | None = None

    def get(self, module: nn.Module) -> nn.Module | None:
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return module  # nothing to fold (e.g. a network folded already)
        if any(m.training for m in norms):
            return None
        key = _state_key(module)
        if key != self._key:
            self._copy, self._key = fold_batchnorm(module), key
        return self._copy
