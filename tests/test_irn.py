"""Tests of the IRNet stage: IR labels, path indices and affinities, the boundary network, its training and the random walk."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_wsss.cam import CamCache, ImageCams
from causal_wsss.config import PseudoConfig
from causal_wsss.data.base import SegmentationDataset, read_label_png
from causal_wsss.errors import CausalWSSSError, ConfigError, DataError
from causal_wsss.irn import (
    affinity_labels,
    affinity_loss,
    edge_to_affinity,
    load_boundary_net,
    make_ir_label_files,
    make_ir_labels,
    make_irn_refiner,
    path_index,
    random_walk,
    random_walk_refiner,
    semantic_labels,
    train_irn,
    transition_matrix,
)
from causal_wsss.models import build_cam_net
from causal_wsss.models.irn_net import BoundaryNet, build_boundary_net

torch.set_num_threads(1)

HAS_CRF = importlib.util.find_spec("pydensecrf") is not None


# --------------------------------------------------------------------------------------------
# an independent transcription of IRNet's geometry and dense random walk, with plain loops


def irnet_paths(radius: int) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """IRNet ``PathIndex.get_all_dir_paths``: destination -> pixels on its path."""
    dirs = [(0, x) for x in range(1, radius)]
    for y in range(1, radius):
        for x in range(-radius + 1, radius):
            if x * x + y * y < radius ** 2:
                dirs.append((y, x))
    paths = {}
    for dy, dx in dirs:
        length_sq = dy ** 2 + dx ** 2
        coords = []
        for y in range(min(0, dy), max(0, dy) + 1):
            for x in range(min(0, dx), max(0, dx) + 1):
                if (dy * x - dx * y) ** 2 / length_sq < 1:
                    coords.append((y, x))
        paths[(dy, dx)] = coords
    return paths


def dense_affinity(edge: np.ndarray, radius: int) -> np.ndarray:
    """IRNet's dense affinity (``affinity_sparse2dense``): symmetric, ones on the diagonal."""
    h, w = edge.shape
    aff = np.eye(h * w)
    for (dy, dx), coords in irnet_paths(radius).items():
        for y in range(h):
            for x in range(w):
                if not (0 <= y + dy < h and 0 <= x + dx < w):
                    continue
                a = 1 - max(edge[y + qy, x + qx] for qy, qx in coords)
                i, j = y * w + x, (y + dy) * w + x + dx
                aff[i, j] = aff[j, i] = a
    return aff


def dense_random_walk(cams: np.ndarray, edge: np.ndarray, beta: float, exp_times: int,
                      radius: int) -> np.ndarray:
    """IRNet ``to_transition_matrix`` + ``propagate_to_edge``: x (1 - edge) T^(2^k)."""
    n, h, w = cams.shape
    scaled = dense_affinity(edge, radius) ** beta
    trans = scaled / scaled.sum(0, keepdims=True)
    for _ in range(exp_times):
        trans = trans @ trans
    x = (cams * (1 - edge)).reshape(n, h * w)
    return (x @ trans).reshape(n, h, w)


# --------------------------------------------------------------------------------------------
# path indices and affinities


def test_path_index_matches_irnet_geometry():
    for radius in (2, 3, 5):
        paths = path_index(radius)
        reference = irnet_paths(radius)
        got = {tuple(d): sorted(paths.path(o)) for o, d in enumerate(paths.offsets.tolist())}
        assert got == {d: sorted(c) for d, c in reference.items()}
    paths = path_index(5)
    assert paths.num_offsets == 34  # 4 on the row + 9 + 9 + 7 + 5 below
    offsets = paths.offsets.tolist()
    assert sorted(paths.path(offsets.index([1, 1]))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sorted(paths.path(offsets.index([0, 3]))) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    with pytest.raises(ConfigError, match="radius"):
        path_index(1)


def test_edge_to_affinity_by_hand_and_gradient():
    paths = path_index(2)  # offsets (0, 1), (1, -1), (1, 0), (1, 1)
    edge = torch.zeros(1, 3, 4)
    edge[0, 1, 1] = 0.8
    edge[0, 0, 2] = 0.3
    aff = edge_to_affinity(edge, paths)
    o = {tuple(d): i for i, d in enumerate(paths.offsets.tolist())}
    assert aff.shape == (1, 4, 3, 4)
    assert aff[0, o[(0, 1)], 0, 0] == pytest.approx(1.0)  # (0,0)-(0,1): no boundary
    assert aff[0, o[(0, 1)], 0, 1] == pytest.approx(0.7)  # (0,1)-(0,2): 0.3 at the end
    assert aff[0, o[(1, 0)], 0, 1] == pytest.approx(0.2)  # (0,1)-(1,1)
    assert aff[0, o[(1, 1)], 0, 0] == pytest.approx(0.2)  # path (0,0),(0,1),(1,0),(1,1)
    assert aff[0, o[(1, -1)], 0, 2] == pytest.approx(0.2)  # (0,2)-(1,1): 0.8 at the end
    assert aff[0, o[(0, 1)], 0, 3] == 0.0  # leaves the map
    assert aff[0, o[(1, 0)], 2, 0] == 0.0  # below the last row
    # brute force: every pair, values and gradient of sum(aff * weights)
    edge = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    paths = path_index(3)
    aff = edge_to_affinity(edge, paths)
    weights = torch.rand(aff.shape, generator=torch.Generator().manual_seed(1))
    (aff * weights).sum().backward()
    expected = torch.zeros_like(aff)
    grad = torch.zeros_like(edge)
    for o, (dy, dx) in enumerate(paths.offsets.tolist()):
        coords = paths.path(o)
        for b in range(2):
            for y in range(5):
                for x in range(6):
                    if 0 <= y + dy < 5 and 0 <= x + dx < 6:
                        vals = [float(edge.detach()[b, y + qy, x + qx]) for qy, qx in coords]
                        k = int(np.argmax(vals))
                        expected[b, o, y, x] = 1 - vals[k]
                        qy, qx = coords[k]
                        grad[b, y + qy, x + qx] -= weights[b, o, y, x]
    torch.testing.assert_close(aff.detach(), expected)
    torch.testing.assert_close(edge.grad, grad)


def test_random_walk_equals_dense_matrix_power():
    gen = torch.Generator().manual_seed(0)
    cams = torch.rand(2, 6, 7, generator=gen, dtype=torch.float64)
    edge = torch.rand(6, 7, generator=gen, dtype=torch.float64) ** 2
    edge[:, 3] = 0.9  # a wall
    for beta, exp_times, radius in ((2.0, 3, 3), (10.0, 5, 5), (1.0, 0, 2)):
        got = random_walk(cams, edge, beta=beta, exp_times=exp_times, radius=radius)
        want = dense_random_walk(cams.numpy(), edge.numpy(), beta, exp_times, radius)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)
    trans = transition_matrix(edge, beta=10.0, radius=5).to_dense()  # D^-1 A = T^T
    scaled = dense_affinity(edge.numpy(), 5) ** 10.0
    np.testing.assert_allclose(trans.numpy(), (scaled / scaled.sum(0, keepdims=True)).T,
                               rtol=1e-12, atol=1e-15)
    # float32 stays close to float64; the wall stops the walk
    got32 = random_walk(cams.float(), edge.float(), beta=10.0, exp_times=4, radius=5)
    got64 = random_walk(cams, edge, beta=10.0, exp_times=4, radius=5)
    np.testing.assert_allclose(got32.numpy(), got64.numpy(), atol=1e-5)
    with pytest.raises(DataError, match="differ"):
        random_walk(cams, edge[:5], beta=10.0, exp_times=1)


def test_random_walk_keeps_constants_without_boundaries():
    cams = torch.full((1, 9, 11), 0.5)
    out = random_walk(cams, torch.zeros(9, 11), beta=10.0, exp_times=6, radius=5)
    torch.testing.assert_close(out, cams)


# --------------------------------------------------------------------------------------------
# IR labels and affinity labels


def toy_cams() -> ImageCams:
    """Two classes (keys 2 and 7, labels 3 and 8) on a 3x6 image."""
    class_a = [[0.90, 0.50, 0.30, 0.20, 0.05, 0.00],
               [0.80, 0.31, 0.10, 0.04, 0.00, 0.00],
               [0.00, 0.00, 0.00, 0.00, 0.00, 0.00]]
    class_b = [[0.00, 0.60, 0.00, 0.00, 0.00, 0.00],
               [0.00, 0.00, 0.00, 0.00, 0.06, 0.00],
               [0.40, 0.30, 0.02, 0.00, 0.00, 1.00]]
    return ImageCams(torch.tensor([2, 7]), torch.tensor([class_a, class_b]))


def test_make_ir_labels_thresholds_by_hand():
    labels = make_ir_labels(toy_cams(), fg_threshold=0.30, bg_threshold=0.05)
    # > 0.30: class; (0.05, 0.30]: ignore; <= 0.05 (ties go to background): background
    expected = np.array([[3, 8, 255, 255, 0, 0],
                         [3, 3, 255, 0, 255, 0],
                         [8, 255, 0, 0, 0, 8]], dtype=np.uint8)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8
    empty = ImageCams(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3, 6))
    np.testing.assert_array_equal(make_ir_labels(empty), np.zeros((3, 6), np.uint8))
    with pytest.raises(ConfigError, match="bg_threshold"):
        make_ir_labels(toy_cams(), fg_threshold=0.05, bg_threshold=0.30)
    with pytest.raises(DataError, match="shape"):
        make_ir_labels(toy_cams(), np.zeros((4, 6, 3), np.uint8))


@pytest.mark.skipif(HAS_CRF, reason="pydensecrf is installed")
def test_make_ir_labels_crf_missing_names_the_package():
    with pytest.raises(CausalWSSSError, match="pydensecrf"):
        make_ir_labels(toy_cams(), np.zeros((3, 6, 3), np.uint8), crf=True)


@pytest.mark.skipif(not HAS_CRF, reason="pydensecrf is not installed")
def test_make_ir_labels_crf_keeps_the_label_set():
    image = np.zeros((3, 6, 3), np.uint8)
    labels = make_ir_labels(toy_cams(), image, crf=True)
    assert labels.shape == (3, 6) and set(np.unique(labels)) <= {0, 3, 8, 255}


def test_affinity_labels_on_the_toy_by_hand():
    ir = torch.from_numpy(make_ir_labels(toy_cams()).astype(np.int64))[None]  # (1, 3, 6)
    paths = path_index(2)
    o = {tuple(d): i for i, d in enumerate(paths.offsets.tolist())}
    bg_pos, fg_pos, neg = affinity_labels(ir, paths)
    assert bg_pos.shape == (1, 4, 3, 6)
    assert fg_pos[0, o[(1, 0)], 0, 0]  # 3 - 3
    assert neg[0, o[(0, 1)], 0, 0]  # 3 - 8
    assert neg[0, o[(1, 0)], 1, 0]  # 3 - 8 (row 2 col 0 is class 8)
    assert bg_pos[0, o[(0, 1)], 0, 4]  # 0 - 0
    assert bg_pos[0, o[(1, -1)], 1, 3]  # (1,3)=0 - (2,2)=0
    touching = bg_pos | fg_pos | neg
    assert not touching[0, o[(1, 0)], 0, 2] and not touching[0, o[(0, 1)], 0, 1]  # 255 involved
    assert bg_pos[0, o[(1, 1)], 1, 3]  # (1,3)=0 - (2,4)=0
    assert neg[0, o[(1, 1)], 1, 5] == 0  # leaves the map
    assert neg[0, o[(1, 0)], 1, 5]  # 0 - 8
    # brute force over every pair
    lab = ir[0].numpy()
    for name, got in (("bg", bg_pos), ("fg", fg_pos), ("neg", neg)):
        for k, (dy, dx) in enumerate(paths.offsets.tolist()):
            for y in range(3):
                for x in range(6):
                    inside = 0 <= y + dy < 3 and 0 <= x + dx < 6
                    a = lab[y, x]
                    b = lab[y + dy, x + dx] if inside else 255
                    valid = a != 255 and b != 255
                    want = {"bg": valid and a == b == 0, "fg": valid and a == b and a > 0,
                            "neg": valid and a != b}[name]
                    assert bool(got[0, k, y, x]) == want, (name, dy, dx, y, x)
    # no pair is in two sets, and pairs touching ignore are in none
    assert not (bg_pos & fg_pos).any() and not ((bg_pos | fg_pos) & neg).any()


# --------------------------------------------------------------------------------------------
# the boundary network


def test_boundary_net_shapes_and_frozen_trunk_tiny():
    cam_net = build_cam_net(5, backbone="tiny", weights="none", freeze_bn=False,
                            freeze_stem=False)
    net = build_boundary_net(cam_net)
    assert net.strides == (2, 4, 8, 16, 16)
    out = net(torch.randn(2, 3, 37, 50))
    assert out.shape == (2, 1, 10, 13)
    out.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.edge_layers.parameters())
    assert all(p.requires_grad for p in cam_net.parameters())  # the CAM network is untouched
    net.train()
    assert not net.backbone.training and net.edge_layers.training
    assert build_boundary_net(build_cam_net(5, backbone="tiny", weights="none",
                                            trunk_depth=3)).strides == (2, 4, 8, 16)


@pytest.mark.parametrize("trunk_depth,strides", [(4, (4, 4, 8, 16, 16)), (3, (4, 4, 8, 16))])
def test_boundary_net_shapes_resnet18(trunk_depth, strides):
    cam_net = build_cam_net(20, backbone="resnet18", weights="none", trunk_depth=trunk_depth)
    net = build_boundary_net(cam_net).eval()
    assert net.strides == strides
    assert [m[0].in_channels for m in net.edge_layers] == [64, 64, 128, 256, 512][:len(strides)]
    with torch.no_grad():
        assert net(torch.randn(1, 3, 67, 45)).shape == (1, 1, 17, 12)
    with pytest.raises(DataError, match="expected"):
        net(torch.randn(3, 20, 20))


def test_affinity_loss_finite_and_decreasing_on_a_toy():
    torch.manual_seed(0)
    cam_net = build_cam_net(5, backbone="tiny", weights="none", freeze_bn=False,
                            freeze_stem=False)
    net = build_boundary_net(cam_net)
    image = torch.randn(2, 3, 32, 32)
    labels = torch.zeros(2, 8, 8, dtype=torch.int64)
    labels[:, :, 4:] = 2
    labels[:, :, 3] = 255
    paths = path_index(3)
    bg_pos, fg_pos, neg = affinity_labels(labels, paths)
    assert bg_pos.any() and fg_pos.any() and neg.any()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for _ in range(8):
        edge = torch.sigmoid(net(image))[:, 0]
        loss = affinity_loss(edge_to_affinity(edge, paths), bg_pos, fg_pos, neg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.01
    # by hand: affinity 1 on a positive pair costs ~0, on a negative pair ~-log(1e-5)/2
    one = torch.ones(1, 1, 1, 1)
    yes, no = torch.ones(1, 1, 1, 1, dtype=torch.bool), torch.zeros(1, 1, 1, 1, dtype=torch.bool)
    assert float(affinity_loss(one, yes, no, no)) == pytest.approx(0.0, abs=1e-4)
    assert float(affinity_loss(one, no, no, yes)) == pytest.approx(-math.log(1e-5) / 2, rel=1e-3)


# --------------------------------------------------------------------------------------------
# files, training and the refiner, on a tiny in-memory data set


class ToyDataset(SegmentationDataset):
    """Four 24x32 images: a bright square of class 3 (key 2) on a dark background."""

    classes = tuple(f"c{i}" for i in range(21))

    def __init__(self, root: Path) -> None:
        super().__init__(root, "train", [f"img_{i}" for i in range(4)])
        rng = np.random.default_rng(0)
        self.images = []
        for i in range(4):
            image = rng.integers(0, 40, (24, 32, 3), dtype=np.uint8)
            image[4 + i:16 + i, 6:18] = 220
            self.images.append(image)

    @property
    def has_masks(self) -> bool:
        return False

    def image_path(self, i: int) -> Path:
        return self.root / f"{self.names[i]}.jpg"

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def load_mask(self, i: int) -> None:
        return None

    def _read_labels(self, i: int) -> np.ndarray:
        labels = np.zeros(20, dtype=bool)
        labels[2] = True
        return labels


def write_toy_cams(dataset: ToyDataset, cache_dir: Path) -> None:
    cache = CamCache(cache_dir)
    for i, name in enumerate(dataset.names):
        high = torch.zeros(1, 24, 32)
        high[0, 4 + i:16 + i, 6:18] = 1.0
        high[0, 2 + i:4 + i, 6:18] = 0.2  # a weak fringe: ignored in the IR labels
        low = torch.nn.functional.interpolate(high[None], size=(6, 8), mode="area")[0]
        cache.put(name, ImageCams(torch.tensor([2]), high, low / low.max()))


def test_ir_label_files_training_and_refiner(tmp_path):
    dataset = ToyDataset(tmp_path)
    write_toy_cams(dataset, tmp_path / "cams")
    counts = make_ir_label_files(dataset, tmp_path / "cams", tmp_path / "ir", fg_threshold=0.3,
                                 bg_threshold=0.05, crf=False, progress=False, rank=1,
                                 world_size=2)
    assert counts == {"images": 2, "written": 2, "skipped": 0}
    counts = make_ir_label_files(dataset, tmp_path / "cams", tmp_path / "ir", progress=False)
    assert counts == {"images": 4, "written": 2, "skipped": 2}
    ir = read_label_png(tmp_path / "ir" / "img_1.png", 21)
    assert ir[5, 6] == 3 and ir[3, 6] == 255 and ir[0, 0] == 0 and ir[20, 30] == 0
    assert set(np.unique(ir)) == {0, 3, 255}

    cfg = PseudoConfig(irn_epochs=2, irn_batch_size=2, irn_radius=3, exp_times=3)
    cam_net = build_cam_net(20, backbone="tiny", weights="none", freeze_bn=False,
                            freeze_stem=False)
    result = train_irn(cam_net, dataset, tmp_path / "ir", cfg, crop_size=24, device="cpu",
                       out_dir=tmp_path / "irn", seed=0, progress=False)
    assert result["epochs"] == 2 and len(result["history"]) == 2
    assert math.isfinite(result["final_loss"])
    assert Path(result["checkpoint"]).is_file()
    again = train_irn(cam_net, dataset, tmp_path / "ir", cfg, crop_size=24, device="cpu",
                      out_dir=tmp_path / "irn", seed=0, progress=False)
    assert again["history"] == result["history"]  # resumed from the finished checkpoint

    net = load_boundary_net(cam_net, result["checkpoint"])
    assert isinstance(net, BoundaryNet) and not net.training
    refiner = make_irn_refiner(cam_net, result["checkpoint"], cfg, device="cpu")
    cams = CamCache(tmp_path / "cams").get("img_0")
    mask = refiner(dataset.load_image(0), cams, 0.15)
    assert mask.shape == (24, 32) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 3}
    assert mask[10, 12] == 3  # the CAM peak survives the walk
    with pytest.raises(DataError, match="stride-4"):
        refiner(dataset.load_image(0), ImageCams(cams.keys, cams.high_res, None), 0.15)


def test_semantic_labels_and_refiner_threshold():
    keys = torch.tensor([4, 9])
    cams = torch.zeros(2, 4, 5)
    cams[0, :, :2] = 1.0
    cams[1, :, 3:] = 0.5
    edge = torch.zeros(4, 5)
    edge[:, 2] = 1.0  # a wall between the two objects
    labels = semantic_labels(cams, keys, edge, (14, 19), beta=10.0, exp_times=2, bg_threshold=0.25)
    assert labels.shape == (14, 19) and labels.dtype == torch.uint8
    assert labels[5, 0] == 5 and labels[5, 18] == 10 and labels[5, 9] == 0
    empty = semantic_labels(cams[:0], keys[:0], edge, (14, 19), beta=10.0, exp_times=2,
                            bg_threshold=0.25)
    assert not empty.any()
    # a refiner with a fixed threshold ignores the caller's; without one it uses it
    cam_net = build_cam_net(20, backbone="tiny", weights="none", freeze_bn=False,
                            freeze_stem=False)
    net = build_boundary_net(cam_net)
    image = np.full((16, 20, 3), 128, np.uint8)
    low = torch.full((1, 4, 5), 0.5)
    image_cams = ImageCams(torch.tensor([0]), torch.full((1, 16, 20), 0.5), low)
    fixed = random_walk_refiner(net, beta=10.0, exp_times=2, device="cpu", bg_threshold=0.25)
    free = random_walk_refiner(net, beta=10.0, exp_times=2, device="cpu")
    mask = fixed(image, image_cams, 2.0)
    assert (mask == 1).any() and set(np.unique(mask)) <= {0, 1}  # the global max is 1 > 0.25
    np.testing.assert_array_equal(mask, fixed(image, image_cams, 0.0))
    assert not free(image, image_cams, 2.0).any()  # every value <= 1 < 2.0: background
