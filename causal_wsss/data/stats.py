"""Class frequencies and co-occurrence counts of a data set, read from its image-level labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from .base import SegmentationDataset


def cooccurrence_stats(dataset: SegmentationDataset) -> dict[str, Any]:
    """Co-occurrence of the foreground classes of ``dataset`` (no image is decoded).

    Returns ``{"num_images", "classes", "image_counts", "cooccurrence"}`` as plain JSON types;
    see :func:`cooccurrence_from_labels`.
    """
    return cooccurrence_from_labels(dataset.label_matrix(), dataset.classes[1:])


def cooccurrence_from_labels(labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Counts from a ``bool (N, K-1)`` label matrix ``L``: ``cooccurrence = Lᵀ L`` (one matrix
    product), so ``cooccurrence[a][b]`` is the number of images holding both ``a`` and ``b`` and
    the diagonal is ``image_counts[a]``. Every class is listed, also those with no image.

    These counts describe the confounder C of the causal graph (method.md section 1: context
    such as "person riding horse" makes classes co-occur).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(classes):
        raise ValueError(f"label matrix of shape {labels.shape} does not match {len(classes)} "
                         "classes; expected (N, K-1)")
    onehot = labels.astype(np.int64)  # (N, K-1)
    counts = onehot.T @ onehot  # (K-1, K-1)
    names = [str(c) for c in classes]
    return {
        "num_images": int(labels.shape[0]),
        "classes": names,
        "image_counts": {a: int(counts[i, i]) for i, a in enumerate(names)},
        "cooccurrence": {a: {b: int(counts[i, j]) for j, b in enumerate(names)}
                         for i, a in enumerate(names)},
    }


def conditional_probability(stats: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``P(b | a) = cooccurrence[a][b] / image_counts[a]``, the share of ``a``'s images that also
    hold ``b`` (0.0 for a class ``a`` with no image)."""
    counts = stats["image_counts"]
    return {a: {b: (n / counts[a] if counts[a] else 0.0) for b, n in row.items()}
            for a, row in stats["cooccurrence"].items()}


def format_stats_table(stats: dict[str, Any], top: int = 10) -> str:
    """A readable summary: images per class (classes with no image left out) and the ``top``
    most frequent pairs with their counts, ``P(b|a)`` and ``P(a|b)``."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise ConfigError(f"format_stats_table: top is {top!r}; expected an integer >= 0 (the "
                          "number of pairs shown, causal-wsss stats --top)")
    num_images = stats["num_images"]
    counts = stats["image_counts"]
    order = stats["classes"]
    position = {c: k for k, c in enumerate(order)}
    present = sorted((c for c in order if counts[c] > 0), key=lambda c: (-counts[c], position[c]))
    width = max([len(c) for c in order] + [5])
    lines = [f"{num_images} images, {len(present)} of {len(order)} classes present",
             "", f"{'class':<{width}}  {'images':>7}  {'share':>6}"]
    for c in present:
        share = counts[c] / num_images if num_images else 0.0
        lines.append(f"{c:<{width}}  {counts[c]:>7}  {share:>6.1%}")

    cond = conditional_probability(stats)
    pairs = [(stats["cooccurrence"][a][b], a, b) for i, a in enumerate(order)
             for b in order[i + 1:] if stats["cooccurrence"][a][b] > 0]
    pairs.sort(key=lambda p: (-p[0], position[p[1]], position[p[2]]))
    lines += ["", f"most frequent pairs (top {top})",
              f"{'a':<{width}}  {'b':<{width}}  {'images':>7}  {'P(b|a)':>6}  {'P(a|b)':>6}"]
    for n, a, b in pairs[:top]:
        lines.append(f"{a:<{width}}  {b:<{width}}  {n:>7}  {cond[a][b]:>6.2f}  {cond[b][a]:>6.2f}")
    if not pairs:
        lines.append("(no two classes share an image)")
    return "\n".join(lines)
