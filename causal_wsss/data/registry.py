"""Data sets by name: ``build_dataset("voc" | "coco" | "synthetic", root, split, ...)``."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import DataError
from .base import SegmentationDataset, Transform
from .coco import COCOSegmentation
from .synthetic import SyntheticVOC
from .voc import VOCSegmentation

Builder = Callable[..., SegmentationDataset]


def _build_voc(root: str | os.PathLike, split: str, transform: Transform | None,
               max_images: int) -> SegmentationDataset:
    return VOCSegmentation(root, split, transform=transform, max_images=max_images)


def _build_coco(root: str | os.PathLike, split: str, transform: Transform | None,
                max_images: int) -> SegmentationDataset:
    return COCOSegmentation(root, split, transform=transform, max_images=max_images)


def _build_synthetic(root: str | os.PathLike, split: str, transform: Transform | None,
                     max_images: int) -> SegmentationDataset:
    """The confounded synthetic benchmark: a VOC layout plus the sidecar of ``data.synthetic``."""
    return SyntheticVOC(root, split, transform=transform, max_images=max_images)


DATASETS: dict[str, Builder] = {
    "voc": _build_voc,
    "coco": _build_coco,
    "synthetic": _build_synthetic,
}
"""Registered data set builders; a new data set is one module plus one line here."""


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`build_dataset`."""
    return tuple(DATASETS)


def build_dataset(name: str, root: str | os.PathLike, split: str,
                  transform: Transform | None = None, max_images: int = 0) -> SegmentationDataset:
    """The data set ``name`` (``voc``, ``coco``, ``synthetic``) at ``root``, split ``split``."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; expected one of: {', '.join(DATASETS)}")
    return DATASETS[name](root, split, transform, max_images)
