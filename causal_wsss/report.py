"""The per-round table of a run's ``report.json``, as the command line and the notebooks print it,
and the same columns for rounds of several runs side by side (the demo's comparison)."""

from __future__ import annotations

_HEAD = (f"{'CAM mIoU@t':>11} {'CAM best (t)':>14} {'pseudo':>7} {'seg val':>8} "
         f"{'leak (unif)':>13} {'contrast':>9} {'prec':>5} {'ctx eff':>8} {'FP ctx':>7}")


def _num(value, fmt: str, width: int, missing: str = "-") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:{width}{fmt}}"
    return f"{missing:>{width}}"


def _columns(e: dict) -> str:
    """One round entry's columns (a figure with nothing to measure, null in report.json, reads
    "n/a"; one the run does not measure, "-")."""
    fp = e.get("fp_rate_preferred")
    return (f"{_num(e.get('cam_miou'), '.1f', 6, 'n/a')}@"
            f"{_num(e.get('cam_threshold'), '<4.2f', 0, 'n/a ')} "
            f"{_num(e.get('cam_miou_best'), '.1f', 8, 'n/a')} "
            f"({_num(e.get('cam_threshold_best'), '.2f', 0, 'n/a')}) "
            f"{_num(e.get('pseudo_miou'), '.1f', 7, 'n/a')} {_num(e.get('seg_miou'), '.1f', 8, 'n/a')} "
            f"{_num(e.get('leakage'), '.3f', 6, 'n/a')} ({_num(e.get('leakage_uniform'), '.3f', 5)})"
            f" {_num(e.get('contrast_context'), '.2f', 9)} {_num(e.get('precision_best'), '.2f', 5)}"
            f" {_num(e.get('context_effect'), '.2f', 8)}"
            f" {_num(None if fp is None else 100 * fp, '.0f', 6)}{'%' if fp is not None else ' '}")


def format_report_table(report: dict) -> str:
    """A readable per-round table of a report (mIoU in percent).

    Columns: CAM mIoU at the fixed threshold and the best (its threshold), pseudo-mask and
    segmentation mIoU (all over the data set's classes), the CAM mass leakage with the value a
    uniform map scores, the contrast (mean CAM on the object over the context), the precision of
    the CAM at the best threshold and, when the data carry twins, the context effect on the
    scores (logit on the preferred context minus the others, objects fixed) and the false
    positives on the preferred context alone (share of context-only twins scored positive).
    """
    head = f"{'round':>5} {_HEAD}"
    lines = [f"{report['dataset']} / preset {report['preset']} / seed {report['seed']}", head,
             "-" * len(head)]
    lines += [f"{e['round']:>5} {_columns(e)}" for e in report["rounds"]]
    return "\n".join(lines)


def format_rounds_table(entries: dict[str, dict], title: str = "") -> str:
    """Round entries of several runs side by side, one row per label (e.g. ``{"round 0
    (baseline)": ..., "CONTA round 1": ..., "paste round 1": ...}``), in the columns of
    :func:`format_report_table`."""
    width = max([5, *(len(k) for k in entries)])
    head = f"{'':<{width}} {_HEAD}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    lines += [f"{label:<{width}} {_columns(e)}" for label, e in entries.items()]
    return "\n".join(lines)
