"""A bank of image crops of different sizes, each with a mask and a class: the objects ``paste``
cuts from the previous round's pseudo-masks, the context-only crops ``context_negatives`` trains
on. Stored as one ``.npz`` (no pickled objects), written atomically, checked when read."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.base import read_label_png
from ..errors import DataError
from ..io import atomic_path

BANK_KEYS = ("pixels", "alpha", "shapes", "offsets", "classes")


@dataclass
class CropBank:
    """``n`` crops: ``crop(k)`` is ``(rgb uint8 (h, w, 3), alpha bool (h, w))`` and
    ``classes[k]`` its foreground label index (1..K-1; 0 for a context-only crop)."""

    pixels: np.ndarray  # (P, 3) uint8: every crop's pixels, row-major, one after the other
    alpha: np.ndarray  # (P,) bool: inside the object (all True for a context crop)
    shapes: np.ndarray  # (n, 2) int64: (h, w) of each crop
    offsets: np.ndarray  # (n,) int64: first pixel of each crop in ``pixels``
    classes: np.ndarray  # (n,) int64

    @classmethod
    def from_crops(cls, crops: list[tuple[np.ndarray, np.ndarray, int]]) -> CropBank:
        """From ``[(rgb (h, w, 3) uint8, alpha (h, w) bool, class), ...]``."""
        shapes = np.array([rgb.shape[:2] for rgb, _, _ in crops], dtype=np.int64).reshape(-1, 2)
        sizes = shapes.prod(axis=1)
        offsets = (np.cumsum(sizes) - sizes).astype(np.int64)  # (n,): where each crop starts
        pixels = np.concatenate([rgb.reshape(-1, 3) for rgb, _, _ in crops]) if crops else \
            np.zeros((0, 3), np.uint8)
        alpha = np.concatenate([a.reshape(-1) for _, a, _ in crops]) if crops else \
            np.zeros(0, bool)
        return cls(pixels.astype(np.uint8), alpha.astype(bool), shapes, offsets,
                   np.array([c for _, _, c in crops], dtype=np.int64))

    def __len__(self) -> int:
        return int(self.shapes.shape[0])

    def crop(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = (int(v) for v in self.shapes[k])
        start = int(self.offsets[k])
        rgb = self.pixels[start:start + h * w].reshape(h, w, 3)
        return rgb, self.alpha[start:start + h * w].reshape(h, w)

    def save(self, path: Path) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **{k: getattr(self, k) for k in BANK_KEYS})

    @classmethod
    def load(cls, path: Path) -> CropBank:
        """The bank at ``path``; DataError naming it when missing, unreadable or inconsistent."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in BANK_KEYS}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"crop bank {path} is missing or unreadable ({exc}); delete it and "
                            "rerun: its stage is redone") from exc
        bank = cls(**arrays)
        sizes = bank.shapes.prod(axis=1) if len(bank) else np.zeros(0, np.int64)
        if (bank.pixels.shape[0] != bank.alpha.shape[0] or bank.offsets.shape[0] != len(bank)
                or bank.classes.shape[0] != len(bank)
                or (len(bank) and int(bank.offsets[-1] + sizes[-1]) != bank.pixels.shape[0])):
            raise DataError(f"crop bank {path} is inconsistent (its arrays disagree in length); "
                            "delete it and rerun")
        return bank


def read_pseudo_mask(prev_dir: Path, name: str, num_classes: int) -> np.ndarray:
    """The previous round's pseudo-mask of image ``name`` (``uint8 (H, W)``, 255 = unsure)."""
    return read_label_png(prev_dir / "pseudo" / f"{name}.png", num_classes)
