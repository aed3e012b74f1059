"""MS-COCO 2014 as semantic segmentation: 81 labels, masks rendered from the instance annotations."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..constants import COCO_CATEGORIES, COCO_CLASSES, COCO_ID_TO_LABEL, IGNORE_INDEX
from ..errors import DataError
from .base import SegmentationDataset, Transform

_SPLITS = {"train": "train2014", "train2014": "train2014", "val": "val2014", "val2014": "val2014"}


def coco_mask_api() -> ModuleType:
    """``pycocotools.mask``, imported on first use (an optional dependency)."""
    try:
        from pycocotools import mask as mask_api
    except ImportError as exc:
        raise DataError('MS-COCO needs pycocotools, which is not installed; run: '
                        'pip install "causal-wsss[coco]"') from exc
    return mask_api


class COCOSegmentation(SegmentationDataset):
    """MS-COCO 2014 ``train`` or ``val`` as 81-label semantic segmentation.

    ``root`` holds ``train2014/``, ``val2014/`` and ``annotations/instances_{train,val}2014.json``;
    ``split`` is ``train``/``val`` (or ``train2014``/``val2014``). Category ids (1..90 with gaps)
    map to labels 1..80 with ``constants.COCO_ID_TO_LABEL``; names are ``constants.COCO_CLASSES``.

    Masks are drawn from the instance annotations (polygons, compressed and uncompressed RLE;
    polygons of fewer than 3 points, which have no area, are skipped):

    - background (no annotation) is 0;
    - crowd regions (``iscrowd=1``) are drawn first as ``IGNORE_INDEX``, like COCO's own
      evaluation, which ignores detections on crowd regions; a non-crowd instance drawn later
      overwrites them, so only crowd pixels covered by no ordinary instance are ignored;
    - ordinary instances are drawn by decreasing ``area``, so where instances overlap the
      smaller one wins (it would otherwise vanish under a larger one).

    Crowd classes count in the image-level labels. ``drop_unlabelled`` drops images without any
    annotation; ``None`` (default) drops them on ``train`` (82,783 -> 82,081 images, the usual
    WSSS training list: a classifier learns nothing class-specific from them) and keeps them on
    ``val`` (40,504 images, as in method.md). The JSON is read once; each image's annotations are
    kept as one packed byte string, so DataLoader workers share a flat buffer instead of millions
    of Python objects. ``max_images > 0`` keeps the first ``max_images`` images by image id.
    """

    classes = COCO_CLASSES

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Transform | None = None, max_images: int = 0, *,
                 drop_unlabelled: bool | None = None) -> None:
        if max_images < 0:
            raise DataError(f"max_images must be >= 0 (0 = all), got {max_images}")
        if split not in _SPLITS:
            raise DataError(f"unknown COCO split '{split}'; expected one of: "
                            + ", ".join(_SPLITS))
        self._mask_api = coco_mask_api()
        root = Path(root).expanduser()
        year_split = _SPLITS[split]
        image_dir = root / year_split
        ann_path = root / "annotations" / f"instances_{year_split}.json"
        missing = [p for p in (image_dir, ann_path) if not p.exists()]
        if missing:
            raise DataError(f"MS-COCO 2014 '{split}' not found under {root}: missing "
                            f"{', '.join(str(p) for p in missing)}; expected root to hold "
                            "train2014/, val2014/ and annotations/instances_{train,val}2014.json")
        if drop_unlabelled is None:
            drop_unlabelled = year_split == "train2014"

        images, per_image = _read_instances(ann_path)
        if not images:
            raise DataError(f"COCO annotations {ann_path} list no images ('images' is empty); "
                            "expected at least one image entry")
        keep = [k for k, img in enumerate(images) if per_image[img["id"]] or not drop_unlabelled]
        if not keep:
            raise DataError(f"COCO annotations {ann_path}: none of its {len(images)} images has "
                            f"an annotation, and images without one are left out of '{split}'; "
                            "expected at least one annotated image")
        if max_images:
            keep = keep[:max_images]
        images = [images[k] for k in keep]
        names = [Path(img["file_name"]).stem for img in images]
        super().__init__(root, split, names, transform)
        self.image_dir = image_dir
        self.annotation_path = ann_path
        self.image_ids = [int(img["id"]) for img in images]
        self.file_names = [str(img["file_name"]) for img in images]
        self.sizes = np.array([(img["height"], img["width"]) for img in images],
                              dtype=np.int64).reshape(-1, 2)  # (N, 2) = (H, W)

        labels = np.zeros((len(images), self.num_classes - 1), dtype=bool)  # (N, K-1)
        blobs = []
        for row, img in enumerate(images):
            records = per_image[img["id"]]
            for label, _, _, _ in records:
                labels[row, label - 1] = True
            # crowd first, then decreasing area: later (smaller) instances overwrite earlier ones
            records.sort(key=lambda r: (-r[1], -r[2]))
            blobs.append(json.dumps(records, separators=(",", ":")).encode())
        labels.flags.writeable = False
        self._label_matrix = labels
        self._offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)  # (N + 1,)
        self._packed = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    @property
    def has_masks(self) -> bool:
        return True

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.file_names[i]

    def _read_labels(self, i: int) -> np.ndarray:
        return self._label_matrix[i]

    def annotations(self, i: int) -> list[tuple[int, bool, float, Any]]:
        """Image ``i``'s instances as ``(label, iscrowd, area, segmentation)`` in drawing order."""
        i = self._check_index(i)
        blob = self._packed[self._offsets[i]:self._offsets[i + 1]].tobytes()
        return [(int(a), bool(c), float(s), seg) for a, c, s, seg in json.loads(blob)]

    def load_mask(self, i: int) -> np.ndarray:
        """Semantic mask ``uint8 (H, W)`` rendered from the instances (see the class docstring)."""
        i = self._check_index(i)
        height, width = (int(v) for v in self.sizes[i])
        mask = np.zeros((height, width), dtype=np.uint8)  # (H, W)
        with warnings.catch_warnings():
            # pycocotools' Cython decoder predates numpy 2's __array__(copy=...) protocol
            warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept",
                                    category=DeprecationWarning)
            for label, iscrowd, _, segmentation in self.annotations(i):
                region = self._decode(segmentation, height, width, i)  # (H, W) bool
                mask[region] = IGNORE_INDEX if iscrowd else label
        return mask

    def _decode(self, segmentation: Any, height: int, width: int, i: int) -> np.ndarray:
        api = self._mask_api
        try:
            if isinstance(segmentation, list):  # polygons
                # a polygon of fewer than 3 points has no area (and pycocotools misreads 4 values)
                polygons = [p for p in segmentation if len(p) >= 6]
                if not polygons:
                    return np.zeros((height, width), dtype=bool)
                rle = api.merge(api.frPyObjects(polygons, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = api.frPyObjects(segmentation, height, width)
            else:  # compressed RLE
                rle = segmentation
            region = api.decode(rle)  # (H, W) uint8
        except Exception as exc:  # pycocotools raises bare Exception on malformed input
            raise DataError(f"{self.annotation_path}: cannot decode a segmentation of image "
                            f"{self.file_names[i]}: {exc}; expected polygons or RLE") from exc
        if region.shape != (height, width):
            raise DataError(f"{self.annotation_path}: a segmentation of image "
                            f"{self.file_names[i]} is {region.shape[0]}x{region.shape[1]}; "
                            f"expected the image size {height}x{width}")
        return region.astype(bool)


def _check_file_name(path: Path, img: dict) -> None:
    """Refuse a ``file_name`` that is not a relative path inside the image folder."""
    name = img["file_name"]
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"COCO annotations {path}: image {img['id']} has file_name {name!r}; "
                        "expected the name of a file in the image folder (train2014/, val2014/)")
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or re.match(r"[A-Za-z]:", norm):
        raise DataError(f"COCO annotations {path}: image {img['id']} has file_name {name!r}, "
                        "which points outside the image folder; expected a file name inside it "
                        "(train2014/, val2014/), such as COCO_train2014_000000000009.jpg")


def _read_instances(path: Path) -> tuple[list[dict], dict[Any, list[list]]]:
    """Images sorted by id and, per image id, ``[label, iscrowd, area, segmentation]`` records."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read COCO annotations {path}: {exc}; expected an "
                        "instances_*.json file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError(f"COCO annotations {path} lack an 'images' or 'annotations' list; "
                        "expected an instances_*.json file")
    names = dict(COCO_CATEGORIES)
    categories = data.get("categories", [])
    if not isinstance(categories, list):
        raise DataError(f"COCO annotations {path}: 'categories' is {categories!r}; expected a "
                        'list of {"id": ..., "name": ...} objects')
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) \
                or not isinstance(cat.get("name"), str):
            raise DataError(f"COCO annotations {path}: 'categories' holds {cat!r}; expected "
                            '{"id": <int>, "name": <str>} objects')
        cid, name = cat["id"], cat["name"]
        if cid in names and name != names[cid]:
            raise DataError(f"COCO annotations {path}: category id {cid} is '{name}'; expected "
                            f"'{names[cid]}' (the 80 COCO 2014 categories)")
    try:
        images = sorted(data["images"], key=lambda img: img["id"])
        for img in images:
            lacking = {"file_name", "height", "width"} - img.keys()
            if lacking:
                raise DataError(f"COCO annotations {path}: image {img['id']} lacks "
                                f"{', '.join(sorted(lacking))}; expected id, file_name, height, "
                                "width")
            _check_file_name(path, img)
        per_image: dict[Any, list[list]] = {img["id"]: [] for img in images}
        for ann in data["annotations"]:
            cid = ann["category_id"]
            if cid not in COCO_ID_TO_LABEL:
                raise DataError(f"COCO annotations {path}: annotation {ann.get('id')} has "
                                f"category_id {cid}; expected one of the 80 COCO category ids")
            if ann["image_id"] not in per_image:
                raise DataError(f"COCO annotations {path}: annotation {ann.get('id')} refers to "
                                f"image_id {ann['image_id']}, which is not in 'images'")
            per_image[ann["image_id"]].append([COCO_ID_TO_LABEL[cid], int(ann.get("iscrowd", 0)),
                                               float(ann.get("area", 0.0)),
                                               ann["segmentation"]])
    except (KeyError, TypeError) as exc:
        raise DataError(f"COCO annotations {path} are malformed (missing or wrong field {exc}); "
                        "expected images with id, file_name, height, width and annotations with "
                        "image_id, category_id, segmentation") from exc
    return images, per_image
