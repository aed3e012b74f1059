"""Segmentation metrics on the device: confusion-matrix mIoU, one-pass CAM threshold sweeps, CAM leakage."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .constants import IGNORE_INDEX
from .errors import ConfigError, DataError
from .runtime import speedups_enabled
from .tensors import as_tensor

__all__ = [
    "DEFAULT_THRESHOLDS",
    "ConfusionMatrix",
    "ContrastMeter",
    "LeakageMeter",
    "SegmentationScores",
    "ThresholdSweep",
    "cams_to_labels",
    "iou_per_class",
    "mean_iou",
    "miou",
    "precision_split",
    "scores_from_confusion",
    "threshold_grid",
]

DeviceLike = str | torch.device | None

MAX_THRESHOLDS = 10_000
"""The most thresholds a grid or a :class:`ThresholdSweep` may hold (the default grid has 56)."""


def threshold_grid(start: float = 0.05, stop: float = 0.60, step: float = 0.01) -> tuple[float, ...]:
    """Background thresholds ``start, start + step, ..., stop`` (``stop`` included).

    Values are rounded to 10 decimals so that ``0.15`` in the grid is the literal ``0.15``
    (``np.arange`` alone gives ``0.15000000000000002``). method.md section 5: report IRNet's
    fixed 0.15 and the best of the 0.05-0.60 sweep in 0.01 steps (``CamInferConfig.sweep``).

    Raises ``ConfigError`` (the values come from ``cam_infer.sweep``) on a non-number or
    non-finite value, ``step <= 0``, ``stop < start``, or a grid of more than
    :data:`MAX_THRESHOLDS` values.
    """
    try:
        if any(isinstance(v, (str, bytes)) for v in (start, stop, step)):
            raise TypeError
        start, stop, step = float(start), float(stop), float(step)
    except (TypeError, ValueError):
        raise ConfigError(f"threshold_grid: expected numbers, got start={start!r}, "
                          f"stop={stop!r}, step={step!r}") from None
    if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0:
        raise ConfigError(f"threshold_grid: expected finite start/stop and step > 0, "
                          f"got start={start}, stop={stop}, step={step}")
    if stop < start:
        raise ConfigError(f"threshold_grid: stop ({stop}) is below start ({start})")
    count = (stop + 1e-9 - start) / step  # np.arange's length is ceil(count); may be inf
    if not count <= MAX_THRESHOLDS:
        raise ConfigError(f"threshold_grid: start={start}, stop={stop}, step={step} gives "
                          f"{count:.3g} thresholds, more than the {MAX_THRESHOLDS} allowed; "
                          f"expected a coarser step")
    values = np.arange(start, stop + 1e-9, step)
    return tuple(round(float(v), 10) for v in values)


DEFAULT_THRESHOLDS: tuple[float, ...] = threshold_grid()
"""The 56 thresholds 0.05, 0.06, ..., 0.60 of method.md section 5."""


# ---------------------------------------------------------------------------------------------
# Scores from a confusion matrix
# ---------------------------------------------------------------------------------------------


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU of a confusion matrix ``conf[..., target, pred]`` of shape ``(..., C, C)``.

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c) = conf[c, c] / (row_c + col_c - conf[c, c])``, in
    float64, NaN where the union is empty (class absent from both target and prediction).
    A class that is predicted but absent from the target has IoU 0, not NaN.
    Raises ``DataError`` on another shape or on negative, NaN or infinite counts.
    """
    return _iou_per_class(_check_confusion("iou_per_class", conf))


def _iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """:func:`iou_per_class` without the checks (for matrices already checked or built here)."""
    conf = conf.to(torch.float64)
    tp = conf.diagonal(dim1=-2, dim2=-1)  # (..., C)
    union = conf.sum(-1) + conf.sum(-2) - tp  # (..., C)
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def mean_iou(iou: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """``nanmean`` of ``iou (..., C)`` over the last axis, restricted to ``classes`` when given.

    ``classes``: the label indices the data set uses (``dataset.used_classes``); None = all.
    The rule: the mean runs over the data set's own classes; one that is absent from both the
    targets and the predictions (NaN) is skipped; a predicted class the data set does not use
    adds no term (its pixels already count as false negatives of their true class).
    Raises ``DataError`` when ``iou`` has no class axis or ``classes`` holds an index outside
    ``[0, C)``, a duplicate, or a non-integer.
    """
    iou = as_tensor("mean_iou", "iou", iou)
    if iou.dim() == 0:
        raise DataError("mean_iou: expected per-class IoUs of shape (..., C), got a 0-d tensor")
    return _mean_iou(iou, _class_indices("mean_iou", classes, iou.shape[-1]))


def _mean_iou(iou: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    """:func:`mean_iou` without the checks (``classes`` already checked)."""
    if classes is not None:
        iou = iou[..., list(classes)]
    return torch.nanmean(iou, dim=-1)


def miou(conf: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Mean IoU of a ``(C, C)`` confusion matrix over ``classes`` (default all) in [0, 1] (NaN if empty).

    Raises ``DataError`` on a matrix of another shape, negative / NaN / infinite counts, or a
    class index outside ``[0, C)`` (see :func:`iou_per_class`, :func:`mean_iou`).
    """
    conf = as_tensor("miou", "conf", conf)
    if conf.dim() != 2:
        raise DataError(f"miou: expected a (C, C) confusion matrix, got shape {tuple(conf.shape)}")
    conf = _check_confusion("miou", conf)
    return float(_mean_iou(_iou_per_class(conf), _class_indices("miou", classes, conf.shape[0])))


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one confusion matrix; per-class tuples are indexed by label (0 = background).

    ``iou[c] = TP/(TP+FP+FN)``, ``precision[c] = TP/(TP+FP)``, ``recall[c] = TP/(TP+FN)``, each
    NaN where its denominator is 0; ``miou = nanmean(iou)``; ``pixel_accuracy = trace/total``;
    ``mean_accuracy = nanmean(recall)``; ``pixels`` is the number of scored (non-ignored) pixels.
    """

    iou: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    pixels: int

    @property
    def num_classes(self) -> int:
        return len(self.iou)

    @property
    def miou_percent(self) -> float:
        """mIoU in percent, as papers report it."""
        return 100.0 * self.miou

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes ``None``); per-class entries are keyed by class name."""
        if class_names is not None and len(class_names) != self.num_classes:
            raise ConfigError(f"SegmentationScores.as_dict: {len(class_names)} class names for "
                              f"{self.num_classes} classes")
        names = list(class_names) if class_names is not None else [str(c) for c in
                                                                    range(self.num_classes)]
        return {
            "miou": _json_float(self.miou),
            "miou_percent": _json_float(self.miou_percent),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "mean_accuracy": _json_float(self.mean_accuracy),
            "pixels": self.pixels,
            "per_class": {
                name: {"iou": _json_float(i), "precision": _json_float(p), "recall": _json_float(r)}
                for name, i, p, r in zip(names, self.iou, self.precision, self.recall)
            },
        }


def scores_from_confusion(conf: torch.Tensor,
                          classes: Sequence[int] | None = None) -> SegmentationScores:
    """All :class:`SegmentationScores` of a ``(C, C)`` confusion matrix ``conf[target, pred]``.

    ``classes``: the label indices that enter ``miou`` and ``mean_accuracy`` (see :func:`mean_iou`).
    ``DataError`` on the same inputs as :func:`miou`.
    """
    conf = as_tensor("scores_from_confusion", "conf", conf)
    if conf.dim() != 2:
        raise DataError(f"scores_from_confusion: expected a (C, C) matrix, got {tuple(conf.shape)}")
    conf = _check_confusion("scores_from_confusion", conf)
    classes = _class_indices("scores_from_confusion", classes, conf.shape[0])
    iou = _iou_per_class(conf)
    conf = conf.to(torch.float64).cpu()
    tp = conf.diagonal()
    predicted, actual = conf.sum(0), conf.sum(1)  # (C,) columns = predictions, rows = targets
    nan = torch.full_like(tp, math.nan)
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), nan)
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), nan)
    total = float(conf.sum())
    return SegmentationScores(
        iou=tuple(iou.cpu().tolist()),
        precision=tuple(precision.tolist()),
        recall=tuple(recall.tolist()),
        miou=float(_mean_iou(iou, classes)),
        pixel_accuracy=float(tp.sum()) / total if total > 0 else math.nan,
        mean_accuracy=float(_mean_iou(recall, classes)),
        pixels=int(total),
    )


# ---------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------


class ConfusionMatrix:
    """Accumulates ``state[target, pred]`` pixel counts, a ``(C, C)`` int64 tensor on ``device``.

    ``update`` takes ``(B, H, W)`` or ``(H, W)`` integer label maps on any device, drops pixels
    whose target is ``ignore_index`` and counts the rest with one ``bincount`` over
    ``target * C + pred``, computed where the inputs live. ``all_reduce`` sums the matrix over
    ``torch.distributed`` ranks, so each rank can score its shard of the data.
    """

    def __init__(self, num_classes: int, device: DeviceLike = None,
                 ignore_index: int = IGNORE_INDEX, classes: Sequence[int] | None = None) -> None:
        _check_num_classes("ConfusionMatrix", num_classes, ignore_index)
        self.classes = _check_classes("ConfusionMatrix", classes, num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._state = torch.zeros(num_classes, num_classes, dtype=torch.int64,
                                  device=torch.device(device or "cpu"))

    @classmethod
    def from_state(cls, state: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> ConfusionMatrix:
        """Rebuild a matrix from a saved ``state`` tensor (``(C, C)`` non-negative integer counts)."""
        state = _check_confusion("ConfusionMatrix.from_state", state)
        if state.dtype.is_floating_point or state.dim() != 2:
            raise DataError(f"ConfusionMatrix.from_state: expected a (C, C) integer tensor, got "
                            f"{state.dtype} {tuple(state.shape)}")
        matrix = cls(state.shape[0], device=state.device, ignore_index=ignore_index)
        matrix._state += state.to(torch.int64)
        return matrix

    @property
    def state(self) -> torch.Tensor:
        """The ``(C, C)`` int64 count tensor, rows = target class, columns = predicted class."""
        return self._state

    @property
    def device(self) -> torch.device:
        return self._state.device

    def reset(self) -> None:
        self._state.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count ``pred`` against ``target``, both ``(B, H, W)`` or ``(H, W)`` integer tensors
        (numpy arrays are accepted and give the same counts).

        Raises ``DataError`` (a ``ValueError``) on a shape mismatch, a float input, or a class
        outside ``[0, C)`` in ``pred`` or in the non-ignored part of ``target``; only pixels that
        are scored (target != ignore_index) are checked in ``pred``.
        """
        pred = as_tensor("ConfusionMatrix.update", "pred", pred)
        target = as_tensor("ConfusionMatrix.update", "target", target)
        if pred.shape != target.shape or pred.dim() not in (2, 3):
            raise DataError(f"ConfusionMatrix.update: expected pred and target of the same shape "
                            f"(B, H, W) or (H, W), got {tuple(pred.shape)} and "
                            f"{tuple(target.shape)}")
        _check_integer("ConfusionMatrix.update", "pred", pred)
        _check_integer("ConfusionMatrix.update", "target", target)
        target = target.to(pred.device)
        valid = target != self.ignore_index
        g = target[valid].to(torch.int64)  # (P,) scored pixels
        p = pred[valid].to(torch.int64)  # (P,)
        _check_range("ConfusionMatrix.update", "target", g, self.num_classes, self.ignore_index)
        _check_range("ConfusionMatrix.update", "pred", p, self.num_classes)
        counts = torch.bincount(g * self.num_classes + p, minlength=self.num_classes ** 2)
        self._state += counts.view(self.num_classes, self.num_classes).to(self.device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another worker); returns self."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ConfigError(f"ConfusionMatrix.merge: expected a ConfusionMatrix with "
                              f"{self.num_classes} classes, got {other!r}")
        self._state += other.state.to(self.device)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def all_reduce(self, group: Any = None) -> ConfusionMatrix:
        """Sum the counts over all ranks of ``group`` (no-op without torch.distributed); returns self."""
        _all_reduce_sum_(self._state, group)
        return self

    def compute(self) -> SegmentationScores:
        return scores_from_confusion(self._state, self.classes)

    def miou(self) -> float:
        return miou(self._state, self.classes)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self._state.sum())}, "
                f"device={self.device})")


# ---------------------------------------------------------------------------------------------
# CAM -> labels and the one-pass threshold sweep
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def cams_to_labels(cams: torch.Tensor, threshold: float,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """IRNet's CAM prediction: ``argmax`` over ``[threshold ; cams]`` with ties to background.

    ``cams``: ``(B, K, H, W)`` or ``(K, H, W)`` non-negative normalised CAMs of the K foreground
    classes; ``labels``: optional ``(B, K)`` / ``(K,)`` multi-hot image labels, whose zero entries
    zero the CAM (the same as IRNet keeping only the label classes, for ``threshold >= 0``).
    Returns int64 ``(B, H, W)`` / ``(H, W)``: ``0`` where ``max_k cam_k <= threshold``, else
    ``1 + argmax_k cam_k`` (the first maximum on ties). The comparison is done in the CAM's
    dtype (float32 for bf16/half input), as IRNet's ``np.pad`` with the threshold does.

    Refused with ``DataError``: no class channel (K = 0), NaN or infinite CAM values, negative
    CAM values (CAMs are ReLU'd and divided by their max, so exactly >= 0: no tolerance is
    needed), a non-finite ``threshold``, labels of another shape. numpy arrays are accepted.
    """
    cams = as_tensor("cams_to_labels", "cams", cams)
    labels = None if labels is None else as_tensor("cams_to_labels", "labels", labels)
    threshold = _check_threshold("cams_to_labels", threshold)
    batched = cams.dim() == 4
    cams, _ = _prepare_cams("cams_to_labels", cams, None, labels)
    value, index = cams.max(dim=1)  # (B, H, W) each
    thr = torch.tensor(threshold, dtype=value.dtype, device=value.device)
    pred = torch.where(value > thr, index + 1, torch.zeros_like(index))
    return pred if batched else pred[0]


class ThresholdSweep:
    """CAM mIoU for every background threshold of a grid, in one pass over the data.

    For each scored pixel let ``v = max_k cam_k`` and ``c = 1 + argmax_k cam_k``; at threshold
    ``t`` the prediction is ``0`` if ``v <= t`` else ``c`` (:func:`cams_to_labels`). With the
    sorted thresholds ``t_0 < ... < t_{T-1}``, ``bin = #{j : t_j < v}`` (``searchsorted``)
    decides everything: the pixel is foreground at ``t_j`` exactly when ``bin > j``. One
    ``bincount`` over ``(target, c, bin)`` gives ``counts[g, c-1, b]``, shape ``(C, C-1, T+1)``;
    the confusion matrix at ``t_j`` is ``conf[g, c] = sum_{b > j} counts[g, c-1, b]`` for
    ``c >= 1`` and ``conf[g, 0] = total_g - sum_{c >= 1} conf[g, c]`` (suffix sums over bins).

    Contract of ``update(cams, target, labels=None)``: ``cams`` ``(B, K, H, W)`` non-negative
    (normalised) CAMs of all ``K = num_classes - 1`` foreground classes at the target's
    resolution, zero for classes not in the image label (or pass ``labels (B, K)`` to have them
    zeroed); ``target`` ``(B, H, W)`` integer masks, ``ignore_index`` pixels are skipped.
    numpy arrays are accepted; ``DataError`` on other shapes, NaN / infinite / negative CAMs or
    labels outside ``[0, C)``. At most :data:`MAX_THRESHOLDS` thresholds (``ConfigError``).
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
                 device: DeviceLike = None, ignore_index: int = IGNORE_INDEX,
                 classes: Sequence[int] | None = None) -> None:
        _check_num_classes("ThresholdSweep", num_classes, ignore_index)
        self.classes = _check_classes("ThresholdSweep", classes, num_classes)
        thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if thr.size > MAX_THRESHOLDS:
            raise ConfigError(f"ThresholdSweep: {thr.size} thresholds, more than the "
                              f"{MAX_THRESHOLDS} allowed; expected a coarser grid")
        if thr.size == 0 or not np.all(np.isfinite(thr)) or np.any(np.diff(thr) <= 0) or thr[0] < 0:
            raise ConfigError(f"ThresholdSweep: thresholds must be a non-empty, strictly increasing "
                              f"sequence of finite values >= 0, got {thr.tolist()}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.thresholds: tuple[float, ...] = tuple(float(t) for t in thr)
        device = torch.device(device or "cpu")
        self._thresholds = torch.tensor(thr, dtype=torch.float64, device=device)
        self._counts = torch.zeros(num_classes, num_classes - 1, len(thr) + 1, dtype=torch.int64,
                                   device=device)

    @property
    def state(self) -> torch.Tensor:
        """The ``(C, C-1, T+1)`` int64 counts over ``(target, predicted class - 1, bin)``."""
        return self._counts

    @property
    def device(self) -> torch.device:
        return self._counts.device

    def reset(self) -> None:
        self._counts.zero_()

    @torch.no_grad()
    def update(self, cams: torch.Tensor, target: torch.Tensor,
               labels: torch.Tensor | None = None) -> None:
        """Count one batch for all thresholds (see the class docstring for the contract)."""
        where = "ThresholdSweep.update"
        cams, target = as_tensor(where, "cams", cams), as_tensor(where, "target", target)
        labels = None if labels is None else as_tensor(where, "labels", labels)
        cams, target = _prepare_cams(where, cams, target, labels, num_fg=self.num_classes - 1)
        value, index = cams.max(dim=1)  # (B, H, W) each: v and c - 1
        valid = target != self.ignore_index
        g = target[valid].to(torch.int64)  # (P,)
        _check_range("ThresholdSweep.update", "target", g, self.num_classes, self.ignore_index)
        v = value[valid]  # (P,)
        thr = self._thresholds.to(device=v.device, dtype=v.dtype)
        bins = torch.searchsorted(thr, v)  # (P,) number of thresholds strictly below v
        nfg, nbins = self.num_classes - 1, thr.numel() + 1
        flat = (g * nfg + index[valid]) * nbins + bins
        counts = torch.bincount(flat, minlength=self._counts.numel())
        self._counts += counts.view_as(self._counts).to(self.device)

    def confusion_matrices(self) -> torch.Tensor:
        """The ``(T, C, C)`` int64 confusion matrices ``conf[j, target, pred]``, one per threshold."""
        suffix = self._counts.flip(-1).cumsum(-1).flip(-1)  # (C, C-1, T+1): sum over bins >= b
        fg = suffix[..., 1:].permute(2, 0, 1)  # (T, C, C-1): predicted foreground at t_j
        total = self._counts.sum(dim=(1, 2))  # (C,)
        background = total.unsqueeze(0) - fg.sum(-1)  # (T, C)
        return torch.cat([background.unsqueeze(-1), fg], dim=-1)  # (T, C, C)

    def compute(self) -> list[tuple[float, float]]:
        """``[(threshold, mIoU), ...]`` in threshold order (mIoU in [0, 1], NaN before any update)."""
        mious = _mean_iou(_iou_per_class(self.confusion_matrices()), self.classes)  # (T,)
        return list(zip(self.thresholds, mious.cpu().tolist()))

    def best(self) -> tuple[float, float]:
        """``(threshold, mIoU)`` of the best threshold; the smallest one wins ties."""
        curve = [(t, m) for t, m in self.compute() if not math.isnan(m)]
        if not curve:
            raise DataError("ThresholdSweep.best: no pixels were counted; call update() first")
        return max(curve, key=lambda tm: (tm[1], -tm[0]))

    def at(self, threshold: float) -> SegmentationScores:
        """All scores at one threshold of the grid (e.g. IRNet's 0.15)."""
        return scores_from_confusion(self.confusion_matrices()[self._index_of(threshold)],
                                     self.classes)

    def merge(self, other: ThresholdSweep) -> ThresholdSweep:
        """Add another sweep's counts (same classes and thresholds); returns self."""
        if (not isinstance(other, ThresholdSweep) or other.num_classes != self.num_classes
                or other.thresholds != self.thresholds):
            raise ConfigError(f"ThresholdSweep.merge: expected a sweep with {self.num_classes} "
                              f"classes and the same {len(self.thresholds)} thresholds")
        self._counts += other.state.to(self.device)
        return self

    def __iadd__(self, other: ThresholdSweep) -> ThresholdSweep:
        return self.merge(other)

    def all_reduce(self, group: Any = None) -> ThresholdSweep:
        """Sum the counts over all ranks of ``group`` (no-op without torch.distributed); returns self."""
        _all_reduce_sum_(self._counts, group)
        return self

    def _index_of(self, threshold: float) -> int:
        for j, t in enumerate(self.thresholds):
            if abs(t - threshold) <= 1e-9:
                return j
        raise ConfigError(f"ThresholdSweep.at: threshold {threshold} is not in the grid "
                          f"({self.thresholds[0]}..{self.thresholds[-1]}, "
                          f"{len(self.thresholds)} values)")


# ---------------------------------------------------------------------------------------------
# CAM leakage
# ---------------------------------------------------------------------------------------------


class LeakageMeter:
    """How much of each present class's CAM mass falls outside its ground-truth region.

    For image ``b`` and a foreground class ``k`` in its label, with CAM ``a = a_k >= 0`` and the
    scored pixels ``S = {target != ignore}``:

    - ``mass = sum_S a``; ``inside = sum_{S, target = k} a``;
    - ``leakage_background = sum_{S, target = 0} a / mass`` (CAM on background / context);
    - ``leakage_cooccur = sum_{S, target not in {0, k}} a / mass`` (CAM on other objects);
    - ``leakage = leakage_cooccur + leakage_background = 1 - inside / mass``.

    The ratios do not depend on the CAM's scale. ``update`` is vectorised over images and
    classes; its temporaries are the size of ``cams``. ``compute`` averages them over the
    (image, present class) pairs, each pair weighing the same whatever its mass, overall and
    per class; pairs with ``mass = 0`` are skipped and counted in ``skipped_pairs``. The state is
    sums and counts, so meters merge and ``all_reduce`` exactly.
    """

    _KEYS = ("leakage", "leakage_cooccur", "leakage_background")

    def __init__(self, num_classes: int, device: DeviceLike = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        _check_num_classes("LeakageMeter", num_classes, ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        device = torch.device(device or "cpu")
        self._ratio_sums = torch.zeros(num_classes - 1, 3, dtype=torch.float64, device=device)
        self._pairs = torch.zeros(num_classes - 1, 2, dtype=torch.int64, device=device)

    @property
    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ratio_sums (K, 3) float64 [leakage, cooccur, background], pairs (K, 2) int64
        [counted, skipped])`` for the K foreground classes."""
        return self._ratio_sums, self._pairs

    @property
    def device(self) -> torch.device:
        return self._ratio_sums.device

    def reset(self) -> None:
        self._ratio_sums.zero_()
        self._pairs.zero_()

    @torch.no_grad()
    def update(self, cams: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``cams (B, K, H, W) >= 0``, ``target (B, H, W)``, ``labels (B, K)`` 0/1.

        Unbatched ``(K, H, W)``, ``(H, W)``, ``(K,)`` inputs and numpy arrays are accepted too.
        Raises ``DataError`` on negative (apply ReLU first), NaN or infinite CAM values, non-0/1
        labels, shapes that do not fit, or target labels outside ``[0, C)``.
        """
        cams, target, labels = _prepare_meter_batch("LeakageMeter.update", cams, target, labels,
                                                    self.num_classes - 1)
        valid = target != self.ignore_index  # (B, H, W)
        _check_range("LeakageMeter.update", "target", target[valid], self.num_classes,
                     self.ignore_index)
        # only the classes some image of the batch has: the others add nothing (not present)
        keep = _classes_to_read(labels)  # (K',)
        cams, labels, k = cams[:, keep].flatten(2), labels[:, keep], keep.numel()  # (B, K', N)
        target = target.flatten(1).unsqueeze(1)  # (B, 1, N)
        valid = valid.flatten(1).unsqueeze(1)  # (B, 1, N)
        zero = cams.new_zeros(())
        class_ids = (keep + 1).view(1, k, 1)  # (1, K', 1)
        mass = torch.where(valid, cams, zero).sum(-1, dtype=torch.float64)  # (B, K)
        inside = torch.where(target == class_ids, cams, zero).sum(-1, dtype=torch.float64)
        background = torch.where(target == 0, cams, zero).sum(-1, dtype=torch.float64)
        cooccur = (mass - inside - background).clamp_min(0)  # float rounding only
        present = labels.bool()  # (B, K)
        counted = present & (mass > 0)
        denom = torch.where(counted, mass, torch.ones_like(mass))
        share_cooccur = torch.where(counted, cooccur / denom, torch.zeros_like(mass))
        share_background = torch.where(counted, background / denom, torch.zeros_like(mass))
        ratios = torch.stack([share_cooccur + share_background, share_cooccur, share_background],
                             dim=-1)  # (B, K', 3)
        pairs = torch.stack([counted.sum(0), (present & ~counted).sum(0)], dim=-1)  # (K', 2)
        self._ratio_sums[keep.to(self.device)] += ratios.sum(0).to(self.device)
        self._pairs[keep.to(self.device)] += pairs.to(device=self.device, dtype=torch.int64)

    def merge(self, other: LeakageMeter) -> LeakageMeter:
        """Add another meter's sums and counts; returns self."""
        if not isinstance(other, LeakageMeter) or other.num_classes != self.num_classes:
            raise ConfigError(f"LeakageMeter.merge: expected a LeakageMeter with "
                              f"{self.num_classes} classes, got {other!r}")
        ratio_sums, pairs = other.state
        self._ratio_sums += ratio_sums.to(self.device)
        self._pairs += pairs.to(self.device)
        return self

    def __iadd__(self, other: LeakageMeter) -> LeakageMeter:
        return self.merge(other)

    def all_reduce(self, group: Any = None) -> LeakageMeter:
        """Sum the state over all ranks of ``group`` (no-op without torch.distributed); returns self."""
        _all_reduce_sum_(self._ratio_sums, group)
        _all_reduce_sum_(self._pairs, group)
        return self

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Averages over (image, present class) pairs, overall and per class.

        Returns ``{"leakage", "leakage_cooccur", "leakage_background", "pairs", "skipped_pairs",
        "per_class"}``; ``per_class`` maps each foreground class (its name from ``class_names``,
        which includes background at index 0, else its label 1..K) to the same three averages
        and its ``pairs``. Averages over no pairs are NaN.
        """
        if class_names is not None and len(class_names) != self.num_classes:
            raise ConfigError(f"LeakageMeter.compute: {len(class_names)} class names for "
                              f"{self.num_classes} classes (background included)")
        sums = self._ratio_sums.cpu()
        counted = self._pairs[:, 0].cpu()
        total = int(counted.sum())
        overall = sums.sum(0) / total if total > 0 else torch.full((3,), math.nan)
        per_class: dict[str | int, dict[str, float | int]] = {}
        for k in range(self.num_classes - 1):
            n = int(counted[k])
            means = (sums[k] / n).tolist() if n > 0 else [math.nan] * 3
            key = class_names[k + 1] if class_names is not None else k + 1
            per_class[key] = {**dict(zip(self._KEYS, means)), "pairs": n}
        return {**dict(zip(self._KEYS, overall.tolist())), "pairs": total,
                "skipped_pairs": int(self._pairs[:, 1].sum()), "per_class": per_class}


CONTRAST_EPS = 1e-3
"""Added to both means of a contrast, so that a perfect map (zero outside) scores about 1000, not inf."""


class ContrastMeter:
    """How much brighter each present class's CAM is on its object than on the context and on other objects.

    For image ``b`` and a foreground class ``k`` in its label, with max-normalised CAM ``a_k``
    and the scored pixels ``S = {target != ignore}``:

    - ``in = mean of a_k over {target = k}``, ``ctx = mean over {target = 0}`` (the context),
      ``other = mean over {target not in {0, k}}`` (partners and other objects);
    - per class, ``contrast_context = (sum_b in + eps) / (sum_b ctx + eps)`` over the images
      having both (likewise ``contrast_partner`` over the images with another object), with
      ``eps = CONTRAST_EPS * pairs``: a uniform map scores 1, a perfect one about 1000;
    - ``leakage_uniform``: the mass leakage (:class:`LeakageMeter`) a uniform map would score,
      ``1 - |target = k| / |S|``, averaged over the same pairs: the baseline beside the leakage.

    Overall values are the means over the classes with pairs. The state is sums and counts, so
    meters merge and ``all_reduce`` exactly.
    """

    _COLS = ("in_ctx", "ctx", "pairs_ctx", "in_other", "other", "pairs_other", "uniform", "pairs")

    def __init__(self, num_classes: int, device: DeviceLike = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        _check_num_classes("ContrastMeter", num_classes, ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._sums = torch.zeros(num_classes - 1, len(self._COLS), dtype=torch.float64,
                                 device=torch.device(device or "cpu"))

    @property
    def state(self) -> torch.Tensor:
        """``(K, 8)`` float64 sums, columns as ``_COLS``."""
        return self._sums

    @torch.no_grad()
    def update(self, cams: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``cams (B, K, H, W) >= 0``, ``target (B, H, W)``, ``labels (B, K)`` 0/1.

        Unbatched inputs and numpy arrays are accepted; ``DataError`` on the inputs
        :meth:`LeakageMeter.update` refuses.
        """
        cams, target, labels = _prepare_meter_batch("ContrastMeter.update", cams, target, labels,
                                                    self.num_classes - 1)
        b = cams.shape[0]
        # only the classes some image of the batch has: the others add nothing (not present)
        keep = _classes_to_read(labels)  # (K',)
        k = keep.numel()
        cams, labels = cams[:, keep].flatten(2).to(torch.float64), labels[:, keep]  # (B, K', N)
        valid = (target != self.ignore_index).flatten(1).unsqueeze(1)  # (B, 1, N)
        target = target.flatten(1).unsqueeze(1)  # (B, 1, N)
        ids = (keep + 1).view(1, k, 1)
        inside = valid & (target == ids)  # (B, K, N)
        context = valid & (target == 0)  # (B, 1, N)
        other = valid & (target != 0) & (target != ids)  # (B, K, N)

        def mean(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            n = mask.sum(-1).expand(b, k)  # (B, K)
            total = torch.where(mask, cams, cams.new_zeros(())).sum(-1)  # (B, K)
            return total / n.clamp_min(1), n

        m_in, n_in = mean(inside)
        m_ctx, n_ctx = mean(context)
        m_other, n_other = mean(other)
        present = labels.to(cams.device).bool() & (n_in > 0)  # (B, K)
        has_ctx, has_other = present & (n_ctx > 0), present & (n_other > 0)
        n_valid = valid.sum(-1).expand(b, k).clamp_min(1)  # (B, K)
        zero = cams.new_zeros(())
        cols = [torch.where(has_ctx, m_in, zero), torch.where(has_ctx, m_ctx, zero),
                has_ctx.double(), torch.where(has_other, m_in, zero),
                torch.where(has_other, m_other, zero), has_other.double(),
                torch.where(present, 1 - n_in / n_valid, zero), present.double()]
        self._sums[keep.to(self._sums.device)] += torch.stack(cols, dim=-1).sum(0).to(
            self._sums.device)  # (K', 8)

    def merge(self, other: ContrastMeter) -> ContrastMeter:
        if not isinstance(other, ContrastMeter) or other.num_classes != self.num_classes:
            raise ConfigError(f"ContrastMeter.merge: expected a ContrastMeter with "
                              f"{self.num_classes} classes, got {other!r}")
        self._sums += other.state.to(self._sums.device)
        return self

    def all_reduce(self, group: Any = None) -> ContrastMeter:
        _all_reduce_sum_(self._sums, group)
        return self

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """``{"contrast_context", "contrast_partner", "leakage_uniform", "per_class"}`` (NaN without pairs).

        ``class_names``: all ``num_classes`` names, background included (``ConfigError`` otherwise).
        """
        if class_names is not None and len(class_names) != self.num_classes:
            raise ConfigError(f"ContrastMeter.compute: {len(class_names)} class names for "
                              f"{self.num_classes} classes (background included)")
        s = self._sums.cpu()
        per_class: dict[str | int, dict[str, float]] = {}
        rows = {"contrast_context": [], "contrast_partner": [], "leakage_uniform": []}
        for k in range(self.num_classes - 1):
            in_c, ctx, n_c, in_o, oth, n_o, uni, n = s[k].tolist()
            row = {
                "contrast_context": ((in_c + CONTRAST_EPS * n_c) / (ctx + CONTRAST_EPS * n_c)
                                     if n_c else math.nan),
                "contrast_partner": ((in_o + CONTRAST_EPS * n_o) / (oth + CONTRAST_EPS * n_o)
                                     if n_o else math.nan),
                "leakage_uniform": uni / n if n else math.nan,
                "pairs": int(n), "pairs_partner": int(n_o),
            }
            key = class_names[k + 1] if class_names is not None else k + 1
            per_class[key] = row
            for name in rows:
                if not math.isnan(row[name]):
                    rows[name].append(row[name])
        out = {name: float(np.mean(v)) if v else math.nan for name, v in rows.items()}
        return {**out, "per_class": per_class}


def precision_split(conf: torch.Tensor, classes: Sequence[int] | None = None,
                    class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Precision of each foreground class's predicted region, and where its false positives lie.

    From a ``(C, C)`` confusion matrix ``conf[target, pred]`` (e.g. a thresholded CAM's): for a
    predicted class ``k`` with ``P = sum_g conf[g, k]`` pixels, ``precision = conf[k, k] / P``,
    ``fp_context = conf[0, k] / P`` (on the context) and ``fp_objects = 1 - precision -
    fp_context`` (on other objects: partners and extras); the three sum to 1. Averages run over
    the foreground classes of ``classes`` (default all) that were predicted at all.

    ``class_names``: all C names, background included, indexed by label (``ConfigError`` if
    their number is not C). ``DataError`` on a matrix of another shape, negative / NaN /
    infinite counts, or a class index outside ``[0, C)``.
    """
    conf = _check_confusion("precision_split", conf)
    if conf.dim() != 2:
        raise DataError(f"precision_split: expected a (C, C) matrix, got {tuple(conf.shape)}")
    if class_names is not None and len(class_names) != conf.shape[0]:
        raise ConfigError(f"precision_split: {len(class_names)} class names for "
                          f"{conf.shape[0]} classes (background included)")
    classes = _class_indices("precision_split", classes, conf.shape[0])
    conf = conf.to(torch.float64).cpu()
    fg = [c for c in (classes if classes is not None else range(conf.shape[0])) if c != 0]
    per_class: dict[str | int, dict[str, float]] = {}
    rows: dict[str, list[float]] = {"precision": [], "fp_context": [], "fp_objects": []}
    for k in fg:
        predicted = float(conf[:, k].sum())
        if predicted == 0:
            row = dict.fromkeys(rows, math.nan)
        else:
            precision = float(conf[k, k]) / predicted
            context = float(conf[0, k]) / predicted
            row = {"precision": precision, "fp_context": context,
                   "fp_objects": max(0.0, 1.0 - precision - context)}
            for name in rows:
                rows[name].append(row[name])
        per_class[class_names[k] if class_names is not None else k] = row
    return {**{name: float(np.mean(v)) if v else math.nan for name, v in rows.items()},
            "per_class": per_class}


def foreground_recall(conf: torch.Tensor, classes: Sequence[int] | None = None) -> float:
    """Mean recall of the foreground classes: ``conf[k, k] / sum_p conf[k, p]`` over the classes
    of ``classes`` (default all) that have ground-truth pixels; NaN when none has.

    From a ``(C, C)`` confusion matrix ``conf[target, pred]``; with :func:`precision_split`
    it gives the recall / precision trade-off of a thresholded CAM. ``DataError`` on the inputs
    :func:`precision_split` refuses.
    """
    conf = _check_confusion("foreground_recall", conf)
    if conf.dim() != 2:
        raise DataError(f"foreground_recall: expected a (C, C) matrix, got {tuple(conf.shape)}")
    classes = _class_indices("foreground_recall", classes, conf.shape[0])
    conf = conf.to(torch.float64).cpu()
    fg = [c for c in (classes if classes is not None else range(conf.shape[0])) if c != 0]
    values = [float(conf[k, k]) / float(conf[k].sum()) for k in fg if float(conf[k].sum()) > 0]
    return float(np.mean(values)) if values else math.nan


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _classes_to_read(labels: torch.Tensor) -> torch.Tensor:
    """The class indices a CAM meter reads for a batch with ``labels (B, K)``: those some image
    has (the others add nothing to its sums), or all K without the speed-ups
    (:func:`causal_wsss.runtime.speedups_enabled`, the code path from before)."""
    if speedups_enabled():
        return labels.bool().any(0).nonzero().squeeze(1)
    return torch.arange(labels.shape[1], device=labels.device)


def _prepare_meter_batch(where: str, cams: torch.Tensor, target: torch.Tensor,
                         labels: torch.Tensor, num_fg: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checks every CAM meter's ``update`` makes: batch unbatched ``(K, H, W)``, ``(H, W)``,
    ``(K,)`` inputs; CAMs and target as :func:`_prepare_cams` (finite, non-negative); labels
    ``(B, K)`` of 0/1 on the CAMs' device. numpy arrays become tensors. DataError naming
    ``where`` otherwise."""
    cams, target = as_tensor(where, "cams", cams), as_tensor(where, "target", target)
    labels = as_tensor(where, "labels", labels)
    if cams.dim() == 3 and target.dim() == 2 and labels.dim() == 1:
        cams, target, labels = cams.unsqueeze(0), target.unsqueeze(0), labels.unsqueeze(0)
    cams, target = _prepare_cams(where, cams, target, None, num_fg=num_fg)
    if labels.shape != cams.shape[:2]:
        raise DataError(f"{where}: expected labels of shape {tuple(cams.shape[:2])}, "
                        f"got {tuple(labels.shape)}")
    labels = labels.to(cams.device)
    if bool(((labels != 0) & (labels != 1)).any()):
        raise DataError(f"{where}: labels must be multi-hot 0/1 values")
    return cams, target, labels


def _all_reduce_sum_(tensor: torch.Tensor, group: Any) -> None:
    """In-place sum over ranks when torch.distributed is initialised; NCCL gets a CUDA copy."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend(group) == "nccl" and tensor.device.type != "cuda":
        buffer = tensor.cuda()
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group)
        tensor.copy_(buffer)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


def _check_num_classes(owner: str, num_classes: int, ignore_index: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"{owner}: num_classes must be an int >= 2 (background included), "
                          f"got {num_classes!r}")
    if 0 <= ignore_index < num_classes:
        raise ConfigError(f"{owner}: ignore_index {ignore_index} collides with a class label "
                          f"(0..{num_classes - 1})")


def _check_classes(owner: str, classes: Sequence[int] | None,
                   num_classes: int) -> tuple[int, ...] | None:
    if classes is None:
        return None
    out = tuple(int(c) for c in classes)
    if not out or any(not 0 <= c < num_classes for c in out) or len(set(out)) != len(out):
        raise ConfigError(f"{owner}: classes must be distinct label indices in [0, {num_classes}), "
                          f"got {list(classes)}")
    return out




def _check_confusion(owner: str, conf: Any) -> torch.Tensor:
    """``conf`` as a tensor of shape ``(..., C, C)`` holding counts: non-negative, and finite
    when float (one reduction). DataError naming ``owner`` otherwise."""
    conf = as_tensor(owner, "conf", conf)
    if conf.dim() < 2 or conf.shape[-1] != conf.shape[-2]:
        raise DataError(f"{owner}: expected a confusion matrix of shape (..., C, C), got "
                        f"{tuple(conf.shape)}")
    if conf.dtype.is_complex:
        raise DataError(f"{owner}: expected real pixel counts in the confusion matrix, got dtype "
                        f"{conf.dtype}")
    if conf.numel() == 0 or conf.dtype == torch.bool:
        return conf
    if conf.dtype.is_floating_point:
        lo, hi = torch.aminmax(conf)  # NaN propagates into both
        ok = bool((lo >= 0) & (hi < math.inf))
    else:
        lo = conf.amin()
        ok = bool(lo >= 0)
    if not ok:
        what = "negative" if bool(torch.isfinite(lo)) and float(lo) < 0 else "NaN or infinite"
        raise DataError(f"{owner}: the confusion matrix holds {what} counts (min {float(lo):g}); "
                        f"expected pixel counts >= 0")
    return conf


def _class_indices(owner: str, classes: Sequence[int] | None, num_classes: int) -> list[int] | None:
    """``classes`` as a list of distinct integer label indices in ``[0, num_classes)``, or None;
    DataError naming ``owner`` otherwise (O(len(classes)), no tensor work)."""
    if classes is None:
        return None
    try:
        out = [operator.index(c) for c in classes]
    except TypeError:
        raise DataError(f"{owner}: classes must be integer label indices, got "
                        f"{list(classes)!r}") from None
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise DataError(f"{owner}: classes holds {bad}, outside the {num_classes} classes; "
                        f"expected label indices in [0, {num_classes - 1}]")
    if len(set(out)) != len(out):
        raise DataError(f"{owner}: classes {out} names a class more than once; expected "
                        f"distinct label indices")
    return out


def _check_threshold(owner: str, threshold: Any) -> float:
    try:
        if isinstance(threshold, (str, bytes)):
            raise TypeError
        value = float(threshold)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{owner}: threshold must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{owner}: threshold must be finite, got {value}")
    return value


def _check_integer(owner: str, name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise DataError(f"{owner}: {name} must hold integer class labels, got dtype {tensor.dtype}")


def _check_range(owner: str, name: str, values: torch.Tensor, num_classes: int,
                 ignore_index: int | None = None) -> None:
    if values.numel() == 0:
        return
    lo, hi = torch.aminmax(values)
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= num_classes:
        skip = f" (ignore_index {ignore_index} excluded)" if ignore_index is not None else ""
        raise DataError(f"{owner}: {name} holds labels in [{lo}, {hi}]{skip}, expected values in "
                        f"[0, {num_classes - 1}] for num_classes={num_classes}")


def _check_cam_values(owner: str, cams: torch.Tensor) -> None:
    """Finite and non-negative CAMs, with one reduction (``aminmax``: NaN propagates into both)."""
    if cams.numel() == 0:
        return
    lo, hi = torch.aminmax(cams)
    if bool((lo >= 0) & (hi < math.inf)):
        return
    if not bool(torch.isfinite(cams).all()):
        raise DataError(f"{owner}: cams contain NaN or infinite values; expected finite, "
                        f"non-negative (normalised) CAMs")
    raise DataError(f"{owner}: cams hold negative values (min {float(lo):.4g}); expected "
                    f"non-negative CAMs (apply ReLU first)")


def _prepare_cams(owner: str, cams: torch.Tensor, target: torch.Tensor | None,
                  labels: torch.Tensor | None, num_fg: int | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batch, type-check, value-check (finite, >= 0) and label-mask CAMs; returns
    ``(cams (B, K, H, W), target (B, H, W))``."""
    if not cams.dtype.is_floating_point:
        raise DataError(f"{owner}: cams must be a float tensor, got dtype {cams.dtype}")
    if cams.dim() == 3:
        cams = cams.unsqueeze(0)
        target = target.unsqueeze(0) if target is not None and target.dim() == 2 else target
        labels = labels.unsqueeze(0) if labels is not None and labels.dim() == 1 else labels
    if cams.dim() != 4:
        raise DataError(f"{owner}: expected cams of shape (B, K, H, W) or (K, H, W), got "
                        f"{tuple(cams.shape)}")
    if num_fg is not None and cams.shape[1] != num_fg:
        raise DataError(f"{owner}: expected {num_fg} foreground CAM channels (num_classes - 1), "
                        f"got {cams.shape[1]}")
    if cams.shape[1] == 0:
        raise DataError(f"{owner}: cams of shape {tuple(cams.shape)} have no class channel; "
                        f"expected K >= 1 foreground CAMs")
    if cams.dtype not in (torch.float32, torch.float64):
        cams = cams.float()
    if labels is not None:
        if labels.shape != cams.shape[:2]:
            raise DataError(f"{owner}: expected labels of shape {tuple(cams.shape[:2])}, got "
                            f"{tuple(labels.shape)}")
        present = labels.to(device=cams.device) != 0  # (B, K)
        cams = cams.masked_fill(~present[:, :, None, None], 0.0)
    _check_cam_values(owner, cams)
    if target is not None:
        expected = (cams.shape[0], *cams.shape[2:])
        if tuple(target.shape) != expected:
            raise DataError(f"{owner}: expected target of shape {expected} (the CAMs' batch and "
                            f"resolution), got {tuple(target.shape)}")
        _check_integer(owner, "target", target)
        target = target.to(cams.device)
    return cams, target


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def iou_by_class(scores: SegmentationScores, classes: Sequence[str]) -> dict[str, float]:
    """``{class name: IoU in percent}`` of ``scores`` for the classes present (absent classes,
    whose IoU is undefined, are left out)."""
    per = scores.as_dict(list(classes))["per_class"]
    return {k: 100 * v["iou"] for k, v in per.items() if v["iou"] is not None}
