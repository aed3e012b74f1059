"""Tests of batched multi-scale + flip CAM extraction (against a one-image reference that follows IRNet's code, PIL resize included), of the PIL-exact resize, and of the CAM cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_wsss import cam as cam_mod
from causal_wsss.cam import (
    IRNET_SCALES,
    CamCache,
    ImageCams,
    _pil_bicubic_torch,
    extract_cams,
    extract_cams_list,
    load_cams,
    make_cams,
    pil_bicubic_resize,
    save_cams,
    scaled_size,
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
        torch.nn.init.normal_(net.classifier.feature_weight)
    with torch.no_grad():
        net.classifier.context_weight[:] = 3.0  # a strong context term
    return net.eval()


def inputs(sizes, seed=0):
    """uint8 (3, H, W) noise images and multi-hot labels."""
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
              for h, w in sizes]
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
        assert (cams.high_res - high).abs().max() < 1e-5
        assert (cams.stride4 - low).abs().max() < 1e-5
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
    image = torch.randint(0, 256, (1, 3, 24, 32), generator=gen, dtype=torch.uint8)
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
        feats = torch.cat([net.backbone.conv1(normalize(image)).relu(), ctx], 1)  # (1, 7, 24, 32)
        cam = torch.einsum("kc,bchw->bkhw", net.classifier.weight[:, :, 0, 0], feats).relu()[0]
    cam = cam / (cam.amax((1, 2), keepdim=True) + 1e-5 / 2)
    assert torch.allclose(one.high_res, cam, atol=1e-5)


def test_context_net_with_tiny_trunk_matches_reference():
    net = tiny_net(context_channels=1)
    with torch.no_grad():
        net.classifier.context_weight[:] = 2.0
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
    with pytest.raises(DataError, match="uint8 batch"):
        extract_cams(net, torch.zeros(2, 3, 16, 16, dtype=torch.int32), torch.ones(2, K))
    with pytest.raises(DataError, match="uint8 batch"):
        extract_cams(net, torch.zeros(3, 16, 16, dtype=torch.uint8), torch.ones(1, K))
    with pytest.raises(DataError, match="scale 0.01 shrinks a 16x16 image"):
        extract_cams(net, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.ones(1, K),
                     scales=(1.0, 0.01))
    with pytest.raises(DataError, match="mix dtypes"):
        extract_cams_list(net, [torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8)],
                          torch.ones(2, K))
    with pytest.raises(DataError, match="expects uint8"):
        pil_bicubic_resize(torch.zeros(3, 8, 8), (4, 4))
    with pytest.raises(DataError, match="cannot resize"):
        pil_bicubic_resize(torch.zeros(3, 8, 8, dtype=torch.uint8), (0, 4))


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
        net.classifier.context_weight[:] = 2.0
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


# --- IRNet's resize (PIL bicubic on the 8-bit image) and a trained network -------------------

def photograph() -> np.ndarray:
    """A real photograph that an installed package ships: matplotlib's ``grace_hopper.jpg``
    (512x600 RGB, uint8 (H, W, 3))."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return np.asarray(img.convert("RGB"))


def pil_resized(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """IRNet's call: one ``Image.resize`` (PIL bicubic) of the uint8 (H, W, 3) array."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize(size[::-1], Image.BICUBIC))


def pil_resized_width_first(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The same, the width pass explicitly first (the order of the Pillow IRNet ran on)."""
    from PIL import Image

    out = Image.fromarray(img)
    out = out.resize((size[1], out.height), Image.BICUBIC) if size[1] != out.width else out
    out = out.resize(size[::-1], Image.BICUBIC) if size[0] != out.height else out
    return np.asarray(out)


@pytest.mark.parametrize("scale", [0.5, 1.5, 2.0, 0.37, 0.9])
def test_resize_matches_pil_bicubic_on_a_photograph(scale):
    """IRNet's ``pil_rescale(img, s, order=3)``: PIL bicubic on the uint8 image. Tolerance: at
    most 1 grey level on at most 0.01% of the values (measured here: identical bytes, on the
    CPU path that calls PIL and on the torch path the GPU runs; the margin covers Pillow
    builds whose compiler fuses the multiply-adds of the filter weights)."""
    img = photograph()
    size = scaled_size(img.shape[:2], scale)
    want = torch.from_numpy(pil_resized(img, size).astype(np.int16)).permute(2, 0, 1)
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)  # (3, H, W) uint8
    for resize in (pil_bicubic_resize, _pil_bicubic_torch):
        got = resize(x, size)
        assert got.dtype == torch.uint8 and got.shape == (3, *size)
        diff = (got.to(torch.int16) - want).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 1e-4, resize.__name__


def test_resize_matches_pil_on_odd_shapes():
    """One side only, one pixel, shrink one side and stretch the other, tall images shrunk:
    both paths equal PIL's width pass followed by its height pass (a single call of Pillow 13
    starts with the height for some of these shapes; IRNet's Pillow never did)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (101, 50, 3), dtype=np.uint8)
    for img, size in [(noise, (37, 20)), (noise, (90, 50)), (noise, (1, 1)), (noise, (3, 200)),
                      (noise, (80, 25)), (noise, (18, 25)), (noise, (74, 100)),
                      (tall, (50, 25)), (tall, (76, 38))]:
        x = torch.from_numpy(img).permute(2, 0, 1)
        want = torch.from_numpy(pil_resized_width_first(img, size).copy()).permute(2, 0, 1)
        assert torch.equal(_pil_bicubic_torch(x, size), want), size
        assert torch.equal(pil_bicubic_resize(x, size), want), size
    batch = torch.stack([x, x.flip(-1)])  # (2, 3, H, W): planes are independent
    assert torch.equal(_pil_bicubic_torch(batch, (18, 25))[1], _pil_bicubic_torch(x.flip(-1),
                                                                                  (18, 25)))


def photo_images(sizes, seed=0) -> list[torch.Tensor]:
    """uint8 (3, H, W) crops of the photograph, PIL-resized to ``sizes``."""
    img = photograph()
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        top, left = rng.integers(0, 200), rng.integers(0, 150)
        crop = img[top:top + 300, left:left + 350]
        out.append(torch.from_numpy(pil_resized(crop, (h, w)).copy()).permute(2, 0, 1))
    return out


@pytest.fixture(scope="module")
def trained_net():
    """A tiny CamNet trained for a few seconds to tell K coloured squares apart on crops of the
    photograph (its CAMs follow the squares, unlike a random network's)."""
    colours = torch.tensor([[230, 20, 20], [20, 200, 40], [30, 40, 220], [240, 220, 30]],
                           dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    backgrounds = torch.stack(photo_images([(48, 48)] * 32, seed=1))  # (32, 3, 48, 48)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_cam_net(K, backbone="tiny", weights="none", freeze_bn=False,
                            freeze_stem=False)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        losses = []
        for _ in range(80):
            pick = torch.randint(0, len(backgrounds), (16,), generator=gen)
            images = backgrounds[pick].clone()
            labels = (torch.rand(16, K, generator=gen) < 0.4).float()
            for i, j in (labels > 0).nonzero().tolist():
                y, x = torch.randint(0, 36, (2,), generator=gen).tolist()
                images[i, :, y:y + 12, x:x + 12] = colours[j].view(3, 1, 1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(normalize(images)).logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])  # it did learn
    return net.eval(), colours


@pytest.mark.parametrize("scales", [(1.0,), (0.5,), (1.5,), (2.0,), IRNET_SCALES])
def test_batched_equals_irnet_reference_at_every_scale_on_a_trained_net(trained_net, scales):
    """fp32 on the CPU: the batched path gives the CAMs of the loop that follows IRNet's code
    (PIL bicubic on the uint8 image, then normalisation), to float round-off."""
    net, colours = trained_net
    sizes = [(45, 60), (60, 45), (45, 60), (37, 50), (45, 60)]
    images = photo_images(sizes, seed=2)
    labels = torch.zeros(len(sizes), K)
    for i, image in enumerate(images):
        for j in (i % K, (i + 1) % K):
            image[:, 5 + 3 * j:17 + 3 * j, 4 + 6 * j:16 + 6 * j] = colours[j].view(3, 1, 1)
            labels[i, j] = 1.0
    got = extract_cams_list(net, images, labels, batch_size=3, scales=scales, amp=False)
    for image, label, cams in zip(images, labels, got):
        keys, high, low = reference_cams(net, image, label, scales=scales)
        assert torch.equal(cams.keys, keys)
        assert (cams.high_res - high).abs().max() < 1e-5
        assert (cams.stride4 - low).abs().max() < 1e-5


def test_torch_resize_path_gives_the_reference_cams(trained_net, monkeypatch):
    """The resize a GPU runs (torch, not PIL) gives the same CAMs, here on the CPU."""
    net, _ = trained_net
    images = photo_images([(45, 60)] * 2 + [(37, 50)], seed=3)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]])
    monkeypatch.setattr(cam_mod, "pil_bicubic_resize", _pil_bicubic_torch)
    got = extract_cams_list(net, images, labels, batch_size=2, amp=False)
    for image, label, cams in zip(images, labels, got):
        keys, high, low = reference_cams(net, image, label)
        assert (cams.high_res - high).abs().max() < 1e-5
        assert (cams.stride4 - low).abs().max() < 1e-5


def test_uint8_and_normalised_inputs_give_the_same_cams(trained_net):
    net, _ = trained_net
    images = torch.stack(photo_images([(40, 52)] * 3, seed=4))
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]])
    a = extract_cams(net, images, labels, amp=False)
    b = extract_cams(net, normalize(images), labels, amp=False)
    assert torch.equal(a.high_res, b.high_res) and torch.equal(a.stride4, b.stride4)


def test_the_old_bilinear_resize_is_not_irnets(trained_net):
    """Resizing the normalised float image bilinearly (this module before issue 18) moves the
    CAMs far more than float round-off: the resize is part of what IRNet computes."""
    net, _ = trained_net
    images = photo_images([(45, 60)] * 2, seed=5)
    labels = torch.ones(2, K)
    want = [reference_cams(net, im, lab)[1] for im, lab in zip(images, labels)]

    def bilinear(levels, size):
        return torch.nn.functional.interpolate(levels.float(), size=size, mode="bilinear",
                                               align_corners=False, antialias=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cam_mod, "pil_bicubic_resize", bilinear)
        old = extract_cams(net, torch.stack(images), labels, amp=False).images()
    assert max(float((o.high_res - w).abs().max()) for o, w in zip(old, want)) > 1e-3


def test_work_size_for():
    assert cam_mod.work_size_for((150, 120), 0) == (150, 120)
    assert cam_mod.work_size_for((150, 120), 300) == (300, 240)
    assert cam_mod.work_size_for((120, 150), 280) == (224, 280)
    assert cam_mod.work_size_for((280, 203), 280) == (280, 200)  # a multiple of 8
    assert cam_mod.work_size_for((281, 205), 280) == (280, 208)
    assert cam_mod.work_size_for((400, 10), 280) == (280, 8)


def test_working_size_rescales_the_images_but_not_the_cams(tmp_path):
    """cam_infer.work_long: the network sees each image at the working size; the cached CAMs
    keep the image's own size (so masks, pseudo-masks and scores stay at the source size) and
    equal the CAMs of the image resized to the working size, resized back."""
    net = tiny_net()
    sizes = [(30, 40), (40, 30), (36, 36)]
    ds = FakeDataset(sizes)
    make_cams(net, ds, tmp_path / "w", batch_size=2, amp=False, progress=False, work_long=64,
              scales=(1.0,), flip=False)
    cache = CamCache(tmp_path / "w")
    for i, (h, w) in enumerate(sizes):
        got = cache.get(ds.names[i])
        assert got.size == (h, w)
        assert tuple(got.stride4.shape[-2:]) == (-(-h // 4), -(-w // 4))
        work = cam_mod.work_size_for((h, w), 64)
        big = pil_bicubic_resize(ds.images[i][None], work)  # what the network must see
        ref = extract_cams(net, big, ds.labels[i:i + 1], amp=False, out_size=(h, w),
                           scales=(1.0,), flip=False)
        assert (got.high_res - ref.high_res).abs().max() < 1e-3  # float16 cache
    # the working size changes what the network sees: not the CAMs at the source size
    make_cams(net, ds, tmp_path / "n", batch_size=2, amp=False, progress=False, scales=(1.0,),
              flip=False)
    native = CamCache(tmp_path / "n").get(ds.names[0])
    assert (native.high_res - cache.get(ds.names[0]).high_res).abs().max() > 1e-2


def test_logits_of_the_scale_one_pass():
    net = tiny_net()
    images = torch.randint(0, 256, (2, 3, 30, 40), dtype=torch.uint8)
    labels = torch.ones(2, K)
    out = extract_cams(net, images, labels, amp=False, logits=True)
    with torch.no_grad():
        want = net(normalize(images)).logits
    assert torch.allclose(out.logits, want, atol=1e-5)
    with pytest.raises(DataError, match="scale 1.0"):
        extract_cams(net, images, labels, amp=False, logits=True, scales=(0.5,))


def test_make_cams_folds_a_copy_and_matches_the_unfolded_path(tmp_path):
    from causal_wsss.runtime import use_speedups

    net = tiny_net()
    ds = FakeDataset([(30, 40), (40, 30)])
    with use_speedups(False):
        make_cams(net, ds, tmp_path / "old", amp=False, progress=False)
    with use_speedups(True):
        make_cams(net, ds, tmp_path / "new", amp=False, progress=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # not folded in place
    for name in ds.names:
        a, b = CamCache(tmp_path / "old").get(name), CamCache(tmp_path / "new").get(name)
        assert (a.high_res - b.high_res).abs().max() < 2e-3  # float16 steps of 2.5e-4 near 1
