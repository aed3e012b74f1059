"""Data sets in their real layouts (VOC, COCO, the synthetic benchmark), transforms and statistics."""

from __future__ import annotations

from .base import SegmentationDataset
from .coco import COCOSegmentation
from .registry import DATASETS, build_dataset, dataset_names
from .voc import VOCSegmentation

__all__ = [
    "DATASETS",
    "COCOSegmentation",
    "SegmentationDataset",
    "VOCSegmentation",
    "build_dataset",
    "dataset_names",
]
