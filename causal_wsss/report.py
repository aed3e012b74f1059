"""The per-round table of a run's ``report.json``, as the command line and the notebooks print it."""

from __future__ import annotations


def format_report_table(report: dict) -> str:
    """A readable per-round table of a report (mIoU in percent).

    Columns: CAM mIoU at the fixed threshold and the best (its threshold), pseudo-mask and
    segmentation mIoU (all over the data set's classes), the CAM mass leakage with the value a
    uniform map scores, the contrast (mean CAM on the object over the context), the precision of
    the CAM at the best threshold and, when the data carry twins, the context effect on the
    scores (logit on the preferred context minus the others, objects fixed).
    """
    def num(value, fmt: str, width: int, missing: str = "-") -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value:{width}{fmt}}"
        return f"{missing:>{width}}"

    head = (f"{'round':>5} {'CAM mIoU@t':>11} {'CAM best (t)':>14} {'pseudo':>7} {'seg val':>8} "
            f"{'leak (unif)':>13} {'contrast':>9} {'prec':>5} {'ctx eff':>8}")
    lines = [f"{report['dataset']} / preset {report['preset']} / seed {report['seed']}", head,
             "-" * len(head)]
    for e in report["rounds"]:
        lines.append(  # a figure with nothing to measure (null in report.json) reads "n/a"
            f"{e['round']:>5} {num(e.get('cam_miou'), '.1f', 6, 'n/a')}@"
            f"{num(e.get('cam_threshold'), '<4.2f', 0, 'n/a ')} "
            f"{num(e.get('cam_miou_best'), '.1f', 8, 'n/a')} "
            f"({num(e.get('cam_threshold_best'), '.2f', 0, 'n/a')}) "
            f"{num(e.get('pseudo_miou'), '.1f', 7, 'n/a')} {num(e.get('seg_miou'), '.1f', 8, 'n/a')} "
            f"{num(e.get('leakage'), '.3f', 6, 'n/a')} ({num(e.get('leakage_uniform'), '.3f', 5)})"
            f" {num(e.get('contrast_context'), '.2f', 9)} {num(e.get('precision_best'), '.2f', 5)}"
            f" {num(e.get('context_effect'), '.2f', 8)}")
    return "\n".join(lines)
