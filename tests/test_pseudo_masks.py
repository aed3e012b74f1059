"""Tests of CAM thresholding, CRF refinement, pseudo-mask PNGs on disk and the pseudo-mask data set."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from causal_wsss import pseudo_masks
from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.constants import voc_palette
from causal_wsss.data.base import SegmentationDataset
from causal_wsss.errors import CausalWSSSError, ConfigError, DataError
from causal_wsss.pseudo_masks import (
    PseudoMaskDataset,
    cams_to_mask,
    make_pseudo_masks,
    refine_crf,
    register_refiner,
)


class ToyDataset(SegmentationDataset):
    """In-memory images (VOC classes) with ground-truth masks."""

    classes = tuple(f"c{i}" for i in range(21))

    def __init__(self, root: Path, images: list[np.ndarray], masks: list[np.ndarray],
                 transform=None) -> None:
        super().__init__(root, "train", [f"img_{i}" for i in range(len(images))], transform)
        self.images, self.masks = images, masks

    @property
    def has_masks(self) -> bool:
        return True

    def image_path(self, i: int) -> Path:
        return self.root / f"{self.names[i]}.jpg"

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def load_mask(self, i: int) -> np.ndarray:
        return self.masks[i]

    def _read_labels(self, i: int) -> np.ndarray:
        present = np.zeros(20, dtype=bool)
        labels = np.unique(self.masks[i])
        present[labels[(labels > 0) & (labels < 255)] - 1] = True
        return present


def test_cams_to_mask_threshold_and_ties_by_hand():
    cams = np.array([[[0.25, 0.50, 0.75],
                      [0.90, 0.60, 0.00]],
                     [[0.75, 0.25, 0.50],
                      [0.90, 0.50, 0.55]]], dtype=np.float32)  # (K=2, H=2, W=3)
    keys = np.array([4, 11])  # foreground ids 0-based: labels 5 and 12
    out = cams_to_mask(cams, keys, bg_threshold=0.5)
    # (0,1): max 0.5 == threshold -> background; (1,0): 0.9 tie -> first channel (label 5)
    expected = np.array([[12, 0, 5],
                         [5, 5, 12]], dtype=np.uint8)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(cams_to_mask(cams, keys, bg_threshold=0.6),
                                  [[12, 0, 5], [5, 0, 0]])


def test_cams_to_mask_batched_torch_and_empty():
    cams = torch.tensor([[[[0.1, 0.8]], [[0.7, 0.2]]],
                         [[[0.3, 0.1]], [[0.2, 0.9]]]])  # (B=2, K=2, H=1, W=2)
    out = cams_to_mask(cams, None, 0.25)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    assert out.tolist() == [[[2, 1]], [[1, 2]]]
    per_image = cams_to_mask(cams, torch.tensor([[0, 1], [6, 7]]), 0.25)
    assert per_image.tolist() == [[[2, 1]], [[7, 8]]]
    empty = cams_to_mask(np.zeros((0, 3, 4), np.float32), np.zeros(0, np.int64), 0.15)
    np.testing.assert_array_equal(empty, np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match="one key per CAM channel"):
        cams_to_mask(cams[0], [1, 2, 3], 0.15)
    with pytest.raises(DataError, match="shape"):
        cams_to_mask(np.zeros((4, 4), np.float32), None, 0.15)


def test_crf_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(CausalWSSSError, match=r'pip install "causal-wsss\[crf\]"'):
        refine_crf(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.float32))


def test_crf_snaps_labels_to_the_colour_edge():
    pytest.importorskip("pydensecrf")
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, 16:] = 255
    scores = np.zeros((2, 24, 32), np.float32)
    scores[0] = 0.5
    scores[1, :, 13:] = 0.9  # the object label spills 3 pixels into the dark half
    expected = np.zeros((24, 32), np.int64)
    expected[:, 16:] = 1
    np.testing.assert_array_equal(refine_crf(image, scores), expected)


def test_crf_refiner_on_a_two_tone_image(tmp_path):
    pytest.importorskip("pydensecrf")
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, 16:] = 255
    high = torch.zeros((1, 24, 32))
    high[0, :, 13:] = 1.0  # CAM of foreground id 5 spills 3 pixels over the edge
    CamCache(tmp_path / "cams").put("img_0", ImageCams(torch.tensor([5]), high))
    dataset = ToyDataset(tmp_path, [image], [np.zeros((24, 32), np.uint8)])
    make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "m", bg_threshold=0.3, refine="crf",
                      progress=False)
    expected = np.zeros((24, 32), np.uint8)
    expected[:, 16:] = 6
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m" / "img_0.png")), expected)


def _toy(tmp_path: Path) -> tuple[ToyDataset, list[ImageCams]]:
    gen = torch.Generator().manual_seed(0)
    sizes = [(6, 8), (5, 7), (7, 6)]
    images = [np.full((h, w, 3), 40 * i, np.uint8) for i, (h, w) in enumerate(sizes)]
    masks = [np.zeros((h, w), np.uint8) for h, w in sizes]
    keys = [torch.tensor([2, 14]), torch.tensor([0]), torch.tensor([6, 7, 19])]
    cams = [ImageCams(k, torch.rand((len(k), h, w), generator=gen))
            for k, (h, w) in zip(keys, sizes)]
    cache = CamCache(tmp_path / "cams")
    for name, c in zip([f"img_{i}" for i in range(3)], cams):
        cache.put(name, c)
    return ToyDataset(tmp_path, images, masks), cams


def test_make_pseudo_masks_writes_palette_pngs_and_resumes(tmp_path):
    dataset, cams = _toy(tmp_path)
    out = tmp_path / "masks"
    counts = make_pseudo_masks(dataset, tmp_path / "cams", out, bg_threshold=0.4, progress=False)
    assert counts == {"images": 3, "written": 3, "skipped": 0}
    for i, c in enumerate(cams):
        with Image.open(out / f"img_{i}.png") as img:
            assert img.mode == "P"
            palette = np.array(img.getpalette()[:768], np.uint8).reshape(256, 3)
            stored = np.array(img)
        np.testing.assert_array_equal(palette, voc_palette())
        # the cache stores float16: threshold the same values by hand
        high = c.high_res.half().float().numpy()
        labels = np.concatenate([[0], c.keys.numpy() + 1])
        expected = np.where(high.max(0) > 0.4, labels[1:][high.argmax(0)], 0)
        np.testing.assert_array_equal(stored, expected)
        assert set(np.unique(stored)) <= set(labels.tolist())

    # resumable: existing files are kept as they are, missing ones are written again
    Image.fromarray(np.full((6, 8), 3, np.uint8)).save(out / "img_0.png")
    (out / "img_2.png").unlink()
    counts = make_pseudo_masks(dataset, tmp_path / "cams", out, bg_threshold=0.4, progress=False)
    assert counts == {"images": 3, "written": 1, "skipped": 2}
    assert (np.array(Image.open(out / "img_0.png")) == 3).all()
    assert (out / "img_2.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("refine", ["none", "main_process"])
def test_make_pseudo_masks_with_loader_workers(tmp_path, monkeypatch, refine):
    dataset, _ = _toy(tmp_path)
    monkeypatch.setattr(pseudo_masks, "REFINERS", dict(pseudo_masks.REFINERS))
    register_refiner("main_process", pseudo_masks.refine_none)  # not in_workers: runs here
    serial = make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "a", bg_threshold=0.4,
                               progress=False)
    parallel = make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "b", bg_threshold=0.4,
                                 refine=refine, progress=False, num_workers=2)
    assert serial == parallel
    for i in range(3):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "a" / f"img_{i}.png")),
                                      np.array(Image.open(tmp_path / "b" / f"img_{i}.png")))


def test_make_pseudo_masks_shards_by_rank(tmp_path):
    dataset, _ = _toy(tmp_path)
    counts = make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "m", bg_threshold=0.2,
                               progress=False, rank=1, world_size=2)
    assert counts == {"images": 1, "written": 1, "skipped": 0}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["img_1.png"]


def test_refiner_registry_and_errors(tmp_path, monkeypatch):
    dataset, _ = _toy(tmp_path)
    registry = {k: v for k, v in pseudo_masks.REFINERS.items() if k != "irn"}  # pipeline tests add it
    monkeypatch.setattr(pseudo_masks, "REFINERS", registry)
    seen = []

    def everything_is_class_3(image, cams, bg_threshold):
        seen.append((image.shape, tuple(cams.keys.tolist()), bg_threshold))
        return np.full(image.shape[:2], 3, np.uint8)

    register_refiner("const", everything_is_class_3)
    make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "c", bg_threshold=0.25,
                      refine="const", progress=False)
    assert seen[0] == ((6, 8, 3), (2, 14), 0.25) and len(seen) == 3
    assert (np.array(Image.open(tmp_path / "c" / "img_1.png")) == 3).all()
    with pytest.raises(ConfigError, match="irn"):
        make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "x", bg_threshold=0.2,
                          refine="irn", progress=False)
    with pytest.raises(DataError, match="CAM cache folder not found"):
        make_pseudo_masks(dataset, tmp_path / "nowhere", tmp_path / "x", bg_threshold=0.2,
                          progress=False)
    register_refiner("wrong_size", lambda image, cams, thr: np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="img_0"):
        make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "y", bg_threshold=0.2,
                          refine="wrong_size", progress=False)


def test_crf_refiner_without_package(tmp_path, monkeypatch):
    dataset, _ = _toy(tmp_path)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(CausalWSSSError, match="pydensecrf"):
        make_pseudo_masks(dataset, tmp_path / "cams", tmp_path / "m", bg_threshold=0.2,
                          refine="crf", progress=False)


def test_pseudo_mask_dataset(tmp_path):
    dataset, _ = _toy(tmp_path)
    out = tmp_path / "masks"
    make_pseudo_masks(dataset, tmp_path / "cams", out, bg_threshold=0.3, progress=False)
    pseudo = PseudoMaskDataset(dataset, out)
    assert len(pseudo) == 3 and pseudo.names == dataset.names
    assert pseudo.num_classes == 21
    sample = pseudo[1]
    np.testing.assert_array_equal(sample["mask"].numpy(), np.array(Image.open(out / "img_1.png")))
    assert sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["image"].numpy(), dataset.images[1].transpose(2, 0, 1))
    torch.testing.assert_close(sample["labels"], dataset[1]["labels"])
    np.testing.assert_array_equal(pseudo.label_matrix(), dataset.label_matrix())

    flipped = PseudoMaskDataset(dataset, out, transform=lambda s: {**s, "mask": s["mask"].flip(-1)})
    torch.testing.assert_close(flipped[1]["mask"], sample["mask"].flip(-1))

    (out / "img_2.png").unlink()
    with pytest.raises(DataError, match=r"img_2\.png"):
        pseudo[2]
    with pytest.raises(DataError, match="pseudo-mask folder not found"):
        PseudoMaskDataset(dataset, tmp_path / "absent")
