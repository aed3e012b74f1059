"""From cached CAMs to pseudo-masks: background threshold, pluggable refinement, palette PNGs on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .cam import CamCache, ImageCams
from .constants import voc_palette
from .data.base import SegmentationDataset, Transform, read_label_png
from .errors import CausalWSSSError, ConfigError, DataError
from .io import save_image
from .runtime import progress_bar

Refiner = Callable[[np.ndarray, ImageCams, float], np.ndarray]
"""``refiner(image uint8 (H, W, 3), cams, bg_threshold) -> uint8 (H, W)`` class labels.

``cams`` is the image's :class:`~causal_wsss.cam.ImageCams` from the CAM cache: ``keys``
``(K_pos,)`` the positive foreground classes (0-based, label = key + 1), ``high_res``
``(K_pos, H, W)`` CAMs divided by their maxima, ``stride4`` the stride-4 maps (IRNet's ``cam``).
"""


def cams_to_mask(cams: np.ndarray | torch.Tensor, keys: Sequence[int] | np.ndarray | torch.Tensor | None,
                 bg_threshold: float) -> np.ndarray | torch.Tensor:
    """Label map ``argmax [bg_threshold ; cams]`` (IRNet ``eval_cam``/``make_sem_seg_labels``).

    ``cams``: ``(K, H, W)`` or ``(B, K, H, W)`` CAMs normalised to [0, 1]; ``keys``: the
    0-based foreground class ids of the K channels, ``(K,)`` (or ``(B, K)`` for a batch), or
    ``None`` for channel k = foreground id k (all classes in order). A pixel is background (0) where ``max_k cam_k <=
    bg_threshold`` (ties go to background), else ``keys[argmax_k cam_k] + 1`` (first maximum on
    ties). Returns ``uint8 (H, W)`` / ``(B, H, W)``, a NumPy array for NumPy input.
    """
    as_numpy = isinstance(cams, np.ndarray)
    cams_t = torch.as_tensor(cams)
    if cams_t.dim() not in (3, 4) or not cams_t.dtype.is_floating_point:
        raise DataError(f"cams_to_mask: expected float CAMs of shape (K, H, W) or (B, K, H, W), "
                        f"got {cams_t.dtype} {tuple(cams_t.shape)}")
    batched = cams_t.dim() == 4
    if not batched:
        cams_t = cams_t.unsqueeze(0)  # (1, K, H, W)
    b, k = cams_t.shape[:2]
    if keys is None:
        keys_t = torch.arange(k, device=cams_t.device).expand(b, k)
    else:
        keys_t = torch.as_tensor(np.asarray(keys) if not torch.is_tensor(keys) else keys,
                                 device=cams_t.device).to(torch.int64)
        keys_t = keys_t.reshape(1, -1).expand(b, -1) if keys_t.dim() == 1 else keys_t
        if tuple(keys_t.shape) != (b, k):
            raise DataError(f"cams_to_mask: {tuple(keys_t.shape)} keys for CAMs of shape "
                            f"{tuple(cams.shape)}; expected one key per CAM channel")
        if k and (int(keys_t.min()) < 0 or int(keys_t.max()) > 253):
            raise DataError("cams_to_mask: keys must be 0-based foreground class ids in 0..253")
    if k == 0:
        labels = torch.zeros((b, *cams_t.shape[2:]), dtype=torch.uint8, device=cams_t.device)
    else:
        value, index = cams_t.max(dim=1)  # (B, H, W) each; first maximum on ties
        lut = torch.cat([keys_t.new_zeros(b, 1), keys_t + 1], dim=1)  # (B, K + 1)
        index = torch.where(value > bg_threshold, index + 1, torch.zeros_like(index))
        labels = torch.gather(lut, 1, index.flatten(1)).view_as(index).to(torch.uint8)  # (B, H, W)
    labels = labels if batched else labels[0]
    return labels.cpu().numpy() if as_numpy else labels


def import_densecrf() -> tuple[Any, Any]:
    """``(pydensecrf.densecrf, pydensecrf.utils)``; CausalWSSSError saying how to install them."""
    try:
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as crf_utils
    except ImportError as exc:
        raise CausalWSSSError(
            "the dense CRF needs the package pydensecrf (distributed as 'pydensecrf2'): "
            "pip install \"causal-wsss[crf]\"  (or use refine=none / pseudo.refine=none)") from exc
    return dcrf, crf_utils


def refine_crf(image: np.ndarray, probs: np.ndarray, *, iterations: int = 10,
               unary: str = "labels", gt_prob: float = 0.7, gaussian_sxy: float = 3,
               gaussian_compat: float = 3, bilateral_sxy: float = 50, bilateral_srgb: float = 5,
               bilateral_compat: float = 10) -> np.ndarray:
    """Fully connected CRF (Kraehenbuehl & Koltun 2011, pydensecrf) -> ``int64 (H, W)`` indices into ``probs``.

    ``image``: ``uint8 (H, W, 3)`` RGB; ``probs``: ``(C, H, W)`` scores. ``unary="labels"``
    (IRNet ``crf_inference_label``): the unary comes from ``argmax probs`` with ``gt_prob``
    confidence; ``unary="softmax"``: ``-log probs`` (``probs`` must then be probabilities).
    Defaults are IRNet's (method.md 4): 10 iterations, Gaussian kernel sxy 3 / compat 3,
    bilateral sxy 50 / srgb 5 / compat 10. DeepLab-v2's CRF is ``unary="softmax"``,
    ``gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4``.
    """
    dcrf, crf_utils = import_densecrf()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"refine_crf: expected a uint8 (H, W, 3) image, got {image.dtype} "
                        f"{image.shape}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise DataError(f"refine_crf: expected scores of shape (C, {image.shape[0]}, "
                        f"{image.shape[1]}), got {probs.shape}")
    n_labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    if unary == "labels":
        energy = crf_utils.unary_from_labels(np.argmax(probs, axis=0), n_labels, gt_prob=gt_prob,
                                             zero_unsure=False)
    elif unary == "softmax":
        energy = crf_utils.unary_from_softmax(probs.astype(np.float32))
    else:
        raise ConfigError(f"refine_crf: unary must be 'labels' or 'softmax', got {unary!r}")
    crf.setUnaryEnergy(np.ascontiguousarray(energy, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb,
                             rgbim=np.ascontiguousarray(image), compat=bilateral_compat)
    q = np.asarray(crf.inference(iterations)).reshape(n_labels, height, width)  # (C, H, W)
    return np.argmax(q, axis=0)


def refine_none(image: np.ndarray, cams: ImageCams, bg_threshold: float) -> np.ndarray:
    """No refinement: :func:`cams_to_mask` of the full-resolution CAMs."""
    return cams_to_mask(cams.high_res.float(), cams.keys, bg_threshold).numpy()


def refine_threshold_crf(image: np.ndarray, cams: ImageCams, bg_threshold: float) -> np.ndarray:
    """Threshold, then IRNet's label CRF over the image's classes (``cam_to_ir_label`` at one threshold)."""
    high = cams.high_res.float().numpy()  # (K_pos, H, W)
    scores = np.concatenate([np.full((1, *high.shape[1:]), bg_threshold, np.float32), high])
    index = refine_crf(image, scores)  # (H, W) in 0..K_pos; argmax ties go to background
    lut = np.concatenate([[0], cams.keys.numpy() + 1]).astype(np.uint8)
    return lut[index]


REFINERS: dict[str, Refiner] = {"none": refine_none, "crf": refine_threshold_crf}
"""Pseudo-mask refiners by name (``pseudo.refine``); the IRNet random walk registers ``"irn"``."""

_IN_WORKERS = {"none", "crf"}


def register_refiner(name: str, fn: Refiner, *, in_workers: bool = False) -> None:
    """Make ``fn`` available as ``make_pseudo_masks(..., refine=name)`` (replacing any older one).

    ``in_workers=True`` lets ``fn`` run inside DataLoader worker processes (CPU-only code such
    as the CRF); otherwise it runs in the calling process and the workers only load the inputs
    (needed for refiners that hold a CUDA model).
    """
    if not callable(fn):
        raise ConfigError(f"register_refiner('{name}'): expected a callable, got {type(fn).__name__}")
    REFINERS[name] = fn
    if in_workers:
        _IN_WORKERS.add(name)
    else:
        _IN_WORKERS.discard(name)


def _get_refiner(refine: str | Refiner) -> tuple[Refiner, bool]:
    """The refiner and whether it may run in DataLoader workers."""
    if callable(refine):
        return refine, False
    if refine not in REFINERS:
        hint = " (the IRNet stage registers it when it runs)" if refine == "irn" else ""
        raise ConfigError(f"config key 'pseudo.refine': unknown refiner '{refine}'{hint}; "
                          "expected one of " + ", ".join(sorted(REFINERS)))
    return REFINERS[refine], refine in _IN_WORKERS


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a ``uint8 (H, W)`` label map as a VOC-palette PNG (indices stored, colours for viewing), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(f"save_mask_png({path}): expected a uint8 (H, W) label map, got "
                        f"{mask.dtype} {mask.shape}")
    img = Image.fromarray(mask)
    img.putpalette(voc_palette().reshape(-1).tolist())
    save_image(path, img)


class _PseudoMaskJobs(Dataset):
    """One item per image still to do: its name, image and CAMs, or (with ``refine``) its saved name."""

    def __init__(self, dataset: SegmentationDataset, indices: list[int],
                 load: Callable[[str], ImageCams], refine: _RefineAndSave | None) -> None:
        self.dataset, self.indices, self.load, self.refine = dataset, indices, load, refine

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[str, np.ndarray, ImageCams] | str:
        i = self.indices[j]
        name = self.dataset.names[i]
        image, cams = self.dataset.load_image(i), self.load(name)  # (H, W, 3), (K_pos, H, W)
        if self.refine is None:
            return name, image, cams
        self.refine(name, image, cams)
        return name


class _RefineAndSave:
    """Refine one image's CAMs and write the PNG (a picklable object, for DataLoader workers)."""

    def __init__(self, refiner: Refiner, bg_threshold: float, out_dir: Path) -> None:
        self.refiner, self.bg_threshold, self.out_dir = refiner, bg_threshold, out_dir

    def __call__(self, name: str, image: np.ndarray, cams: ImageCams) -> None:
        mask = np.asarray(self.refiner(image, cams, self.bg_threshold))
        if mask.shape != image.shape[:2]:
            raise DataError(f"pseudo-mask of image '{name}' has shape {mask.shape} but the image "
                            f"is {image.shape[0]}x{image.shape[1]}; are the CAMs from this data set?")
        save_mask_png(self.out_dir / f"{name}.png", mask.astype(np.uint8))


def _first(batch: list) -> Any:
    return batch[0]


def make_pseudo_masks(dataset: SegmentationDataset, cam_dir_or_loader: str | os.PathLike | Callable[[str], ImageCams],
                      out_dir: str | os.PathLike, *, bg_threshold: float,
                      refine: str | Refiner = "none", progress: bool = True, rank: int = 0,
                      world_size: int = 1, num_workers: int = 0) -> dict[str, int]:
    """Write ``out_dir/<name>.png`` (VOC palette, labels 0..K-1) for every image of ``dataset``.

    CAMs come from the cache folder (:class:`causal_wsss.cam.CamCache`, ``<dir>/<name>.npz``)
    or from a callable ``name -> ImageCams``. ``refine`` is a :data:`REFINERS` name or a :data:`Refiner`.
    Rank ``r`` of ``world_size`` handles images ``r, r + world_size, ...``; images whose PNG
    exists are skipped, so an interrupted run resumes. ``num_workers > 0`` loads in DataLoader
    worker processes, and refines there too for refiners registered with ``in_workers=True``
    ("none", "crf"). Returns ``{"images", "written", "skipped"}`` for this rank.
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"make_pseudo_masks: rank {rank} outside world_size {world_size}")
    refiner, in_workers = _get_refiner(refine)
    if callable(cam_dir_or_loader):
        load = cam_dir_or_loader
    else:
        cam_dir = Path(cam_dir_or_loader)
        if not cam_dir.is_dir():
            raise DataError(f"CAM cache folder not found: {cam_dir}; run make_cams first")
        load = CamCache(cam_dir).get

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = list(range(rank, len(dataset), world_size))
    done = {p[:-4] for p in os.listdir(out_dir) if p.endswith(".png")}
    todo = [i for i in mine if dataset.names[i] not in done]
    refine_and_save = _RefineAndSave(refiner, bg_threshold, out_dir)
    jobs = _PseudoMaskJobs(dataset, todo, load, refine_and_save if in_workers else None)
    loader = DataLoader(jobs, batch_size=1, num_workers=num_workers, collate_fn=_first)
    for item in progress_bar(loader, desc="pseudo-masks", disable=not progress):
        if not in_workers:
            refine_and_save(*item)
    return {"images": len(mine), "written": len(todo), "skipped": len(mine) - len(todo)}


class PseudoMaskDataset(SegmentationDataset):
    """``base_dataset``'s images and image labels, with ``mask`` read from ``mask_dir/<name>.png``.

    Pseudo-masks replace the ground truth for training the segmentation network (CONTA README,
    method.md 4). ``load_mask`` raises :class:`DataError` naming a missing file.
    """

    def __init__(self, base_dataset: SegmentationDataset, mask_dir: str | os.PathLike,
                 transform: Transform | None = None) -> None:
        super().__init__(base_dataset.root, base_dataset.split, base_dataset.names, transform)
        self.base = base_dataset
        self.classes = base_dataset.classes
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DataError(f"pseudo-mask folder not found: {self.mask_dir}; run "
                            "make_pseudo_masks first")

    @property
    def has_masks(self) -> bool:
        return True

    def image_path(self, i: int) -> Path:
        return self.base.image_path(i)

    def load_image(self, i: int) -> np.ndarray:
        return self.base.load_image(i)

    def mask_path(self, i: int) -> Path:
        return self.mask_dir / f"{self.names[self._check_index(i)]}.png"

    def load_mask(self, i: int) -> np.ndarray:
        path = self.mask_path(i)
        if not path.is_file():
            raise DataError(f"pseudo-mask of image '{self.names[i]}' not found: {path}; expected "
                            f"one PNG per image in {self.mask_dir} (make_pseudo_masks writes them)")
        return read_label_png(path, self.num_classes)

    def label_matrix(self) -> np.ndarray:
        return self.base.label_matrix()

    def image_labels(self, i: int) -> np.ndarray:
        return self.base.image_labels(i)

    def _read_labels(self, i: int) -> np.ndarray:
        return self.base.image_labels(i)
