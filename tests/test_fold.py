"""Batch-norm folding (causal_wsss.models.fold) and the speed-ups switch: the folded networks
compute what the originals compute, up to float round-off, and the originals are left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causal_wsss.models import build_cam_net
from causal_wsss.models.fold import FoldedCopy, count_batchnorms, fold_batchnorm
from causal_wsss.models.seg_net import build_seg_net
from causal_wsss.runtime import speedups_enabled, use_speedups

torch.set_num_threads(1)


def _randomise_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return net


@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "mobilenet_v2"])
def test_folded_cam_net_gives_the_same_cams_and_logits(backbone):
    torch.manual_seed(0)
    net = _randomise_statistics(build_cam_net(3, backbone=backbone, weights="none")).eval()
    folded = fold_batchnorm(net)
    assert count_batchnorms(folded) == 0
    assert count_batchnorms(net) > 0  # the original keeps its BatchNorms
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad(), use_speedups(False):
        want = net(x)
        got = folded(x)
        scale = want.features.abs().max()
        assert (got.features - want.features).abs().max() <= 1e-4 * scale
        assert (got.logits - want.logits).abs().max() <= 1e-4 * want.logits.abs().max() + 1e-6
        assert torch.allclose(folded.cams(x), net.cams(x), rtol=1e-4, atol=1e-4 * scale)


def test_folded_tiny_segmentation_nets():
    torch.manual_seed(0)
    for backbone in ("tiny", "resnet18", "mobilenet_v2"):
        net = _randomise_statistics(build_seg_net(4, arch="tiny", backbone=backbone,
                                                  weights="none")).eval()
        folded = fold_batchnorm(net)
        assert count_batchnorms(folded) == 0
        x = torch.randn(1, 3, 64, 48)
        with torch.no_grad():
            want, got = net(x), folded(x)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max(), backbone


def test_folded_stem_in_training_gives_the_same_loss_and_gradients():
    """The CAM network's frozen stem runs folded while training (speed-ups on): same loss and
    the same gradients for the trained layers, up to round-off."""
    torch.manual_seed(0)
    net = _randomise_statistics(build_cam_net(3, backbone="mobilenet_v2", weights="none"))
    net.train()
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for fast in (False, True):
        net.zero_grad()
        with use_speedups(fast):
            loss = net(x).logits.square().mean()
        loss.backward()
        results[fast] = (loss.detach(), [p.grad.clone() for p in net.parameters()
                                         if p.grad is not None])
    assert torch.allclose(results[True][0], results[False][0], rtol=1e-4)
    for a, b in zip(results[True][1], results[False][1]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max() + 1e-8)
    assert "stem_fold" not in "".join(net.state_dict())  # no new state in checkpoints


def test_folded_copy_follows_the_weights():
    torch.manual_seed(0)
    stem = _randomise_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).eval()
    cache = FoldedCopy()
    first = cache.get(stem)
    assert cache.get(stem) is first  # unchanged weights: the same copy
    with torch.no_grad():
        stem[0].weight.mul_(2)  # an in-place write (as load_state_dict does)
    second = cache.get(stem)
    assert second is not first
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(second(x), stem(x), atol=1e-5)
    stem.train()
    assert cache.get(stem) is None  # batch statistics cannot be folded


def test_speedups_switch(monkeypatch):
    monkeypatch.delenv("CAUSAL_WSSS_SPEEDUPS", raising=False)
    assert speedups_enabled()
    with use_speedups(False):
        assert not speedups_enabled()
        with use_speedups(True):
            assert speedups_enabled()
        assert not speedups_enabled()
    monkeypatch.setenv("CAUSAL_WSSS_SPEEDUPS", "0")
    assert not speedups_enabled()
