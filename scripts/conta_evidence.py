"""Baseline vs CONTA on the synthetic benchmark over seeds and rho: the table of docs/results.md.

For every (rho, seed) it generates the synthetic set (cached), runs round 0 and CONTA rounds
1..T with ``causal_wsss.pipeline.run_experiment`` (resumable: rerun to continue), then writes
a markdown table of mean +- std over seeds per round, a JSON of every report and a figure.

    python scripts/conta_evidence.py --out runs/evidence --rhos 0.9 --seeds 0 1 2 --rounds 2
    python scripts/conta_evidence.py --out runs/evidence --rhos 0.5 0.7 0.9 0.97 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

KEYS = ("cam_miou", "cam_miou_best", "pseudo_miou", "seg_miou", "leakage", "leakage_background",
        "leakage_cooccur")


def run_all(args: argparse.Namespace) -> dict:
    from causal_wsss.config import resolve
    from causal_wsss.data.synthetic import generate_synthetic
    from causal_wsss.pipeline import run_experiment

    reports: dict = {}
    for rho in args.rhos:
        for seed in args.seeds:
            data = Path(args.out) / "data" / f"rho{rho}_seed{seed}"
            generate_synthetic(data, n_train=args.train, n_val=args.val, rho=rho, seed=seed)
            cfg = resolve(args.preset, [f"data.root={data}", *args.overrides], seed=seed,
                          rounds=args.rounds)
            run_dir = Path(args.out) / f"rho{rho}_seed{seed}"
            reports[f"{rho}/{seed}"] = run_experiment(cfg, run_dir, progress=not args.no_progress)
    return reports


def summarise(reports: dict) -> dict:
    """{rho: {round: {key: (mean, std, n)}}} over seeds."""
    table: dict = {}
    for tag, report in reports.items():
        rho = float(tag.split("/")[0])
        for entry in report["rounds"]:
            cell = table.setdefault(rho, {}).setdefault(entry["round"], {})
            for key in KEYS:
                cell.setdefault(key, []).append(entry[key])
    return {rho: {r: {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in cells.items()}
                  for r, cells in rounds.items()} for rho, rounds in table.items()}


def markdown(summary: dict) -> str:
    head = ("| rho | round | CAM mIoU @0.15 | CAM mIoU best | pseudo mIoU | seg mIoU (val) | "
            "leakage | on context | on co-occurring |")
    lines = [head, "|" + "---|" * 9]
    for rho in sorted(summary):
        for r in sorted(summary[rho]):
            c = summary[rho][r]
            cells = []
            for key in KEYS:
                mean, std, _ = c[key]
                cells.append(f"{mean:.1f} ± {std:.1f}" if "miou" in key else f"{mean:.3f} ± {std:.3f}")
            n = c[KEYS[0]][2]
            lines.append(f"| {rho} | {r}{' (baseline)' if r == 0 else ''} | " + " | ".join(cells)
                         + f" |{'' if n > 1 else ' (1 seed)'}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/evidence")
    p.add_argument("--rhos", type=float, nargs="+", default=[0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--figure", default=None, help="also write the per-round figure here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    reports = run_all(args)
    summary = summarise(reports)
    out = Path(args.out)
    from causal_wsss.io import write_json, write_text

    write_json(out / "reports.json", reports)
    table = markdown(summary)
    write_text(out / "table.md", table + "\n")
    print(table)
    if args.figure:
        from causal_wsss.viz import plot_rounds, save_figure

        fig = plot_rounds({f"rho={tag.split('/')[0]} s{tag.split('/')[1]}": rep
                           for tag, rep in reports.items()})
        save_figure(fig, args.figure)


if __name__ == "__main__":
    main()
