"""The schema of the stage records ``round_k/<stage>.json`` and of ``report.json``'s round entries.

A record is what a stage of :func:`causal_wsss.pipeline.run_round` returned, plus ``seconds``
(every stage has it) and ``inputs`` (the fingerprints of :func:`causal_wsss.runfolder.run_inputs`;
absent in folders written before records carried them). :func:`record_problem` says why a parsed
record is not one a stage writes: a field that a later step reads is missing, or a known field
has the wrong type, or a number is not finite where it must be.

Numbers: ``number`` is a finite int or float; ``figure`` also takes ``null`` and NaN, which is how a
stage writes "nothing to average" (no pairs, no prediction) and which
:func:`~causal_wsss.pipeline.run_round` reports as ``null``. Infinity and strings are never
figures. Fields a stage did not write in older versions are optional; unknown fields are allowed
(a record written by a newer version still reads).

Imports only the standard library (no pipeline, no methods).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], "str | None"]
"""A check: ``None`` when the value fits, else what is wrong with it (a few words)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(value: Any) -> str | None:
    if not _is_number(value):
        return f"{_show(value)}, not a number"
    if not math.isfinite(value):
        return f"{_show(value)}, not a finite number"
    return None


def figure(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return number(value)


def integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{_show(value)}, not an integer"
    return None


def count(value: Any) -> str | None:
    return integer(value) or (f"{value}, not a count (>= 0)" if value < 0 else None)


def text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{_show(value)}, not a string"


def anything(value: Any) -> str | None:
    return None


def _at(where: str, problem: str | None) -> str | None:
    """``problem`` of a value inside a container, located: ``"<path>\t<what>"``."""
    if problem is None:
        return None
    path, _, what = problem.rpartition("\t")
    return f"{where}{path}\t{what}"


def list_of(check: Check) -> Check:
    def fn(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"{_show(value)}, not a list"
        for i, item in enumerate(value):
            problem = _at(f"[{i}]", check(item))
            if problem:
                return problem
        return None
    return fn


def dict_of(check: Check) -> Check:
    def fn(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"{_show(value)}, not an object"
        for key, item in value.items():
            problem = _at(f"[{key!r}]", check(item))
            if problem:
                return problem
        return None
    return fn


def fields(required: dict[str, Check] | None = None,
           optional: dict[str, Check] | None = None) -> Check:
    """An object with these fields (any others are allowed)."""
    required, optional = required or {}, optional or {}

    def fn(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"{_show(value)}, not an object"
        for key in required:
            if key not in value:
                return f".{key}\tmissing"
        for key, check in {**optional, **required}.items():
            if key in value:
                problem = _at(f".{key}", check(value[key]))
                if problem:
                    return problem
        return None
    return fn


def describe(problem: str | None) -> str | None:
    """A check's result as words: ``field inputs.data['train'].images is -1, not a count``."""
    if problem is None:
        return None
    path, _, what = problem.rpartition("\t")
    return f"field {path.lstrip('.')} is {what}" if path else what


def _show(value: Any) -> str:
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


PAIR = list_of(figure)
HISTORY = list_of(dict_of(anything))
PER_CLASS = dict_of(figure)

INPUTS = fields({"data": dict_of(fields({"split": text, "images": count, "sha256": text})),
                 "config": text})
"""``inputs`` of a record: :func:`causal_wsss.runfolder.run_inputs`."""

COMMON = {"seconds": number}
COMMON_OPTIONAL = {"inputs": INPUTS, "cuda_peak_mib": number, "cpu_seconds": number}

TRAINING = {"epochs": count, "final_loss": figure, "history": HISTORY, "steps": count,
            "checkpoint": text}
"""Fields of the training stages' records (``fit``'s history and counters)."""

ROUND_CAM_FIGURES = ("leakage_uniform", "contrast_context", "contrast_partner", "precision",
                     "precision_fp_context", "precision_fp_objects", "precision_best",
                     "precision_best_fp_context", "precision_best_fp_objects", "recall",
                     "recall_best")
"""cam_eval figures a report entry copies when present (``pipeline.ROUND_CAM_KEYS``)."""

ROUND_TWIN_FIGURES = ("context_effect", "fp_rate_preferred", "fp_rate_other", "partner_effect",
                      "cam_miou_in_context", "cam_miou_out_of_context", "cam_miou_context_gap")
"""twin_eval figures a report entry copies (``pipeline.ROUND_TWIN_KEYS``)."""

CONTEXT_FIGURES = ("context_weight_mean_abs", "context_weight_vs_feature_weight", "context_share",
                   "alpha_max_mean", "alpha_uniform", "alpha_top_class_share", "m_spread")
"""cam_train figures of a CONTA round (round 1 on); the report entry copies them."""

COUNTS = {"images": count, "written": count, "skipped": count, "total": count}

STAGE_FIELDS: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "confounders": ({}, {"classes_with_masks": count, "prior_max": figure, "grid": count}),
    "cam_train": ({}, {**TRAINING, "transferred_from": text,
                       **dict.fromkeys(CONTEXT_FIGURES, figure)}),
    "cam_expand": ({}, {**TRAINING, "phase": text, "mean_abs_offset": figure,
                        "outside_share": figure, "lambda_rev_final": figure,
                        "lambda_halvings": count, "monitor": list_of(dict_of(anything)),
                        "clip": dict_of(anything)}),
    "cam_shrink": ({}, {**TRAINING, "phase": text, "mean_abs_offset": figure,
                        "outside_share": figure, "lambda_rev_final": figure,
                        "lambda_halvings": count, "monitor": list_of(dict_of(anything))}),
    "esol_eval": ({}, {"stage0": dict_of(figure), "expand": dict_of(figure)}),
    "cams": ({}, COUNTS),
    "cam_eval": ({"cam_miou": number, "cam_threshold": number, "cam_miou_best": number,
                  "cam_threshold_best": number, "leakage": figure, "leakage_cooccur": figure,
                  "leakage_background": figure},
                 {"miou_classes": list_of(text), **dict.fromkeys(ROUND_CAM_FIGURES, figure),
                  "cam_iou_per_class": PER_CLASS, "per_class": dict_of(dict_of(figure)),
                  "sweep": list_of(PAIR)}),
    "twin_eval": ({}, {**dict.fromkeys(ROUND_TWIN_FIGURES, figure), "twin_images": count}),
    "ir_labels": ({}, COUNTS),
    "irn_train": ({}, TRAINING),
    "pseudo": ({}, {"refine": text}),
    "pseudo_eval": ({"miou": number}, {"iou_per_class": PER_CLASS}),
    "seg_train": ({}, {**TRAINING, "steps_per_epoch": count}),
    "seg_eval": ({"seg_miou": number}, {"iou_per_class": PER_CLASS}),
    "seg_predict": ({}, COUNTS),
}
"""Per stage: (fields a later step reads unconditionally, fields checked when present), beside
:data:`COMMON` (required) and :data:`COMMON_OPTIONAL`. A stage not listed gets those only."""


def record_problem(stage: str, record: Any) -> str | None:
    """Why ``record`` (parsed JSON) is not a record stage ``stage`` writes, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    required, optional = STAGE_FIELDS.get(stage, ({}, {}))
    return describe(fields({**COMMON, **required}, {**COMMON_OPTIONAL, **optional})(record))


REPORT_FIGURES = ("cam_miou", "cam_threshold", "cam_miou_best", "cam_threshold_best",
                  "pseudo_miou", "seg_miou")


def _entry_value(value: Any) -> str | None:
    """Any other field of a report entry: a figure, a string or a list of strings (class names)."""
    if isinstance(value, str) or figure(value) is None:
        return None
    return list_of(text)(value) and f"{_show(value)}, not a figure"


REPORT_ENTRY = fields({"round": count, **dict.fromkeys(REPORT_FIGURES, figure)})


def entry_problem(entry: Any) -> str | None:
    """Why ``entry`` is not a round entry of ``report.json`` (as ``run_round`` makes them), or
    None: ``round`` a count, the mIoUs and thresholds figures, every other field a figure, a
    string or a list of strings (no NaN: ``run_round`` writes null)."""
    problem = describe(REPORT_ENTRY(entry))
    if problem:
        return problem
    for key, value in entry.items():
        if isinstance(value, float) and math.isnan(value):
            return f"field {key} is NaN, not a figure (a report writes null)"
        problem = _entry_value(value)
        if problem:
            return f"field {key} is {problem}"
    return None
