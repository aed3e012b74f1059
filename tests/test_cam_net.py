"""Tests of the CAM network: shapes, output stride, context channel, IRNet freezing, parameter groups, weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
from torchvision import models as tvm
from torchvision.models._api import WeightsEnum

from causal_wsss.errors import ConfigError, DataError, WeightsError
from causal_wsss.models import CamNet, CamOutput, build_cam_net

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_tiny_shapes_without_context():
    net = build_cam_net(5, backbone="tiny", weights="none").eval()
    out = net(torch.randn(2, 3, 64, 40))
    assert isinstance(out, CamOutput)
    assert out.logits.shape == (2, 5)
    assert out.features.shape == (2, 64, 4, 3)  # ceil(64/16), ceil(40/16)
    assert net.context_weight().shape == (5, 0)
    net3 = build_cam_net(5, backbone="tiny", weights="none", trunk_depth=3, output_stride=8)
    assert net3.eval()(torch.randn(1, 3, 64, 40)).features.shape == (1, 48, 8, 5)


@pytest.mark.parametrize("backbone,depth,stride,channels,size", [
    ("resnet18", 4, 16, 512, (5, 4)),
    ("resnet18", 4, 8, 512, (9, 7)),
    ("resnet18", 3, 16, 256, (5, 4)),
    ("resnet18", 4, 32, 512, (3, 2)),
])
def test_resnet_output_stride(backbone, depth, stride, channels, size):
    net = build_cam_net(3, backbone=backbone, weights="none", trunk_depth=depth,
                        output_stride=stride).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 70, 50))
    assert out.features.shape == (1, channels, *size)
    assert net.output_stride == stride and net.feature_channels == channels


def test_resnet50_follows_irnet_strides_without_dilation():
    net = build_cam_net(20, backbone="resnet50", weights="none")
    block = net.backbone.layer4[0]
    assert block.conv2.stride == (1, 1) and block.conv2.dilation == (1, 1)
    assert block.downsample[0].stride == (1, 1)
    assert net.backbone.layer3[0].conv2.stride == (2, 2)
    assert net.classifier.weight.shape == (20, 2048, 1, 1) and net.classifier.bias is None
    assert not hasattr(net.backbone, "fc")


def test_context_channel_enters_features_and_logits():
    net = build_cam_net(4, backbone="tiny", weights="none", context_channels=1).eval()
    images = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        a = net(images, torch.full((2, 1, 7, 5), 0.25))
        b = net(images, torch.full((2, 1, 20, 20), 1.0))
    assert a.features.shape == (2, 65, 3, 2)
    assert torch.allclose(a.features[:, -1], torch.full((2, 3, 2), 0.25))
    # logits are linear in the pooled context: difference = w_ctx * (1.0 - 0.25)
    w_ctx = net.context_weight()  # (K, 1)
    assert w_ctx.shape == (4, 1)
    assert torch.allclose(w_ctx[:, 0], net.classifier.weight[:, 64, 0, 0])
    assert torch.allclose(b.logits - a.logits, (0.75 * w_ctx[:, 0]).expand(2, 4), atol=1e-6)
    with pytest.raises(DataError, match="context"):
        net(images)
    with pytest.raises(DataError, match="expected"):
        net(images, torch.zeros(2, 2, 7, 5))
    plain = build_cam_net(4, backbone="tiny", weights="none")
    with pytest.raises(DataError, match="context_channels=0"):
        plain(images, torch.zeros(2, 1, 7, 5))


def test_cam_maps_are_relu_of_classifier_and_average_to_logits():
    net = build_cam_net(3, backbone="tiny", weights="none", context_channels=2).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), torch.rand(2, 2, 16, 16))
        pre = torch.einsum("kc,bchw->bkhw", net.classifier.weight[:, :, 0, 0], out.features)
        assert torch.allclose(net.cam_maps(out.features), pre.clamp(min=0), atol=1e-6)
        assert torch.allclose(pre.mean((2, 3)), out.logits, atol=1e-5)


def test_freeze_bn_keeps_running_stats_in_train_mode():
    net = build_cam_net(3, backbone="tiny", weights="none", freeze_bn=True).train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    net(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert net.training and not any(m.training for m in bns)
    for m, (mean, var) in zip(bns, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert bns[-1].weight.requires_grad  # IRNet FixedBatchNorm: affine parameters still learn
    free = build_cam_net(3, backbone="tiny", weights="none", freeze_bn=False).train()
    free(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(free.backbone.bn1.running_mean, torch.zeros(16))


def test_freeze_stem_blocks_gradients_up_to_layer2():
    net = build_cam_net(3, backbone="tiny", weights="none", freeze_stem=True).train()
    net(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    t = net.backbone
    assert t.conv1.weight.grad is None and t.bn1.weight.grad is None
    assert not t.conv1.weight.requires_grad
    assert t.layer1[0].weight.grad is None and t.layer2[0].weight.grad is None  # detached
    assert t.layer3[0].weight.grad is not None and net.classifier.weight.grad is not None
    free = build_cam_net(3, backbone="tiny", weights="none", freeze_stem=False).train()
    free(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    assert free.backbone.conv1.weight.grad is not None


def test_param_groups_split_backbone_and_new_modules():
    net = build_cam_net(3, backbone="tiny", weights="none", freeze_stem=True)
    net.new_modules["extra"] = torch.nn.Linear(4, 2)
    backbone, new = net.param_groups(0.1, head_lr_mult=10.0)  # no context: two groups
    assert backbone["lr"] == 0.1 and new["lr"] == pytest.approx(1.0)
    new_ids = {id(p) for p in new["params"]}
    assert new_ids == {id(net.classifier.weight), *(id(p) for p in net.new_modules.parameters())}
    all_ids = [id(p) for g in (backbone, new) for p in g["params"]]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(all_ids) == len(set(all_ids)) and set(all_ids) == trainable
    assert id(net.backbone.conv1.weight) not in all_ids
    assert id(net.backbone.layer2[0].weight) not in all_ids  # behind the stage-2 detach
    assert id(net.backbone.layer3[0].weight) in all_ids
    torch.optim.SGD([backbone, new], lr=0.1)  # the groups are valid optimiser groups


def test_channels_last_matches_contiguous():
    net = build_cam_net(3, backbone="tiny", weights="none", context_channels=1).eval()
    x, ctx = torch.randn(2, 3, 40, 56), torch.rand(2, 1, 9, 9)
    with torch.no_grad():
        ref = net(x, ctx)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last), ctx)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert torch.allclose(net.cam_maps(out.features), net.cam_maps(ref.features), atol=1e-5)


def test_weights_path_round_trip(tmp_path):
    reference = tvm.resnet18(weights=None)
    state = {"module." + k: v for k, v in reference.state_dict().items()}  # DDP-style keys
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    for depth in (4, 3):
        net = build_cam_net(2, backbone="resnet18", weights=str(path), trunk_depth=depth)
        got = net.backbone.state_dict()
        for key, value in got.items():
            assert torch.equal(value, reference.state_dict()[key]), key
    assert not torch.equal(build_cam_net(2, backbone="resnet18", weights="none")
                           .backbone.conv1.weight, reference.conv1.weight)


def test_weights_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth does not exist"):
        build_cam_net(2, backbone="resnet18", weights=str(missing))
    wrong = tmp_path / "r34.pth"
    torch.save(tvm.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match="unexpected key"):
        build_cam_net(2, backbone="resnet18", weights=str(wrong))
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in tvm.resnet18(weights=None).state_dict().items()
                if not k.startswith("layer3.")}, partial)
    with pytest.raises(WeightsError, match="missing key"):
        build_cam_net(2, backbone="resnet18", weights=str(partial))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_cam_net(2, backbone="resnet18", weights=str(garbage))


def test_imagenet_weights_offline_message(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsError) as info:
        build_cam_net(20, backbone="resnet18", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "hub" in message
    assert "cam.weights=/path/to/state_dict.pth" in message


def test_bad_configs_raise_config_error():
    with pytest.raises(ConfigError, match="cam.backbone"):
        build_cam_net(20, backbone="vgg16", weights="none")
    with pytest.raises(ConfigError, match="output_stride"):
        build_cam_net(20, backbone="tiny", weights="none", output_stride=32)
    with pytest.raises(ConfigError, match="tiny"):
        build_cam_net(20, backbone="tiny", weights="imagenet")
    with pytest.raises(ConfigError, match="trunk_depth"):
        build_cam_net(20, backbone="resnet18", weights="none", trunk_depth=2)


def test_camnet_accepts_any_trunk_with_resnet_names():
    trunk = torch.nn.Module()
    trunk.conv1 = torch.nn.Conv2d(3, 4, 1)
    trunk.bn1 = trunk.relu = trunk.maxpool = torch.nn.Identity()
    trunk.layer1 = trunk.layer2 = trunk.layer3 = torch.nn.Identity()
    net = CamNet(trunk, num_classes_fg=2, feature_channels=4, output_stride=1,
                 freeze_bn=False, freeze_stem=False)
    x = torch.randn(1, 3, 5, 6)
    expected = F.conv2d(trunk.conv1(x).mean((2, 3), keepdim=True), net.classifier.weight)
    assert torch.allclose(net(x).logits, expected.flatten(1), atol=1e-6)
