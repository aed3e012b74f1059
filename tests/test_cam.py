"""Tests of batched multi-scale + flip CAM extraction (against a one-image IRNet-style reference) and of the CAM cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_wsss import cam as cam_mod
from causal_wsss.cam import (
    CamCache,
    ImageCams,
    extract_cams,
    extract_cams_list,
    load_cams,
    make_cams,
    save_cams,
)
from causal_wsss.data.transforms import normalize
from causal_wsss.errors import DataError
from causal_wsss.models import CamNet, build_cam_net

torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location(
    "reference_make_cam", Path(__file__).resolve().parents[1] / "bench" / "reference_make_cam.py")
reference_make_cam = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_make_cam)
reference_cams = reference_make_cam.reference_cams

K = 4


def tiny_net(output_stride: int = 16, context_channels: int = 0, seed: int = 0) -> CamNet:
    """A tiny CamNet whose BatchNorms have non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_cam_net(K, backbone="tiny", weights="none", output_stride=output_stride,
                            context_channels=context_channels)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


def pixelwise_net(context_channels: int = 1) -> CamNet:
    """A CamNet with a 1x1 trunk (output stride 1): its flip-TTA CAM is exactly mirror-equivariant."""
    trunk = torch.nn.Module()
    trunk.conv1 = torch.nn.Conv2d(3, 6, 1)
    trunk.bn1, trunk.relu, trunk.maxpool = torch.nn.Identity(), torch.nn.ReLU(), torch.nn.Identity()
    trunk.layer1 = trunk.layer2 = trunk.layer3 = torch.nn.Identity()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = CamNet(trunk, num_classes_fg=K, feature_channels=6, output_stride=1,
                     context_channels=context_channels, freeze_bn=False, freeze_stem=False)
        torch.nn.init.normal_(net.classifier.weight)
    with torch.no_grad():
        net.classifier.weight[:, 6:] = 3.0  # a strong context term
    return net.eval()


def inputs(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, h, w, generator=gen) for h, w in sizes]
    labels = (torch.rand(len(sizes), K, generator=gen) < 0.5).float()
    labels[:, 0] = 1.0  # at least one positive class each
    labels[-1] = 1.0  # and one image with every class
    return images, labels


@pytest.mark.parametrize("output_stride", [16, 8])
def test_batched_equals_one_image_reference(output_stride):
    net = tiny_net(output_stride)
    images, labels = inputs([(37, 50), (37, 50), (50, 37), (37, 50), (29, 29)])
    got = extract_cams_list(net, images, labels, batch_size=2, amp=False)
    for image, label, cams in zip(images, labels, got):
        keys, high, low = reference_cams(net, image, label)
        assert torch.equal(cams.keys, keys)
        assert cams.high_res.shape == (len(keys), *image.shape[-2:])
        assert cams.stride4.shape == (len(keys), -(-image.shape[1] // 4), -(-image.shape[2] // 4))
        assert (cams.high_res - high).abs().max() < 1e-4
        assert (cams.stride4 - low).abs().max() < 1e-4
        peak = cams.high_res.amax((1, 2))
        assert torch.all((peak <= 1.0) & ((peak > 0.99) | (peak == 0)))


def test_single_scale_without_flip_matches_reference():
    net = tiny_net()
    images, labels = inputs([(48, 40)] * 3)
    batch = extract_cams(net, torch.stack(images), labels, scales=(1.0,), flip=False, amp=False)
    for image, label, cams in zip(images, labels, batch.images()):
        keys, high, low = reference_cams(net, image, label, scales=(1.0,), flip=False)
        assert torch.equal(cams.keys, keys) and (cams.high_res - high).abs().max() < 1e-4


def test_negative_classes_are_dropped_and_dense_fills_zeros():
    net = tiny_net()
    images, _ = inputs([(32, 32)] * 2)
    labels = torch.tensor([[0.0, 1, 0, 1], [1, 0, 0, 0]])
    batch = extract_cams(net, torch.stack(images), labels, amp=False)
    assert batch.high_res.shape[0] == 3 and len(batch) == 2
    dense = batch.dense()  # (2, K, 32, 32)
    assert dense.shape == (2, K, 32, 32)
    assert torch.all(dense[0, [0, 2]] == 0) and torch.all(dense[1, 1:] == 0)
    first, second = batch.images()
    assert first.keys.tolist() == [1, 3] and second.keys.tolist() == [0]
    assert torch.equal(first.dense(K), dense[0]) and torch.equal(second.dense(K), dense[1])


def test_out_size_and_amp_path():
    net = tiny_net()
    images, labels = inputs([(40, 48)] * 2)
    x = torch.stack(images)
    fp32 = extract_cams(net, x, labels, amp=False)
    big = extract_cams(net, x, labels, amp=False, out_size=(80, 96))
    assert big.high_res.shape[-2:] == (80, 96) and big.stride4.shape[-2:] == (20, 24)
    # the same maps, sampled twice as finely: a 2x2 average pooling brings them back close
    pooled = torch.nn.functional.avg_pool2d(big.high_res.unsqueeze(1), 2)[:, 0]
    assert (pooled - fp32.high_res).abs().mean() < 0.02
    amp = extract_cams(net, x, labels, amp=True)
    assert amp.high_res.dtype == torch.float32
    assert (amp.high_res - fp32.high_res).abs().max() < 0.05
    no_s4 = extract_cams(net, x, labels, amp=False, stride4=False)
    assert no_s4.stride4 is None and torch.equal(no_s4.high_res, fp32.high_res)


def test_flip_mirrors_the_context_map():
    net = pixelwise_net()
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, 24, 32, generator=gen)
    context = torch.zeros(1, 1, 12, 16)
    context[..., :5] = 1.0  # only the left border: asymmetric
    labels = torch.ones(1, K)
    base = extract_cams(net, image, labels, context=context, amp=False)
    mirrored = extract_cams(net, image.flip(-1), labels, context=context.flip(-1), amp=False)
    assert torch.allclose(mirrored.high_res, base.high_res.flip(-1), atol=1e-5)
    assert torch.allclose(mirrored.stride4, base.stride4.flip(-1), atol=1e-5)
    other = extract_cams(net, image, labels, context=context.flip(-1), amp=False)
    assert (other.high_res - base.high_res).abs().max() > 0.05  # the context does matter
    keys, high, low = reference_cams(net, image[0], labels[0], context=context[0])
    assert (high - base.high_res).abs().max() < 1e-4 and (low - base.stride4).abs().max() < 1e-4
    # hand computation at one scale: a pixelwise net gives CAM + mirror(CAM(mirror)) = 2 CAM
    one = extract_cams(net, image, labels, context=context, amp=False, scales=(1.0,))
    with torch.no_grad():
        ctx = torch.nn.functional.interpolate(context, size=(24, 32), mode="bilinear",
                                              align_corners=False)
        feats = torch.cat([net.backbone.conv1(image).relu(), ctx], 1)  # (1, 7, 24, 32)
        cam = torch.einsum("kc,bchw->bkhw", net.classifier.weight[:, :, 0, 0], feats).relu()[0]
    cam = cam / (cam.amax((1, 2), keepdim=True) + 1e-5 / 2)
    assert torch.allclose(one.high_res, cam, atol=1e-5)


def test_context_net_with_tiny_trunk_matches_reference():
    net = tiny_net(context_channels=1)
    with torch.no_grad():
        net.classifier.weight[:, -1] = 2.0
    images, labels = inputs([(40, 36)] * 3)
    contexts = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    got = extract_cams_list(net, images, labels, contexts=contexts, amp=False)
    for image, label, ctx, cams in zip(images, labels, contexts, got):
        keys, high, low = reference_cams(net, image, label, context=ctx)
        assert (cams.high_res - high).abs().max() < 1e-4 and (cams.stride4 - low).abs().max() < 1e-4


def test_input_checks():
    net = tiny_net()
    with pytest.raises(DataError, match="labels"):
        extract_cams(net, torch.randn(2, 3, 16, 16), torch.ones(2, K + 1))
    with pytest.raises(DataError, match="normalised float"):
        extract_cams(net, torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.ones(2, K))


def test_cache_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    cams = ImageCams(torch.tensor([2, 5]), torch.rand(2, 21, 30, generator=gen),
                     torch.rand(2, 6, 8, generator=gen))
    cache = CamCache(tmp_path / "round_0")
    assert not cache.exists("2007_000032")
    cache.put("2007_000032", cams)
    assert cache.exists("2007_000032")
    back = cache.get("2007_000032")
    assert back.keys.dtype == torch.int64 and back.keys.tolist() == [2, 5]
    assert back.high_res.dtype == torch.float32 and back.high_res.shape == (2, 21, 30)
    assert (back.high_res - cams.high_res).abs().max() < 5e-4  # float16 on disk
    assert (back.stride4 - cams.stride4).abs().max() < 5e-4
    assert back.size == (21, 30)
    path = tmp_path / "no_s4.npz"
    save_cams(path, torch.zeros(0, 5, 7), torch.zeros(0, dtype=torch.int64))
    empty = load_cams(path)
    assert empty.high_res.shape == (0, 5, 7) and empty.stride4 is None
    with pytest.raises(DataError, match="no CAMs"):
        cache.get("missing")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.npz"):
        load_cams(tmp_path / "bad.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "img.npz"
    save_cams(path, torch.ones(1, 4, 4), torch.tensor([0]))

    def broken_savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(cam_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_cams(path, torch.zeros(1, 4, 4), torch.tensor([1]))
    with pytest.raises(OSError):
        save_cams(tmp_path / "new.npz", torch.zeros(1, 4, 4), torch.tensor([1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.npz"]  # no partial file
    assert load_cams(path).keys.tolist() == [0]  # the old file is intact


class FakeDataset(torch.utils.data.Dataset):
    """VOC-like items of several sizes; counts which indices were decoded."""

    def __init__(self, sizes, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
                       for h, w in sizes]
        self.labels = (torch.rand(len(sizes), K, generator=gen) < 0.5).float()
        self.labels[:, 1] = 1.0
        self.names = [f"img_{i:03d}" for i in range(len(sizes))]
        self.loaded: list[int] = []

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        self.loaded.append(i)
        return {"image": self.images[i], "labels": self.labels[i], "name": self.names[i],
                "index": i}


def expected_cams(net, ds, context_fn=None):
    images = [normalize(im.unsqueeze(0))[0] for im in ds.images]
    contexts = None
    if context_fn is not None:
        contexts = [context_fn([ds[i]])[0] for i in range(len(ds))]
    return extract_cams_list(net, images, ds.labels, contexts=contexts, amp=False)


def test_make_cams_writes_resumes_and_shards(tmp_path):
    net = tiny_net()
    sizes = [(30, 40), (40, 30), (30, 40), (33, 33), (30, 40), (40, 30), (30, 40)]
    ds = FakeDataset(sizes)
    want = expected_cams(net, ds)
    cache_dir = tmp_path / "cams"
    stats = make_cams(net, ds, cache_dir, batch_size=2, amp=False, progress=False)
    assert stats == {"total": 7, "skipped": 0, "written": 7}
    cache = CamCache(cache_dir)
    for name, cams in zip(ds.names, want):
        got = cache.get(name)
        assert torch.equal(got.keys, cams.keys)
        assert (got.high_res - cams.high_res).abs().max() < 1e-3
        assert (got.stride4 - cams.stride4).abs().max() < 1e-3
    for i in (2, 5):
        cache.path(ds.names[i]).unlink()
    ds.loaded.clear()
    stats = make_cams(net, ds, cache_dir, batch_size=2, amp=False, progress=False)
    assert stats == {"total": 7, "skipped": 5, "written": 2}
    assert sorted(ds.loaded) == [2, 5]  # cached images are not even decoded
    assert (cache.get(ds.names[5]).high_res - want[5].high_res).abs().max() < 1e-3

    sharded = tmp_path / "sharded"
    a = make_cams(net, ds, sharded, batch_size=2, amp=False, progress=False, rank=0, world_size=2)
    b = make_cams(net, ds, sharded, batch_size=2, amp=False, progress=False, rank=1, world_size=2)
    assert (a["written"], b["written"]) == (4, 3)
    assert sorted(p.stem for p in sharded.iterdir()) == ds.names


def test_make_cams_many_sizes_and_context_fn(tmp_path):
    net = tiny_net(context_channels=1)
    with torch.no_grad():
        net.classifier.weight[:, -1] = 2.0
    sizes = [(24 + i, 32 - i) for i in range(11)]  # all different: the waiting list overflows

    def context_fn(items):
        ramps = [torch.linspace(0, 1, 8).repeat(8, 1) * (1 + it["index"] % 3) for it in items]
        return torch.stack(ramps).unsqueeze(1)  # (b, 1, 8, 8), asymmetric

    ds = FakeDataset(sizes, seed=1)
    want = expected_cams(net, ds, context_fn)
    stats = make_cams(net, ds, tmp_path, batch_size=2, amp=False, progress=False,
                      context_fn=context_fn)
    assert stats["written"] == 11
    cache = CamCache(tmp_path)
    for name, cams in zip(ds.names, want):
        assert (cache.get(name).high_res - cams.high_res).abs().max() < 1e-3
    with pytest.raises(DataError, match="names"):
        make_cams(net, torch.utils.data.TensorDataset(torch.zeros(2, 3)), tmp_path / "x",
                  progress=False)


def test_normalize_images_matches_imagenet_formula():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    got = normalize(x).flatten()
    want = (np.array([0, 128, 255]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225])
    assert np.allclose(got.numpy(), want, atol=1e-6)
