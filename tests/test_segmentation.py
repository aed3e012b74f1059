"""Tests of the segmentation stage: training on masks, resuming, mIoU evaluation, saved predictions, DDP."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torch import nn

from causal_wsss.config import SegConfig
from causal_wsss.data.base import SegmentationDataset
from causal_wsss.errors import DataError
from causal_wsss.models.seg_net import build_seg_net
from causal_wsss.runtime import DistInfo
from causal_wsss.segmentation import (
    evaluate_segmentation,
    predict_masks,
    resize_labels,
    segmentation_loss,
    train_segmentation,
)
from causal_wsss.train import LossHistory

torch.set_num_threads(1)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


class ToyDataset(SegmentationDataset):
    """In-memory images and masks with three labels: background, "red", "green"."""

    classes = ("background", "red", "green")

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], transform=None) -> None:
        super().__init__(Path("/nonexistent"), "train", [f"toy_{i}" for i in range(len(images))],
                         transform)
        self.images, self.masks = images, masks

    @property
    def has_masks(self) -> bool:
        return True

    def image_path(self, i: int) -> Path:
        return self.root / f"{self.names[i]}.png"

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def load_mask(self, i: int) -> np.ndarray:
        return self.masks[i]

    def _read_labels(self, i: int) -> np.ndarray:
        return np.array([(self.masks[i] == c).any() for c in (1, 2)])


def separable_toy(n: int, seed: int = 0) -> ToyDataset:
    """Dark noisy background with a red (label 1) and a green (label 2) rectangle per image."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(40, 57, size=2))
        image = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for label, colour in ((1, RED), (2, GREEN)):
            y, x = int(rng.integers(0, h - 16)), int(rng.integers(0, w - 16))
            image[y:y + 14, x:x + 14] = colour
            mask[y:y + 14, x:x + 14] = label
        images.append(image)
        masks.append(mask)
    return ToyDataset(images, masks)


def tiny_config(**changes) -> SegConfig:
    base = dict(arch="tiny", backbone="tiny", weights="none", iterations=40, batch_size=4,
                crop_size=32, scales=(0.75, 1.0, 1.25), optimizer="adamw", lr=3e-3,
                weight_decay=1e-4)
    base.update(changes)
    return SegConfig(**base)


def test_resize_labels_and_loss_ignore():
    masks = torch.tensor([[[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [2, 2, 255, 255],
                           [2, 2, 255, 255]]])
    assert resize_labels(masks, (2, 2)).tolist() == [[[0, 1], [2, 255]]]
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = 10.0  # confident and right at the background pixel
    # three scored pixels: one with loss ~0, two at ln(3); the ignored pixel does not count
    expected = (math.log(2 + math.exp(10.0)) - 10.0 + 2 * math.log(3)) / 3
    assert segmentation_loss(logits, masks).item() == pytest.approx(expected, rel=1e-5)


def test_training_reduces_the_loss_and_resumes(tmp_path):
    dataset = separable_toy(8)
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_seg_net(3, arch="tiny", backbone="tiny", weights="none")
    history = LossHistory()
    result = train_segmentation(model, dataset, cfg, device="cpu", out_dir=tmp_path, seed=0,
                                progress=False, callbacks=[history])
    assert result["steps_per_epoch"] == 2 and result["epochs"] == 20 and result["steps"] == 40
    assert len(history.losses) == 40
    assert history.losses[0] == pytest.approx(math.log(3), abs=0.2)  # near-zero ASPP init
    first, last = np.mean(history.losses[:3]), np.mean(history.losses[-5:])
    assert last < 0.3 * first
    assert result["history"][-1]["lr"] == 0.0  # the poly schedule ends at zero
    assert (tmp_path / "seg.pt").is_file()

    # a second call finds the finished checkpoint: no step is taken, the weights are restored
    again = build_seg_net(3, arch="tiny", backbone="tiny", weights="none")
    quiet = LossHistory()
    resumed = train_segmentation(again, dataset, cfg, device="cpu", out_dir=tmp_path, seed=0,
                                 progress=False, callbacks=[quiet])
    assert quiet.losses == [] and resumed["steps"] == 40
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)

    scores = evaluate_segmentation(model, separable_toy(4, seed=1), device="cpu", num_classes=3,
                                   batch_size=2, progress=False)
    assert scores.miou > 0.6  # held-out images: the colours separate the classes


def test_training_refuses_a_dataset_with_a_transform(tmp_path):
    dataset = separable_toy(2)
    dataset.transform = lambda s: s
    with pytest.raises(DataError, match="transform"):
        train_segmentation(build_seg_net(3, arch="tiny", backbone="tiny", weights="none"),
                           dataset, tiny_config(), device="cpu", out_dir=tmp_path, progress=False)


class ColourNet(nn.Module):
    """Logits = the normalised RGB channels: predicts 0 on red, 1 on green, 2 on blue pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _hand_toy() -> ToyDataset:
    a = np.zeros((4, 4, 3), np.uint8)
    a[:, :2] = RED  # predicted 0
    a[:, 2:] = GREEN  # predicted 1
    mask_a = np.array([[255, 1, 1, 2],
                       [0, 1, 1, 2],
                       [0, 1, 1, 2],
                       [0, 1, 1, 2]], np.uint8)
    b = np.zeros((2, 3, 3), np.uint8)
    b[:] = BLUE  # predicted 2
    mask_b = np.full((2, 3), 2, np.uint8)
    return ToyDataset([a, b], [mask_a, mask_b])


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluation_miou_by_hand(batch_size):
    scores = evaluate_segmentation(ColourNet(), _hand_toy(), device="cpu", num_classes=3,
                                   batch_size=batch_size, progress=False)
    # confusion[target, pred]: [[3, 0, 0], [4, 4, 0], [0, 4, 6]]
    # IoU_0 = 3 / (3 + 7 - 3), IoU_1 = 4 / (8 + 8 - 4), IoU_2 = 6 / (10 + 6 - 6)
    assert scores.iou == pytest.approx((3 / 7, 1 / 3, 0.6))
    assert scores.miou == pytest.approx((3 / 7 + 1 / 3 + 0.6) / 3)
    assert scores.pixels == 21


class TiedNet(nn.Module):
    """Logits of few levels (most pixels tie between classes), whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(x.shape[-1]))
        return torch.randint(0, 3, (x.shape[0], 21, *x.shape[-2:]), generator=g).float()


def test_label_maps_are_the_argmax_ties_included():
    """predict_labels takes max's indices (faster on a CPU): the labels argmax gives, the first
    maximal class wherever classes tie."""
    from causal_wsss.segmentation import predict_labels

    images = [torch.zeros(3, 37, 53, dtype=torch.uint8), torch.zeros(3, 64, 48, dtype=torch.uint8)]
    for image in images:
        labels = predict_labels(TiedNet(), [image], device="cpu")[0]
        logits = TiedNet()(image[None].float())
        assert torch.equal(labels, logits.argmax(1)[0])


def test_predict_masks_writes_label_pngs(tmp_path):
    dataset = _hand_toy()
    counts = predict_masks(ColourNet(), dataset, tmp_path, device="cpu", progress=False,
                           batch_size=2)
    assert counts == {"images": 2, "written": 2, "skipped": 0}
    with Image.open(tmp_path / "toy_0.png") as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.array(img), np.repeat([[0, 0, 1, 1]], 4, axis=0))
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "toy_1.png")), np.full((2, 3), 2))
    (tmp_path / "toy_1.png").unlink()
    counts = predict_masks(ColourNet(), dataset, tmp_path, device="cpu", progress=False)
    assert counts == {"images": 2, "written": 1, "skipped": 1}
    shard = predict_masks(ColourNet(), dataset, tmp_path / "r1", device="cpu", progress=False,
                          rank=1, world_size=2)
    assert shard["images"] == 1 and os.listdir(tmp_path / "r1") == ["toy_1.png"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world)
        torch.manual_seed(0)
        model = build_seg_net(3, arch="tiny", backbone="tiny", weights="none")
        result = train_segmentation(model, separable_toy(8), tiny_config(iterations=4),
                                    device="cpu", out_dir=out_dir, progress=False, dist_info=info)
        scores = evaluate_segmentation(ColourNet(), _hand_toy(), device="cpu", num_classes=3,
                                       progress=False, dist_info=info)
        weight = model.aspp.branches[0].weight.detach().numpy().copy()
        queue.put((rank, result["steps"], scores.miou, scores.pixels, weight))
    finally:
        dist.destroy_process_group()


def test_ddp_training_and_sharded_evaluation(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), queue), nprocs=2, join=True)
    results = sorted(queue.get(timeout=10) for _ in range(2))
    # the global batch of 4 is split over 2 ranks: 8 images -> 2 batches of 2 per rank and epoch
    assert [r[1] for r in results] == [4, 4]
    # each rank scored one image; all_reduce gives both the whole data set's scores
    assert [r[3] for r in results] == [21, 21]
    assert results[0][2] == pytest.approx((3 / 7 + 1 / 3 + 0.6) / 3)
    np.testing.assert_array_equal(results[0][4], results[1][4])  # DDP keeps the replicas equal
    assert (tmp_path / "seg.pt").is_file()
