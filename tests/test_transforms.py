"""Transforms: shapes, padding, crop_box geometry against resampling, determinism across workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from causal_wsss.data.transforms import (
    MEAN_UINT8,
    EvalTransform,
    SegTrainTransform,
    TrainTransform,
    collate_list,
    crop_pad,
    denormalize,
    normalize,
    resize_mask,
)
from causal_wsss.errors import ConfigError

torch.set_num_threads(1)
H, W = 30, 40


def ramp_sample(index: int = 0) -> dict:
    """R = 5x + 20, G = 7y + 10 (linear, so bilinear resampling reproduces it exactly inside)."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([5 * x + 20, 7 * y + 10, np.full_like(x, 128)]).astype(np.uint8)
    mask = np.zeros((H, W), dtype=np.int64)
    mask[5:20, 10:30] = 7
    mask[:, :2] = 255
    return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask),
            "labels": torch.zeros(20), "name": f"img{index}", "index": index, "context": 3}


def resample_at_box(original: torch.Tensor, box: torch.Tensor, crop: int) -> torch.Tensor:
    """Sample ``original (C, H, W)`` on a ``crop x crop`` grid covering ``box`` (normalised
    x0, y0, x1, y1), bilinear with align_corners=False: what CONTA does with its context map."""
    x0, y0, x1, y1 = box.tolist()
    centres = (torch.arange(crop, dtype=torch.float64) + 0.5) / crop
    gx = 2 * (x0 + centres * (x1 - x0)) - 1
    gy = 2 * (y0 + centres * (y1 - y0)) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # (c, c, 2) = (x, y)
    return F.grid_sample(original[None].double(), grid[None], mode="bilinear",
                         align_corners=False)[0]  # (C, c, c)


def box_pixel_coords(box: torch.Tensor, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Original-image pixel coordinates (x, y) of every crop pixel centre."""
    x0, y0, x1, y1 = box.tolist()
    centres = (torch.arange(crop, dtype=torch.float64) + 0.5) / crop
    return (x0 + centres * (x1 - x0)) * W - 0.5, (y0 + centres * (y1 - y0)) * H - 0.5


def test_output_contract():
    out = TrainTransform(24, resize_long=(30, 60), seed=0)(ramp_sample(3))
    assert out["image"].shape == (3, 24, 24) and out["image"].dtype == torch.uint8
    assert out["mask"].shape == (24, 24) and out["mask"].dtype == torch.int64
    assert out["crop_box"].shape == (4,) and out["crop_box"].dtype == torch.float32
    assert out["flipped"].dtype == torch.bool and out["flipped"].dim() == 0
    assert out["name"] == "img3" and out["index"] == 3 and out["context"] == 3
    assert set(out["mask"].unique().tolist()) <= {0, 7, 255}


@pytest.mark.parametrize("index", range(12))
def test_crop_box_matches_resampling_the_original(index):
    crop = 48
    sample = ramp_sample(index)
    out = TrainTransform(crop, resize_long=(50, 80), seed=1)(sample)
    box, image = out["crop_box"], out["image"].double()
    if out["flipped"]:
        image = image.flip(-1)  # crop_box describes the crop before flipping
    reference = resample_at_box(sample["image"], box, crop)  # (3, c, c)
    px, py = box_pixel_coords(box, crop)
    inside_x = (px > 1) & (px < W - 2)
    inside_y = (py > 1) & (py < H - 2)
    inside = inside_y[:, None] & inside_x[None, :]  # (c, c), away from the image border
    assert inside.sum() > 100
    diff = (image - reference).abs()[:, inside]
    assert diff.max() <= 1.0  # uint8 rounding only
    # the ramp read back gives the original coordinates themselves
    red = image[0][inside]
    assert torch.allclose(red, (5 * px[None, :] + 20).expand(crop, crop)[inside], atol=1.0)
    # padding: wherever the crop shows no image, the mean colour and the ignore label
    outside_x = (px < -0.5) | (px > W - 0.5)
    outside_y = (py < -0.5) | (py > H - 0.5)
    outside = outside_y[:, None] | outside_x[None, :]
    mask = out["mask"].flip(-1) if out["flipped"] else out["mask"]
    assert (mask[outside] == 255).all()
    for c in range(3):
        assert (image[c][outside] == MEAN_UINT8[c]).all()


def test_crop_box_cover_cropping_and_padding():
    t = TrainTransform(48, resize_long=(50, 80), seed=1)
    boxes = torch.stack([t(ramp_sample(i))["crop_box"] for i in range(40)])
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 1] < 0).any() and (boxes[:, 3] > 1).any()  # the short side gets padded
    assert ((boxes[:, 0] > 0) | (boxes[:, 2] < 1)).any()  # the long side gets cropped
    # the long side is rescaled to L in [50, 80] and the crop is 48 px: width = 48 / L
    assert ((widths >= 48 / 80 - 1e-6) & (widths <= 48 / 50 + 1e-6)).all()
    assert torch.allclose(heights, widths * W / H, rtol=0.05)
    flips = [bool(t(ramp_sample(i))["flipped"]) for i in range(40)]
    assert 5 < sum(flips) < 35


def test_mask_follows_the_image_geometry():
    sample = ramp_sample(0)
    for i in range(10):
        sample["index"] = i
        out = TrainTransform(32, resize_long=(40, 40), seed=2)(sample)  # long side kept at 40
        box = out["crop_box"]
        mask = out["mask"].flip(-1) if out["flipped"] else out["mask"]
        px, py = box_pixel_coords(box, 32)
        xi, yi = px.round().long(), py.round().long()
        for r in range(32):
            for c in range(32):
                if 0 <= yi[r] < H and 0 <= xi[c] < W:
                    assert mask[r, c] == sample["mask"][yi[r], xi[c]]


def test_padding_when_image_smaller_than_crop():
    out = SegTrainTransform(24, scales=(0.5,), flip=False, seed=0)(ramp_sample(0))  # 15 x 20
    box = out["crop_box"]
    top, left = round(-box[1].item() * 15), round(-box[0].item() * 20)
    assert 0 <= top <= 9 and 0 <= left <= 4
    assert torch.allclose(box, torch.tensor([-left / 20, -top / 15, (24 - left) / 20,
                                             (24 - top) / 15]))
    image, mask = out["image"], out["mask"]
    shown = torch.zeros(24, 24, dtype=torch.bool)
    shown[top:top + 15, left:left + 20] = True
    assert (mask[~shown] == 255).all() and (mask[shown] != 255).sum() > 0
    assert (image[:, ~shown] == torch.tensor(MEAN_UINT8, dtype=torch.uint8)[:, None]).all()
    expected = F.interpolate(ramp_sample(0)["image"][None], size=(15, 20), mode="bilinear",
                             antialias=True, align_corners=False)[0]
    assert torch.equal(image[:, top:top + 15, left:left + 20], expected)
    assert normalize(image)[:, ~shown].abs().max() < 0.01  # mean padding is 0 after normalize


def test_seg_transform_scales():
    t = SegTrainTransform(24, scales=(2.0,), flip=False, seed=0)
    out = t(ramp_sample(0))  # rescaled to 60 x 80, then cropped
    box = out["crop_box"]
    assert box[2] - box[0] == pytest.approx(24 / 80) and box[3] - box[1] == pytest.approx(24 / 60)
    assert 0 <= box[0] and box[2] <= 1 and 0 <= box[1] and box[3] <= 1
    assert not out["flipped"]


def test_determinism_epochs_and_seeds():
    t = TrainTransform(24, resize_long=(20, 60), seed=5)
    a = [t(ramp_sample(i)) for i in range(6)]
    b = [t(ramp_sample(i)) for i in reversed(range(6))][::-1]  # order does not matter
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["crop_box"], y["crop_box"])
    t.set_epoch(1)
    assert t.epoch == 1
    c = [t(ramp_sample(i)) for i in range(6)]
    assert any(not torch.equal(x["crop_box"], y["crop_box"]) for x, y in zip(a, c))
    other = TrainTransform(24, resize_long=(20, 60), seed=6)
    d = [other(ramp_sample(i)) for i in range(6)]
    assert any(not torch.equal(x["crop_box"], y["crop_box"]) for x, y in zip(a, d))
    t.set_epoch(0)
    assert all(torch.equal(x["image"], t(ramp_sample(i))["image"]) for i, x in enumerate(a))


class RampDataset(Dataset):
    def __init__(self, n, transform):
        self.n, self.transform = n, transform

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(ramp_sample(i))


def test_dataloader_workers_reproduce_and_follow_set_epoch():
    t = TrainTransform(16, resize_long=(20, 50), seed=0)
    ds = RampDataset(8, t)

    def epochs(loader):
        boxes = []
        for epoch in range(2):
            t.set_epoch(epoch)
            boxes.append(torch.cat([b["crop_box"] for b in loader]))
        return boxes

    serial = epochs(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = epochs(DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True))
    assert not torch.equal(serial[0], serial[1])
    for s, p in zip(serial, parallel):
        assert torch.equal(s, p)


def test_resize_mask_is_pil_nearest():
    mask = np.random.default_rng(0).integers(0, 21, (H, W)).astype(np.uint8)
    for size in [(15, 20), (43, 57), (17, 23)]:  # sizes without exact ties
        ours = resize_mask(torch.from_numpy(mask).long(), size).numpy()
        pil = np.array(Image.fromarray(mask).resize(size[::-1], Image.NEAREST))
        assert np.array_equal(ours, pil), size


def test_crop_pad_negative_offsets():
    x = torch.arange(12).view(1, 3, 4)
    out = crop_pad(x, top=-1, left=2, crop=3, fill=[-1])
    assert out.tolist() == [[[-1, -1, -1], [2, 3, -1], [6, 7, -1]]]


def test_eval_transform():
    sample = ramp_sample(0)
    assert EvalTransform(0)(sample) is sample and EvalTransform(40)(sample) is sample
    out = EvalTransform(20)(sample)
    assert out["image"].shape == (3, 15, 20) and out["mask"].shape == (15, 20)
    assert out["mask"].dtype == torch.int64 and set(out["mask"].unique().tolist()) <= {0, 7, 255}
    with pytest.raises(ConfigError):
        EvalTransform(-1)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="resize_long"):
        TrainTransform(24, resize_long=(60, 20))
    with pytest.raises(ConfigError, match="crop_size"):
        TrainTransform(0)
    with pytest.raises(ConfigError, match="scales"):
        SegTrainTransform(24, scales=())


def test_normalize_and_denormalize():
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = normalize(images, device="cpu")
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x[1, 2, 3, 4].item() == pytest.approx((images[1, 2, 3, 4].item() / 255 - 0.406) / 0.225,
                                                 abs=1e-5)
    assert torch.equal(denormalize(x), images)
    assert torch.equal(normalize(images[0]), x[0])
    with pytest.raises(ValueError, match="uint8"):
        normalize(images.float())


def test_collate_list_variable_sizes():
    a = ramp_sample(0)
    b = EvalTransform(20)(ramp_sample(1))
    batch = collate_list([a, b])
    assert [im.shape for im in batch["image"]] == [(3, 30, 40), (3, 15, 20)]
    assert [m.shape for m in batch["mask"]] == [(30, 40), (15, 20)]
    assert batch["labels"].shape == (2, 20)
    assert batch["index"].tolist() == [0, 1] and batch["name"] == ["img0", "img1"]
