"""The ESOL rows of docs/results.md (section 6) from run folders: mean ± sd over seeds.

    python scripts/esol_table.py esol=runs/esol/esol_s* irn=runs/esol/irn_s* noclip=runs/esol/noclip_s*

Each LABEL=GLOB names the run folders of one setting (one per seed); every finished round of
their ``report.json`` gives a row: for ``cam.method=esol`` runs the stage-0, expansion and
shrinkage CAMs (mIoU at the best threshold, precision, recall, contrast on context), then the
pseudo-mask and segmentation mIoU, and the context effect when the data carry twins. "± x" is
numpy's default standard deviation (ddof 0), as in the rest of docs/results.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from pathlib import Path

import numpy as np

CAM = ("cam_miou_best", "precision_best", "recall_best", "contrast_context")
COLUMNS = [("stage0", "esol_stage0_"), ("expand", "esol_expand_"), ("final", "")]


def _fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    vals = [v * scale for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def rows(label: str, folders: list[Path]) -> list[str]:
    reports = [json.loads((f / "report.json").read_text()) for f in folders
               if (f / "report.json").is_file()]
    out = []
    rounds = sorted({e["round"] for r in reports for e in r["rounds"]})
    for rnd in rounds:
        entries = [e for r in reports for e in r["rounds"] if e["round"] == rnd]
        cells = [f"{label} r{rnd}", str(len(entries))]
        for _, prefix in COLUMNS:
            for key in CAM:
                scale, digits = (1.0, 1) if key == "cam_miou_best" else (1.0, 2)
                cells.append(_fmt([e.get(prefix + key, math.nan) for e in entries], scale, digits))
        for key in ("pseudo_miou", "seg_miou"):
            cells.append(_fmt([e.get(key, math.nan) for e in entries]))
        cells.append(_fmt([e.get("context_effect", math.nan) for e in entries], digits=2))
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="+", metavar="LABEL=GLOB")
    args = p.parse_args(argv)
    head = ["setting", "seeds"]
    for name, _ in COLUMNS:
        head += [f"{name} {k}" for k in ("mIoU", "prec", "rec", "contrast")]
    head += ["pseudo", "seg", "ctx effect"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for item in args.settings:
        label, _, pattern = item.partition("=")
        folders = sorted(Path(f) for f in glob.glob(pattern))
        for line in rows(label, folders):
            print(line)


if __name__ == "__main__":
    main()
