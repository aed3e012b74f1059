"""The data contract every data set follows: ``SegmentationDataset`` and its shared file readers."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..constants import IGNORE_INDEX
from ..errors import DataError

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class SegmentationDataset(Dataset, abc.ABC):
    """Images with multi-hot image-level labels and, where the split has them, semantic masks.

    ``dataset[i]`` is a dict (docs/architecture.md, "Data contract"):

    - ``image``: ``uint8`` tensor ``(3, H, W)`` (normalise on the device with
      :func:`causal_wsss.data.transforms.normalize`);
    - ``labels``: ``float32`` tensor ``(K - 1,)``, multi-hot over the foreground classes
      ``classes[1:]``;
    - ``mask``: ``int64`` tensor ``(H, W)`` of labels ``0..K-1`` with ``IGNORE_INDEX = 255``
      (only when :attr:`has_masks`);
    - ``name``: the image id; ``index``: ``i``.

    ``transform`` (a callable on that dict) is applied last. Subclasses provide
    :meth:`image_path`, :meth:`load_mask` and :meth:`_read_labels` and set ``names``.
    """

    classes: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike, split: str, names: list[str],
                 transform: Transform | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.names = list(names)
        self.transform = transform
        self._label_matrix: np.ndarray | None = None

    _per_image_fields: tuple[str, ...] = ()  # subclass lists indexed like ``names``

    def subset(self, names: list[str]) -> SegmentationDataset:
        """A view of the same split restricted to ``names`` (in that order); DataError for a name
        it lacks. Shares files and caches with ``self``; nothing is re-read."""
        import copy

        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise DataError(f"image '{missing[0]}' is not in split '{self.split}' of {self.root}")
        rows = [index[n] for n in names]
        view = copy.copy(self)
        view.names = list(names)
        for field in self._per_image_fields:
            values = getattr(self, field)
            setattr(view, field, [values[i] for i in rows])
        if self._label_matrix is not None:
            view._label_matrix = self._label_matrix[rows]
        return view

    @property
    def num_classes(self) -> int:
        """Number of labels including background (21 for VOC, 81 for COCO)."""
        return len(self.classes)

    @property
    def used_classes(self) -> tuple[int, ...]:
        """Label indices the data set uses, background included: those that enter every mIoU.

        All of :attr:`classes` for VOC (21) and COCO (81); a synthetic set in the VOC layout uses
        the background plus its own classes (7). A prediction of an unused class is an error of
        the pixel's true class (a false negative there), not a class of its own in the mean.
        """
        return tuple(range(self.num_classes))

    @property
    @abc.abstractmethod
    def has_masks(self) -> bool:
        """Whether samples carry a ``mask`` (False for splits without ground truth)."""

    @abc.abstractmethod
    def image_path(self, i: int) -> Path:
        """Path of image ``i``."""

    @abc.abstractmethod
    def load_mask(self, i: int) -> np.ndarray | None:
        """Semantic mask of image ``i``: ``uint8 (H, W)``, 255 = ignore; ``None`` without masks."""

    @abc.abstractmethod
    def _read_labels(self, i: int) -> np.ndarray:
        """Foreground labels of image ``i`` as a ``bool (K - 1,)`` array, from annotations."""

    def load_image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8 (H, W, 3)`` RGB."""
        return read_image(self.image_path(self._check_index(i)))

    def label_matrix(self) -> np.ndarray:
        """Read-only ``bool (N, K - 1)`` matrix of image-level labels, without decoding images.

        Computed once and cached, so calling it before creating DataLoader workers lets every
        worker reuse it.
        """
        if self._label_matrix is None:
            rows = [self._read_labels(i) for i in range(len(self))]
            matrix = (np.stack(rows) if rows
                      else np.zeros((0, self.num_classes - 1), dtype=bool))  # (N, K-1)
            matrix.flags.writeable = False
            self._label_matrix = matrix
        return self._label_matrix

    def image_labels(self, i: int) -> np.ndarray:
        """Foreground labels of image ``i``: ``bool (K - 1,)``."""
        i = self._check_index(i)
        if self._label_matrix is not None:
            return self._label_matrix[i]
        return self._read_labels(i)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        i = self._check_index(i)
        image = self.load_image(i)  # (H, W, 3)
        sample: Sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),  # (3, H, W)
            "labels": torch.from_numpy(self.image_labels(i).astype(np.float32)),  # (K-1,)
            "name": self.names[i],
            "index": i,
        }
        if self.has_masks:
            mask = self.load_mask(i)
            if mask is not None:
                if mask.shape != image.shape[:2]:
                    raise DataError(f"image {self.image_path(i)} is {image.shape[0]}x"
                                    f"{image.shape[1]} (HxW) but its mask is {mask.shape[0]}x"
                                    f"{mask.shape[1]}; expected equal sizes")
                sample["mask"] = torch.from_numpy(mask.astype(np.int64))  # (H, W)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _check_index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of {n} images")
        return i

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root='{self.root}', split='{self.split}', "
                f"images={len(self)}, classes={self.num_classes}, masks={self.has_masks})")


def read_image(path: Path) -> np.ndarray:
    """Decode the image at ``path`` as ``uint8 (H, W, 3)`` RGB; DataError names the file."""
    if not path.is_file():
        raise DataError(f"image not found: {path}; expected a JPEG/PNG file")
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}; expected a readable (not truncated) "
                        "JPEG/PNG file") from exc


def read_label_png(path: Path, num_classes: int) -> np.ndarray:
    """Read a PNG of class indices (palette mode ``P`` or greyscale ``L``) as ``uint8 (H, W)``.

    The stored indices are read, never the palette colours. Values must lie in
    ``0..num_classes-1`` or be ``IGNORE_INDEX``.
    """
    if not path.is_file():
        raise DataError(f"mask not found: {path}; expected a PNG of class indices")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in ("P", "L"):
                raise DataError(f"mask {path} has PIL mode '{mode}'; expected a palette (P) or "
                                "greyscale (L) PNG holding class indices, not colours")
            mask = np.array(img, dtype=np.uint8)  # (H, W)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever PIL raises on a broken file
        raise DataError(f"cannot read mask {path}: {exc or type(exc).__name__}; expected a PNG "
                        "of class indices (a mask a run wrote under round_k/: rerun, and the "
                        "stage that wrote it is redone)") from exc
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        raise DataError(f"mask {path} holds value {int(mask[bad][0])}; expected class indices "
                        f"0..{num_classes - 1} or {IGNORE_INDEX} (ignore)")
    return mask


def file_stems(folder: Path, suffix: str) -> set[str]:
    """Stems of the files in ``folder`` ending with ``suffix`` (one directory listing, no stats)."""
    if not folder.is_dir():
        return set()
    return {name[: -len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}
