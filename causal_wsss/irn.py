"""IRNet pseudo-mask refinement: confident IR labels from CAMs, the boundary network's inter-pixel affinity training, and the boundary-aware random walk (method.md sections 4 and 8)."""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .cam import CamCache, ImageCams
from .checkpoint import load_checkpoint
from .config import IRNET_WALK_GRID, IRNET_WALK_RADIUS, PseudoConfig, walk_step_spread
from .constants import IGNORE_INDEX
from .data.base import SegmentationDataset
from .data.transforms import RandomGeometry, normalize
from .errors import ConfigError, DataError
from .metrics import ConfusionMatrix
from .models.irn_net import BoundaryNet, build_boundary_net
from .pseudo_masks import (
    PseudoMaskDataset,
    Refiner,
    cams_to_mask,
    refine_none,
    refine_threshold_crf,
    save_mask_png,
)
from .runtime import DistInfo, get_dist, progress_bar
from .train import build_optimizer, fit, make_loader, poly_lambda

IRN_LR = 0.1
"""Learning rate of the boundary branch (IRNet ``irn_learning_rate``)."""

IRN_WEIGHT_DECAY = 1e-4
"""Weight decay of the boundary branch (IRNet ``irn_weight_decay``)."""

IRN_MOMENTUM = 1e-4
"""SGD momentum IRNet's PolyOptimizer really uses: its weight decay lands in the momentum slot (method.md 7.5)."""

IRN_SCALE_RANGE = (0.5, 1.5)
"""Random rescale range of IRNet's affinity training data (``rescale=(0.5, 1.5)``)."""

WALK_RADIUS = IRNET_WALK_RADIUS
"""Radius of the affinities used by the random walk (IRNet ``propagate_to_edge(radius=5)``)."""

CHECKPOINT_NAME = "irn.pt"


# --------------------------------------------------------------------------------------------
# inter-pixel relation labels (IRNet cam_to_ir_label)


def make_ir_labels(cams: ImageCams, image: np.ndarray | None = None, *,
                   fg_threshold: float = 0.30, bg_threshold: float = 0.05,
                   crf: bool = False) -> np.ndarray:
    """Confident foreground / background / ignore labels of one image (IRNet ``cam_to_ir_label``).

    Two label maps are made from the full-resolution CAMs ``cams.high_res`` (P, H, W):
    ``argmax [t ; cams]`` at ``t = fg_threshold`` and at ``t = bg_threshold`` (a pixel is
    background where every CAM is <= t), each optionally through IRNet's label CRF
    (:func:`causal_wsss.pseudo_masks.refine_crf`, needs pydensecrf and ``image`` uint8
    (H, W, 3)). Combined (method.md section 4): the fg-threshold map's class where it has one,
    background 0 where both maps are background, ignore 255 elsewhere.
    Returns uint8 (H, W) with values in {0, 255} U (keys + 1).
    """
    if not 0.0 <= bg_threshold <= fg_threshold:
        raise ConfigError(f"make_ir_labels: expected 0 <= bg_threshold ({bg_threshold}) <= "
                          f"fg_threshold ({fg_threshold}) (pseudo.conf_bg_threshold and "
                          "pseudo.conf_fg_threshold)")
    height, width = cams.size
    if crf and image is None:
        raise DataError("make_ir_labels(crf=True) needs the image, uint8 (H, W, 3)")
    if image is not None and tuple(image.shape) != (height, width, 3):
        raise DataError(f"make_ir_labels: image has shape {tuple(image.shape)} but the CAMs are "
                        f"{height}x{width}; expected ({height}, {width}, 3)")
    if cams.keys.numel() == 0:
        return np.zeros((height, width), dtype=np.uint8)
    label_fn = refine_threshold_crf if crf else refine_none
    fg = np.asarray(label_fn(image, cams, fg_threshold))  # (H, W) 0 or key + 1
    bg = np.asarray(label_fn(image, cams, bg_threshold))  # (H, W)
    conf = np.where(fg == 0, np.uint8(IGNORE_INDEX), fg)
    conf[(fg == 0) & (bg == 0)] = 0
    return conf.astype(np.uint8)


class _IrLabelJobs(Dataset):
    """One item per image still to label: loads image and CAMs, writes the PNG, returns the name."""

    def __init__(self, dataset: SegmentationDataset, indices: list[int], cam_dir: Path,
                 out_dir: Path, fg_threshold: float, bg_threshold: float, crf: bool) -> None:
        self.dataset, self.indices, self.cam_dir, self.out_dir = dataset, indices, cam_dir, out_dir
        self.fg_threshold, self.bg_threshold, self.crf = fg_threshold, bg_threshold, crf

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> str:
        i = self.indices[j]
        name = self.dataset.names[i]
        cams = CamCache(self.cam_dir).get(name)
        image = self.dataset.load_image(i)  # (H, W, 3)
        if cams.size != image.shape[:2]:
            raise DataError(f"CAMs of image '{name}' in {self.cam_dir} are {cams.size[0]}x"
                            f"{cams.size[1]} but the image is {image.shape[0]}x{image.shape[1]}; "
                            "are the CAMs from this data set?")
        labels = make_ir_labels(cams, image, fg_threshold=self.fg_threshold,
                                bg_threshold=self.bg_threshold, crf=self.crf)
        save_mask_png(self.out_dir / f"{name}.png", labels)
        return name


def make_ir_label_files(dataset: SegmentationDataset, cam_cache_dir: str | os.PathLike,
                        out_dir: str | os.PathLike, *, fg_threshold: float = 0.30,
                        bg_threshold: float = 0.05, crf: bool = False, progress: bool = True,
                        rank: int = 0, world_size: int = 1,
                        num_workers: int = 0) -> dict[str, int]:
    """Write ``out_dir/<name>.png`` IR labels (:func:`make_ir_labels`) for this rank's images.

    CAMs come from the cache ``cam_cache_dir/<name>.npz``. Rank ``r`` of ``world_size`` takes
    images ``r, r + world_size, ...``; PNGs are written atomically (VOC palette, 255 = ignore)
    and existing ones are skipped, so an interrupted run resumes. ``num_workers > 0`` does the
    work (CRF included) in DataLoader worker processes. Returns ``{"images", "written",
    "skipped"}`` for this rank.
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"make_ir_label_files: rank {rank} outside world_size {world_size}")
    cam_dir = Path(cam_cache_dir)
    if not cam_dir.is_dir():
        raise DataError(f"CAM cache folder not found: {cam_dir}; run make_cams first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {p[:-4] for p in os.listdir(out) if p.endswith(".png")}
    mine = list(range(rank, len(dataset), world_size))
    todo = [i for i in mine if dataset.names[i] not in done]
    jobs = _IrLabelJobs(dataset, todo, cam_dir, out, fg_threshold, bg_threshold, crf)
    loader = DataLoader(jobs, batch_size=None, num_workers=num_workers)
    for _ in progress_bar(loader, desc="IR labels", disable=not progress):
        pass
    return {"images": len(mine), "written": len(todo), "skipped": len(mine) - len(todo)}


# --------------------------------------------------------------------------------------------
# path indices and affinities (IRNet misc/indexing.py)


@dataclass(frozen=True)
class PathIndex:
    """Pixel pairs within a radius and the pixels on the line between them (IRNet ``PathIndex``).

    ``offsets``: (O, 2) int64 destinations (dy, dx) relative to the source, one per unordered
    pair: dy = 0 and 0 < dx < radius, or 0 < dy < radius with dy^2 + dx^2 < radius^2.
    ``coords``: (U, 2) int64, every pixel (qy, qx) lying on some path; a path holds the pixels of
    the offset's bounding box whose distance to the source-destination line is below 1, source
    and destination included. ``groups``: per path length L, ``(offset ids (n,), coord ids
    (n, L))`` into ``offsets`` and ``coords``.
    """

    radius: int
    offsets: torch.Tensor
    coords: torch.Tensor
    groups: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def num_offsets(self) -> int:
        return int(self.offsets.shape[0])

    def path(self, o: int) -> list[tuple[int, int]]:
        """The pixels (qy, qx) on the path of offset ``o``."""
        for off_ids, coord_ids in self.groups:
            hit = (off_ids == o).nonzero()
            if hit.numel():
                return [tuple(self.coords[c].tolist()) for c in coord_ids[int(hit[0, 0])]]
        raise IndexError(f"offset {o} out of range for {self.num_offsets} offsets")


@functools.lru_cache(maxsize=8)
def path_index(radius: int) -> PathIndex:
    """The :class:`PathIndex` of ``radius`` (IRNet ``get_all_dir_paths``; radius 10 for training, 5 for the walk)."""
    radius = int(radius)
    if radius < 2:
        raise ConfigError(f"path radius {radius}: expected >= 2 (pseudo.irn_radius; IRNet uses 10)")
    dirs = [(0, x) for x in range(1, radius)]
    dirs += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius)
             if x * x + y * y < radius * radius]
    coord_id: dict[tuple[int, int], int] = {}
    by_length: dict[int, list[tuple[int, list[int]]]] = {}
    for o, (dy, dx) in enumerate(dirs):
        length_sq = dy * dy + dx * dx
        path = [(y, x) for y in range(min(0, dy), max(0, dy) + 1)
                for x in range(min(0, dx), max(0, dx) + 1)
                if (dy * x - dx * y) ** 2 < length_sq]
        ids = [coord_id.setdefault(q, len(coord_id)) for q in path]
        by_length.setdefault(len(ids), []).append((o, ids))
    groups = tuple((torch.tensor([o for o, _ in items]), torch.tensor([ids for _, ids in items]))
                   for _, items in sorted(by_length.items()))
    return PathIndex(radius, torch.tensor(dirs, dtype=torch.int64),
                     torch.tensor(list(coord_id), dtype=torch.int64), groups)


def edge_to_affinity(edge: torch.Tensor, paths: PathIndex) -> torch.Tensor:
    """a(p, p + d) = 1 - max of the boundary map along the path from p to p + d (IRNet).

    edge: (B, h, w) boundary probabilities -> (B, O, h, w), channel o for ``paths.offsets[o]``.
    Pixels outside the map count as boundary 1, so pairs leaving the map get affinity 0. The
    maximum is located without gradients and the affinity gathered at it, so the gradient
    reaches the arg-max pixel (as IRNet's max-pooling) while only (B, O, h, w) indices are kept
    for the backward pass, not every pixel of every path.
    """
    if edge.dim() != 3:
        raise DataError(f"edge has shape {tuple(edge.shape)}; expected (B, h, w)")
    rf = paths.radius - 1
    batch, h, w = edge.shape
    padded = F.pad(edge, (rf, rf, 0, rf), value=1.0)  # (B, h + rf, w + 2 rf)
    row = w + 2 * rf
    coords = paths.coords.to(edge.device)
    with torch.no_grad():
        shifts = torch.stack([padded[:, qy:qy + h, rf + qx:rf + qx + w]
                              for qy, qx in paths.coords.tolist()], dim=1)  # (B, U, h, w)
        best = torch.empty((batch, paths.num_offsets, h, w), dtype=torch.int64, device=edge.device)
        for off_ids, coord_ids in paths.groups:
            coord_ids = coord_ids.to(edge.device)  # (n, L)
            arg = shifts[:, coord_ids].argmax(dim=2)  # (B, n, h, w) position on the path
            rows = torch.arange(coord_ids.shape[0], device=edge.device).view(1, -1, 1, 1)
            best[:, off_ids.to(edge.device)] = coord_ids[rows, arg]  # (B, n, h, w) coord ids
        base = (torch.arange(h, device=edge.device).view(h, 1) * row
                + torch.arange(w, device=edge.device).view(1, w))  # (h, w) flat source position
        step = coords[:, 0] * row + coords[:, 1] + rf  # (U,) flat shift of each path pixel
        index = base + step[best]  # (B, O, h, w)
    peak = padded.flatten(1).gather(1, index.flatten(1))  # (B, O * h * w)
    return 1.0 - peak.view(batch, paths.num_offsets, h, w)


def affinity_labels(labels: torch.Tensor, paths: PathIndex
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair labels from a label map on the stride-4 grid (IRNet ``GetAffinityLabelFromIndices``).

    labels: (B, h, w) integer class ids, 255 = ignore -> ``(bg_pos, fg_pos, neg)``, each bool
    (B, O, h, w) for the pairs (p, p + offsets[o]): positive when both ends carry the same
    label (background 0 / a foreground class), negative when they differ; pairs touching 255
    or leaving the map are in none of the three. Every pair inside the map counts (IRNet keeps
    only sources at least radius - 1 pixels from the left, right and bottom borders).
    """
    if labels.dim() != 3:
        raise DataError(f"labels have shape {tuple(labels.shape)}; expected (B, h, w)")
    rf = paths.radius - 1
    h, w = labels.shape[-2:]
    src = labels.long()
    padded = F.pad(src, (rf, rf, 0, rf), value=IGNORE_INDEX)  # (B, h + rf, w + 2 rf)
    dst = torch.stack([padded[:, dy:dy + h, rf + dx:rf + dx + w]
                       for dy, dx in paths.offsets.tolist()], dim=1)  # (B, O, h, w)
    src = src.unsqueeze(1)  # (B, 1, h, w)
    valid = (src != IGNORE_INDEX) & (dst != IGNORE_INDEX)
    equal = src == dst
    pos = equal & valid
    return pos & (src == 0), pos & (src > 0), ~equal & valid


def affinity_loss(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor,
                  neg: torch.Tensor) -> torch.Tensor:
    """IRNet's inter-pixel affinity loss (``train_irn``, edge terms only).

    L = ((L_bg+ + L_fg+) / 2 + L_-) / 2 with L_bg+ = mean over bg-positive pairs of
    -log(a + 1e-5), L_fg+ likewise over fg-positive pairs, L_- = mean over negative pairs of
    -log(1 + 1e-5 - a); each mean is sum / (count + 1e-5). aff and the masks: (B, O, h, w).
    """
    aff = aff.float()

    def masked_mean(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        mask = mask.to(values.dtype)
        return (mask * values).sum() / (mask.sum() + 1e-5)

    bg = masked_mean(bg_pos, -torch.log(aff + 1e-5))
    fg = masked_mean(fg_pos, -torch.log(aff + 1e-5))
    negative = masked_mean(neg, -torch.log(1.0 + 1e-5 - aff))
    return ((bg + fg) / 2 + negative) / 2


# --------------------------------------------------------------------------------------------
# training the boundary branch (IRNet train_irn)


class AffinityTransform(RandomGeometry):
    """IRNet's affinity-training augmentation: rescale by a factor drawn uniformly from
    ``scale_range`` (0.5-1.5), random ``crop_size`` crop (image padded with the mean colour, label
    with 255), horizontal flip. The sample's ``mask`` is the IR label map."""

    def __init__(self, crop_size: int, scale_range: tuple[float, float] = IRN_SCALE_RANGE,
                 flip: bool = True, seed: int = 0) -> None:
        super().__init__(crop_size, flip, seed)
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self.scale_range = (lo, hi)

    def target_size(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int]:
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand((), generator=generator))
        return max(1, round(height * scale)), max(1, round(width * scale))


def irn_epochs(cfg: PseudoConfig, batches_per_epoch: int) -> int:
    """Epochs of boundary training: ``cfg.irn_epochs``, or with ``cfg.irn_steps = N > 0``
    ``ceil(N / batches_per_epoch)``, so that about N SGD steps are taken whatever the data set's
    size (IRNet: 3 epochs of 331 batches, N = 993; :data:`causal_wsss.config.IRNET_IRN_STEPS`).

    >>> irn_epochs(PseudoConfig(irn_steps=993), 13)  # 400 images in batches of 32
    77
    """
    if cfg.irn_steps <= 0:
        return int(cfg.irn_epochs)
    return max(1, math.ceil(cfg.irn_steps / max(1, int(batches_per_epoch))))


def train_irn(cam_net: nn.Module, dataset: SegmentationDataset, ir_label_dir: str | os.PathLike,
              cfg: PseudoConfig, *, crop_size: int, device: torch.device | str,
              out_dir: str | os.PathLike, seed: int, progress: bool = True,
              dist_info: DistInfo | None = None, num_workers: int = 0, lr: float = IRN_LR,
              weight_decay: float = IRN_WEIGHT_DECAY, momentum: float = IRN_MOMENTUM,
              poly_power: float = 0.9, amp: bool = True,
              callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """Train the boundary branch on a frozen copy of ``cam_net``'s trunk (IRNet ``train_irn``).

    Samples: ``dataset``'s images with the IR labels ``ir_label_dir/<name>.png``
    (:func:`make_ir_label_files`), through :class:`AffinityTransform` (``crop_size``: 512 in the
    paper). Affinity labels come from the crop's label map taken every 4th pixel (IRNet's x0.25
    nearest downscale, the stride-4 grid) with path radius ``cfg.irn_radius``; loss
    :func:`affinity_loss`. SGD over the branch only, ``lr`` with a poly schedule (power
    ``poly_power``) over :func:`irn_epochs` epochs of batch ``cfg.irn_batch_size``; IRNet's
    weight decay 1e-4 and effective momentum 1e-4 by default. :func:`causal_wsss.train.fit`
    checkpoints ``out_dir/irn.pt`` after every epoch and resumes from it; DDP under
    ``dist_info``. Returns ``{"epochs", "steps", "final_loss", "history", "checkpoint"}``
    (JSON-ready);
    load the network with :func:`load_boundary_net`.
    """
    if int(crop_size) < 8:
        raise ConfigError(f"train_irn: crop_size {crop_size} is too small; expected >= 8 pixels")
    info = dist_info or get_dist()
    device = torch.device(device)
    paths = path_index(cfg.irn_radius)
    net = build_boundary_net(cam_net).to(device)
    data = PseudoMaskDataset(dataset, ir_label_dir, transform=AffinityTransform(crop_size,
                                                                                seed=seed))
    loader = make_loader(data, batch_size=cfg.irn_batch_size, seed=seed, num_workers=num_workers,
                         dist_info=info, pin_memory=device.type == "cuda")
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = build_optimizer([{"name": "edge", "params": params, "lr": lr}], name="sgd",
                                lr=lr, weight_decay=weight_decay, momentum=momentum)
    epochs = irn_epochs(cfg, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lambda(epochs * len(loader), poly_power))
    model: nn.Module = net
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                        else None)

    def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
        images = normalize(batch["image"], device)  # (B, 3, c, c)
        edge = torch.sigmoid(model(images).float())[:, 0]  # (B, c/4, c/4)
        labels = batch["mask"][:, ::4, ::4].to(device, non_blocking=True)  # (B, c/4, c/4)
        bg_pos, fg_pos, neg = affinity_labels(labels, paths)
        return affinity_loss(edge_to_affinity(edge, paths), bg_pos, fg_pos, neg)

    checkpoint = Path(out_dir) / CHECKPOINT_NAME
    config = {"pseudo": asdict(cfg), "crop_size": int(crop_size), "seed": int(seed), "lr": lr,
              "weight_decay": weight_decay, "momentum": momentum, "poly_power": poly_power}
    state = fit(model, loader, optimizer, epochs=epochs, loss_fn=loss_fn, device=device,
                scheduler=scheduler, checkpoint_path=checkpoint, config=config, amp=amp,
                callbacks=callbacks, progress=progress, desc="irn epoch", dist_info=info)
    final = state.history[-1]["loss"] if state.history else math.nan
    return {"epochs": epochs, "steps": epochs * len(loader), "final_loss": final,
            "history": state.history, "checkpoint": str(checkpoint)}


def load_boundary_net(cam_net: nn.Module, checkpoint: str | os.PathLike, *,
                      device: torch.device | str = "cpu") -> BoundaryNet:
    """The boundary network saved by :func:`train_irn` (built on ``cam_net``'s architecture), in eval mode on ``device``."""
    net = build_boundary_net(cam_net)
    load_checkpoint(checkpoint, model=net, map_location="cpu")
    return net.to(device).eval()


# --------------------------------------------------------------------------------------------
# random walk (IRNet make_sem_seg_labels)


def _window_weights(boundary: torch.Tensor, *, beta: float, radius: int) -> torch.Tensor:
    """Row p of D^-1 A over the (2r-1) x (2r-1) window around p: (h, w) -> (K, h, w).

    Channel k holds A[p, p + o_k] / deg(p), o_k = (k // (2r-1) - (r-1), k % (2r-1) - (r-1)).
    A is IRNet's: a(p, q)^beta for the pairs within ``radius`` (:func:`edge_to_affinity`, both
    orders), 1 on the diagonal, 0 elsewhere (and for neighbours outside the map).
    """
    paths = path_index(radius)
    rf = radius - 1
    side = 2 * rf + 1
    h, w = boundary.shape
    aff = edge_to_affinity(boundary.unsqueeze(0), paths)[0].pow(beta)  # (O, h, w) A[p, p + d]
    padded = F.pad(aff, (rf, rf, rf, 0))  # (O, h + rf, w + 2 rf)
    reverse = torch.stack([padded[o, rf - dy:rf - dy + h, rf - dx:rf - dx + w]
                           for o, (dy, dx) in enumerate(paths.offsets.tolist())])  # A[p, p - d]
    dy, dx = paths.offsets[:, 0], paths.offsets[:, 1]
    weights = boundary.new_zeros((side * side, h, w))
    weights[rf * side + rf] = 1.0
    weights[((rf + dy) * side + rf + dx).to(boundary.device)] = aff
    weights[((rf - dy) * side + rf - dx).to(boundary.device)] = reverse
    return weights / weights.sum(0, keepdim=True)


def transition_matrix(boundary: torch.Tensor, *, beta: float, radius: int = WALK_RADIUS
                      ) -> torch.Tensor:
    """The random walk's transition D^-1 A as a sparse CSR matrix (h w, h w), row-stochastic.

    boundary: (h, w) in [0, 1]. A[p, q] = (1 - max boundary on the path p-q)^beta for
    0 < |p - q| < ``radius`` (IRNet ``edge_to_affinity``, radius 5 for the walk), symmetric,
    A[p, p] = 1, deg(p) = sum_q A[p, q]; pixels in row-major order. IRNet's column-normalised
    T = A D^-1 is its transpose: x T = (D^-1 A x^T)^T. About 69 entries per row for radius 5.
    """
    h, w = boundary.shape
    rf = radius - 1
    side = 2 * rf + 1
    weights = _window_weights(boundary, beta=beta, radius=radius).view(side * side, h * w)
    dev, idx = boundary.device, torch.int32  # int32 indices: half the memory of int64
    ys = torch.arange(h, device=dev, dtype=idx).repeat_interleave(w)  # (N,)
    xs = torch.arange(w, device=dev, dtype=idx).repeat(h)  # (N,)
    oy = torch.arange(-rf, rf + 1, device=dev, dtype=idx).repeat_interleave(side).view(-1, 1)
    ox = torch.arange(-rf, rf + 1, device=dev, dtype=idx).repeat(side).view(-1, 1)  # (K, 1)
    ty, tx = ys + oy, xs + ox  # (K, N)
    keep = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w) & (weights != 0)  # (K, N)
    # row-major (pixel, window) order: rows ascending, columns ascending within a row
    keep, cols, vals = keep.T, (ty * w + tx).T, weights.T  # (N, K)
    crow = F.pad(keep.sum(1, dtype=idx).cumsum(0, dtype=idx), (1, 0))  # (N + 1,)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols[keep], vals[keep], (h * w, h * w),
                                       check_invariants=False)


def random_walk(cams_stride4: torch.Tensor, boundary: torch.Tensor, *, beta: float,
                exp_times: int, radius: int = WALK_RADIUS) -> torch.Tensor:
    """Boundary-aware random walk of the stride-4 CAMs (IRNet ``propagate_to_edge``).

    cams_stride4: (P, h, w); boundary: (h, w) in [0, 1] -> (P, h, w) propagated maps.
    x_0 = cams * (1 - boundary); x_{t+1} = D^-1 A x_t (:func:`transition_matrix`),
    2^exp_times steps, all classes at once. Equal to IRNet's x T^(2^exp_times) with
    T = A / colsum(A) squared exp_times times, but the (hw x hw) dense matrix is never formed:
    each step is one sparse (CSR) x dense product, so memory stays O(69 h w) for radius 5,
    about 10 MB for a 500x375 image. Computed in the dtype of ``cams_stride4`` (float32 or
    float64) on its device.
    """
    if cams_stride4.dim() != 3 or not cams_stride4.is_floating_point():
        raise DataError(f"random_walk: cams have shape {tuple(cams_stride4.shape)} and dtype "
                        f"{cams_stride4.dtype}; expected float (P, h, w)")
    if tuple(boundary.shape) != tuple(cams_stride4.shape[-2:]):
        raise DataError(f"random_walk: boundary map {tuple(boundary.shape)} and stride-4 CAMs "
                        f"{tuple(cams_stride4.shape[-2:])} differ; expected the same (h, w)")
    if int(exp_times) < 0 or beta <= 0:
        raise ConfigError(f"random_walk: exp_times={exp_times} must be >= 0 and beta={beta} > 0 "
                          "(pseudo.exp_times, pseudo.beta)")
    n, h, w = cams_stride4.shape
    boundary = boundary.to(cams_stride4.device, cams_stride4.dtype)
    trans = transition_matrix(boundary, beta=beta, radius=radius)  # (h w, h w) sparse
    x = (cams_stride4 * (1 - boundary)).view(n, h * w).T.contiguous()  # (h w, P)
    for _ in range(2 ** int(exp_times)):
        x = trans @ x  # (h w, P)
    return x.T.reshape(n, h, w)


def semantic_labels(cams_stride4: torch.Tensor, keys: torch.Tensor, boundary: torch.Tensor,
                    size: tuple[int, int], *, beta: float, exp_times: int, bg_threshold: float,
                    radius: int = WALK_RADIUS) -> torch.Tensor:
    """IRNet's semantic pseudo-mask of one image (``make_sem_seg_labels``).

    :func:`random_walk` of the stride-4 CAMs (P, h, w), bilinear x4 upsampling cropped to
    ``size`` = (H, W), division by the global maximum over classes and pixels, a constant
    background channel ``bg_threshold`` (0.25), argmax, labels keys + 1
    (:func:`causal_wsss.pseudo_masks.cams_to_mask`; ties go to background). As IRNet, the walk
    has no background channel. -> uint8 (H, W) on the CAMs' device.
    """
    if keys.numel() == 0:
        return torch.zeros(size, dtype=torch.uint8, device=cams_stride4.device)
    walked = random_walk(cams_stride4, boundary, beta=beta, exp_times=exp_times, radius=radius)
    return stride4_to_labels(walked, keys, size, bg_threshold=bg_threshold)


def stride4_to_labels(maps: torch.Tensor, keys: torch.Tensor, size: tuple[int, int], *,
                      bg_threshold: float) -> torch.Tensor:
    """The end of IRNet's ``make_sem_seg_labels`` without the walk: stride-4 maps (P, h, w)
    upsampled bilinearly x4 and cropped to ``size`` = (H, W), divided by their global maximum,
    then a background channel ``bg_threshold`` and argmax -> uint8 (H, W) labels keys + 1.
    :func:`semantic_labels` is this applied to the walked maps."""
    height, width = size
    if keys.numel() == 0:
        return torch.zeros(size, dtype=torch.uint8, device=maps.device)
    up = F.interpolate(maps.unsqueeze(1), scale_factor=4, mode="bilinear",
                       align_corners=False)[:, 0, :height, :width]  # (P, H, W)
    peak = up.max()
    if peak > 0:
        up = up / peak
    return cams_to_mask(up, keys, bg_threshold)


def boundary_map(model: BoundaryNet, image: np.ndarray, *, device: torch.device | str
                 ) -> torch.Tensor:
    """Boundary probabilities of one image: sigmoid of the mean logit of the image and its mirror
    image (mirrored back), at scale 1.0 (IRNet ``EdgeDisplacement``).

    image: uint8 (H, W, 3) -> float32 (ceil(H/4), ceil(W/4)) on ``device``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"boundary_map: expected a uint8 (H, W, 3) image, got {image.dtype} "
                        f"{image.shape}")
    x = normalize(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                  device)  # (3, H, W)
    x = torch.stack([x, x.flip(-1)])  # (2, 3, H, W)
    with torch.no_grad():
        logits = model(x)[:, 0].float()  # (2, h, w)
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def walk_params(grid: tuple[int, int], reach: float) -> tuple[int, int]:
    """``(radius, exp_times)`` of a random walk whose reach is ``reach`` times the long side of
    the (h, w) stride-4 grid (``pseudo.walk_reach``, :class:`causal_wsss.config.PseudoConfig`).

    With L = max(h, w): radius ``max(2, round(5 L / 125))`` (IRNet's radius 5 on its 125-cell
    VOC grid, scaled) and ``exp_times = max(0, round(log2((reach L / s)^2)))`` with ``s`` the
    per-axis spread of one boundary-free step (:func:`causal_wsss.config.walk_step_spread`):
    2^exp_times steps spread a point by ``s 2^(exp_times / 2)``, about ``reach L`` cells.

    >>> from causal_wsss.config import IRNET_WALK_REACH
    >>> walk_params((94, 125), IRNET_WALK_REACH)  # a VOC image: IRNet's radius 5, 2^8 steps
    (5, 8)
    >>> walk_params((60, 73), IRNET_WALK_REACH)  # the 291x239 px benchmark images
    (3, 8)
    """
    if reach <= 0:
        raise ConfigError(f"walk_params: reach {reach} must be > 0 (pseudo.walk_reach)")
    long = max(int(grid[0]), int(grid[1]), 1)
    radius = max(2, round(IRNET_WALK_RADIUS * long / IRNET_WALK_GRID))
    steps = (reach * long / walk_step_spread(radius)) ** 2
    exp_times = max(0, round(math.log2(steps))) if steps >= 1 else 0
    return radius, exp_times


def walk_settings(cfg: PseudoConfig, grid: tuple[int, int]) -> tuple[int, int]:
    """``(radius, exp_times)`` of the walk on an (h, w) grid under ``cfg``: :func:`walk_params`
    when ``cfg.walk_reach > 0``, else IRNet's radius 5 and ``cfg.exp_times``."""
    if cfg.walk_reach > 0:
        return walk_params(grid, cfg.walk_reach)
    return WALK_RADIUS, int(cfg.exp_times)


def walk_reach_cells(radius: int, exp_times: int) -> float:
    """Per-axis standard deviation, in grid cells, of ``2^exp_times`` boundary-free walk steps
    at ``radius``: the distance over which the walk mixes CAM values."""
    return walk_step_spread(radius) * 2 ** (int(exp_times) / 2)


def random_walk_refiner(model: BoundaryNet, *, beta: float, exp_times: int,
                        radius: int = WALK_RADIUS, device: torch.device | str,
                        bg_threshold: float | None = None, reach: float = 0.0) -> Refiner:
    """A pseudo-mask refiner (:data:`causal_wsss.pseudo_masks.Refiner`) doing IRNet's random walk.

    ``refiner(image uint8 (H, W, 3), cams, t) -> uint8 (H, W)``: :func:`boundary_map` of the image,
    then :func:`semantic_labels` of ``cams.stride4`` with background threshold ``bg_threshold``
    when given (IRNet's ``sem_seg_bg_threshold`` 0.25), else the ``t`` passed by the caller.
    ``reach > 0`` replaces ``exp_times`` and ``radius`` by :func:`walk_params` of each image's
    grid. It holds the model on ``device``, so register it with ``in_workers=False``.
    """
    device = torch.device(device)
    model = model.to(device).eval()

    def refine(image: np.ndarray, cams: ImageCams, threshold: float) -> np.ndarray:
        height, width = image.shape[:2]
        grid = (math.ceil(height / 4), math.ceil(width / 4))
        if cams.size != (height, width):
            raise DataError(f"random walk: CAMs are {cams.size[0]}x{cams.size[1]} but the image "
                            f"is {height}x{width}; are the CAMs from this data set?")
        if cams.stride4 is None or tuple(cams.stride4.shape[-2:]) != grid:
            found = None if cams.stride4 is None else tuple(cams.stride4.shape)
            raise DataError(f"random walk needs the stride-4 CAMs (P, {grid[0]}, {grid[1]}) of the "
                            f"cache (IRNet's 'cam'), found {found}; run make_cams with stride4")
        edge = boundary_map(model, image, device=device)  # (h, w)
        r, e = walk_params(grid, reach) if reach > 0 else (radius, exp_times)
        labels = semantic_labels(cams.stride4.to(device).float(), cams.keys, edge,
                                 (height, width), beta=beta, exp_times=e,
                                 bg_threshold=threshold if bg_threshold is None else bg_threshold,
                                 radius=r)
        return labels.cpu().numpy()

    return refine


def make_irn_refiner(cam_net: nn.Module, checkpoint: str | os.PathLike, cfg: PseudoConfig, *,
                     device: torch.device | str, radius: int = WALK_RADIUS) -> Refiner:
    """The ``"irn"`` refiner of a run: the boundary net of ``checkpoint`` (:func:`train_irn`),
    random walk with ``cfg.beta``, ``cfg.exp_times`` and radius 5, or with ``cfg.walk_reach > 0``
    the radius and exp_times of :func:`walk_params` per image, and background threshold
    ``cfg.sem_seg_bg_threshold`` (whatever threshold :func:`make_pseudo_masks` passes).

    Wire it with ``register_refiner("irn", make_irn_refiner(...), in_workers=False)``.
    """
    net = load_boundary_net(cam_net, checkpoint, device=device)
    return random_walk_refiner(net, beta=cfg.beta, exp_times=cfg.exp_times, radius=radius,
                               device=device, bg_threshold=cfg.sem_seg_bg_threshold,
                               reach=cfg.walk_reach)


# --------------------------------------------------------------------------------------------
# diagnostics with the ground truth (scripts/tune_irn_thresholds.py --oracle)


def _stride4_labels(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) label map -> (ceil(H/4), ceil(W/4)) int64: the label covering most of each 4x4
    block (ties to the smaller label), ignore (255) counted as background 0."""
    labels = torch.as_tensor(np.asarray(mask)).long().clone()
    labels[labels == IGNORE_INDEX] = 0
    values = torch.unique(labels)  # ascending
    share = _block_shares(labels, values)  # (V, h, w)
    return values[share.argmax(0)]


def _block_shares(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Share of each 4x4 block of (H, W) ``labels`` equal to each of ``values`` -> (V, h, w);
    the blocks of the last row and column are completed by repeating the edge pixels."""
    height, width = labels.shape
    if values.numel() == 0:
        return torch.zeros((0, math.ceil(height / 4), math.ceil(width / 4)))
    ind = torch.stack([(labels == int(v)).float() for v in values.tolist()])  # (V, H, W)
    ind = F.pad(ind[None], (0, (-width) % 4, 0, (-height) % 4), mode="replicate")[0]
    return F.avg_pool2d(ind[None], 4)[0]


def ground_truth_boundary(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The walk's boundary map read off a ground-truth label map, on the *outer* side of objects.

    mask: (H, W) labels (0 background, 255 ignore, counted as background), taken on the stride-4
    grid (each cell: the label covering most of its 4x4 block) -> float32 (ceil(H/4),
    ceil(W/4)) in {0, 1}. A cell is boundary when
    one of its 8 neighbours has a larger label: the background ring just outside each object,
    and where two objects touch, a one-cell strip of the one with the smaller label. Every
    4-connected step from one label to another meets a boundary cell, so the walk cannot cross,
    and since the walk zeroes the CAMs on boundary cells, no object cell is lost (except that
    strip). The image border is not a boundary (the walk never leaves the map anyway).
    """
    labels = _stride4_labels(mask).float()  # (h, w)
    biggest = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0]  # -inf padding
    return (biggest > labels).float()


def perfect_cams(mask: np.ndarray | torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Stride-4 "CAMs" that are the ground truth: for each key k, the share of the 4x4 block of
    each grid cell labelled k + 1 (area average) -> float32 (P, ceil(H/4), ceil(W/4))."""
    return _block_shares(torch.as_tensor(np.asarray(mask)).long(), keys.long() + 1)


def oracle_walk_labels(mask: np.ndarray, keys: torch.Tensor, cams_stride4: torch.Tensor | None,
                       cfg: PseudoConfig, *, bg_threshold: float, walk: bool = True
                       ) -> torch.Tensor:
    """Pseudo-mask of one image from the random walk on :func:`ground_truth_boundary`.

    ``cams_stride4`` (P, h, w), or None for :func:`perfect_cams` (the ground-truth indicators
    of ``keys``); the walk's radius and steps are :func:`walk_settings` of ``cfg`` for this grid.
    ``walk=False`` skips the walk (the same upsampling and threshold,
    :func:`stride4_to_labels`): the reference the walk on perfect CAMs must come close to.
    -> uint8 (H, W).
    """
    height, width = mask.shape
    maps = perfect_cams(mask, keys) if cams_stride4 is None else cams_stride4.float()
    if not walk:
        return stride4_to_labels(maps, keys, (height, width), bg_threshold=bg_threshold)
    boundary = ground_truth_boundary(mask)
    radius, exp_times = walk_settings(cfg, tuple(boundary.shape))
    return semantic_labels(maps, keys, boundary, (height, width), beta=cfg.beta,
                           exp_times=exp_times, bg_threshold=bg_threshold, radius=radius)


def oracle_scores(dataset: SegmentationDataset, cfg: PseudoConfig, thresholds: Iterable[float],
                  *, cam_dir: str | os.PathLike | None = None, max_images: int = 0,
                  progress: bool = True) -> dict[str, dict[float, float]]:
    """mIoU (percent, over the data set's classes) of the walk on ground-truth boundaries
    (:func:`oracle_walk_labels`), at each background threshold.

    ``cam_dir`` None: perfect CAMs, the sanity check; otherwise the cached CAMs' stride-4 maps.
    Returns ``{"walk": {t: mIoU}, "no_walk": {t: mIoU}}`` over the first ``max_images``
    images (0: all); "no_walk" upsamples and thresholds the same stride-4 maps without a walk.
    """
    thresholds = [float(t) for t in thresholds]
    classes = getattr(dataset, "used_classes", None)
    conf = {(kind, t): ConfusionMatrix(dataset.num_classes, classes=classes)
            for kind in ("walk", "no_walk") for t in thresholds}
    cache = CamCache(cam_dir) if cam_dir is not None else None
    count = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    desc = "oracle walk" + (" (perfect CAMs)" if cache is None else "")
    for i in progress_bar(range(count), desc=desc, disable=not progress):
        mask = dataset.load_mask(i)
        target = torch.from_numpy(mask.astype(np.int64))
        if cache is None:
            keys = torch.tensor([int(v) - 1 for v in np.unique(mask) if 0 < v < IGNORE_INDEX],
                                dtype=torch.int64)
            maps = None
        else:
            cams = cache.get(dataset.names[i])
            if cams.stride4 is None:
                raise DataError(f"oracle walk: the CAMs of '{dataset.names[i]}' in {cam_dir} "
                                "have no stride-4 maps; run make_cams with stride4")
            keys, maps = cams.keys, cams.stride4
        maps = perfect_cams(mask, keys) if maps is None else maps.float()
        walked = maps
        if keys.numel():
            boundary = ground_truth_boundary(mask)
            radius, exp_times = walk_settings(cfg, tuple(boundary.shape))
            walked = random_walk(maps, boundary, beta=cfg.beta, exp_times=exp_times,
                                 radius=radius)
        for t in thresholds:  # as oracle_walk_labels, with one walk for every threshold
            for kind, source in (("walk", walked), ("no_walk", maps)):
                labels = stride4_to_labels(source, keys, mask.shape, bg_threshold=t)
                conf[kind, t].update(labels.long(), target)
    return {kind: {t: 100 * conf[kind, t].compute().miou for t in thresholds}
            for kind in ("walk", "no_walk")}
