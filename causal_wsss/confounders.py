"""The confounder dictionary C of CONTA: per-class average masks on a fixed grid, and the prior P(c).

method.md section 2 ([R] construction) and section 7 items 1-4, 11:

1. the segmentation model of round t predicts an argmax label map for every training image;
2. each map is resized to a fixed ``grid x grid`` with nearest neighbour (aspect not kept);
3. for each class i, S_i = images whose resized prediction contains i (and, with
   ``agree_with_labels``, whose image-level label contains i); c_i = mean over S_i of the binary
   map [label == i], in [0, 1]; c_i = 0 when S_i is empty; row 0 (background) is kept in the
   saved file, as in the official layout, and dropped at use;
4. P(c_i) = |S_i| / sum_j |S_j| ("freq", default) or uniform over the non-empty classes;
5. the per-image query X_m is the image's own prediction on the same grid: the binary
   foreground map (default) or the one-hot map of all labels ("onehot").

Saved per round as ``dictionary.npy`` (n+1, h, w) float32, ``prior.npy`` (n,) float32,
``queries.npy`` (N, h, w) uint8 label grids and ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .constants import IGNORE_INDEX
from .errors import DataError
from .io import atomic_path, write_json


@dataclass(frozen=True)
class ConfounderDictionary:
    """C = {c_1..c_n} with its prior, plus the per-image query grids of the round.

    Attributes:
        masks: (n+1, h, w) float32 average masks, row 0 = background.
        prior: (n,) float32 P(c_i) over the foreground classes, sums to 1.
        counts: (n,) int64 |S_i|.
        classes: label names, index 0 = background.
        prior_kind: "freq" or "uniform".
    """

    masks: np.ndarray
    prior: np.ndarray
    counts: np.ndarray
    classes: tuple[str, ...]
    prior_kind: str = "freq"

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def valid(self) -> np.ndarray:
        """(n,) bool: classes with a non-empty S_i (the others are masked out of the softmax)."""
        return self.counts > 0

    def foreground(self) -> torch.Tensor:
        """(n, h*w) float32 tensor of the foreground rows (row 0 dropped), as Eq. 3 uses them."""
        return torch.from_numpy(self.masks[1:].reshape(len(self.masks) - 1, -1).copy())

    def save(self, folder: str | Path) -> None:
        """Write ``dictionary.npy``, ``prior.npy`` and ``meta.json`` atomically into ``folder``."""
        folder = Path(folder)
        for name, arr in (("dictionary.npy", self.masks), ("prior.npy", self.prior)):
            with atomic_path(folder / name, suffix=".npy") as tmp:
                np.save(tmp, arr)
        write_json(folder / "meta.json", {"classes": list(self.classes), "counts": self.counts.tolist(),
                                          "prior_kind": self.prior_kind, "grid": list(self.grid)})

    @classmethod
    def load(cls, folder: str | Path) -> ConfounderDictionary:
        """Read a dictionary written by :meth:`save`, checking that it is one: DataError naming
        the file that is missing, unreadable or holds what no saved dictionary holds."""
        folder = Path(folder)
        path = folder / "meta.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            classes = tuple(meta["classes"])
            counts = np.asarray(meta["counts"], dtype=np.int64)
            prior_kind = meta.get("prior_kind", "freq")
            path = folder / "dictionary.npy"
            masks = np.load(path).astype(np.float32)
            path = folder / "prior.npy"
            prior = np.load(path).astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - whatever a broken file raises
            raise SavedFileError(path, f"missing or unreadable ({type(exc).__name__}: {exc})",
                                 "the dictionary.npy, prior.npy and meta.json of "
                                 "ConfounderDictionary.save") from exc
        n = len(classes) - 1
        checks = (
            ("meta.json", "its classes are not names" if not all(isinstance(c, str) for c in classes)
             else f"{counts.shape} counts for {n} classes" if counts.shape != (n,)
             else "negative counts" if (counts < 0).any()
             else f"prior_kind {prior_kind!r}" if prior_kind not in ("freq", "uniform") else ""),
            ("dictionary.npy", f"shape {masks.shape}, not ({n + 1}, h, w)"
             if masks.ndim != 3 or masks.shape[0] != n + 1
             else "values outside [0, 1]" if not ((masks >= 0) & (masks <= 1)).all() else ""),
            ("prior.npy", _prior_problem(prior, counts, prior_kind)))
        for name, problem in checks:
            if problem:
                raise SavedFileError(folder / name, f"corrupt ({problem})",
                                     "what ConfounderDictionary.save writes")
        return cls(masks=masks, prior=prior, counts=counts, classes=classes,
                   prior_kind=prior_kind)


class SavedFileError(DataError):
    """A file of the confounders stage is missing, unreadable or corrupt (``path``, ``reason``)."""

    def __init__(self, path: Path, reason: str, expected: str) -> None:
        super().__init__(f"confounder file {path} is {reason}; expected {expected} (in a run "
                         "folder, rerun: the confounders stage is redone)")
        self.path, self.reason = path, reason


def _prior_problem(prior: np.ndarray, counts: np.ndarray, kind: str) -> str:
    """Why ``prior`` is not the prior :func:`build_confounder_dictionary` makes from ``counts``."""
    if prior.shape != counts.shape:
        return f"shape {prior.shape}, not {counts.shape}"
    if kind == "freq":
        expected = counts / max(int(counts.sum()), 1)
    else:
        expected = (counts > 0) / max(int((counts > 0).sum()), 1)
    if not np.allclose(prior, expected, rtol=1e-5, atol=1e-6):
        return f"values that are not the {kind} prior of the counts in meta.json"
    return ""


def load_query_grids(path: str | Path, *, num_labels: int | None = None,
                     grid: tuple[int, int] | None = None, rows: int | None = None) -> np.ndarray:
    """The ``(N, h, w)`` uint8 label grids of :func:`save_label_grids`; DataError naming the file
    when it is unreadable or holds other grids (labels below ``num_labels`` or 255, the ``grid``,
    ``rows`` images)."""
    path = Path(path)
    expected = "the (N, h, w) uint8 label grids of save_label_grids"
    try:
        grids = np.load(path)
    except Exception as exc:  # noqa: BLE001 - whatever a broken file raises
        raise SavedFileError(path, f"missing or unreadable ({type(exc).__name__}: {exc})",
                             expected) from exc
    problem = ""
    if grids.dtype != np.uint8 or grids.ndim != 3:
        problem = f"{grids.dtype} of shape {grids.shape}"
    elif grid is not None and tuple(grids.shape[1:]) != tuple(grid):
        problem = f"grids of {tuple(grids.shape[1:])}, not {tuple(grid)}"
    elif rows is not None and grids.shape[0] != rows:
        problem = f"{grids.shape[0]} images, not {rows}"
    elif num_labels is not None and ((grids >= num_labels) & (grids != IGNORE_INDEX)).any():
        problem = f"labels outside 0..{num_labels - 1} and {IGNORE_INDEX}"
    if problem:
        raise SavedFileError(path, f"corrupt ({problem})", expected)
    return grids


def saved_dictionary_problem(folder: str | Path, rows: int | None = None) -> tuple[Path, str] | None:
    """``(file, why)`` when the dictionary and query grids saved in ``folder`` are not whole
    (:meth:`ConfounderDictionary.load`; :func:`load_query_grids` of ``rows`` images), else None.
    Reads the files (a few MB for VOC's 10,582 query grids)."""
    folder = Path(folder)
    try:
        dictionary = ConfounderDictionary.load(folder)
        load_query_grids(folder / "queries.npy", num_labels=len(dictionary.classes),
                         grid=dictionary.grid, rows=rows)
    except SavedFileError as exc:
        return exc.path, exc.reason
    return None


def resize_labels(label_map: np.ndarray | torch.Tensor, grid: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of one (H, W) label map to ``grid`` (aspect not preserved)."""
    h, w = (grid, grid) if isinstance(grid, int) else grid
    t = torch.from_numpy(np.array(label_map, dtype=np.uint8))[None, None]  # (1, 1, H, W)
    return F.interpolate(t, size=(h, w), mode="nearest-exact")[0, 0].numpy()


def load_label_grids(folder: str | Path, names: Sequence[str], grid: int,
                     progress: bool = False) -> np.ndarray:
    """Read the predicted label PNGs ``folder/<name>.png`` and resize each to the grid.

    Returns (N, grid, grid) uint8.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    folder = Path(folder)
    out = np.zeros((len(names), grid, grid), dtype=np.uint8)
    for i, name in enumerate(tqdm(names, desc="label grids", disable=not progress, leave=False)):
        path = folder / f"{name}.png"
        try:
            with Image.open(path) as img:
                labels = np.asarray(img)
        except Exception as exc:  # noqa: BLE001 - whatever a broken PNG raises
            raise DataError(f"predicted mask {path} is missing or unreadable ({exc}); expected "
                            "the label PNG of the segmentation model (in a run folder, rerun: the "
                            "stage that wrote it is redone)") from exc
        out[i] = resize_labels(labels, grid)
    return out


def ground_truth_grids(datasets: Sequence, names: Sequence[str], grid: int,
                       progress: bool = False) -> np.ndarray:
    """The ground-truth masks of ``names`` (looked up in ``datasets``) resized to the grid.

    For the upper-bound ablation ``context.source=gt`` only: weak supervision never sees these.
    Returns (N, grid, grid) uint8 (255 = void).
    """
    from tqdm.auto import tqdm

    where = {name: (ds, i) for ds in datasets for i, name in enumerate(ds.names)}
    out = np.zeros((len(names), grid, grid), dtype=np.uint8)
    for k, name in enumerate(tqdm(names, desc="label grids (gt)", disable=not progress,
                                  leave=False)):
        if name not in where:
            raise DataError(f"context.source=gt: image {name} is in none of the data sets")
        ds, i = where[name]
        mask = ds.load_mask(i)
        if mask is None:
            raise DataError(f"context.source=gt needs ground-truth masks, but split "
                            f"'{getattr(ds, 'split', '?')}' has none for image {name}")
        out[k] = resize_labels(mask, grid)
    return out


def build_confounder_dictionary(label_grids: np.ndarray, image_labels: np.ndarray, *,
                                classes: Sequence[str], prior: str = "freq",
                                agree_with_labels: bool = True,
                                chunk: int = 1024) -> ConfounderDictionary:
    """Average the per-class binary masks of the predicted label grids (method.md section 2 [R]).

    Args:
        label_grids: (N, h, w) uint8 predicted labels on the grid (255 = ignore, never counted).
        image_labels: (N, n) bool image-level labels of the foreground classes.
        classes: label names, index 0 = background (n + 1 names).
        prior: "freq" (P(c_i) = |S_i| / sum_j |S_j|) or "uniform" (1 / #non-empty classes).
        agree_with_labels: keep image b in S_i only if its image label contains i.
    """
    n_labels = len(classes)
    n = n_labels - 1
    grids = torch.as_tensor(np.asarray(label_grids)).long()  # (N, h, w)
    labels = torch.from_numpy(np.array(image_labels, dtype=bool))  # (N, n)
    if grids.ndim != 3 or labels.shape != (grids.shape[0], n):
        raise ValueError(f"expected label_grids (N, h, w) and image_labels (N, {n}); got "
                         f"{tuple(grids.shape)} and {tuple(labels.shape)}")
    if prior not in ("freq", "uniform"):
        raise ValueError(f"prior must be 'freq' or 'uniform', not {prior!r}")
    h, w = grids.shape[1:]
    sums = torch.zeros(n_labels, h * w, dtype=torch.float64)
    counts = torch.zeros(n_labels, dtype=torch.int64)
    positions = torch.arange(h * w)
    for start in range(0, grids.shape[0], chunk):
        g = grids[start:start + chunk].reshape(-1, h * w)  # (b, D)
        valid = g != IGNORE_INDEX
        g = torch.where(valid, g, 0).clamp_max(n_labels - 1)
        present = torch.zeros(g.shape[0], n_labels, dtype=torch.bool)  # (b, L)
        present.scatter_(1, g, valid)
        if agree_with_labels:
            present[:, 1:] &= labels[start:start + chunk]
        # each pixel adds 1 to its own class's map if its image belongs to S_class
        weight = (torch.gather(present, 1, g) & valid).to(torch.float64)  # (b, D)
        sums.view(-1).index_add_(0, (g * (h * w) + positions).reshape(-1), weight.reshape(-1))
        counts += present.sum(0)
    masks = (sums / counts.clamp_min(1)[:, None]).to(torch.float32).reshape(n_labels, h, w)
    fg_counts = counts[1:]
    if prior == "freq":
        p = fg_counts.to(torch.float64) / fg_counts.sum().clamp_min(1)
    else:
        p = (fg_counts > 0).to(torch.float64) / (fg_counts > 0).sum().clamp_min(1)
    return ConfounderDictionary(masks=masks.numpy(), prior=p.to(torch.float32).numpy(),
                                counts=fg_counts.numpy(), classes=tuple(classes), prior_kind=prior)


def queries_from_grids(label_grids: np.ndarray | torch.Tensor, *, mode: str = "binary",
                       num_classes: int | None = None) -> torch.Tensor:
    """The per-image query X_m, flattened: (N, h*w) binary foreground or (N, L*h*w) one-hot."""
    g = torch.as_tensor(np.asarray(label_grids)).long()  # (N, h, w)
    valid = g != IGNORE_INDEX
    if mode == "binary":
        return ((g != 0) & valid).flatten(1).float()
    if mode == "onehot":
        if num_classes is None:
            raise ValueError("mode='onehot' needs num_classes")
        onehot = F.one_hot(torch.where(valid, g, 0), num_classes) & valid[..., None]  # (N, h, w, L)
        return onehot.permute(0, 3, 1, 2).flatten(1).float()
    raise ValueError(f"query mode must be 'binary' or 'onehot', not {mode!r}")


def save_label_grids(path: str | Path, grids: np.ndarray) -> None:
    """Save (N, h, w) uint8 label grids atomically as ``.npy``."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(grids, dtype=np.uint8))
