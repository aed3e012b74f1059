"""Pseudo-masks from the same round-0 CAMs four ways, per seed: threshold, dense CRF, IRN and the
walk on ground-truth boundaries, with the IR labels' statistics (docs/results.md, section 4).

For each run folder (one seed; its ``round_0`` must hold ``cam_net.pt`` and ``cams/``, e.g. the
round 0 of ``scripts/conta_evidence.py``), on the training images:

- ``threshold``: ``pseudo.bg_threshold`` on the CAMs (``pseudo.refine=none``);
- ``crf``: the same threshold, then IRNet's label CRF (``pseudo.refine=crf``);
- ``irn`` (with ``--irn``): IRNet's protocol as the configuration gives it: IR labels
  (``conf_fg/bg_threshold``, the CRF when ``pseudo.ir_crf``), the boundary network
  (``irn_steps`` / ``irn_epochs``, ``irn_batch_size``, ``irn_radius``), the walk
  (``walk_reach`` or ``exp_times``) and ``sem_seg_bg_threshold``;
- ``irn_bg``: the same walk thresholded at ``bg_threshold`` (where the oracle walk gains);
- ``oracle``: the same walk on ground-truth boundaries (outer side,
  :func:`causal_wsss.irn.ground_truth_boundary`) at ``sem_seg_bg_threshold`` and at
  ``bg_threshold``, after the sanity check on perfect CAMs (stops on failure);
- the IR labels: share of pixels called confident foreground / background / ignore, and the
  share of each that the ground truth agrees with.

It reads the run folders and writes only under ``--out``: ``<run name>/`` (IR labels, the
boundary network, pseudo-masks), ``scores.json`` (every number, per-class IoU included) and
``table.md`` (per seed, mean and 95% t interval over seeds, paired differences against the
threshold); ``--figure`` draws IoU per class. Rerun to resume: what ``scores.json`` already holds
for a run (same ``pseudo`` settings) is kept, a trained boundary network is reused. Trailing ``KEY=VALUE`` overrides
apply to every run's saved configuration, e.g. the `cpu` preset's IRN protocol on runs made
before it was adopted:

    python scripts/compare_refinement.py runs/evidence/conta/rho0.9_seed{0,1,2} --out runs/refine \\
        --irn pseudo.ir_crf=true pseudo.irn_steps=993 pseudo.irn_batch_size=8 \\
        pseudo.irn_radius=5 pseudo.walk_reach=0.29879914246234357
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

VARIANTS = ("threshold", "crf", "irn", "irn_bg", "oracle_sem", "oracle_bg")


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t interval over seeds (nan half-width for one seed)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / len(v) ** 0.5)


def ir_label_stats(dataset, ir_dir: Path) -> dict[str, float]:
    """Shares of pixels (non-void in the truth) with a confident foreground, background or ignore
    IR label, and the share of the confident ones the truth agrees with."""

    from causal_wsss.constants import IGNORE_INDEX
    from causal_wsss.data.base import read_label_png

    n = {k: 0 for k in ("pixels", "fg", "fg_right", "bg", "bg_right", "truth_fg")}
    for i, name in enumerate(dataset.names):
        ir = read_label_png(ir_dir / f"{name}.png", 256)
        mask = dataset.load_mask(i)
        valid = mask != IGNORE_INDEX
        fg, bg = valid & (ir != IGNORE_INDEX) & (ir > 0), valid & (ir == 0)
        n["pixels"] += int(valid.sum())
        n["fg"] += int(fg.sum())
        n["fg_right"] += int((fg & (ir == mask)).sum())
        n["bg"] += int(bg.sum())
        n["bg_right"] += int((bg & (mask == 0)).sum())
        n["truth_fg"] += int((valid & (mask > 0)).sum())
    return {"confident_fg": 100 * n["fg"] / n["pixels"],
            "confident_fg_correct": 100 * n["fg_right"] / max(n["fg"], 1),
            "confident_bg": 100 * n["bg"] / n["pixels"],
            "confident_bg_correct": 100 * n["bg_right"] / max(n["bg"], 1),
            "ignore": 100 * (n["pixels"] - n["fg"] - n["bg"]) / n["pixels"],
            "truth_fg": 100 * n["truth_fg"] / n["pixels"]}


def run_one(run: Path, out: Path, overrides: list[str], *, irn: bool, oracle_images: int,
            tolerance: float, progress: bool, previous: dict | None = None) -> dict:
    import time

    import torch

    from causal_wsss.checkpoint import load_checkpoint
    from causal_wsss.config import ExperimentConfig, apply_overrides, check_config
    from causal_wsss.irn import make_ir_label_files, make_irn_refiner, oracle_scores, train_irn
    from causal_wsss.pseudo_masks import make_pseudo_masks
    from causal_wsss.runtime import DistInfo, seed_everything, stage_seed
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import build_cam_model
    from causal_wsss.stages.pseudo import score_label_folder

    cfg = check_config(apply_overrides(ExperimentConfig.load(run / "config.json"), overrides))
    p, round0, dist = cfg.pseudo, run / "round_0", DistInfo()
    train = load_datasets(cfg)["train"]
    cams = round0 / "cams"
    row: dict = {"run": str(run), "seed": cfg.seed, "pseudo": dict(vars(p)), "seconds": {}}
    if previous and previous.get("pseudo") == row["pseudo"]:  # an earlier invocation's numbers
        row.update({k: v for k, v in previous.items() if k not in ("run", "seed", "pseudo")})

    def score(name: str, folder: Path) -> None:
        s = score_label_folder(train, folder, dist_info=dist, progress=progress)
        row[name] = s["miou"]
        row[f"{name}_per_class"] = s["iou_per_class"]
        print(f"{run.name} {name}: {s['miou']:.1f}", flush=True)

    for name, refine in (("threshold", "none"), ("crf", "crf")):
        if name in row:
            continue
        t0 = time.perf_counter()
        make_pseudo_masks(train, cams, out / name, bg_threshold=p.bg_threshold, refine=refine,
                          progress=progress)
        row["seconds"][name] = time.perf_counter() - t0
        score(name, out / name)
    if "ir_labels" not in row or not (out / "ir_label").is_dir():
        t0 = time.perf_counter()
        make_ir_label_files(train, cams, out / "ir_label", fg_threshold=p.conf_fg_threshold,
                            bg_threshold=p.conf_bg_threshold, crf=p.ir_crf, progress=progress)
        row["seconds"]["ir_labels"] = time.perf_counter() - t0
        row["ir_labels"] = ir_label_stats(train, out / "ir_label")
        print(f"{run.name} IR labels: {row['ir_labels']}", flush=True)
    if irn and not all(k in row for k in ("irn", "irn_bg")):
        device = torch.device("cpu")
        cam_net = build_cam_model(cfg, train.num_classes - 1)
        load_checkpoint(round0 / "cam_net.pt", model=cam_net)
        t0 = time.perf_counter()
        if not (out / "irn.pt").is_file() or not (out / "irn.json").is_file():
            seed_everything(stage_seed(cfg.seed, "irn"))
            result = train_irn(cam_net, train, out / "ir_label", p, crop_size=cfg.cam.crop_size,
                               device=device, out_dir=out, seed=cfg.seed, progress=progress,
                               momentum=cfg.cam.momentum)
            from causal_wsss.io import write_json

            write_json(out / "irn.json", {k: v for k, v in result.items() if k != "history"})
        row["seconds"]["irn_train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # IRNet's threshold after the walk, and the pipeline's (where the oracle walk gains);
        # the refiner applies its config's sem_seg_bg_threshold, whatever it is passed
        for name, t in (("irn", p.sem_seg_bg_threshold), ("irn_bg", p.bg_threshold)):
            if name in row:
                continue
            refiner = make_irn_refiner(cam_net, out / "irn.pt",
                                       dataclasses.replace(p, sem_seg_bg_threshold=t),
                                       device=device)
            make_pseudo_masks(train, cams, out / name, bg_threshold=t, refine=refiner,
                              progress=progress)
            score(name, out / name)
        row["seconds"]["irn_walk"] = time.perf_counter() - t0
    if "oracle_sem" in row:
        return row
    sanity = oracle_scores(train, p, [p.sem_seg_bg_threshold, p.bg_threshold],
                           max_images=oracle_images, progress=progress)
    row["sanity"] = {k: {str(t): v for t, v in d.items()} for k, d in sanity.items()}
    for t in (p.sem_seg_bg_threshold, p.bg_threshold):
        if sanity["walk"][t] < sanity["no_walk"][t] - tolerance:
            raise SystemExit(f"{run}: oracle sanity check failed at {t}: perfect CAMs walked "
                             f"{sanity['walk'][t]:.1f}, not walked {sanity['no_walk'][t]:.1f}")
    t0 = time.perf_counter()
    found = oracle_scores(train, p, [p.sem_seg_bg_threshold, p.bg_threshold], cam_dir=cams,
                          progress=progress)
    row["seconds"]["oracle"] = time.perf_counter() - t0
    row["oracle_sem"], row["oracle_bg"] = (found["walk"][p.sem_seg_bg_threshold],
                                           found["walk"][p.bg_threshold])
    row["oracle_no_walk"] = {str(t): v for t, v in found["no_walk"].items()}
    print(f"{run.name} oracle: {row['oracle_sem']:.1f} (t={p.sem_seg_bg_threshold}), "
          f"{row['oracle_bg']:.1f} (t={p.bg_threshold}); sanity {row['sanity']}", flush=True)
    return row


def table(rows: list[dict]) -> str:
    labels = table_labels(rows)
    lines = ["| pseudo-masks | mIoU, mean [95% interval] | per seed |", "|---|---|---|"]
    for v in VARIANTS:
        vals = [r[v] for r in rows if v in r]
        if not vals:
            continue
        mean, half = interval(vals)
        lines.append(f"| {labels[v]} | {mean:.1f} [{mean - half:.1f}, {mean + half:.1f}] | "
                     + ", ".join(f"{x:.1f}" for x in vals) + " |")
    lines += ["", "| paired difference (same seed) | mIoU, mean [95% interval] | per seed |",
              "|---|---|---|"]
    for v in VARIANTS[1:]:
        pairs = [(r[v], r["threshold"]) for r in rows if v in r and "threshold" in r]
        if not pairs:
            continue
        diffs = [a - b for a, b in pairs]
        mean, half = interval(diffs)
        lines.append(f"| {labels[v]} − {labels['threshold']} | {mean:+.1f} "
                     f"[{mean - half:+.1f}, {mean + half:+.1f}] | "
                     + ", ".join(f"{x:+.1f}" for x in diffs) + " |")
    lines += ["", "| IR labels (% of pixels) | confident fg | of which right | confident bg | "
              "of which right | ignore | truth fg |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["ir_labels"]
        lines.append(f"| seed {r['seed']} | {s['confident_fg']:.1f} | {s['confident_fg_correct']:.1f}"
                     f" | {s['confident_bg']:.1f} | {s['confident_bg_correct']:.1f} | "
                     f"{s['ignore']:.1f} | {s['truth_fg']:.1f} |")
    return "\n".join(lines) + "\n"


def per_class_figure(rows: list[dict], path: Path) -> None:
    """IoU per class of every variant (mean over seeds, a dot per seed): where a refinement wins
    or loses."""
    import numpy as np

    from causal_wsss.viz import plt, save_figure

    present = [v for v in ("threshold", "crf", "irn", "irn_bg")
               if all(f"{v}_per_class" in r for r in rows)]
    classes = list(rows[0][f"{present[0]}_per_class"])
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 3.8))
    width = 0.8 / len(present)
    for j, v in enumerate(present):
        vals = np.array([[r[f"{v}_per_class"][c] for c in classes] for r in rows], dtype=float)
        x = np.arange(len(classes)) + (j - (len(present) - 1) / 2) * width
        ax.bar(x, vals.mean(0), width, label=table_labels(rows)[v])
        for seed_vals in vals:
            ax.plot(x, seed_vals, ".", color="k", ms=3)
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30)
    ax.set_ylabel("IoU (%), training images")
    ax.set_title(f"Pseudo-masks per class: mean over {len(rows)} seeds (bars), each seed (dots)",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def table_labels(rows: list[dict]) -> dict[str, str]:
    p = rows[0]["pseudo"]
    return {"threshold": f"threshold {p['bg_threshold']}",
            "crf": f"threshold {p['bg_threshold']} + CRF",
            "irn": f"IRN (IRNet's protocol, t = {p['sem_seg_bg_threshold']})",
            "irn_bg": f"IRN's walk, t = {p['bg_threshold']}",
            "oracle_sem": f"walk on ground-truth boundaries, t = {p['sem_seg_bg_threshold']}",
            "oracle_bg": f"walk on ground-truth boundaries, t = {p['bg_threshold']}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("items", nargs="*", metavar="RUN | KEY=VALUE",
                    help="run folders (one per seed), then config overrides")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--irn", action="store_true", help="train IRN and walk (the slow part)")
    ap.add_argument("--oracle-images", type=int, default=40)
    ap.add_argument("--tolerance", type=float, default=5.0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--figure", type=Path, default=None,
                    help="also draw the IoU per class of every variant here")
    ap.add_argument("--tables-only", action="store_true",
                    help="run nothing: rewrite table.md (and --figure) from OUT/scores.json")
    args = ap.parse_intermixed_args()
    overrides = [x for x in args.items if "=" in x]
    runs = [Path(x) for x in args.items if "=" not in x]

    import json

    from causal_wsss.io import write_json, write_text

    if not runs and not args.tables_only:
        ap.error("give at least one run folder (or --tables-only)")
    if args.tables_only:
        scores = args.out / "scores.json"
        if not scores.is_file():
            raise SystemExit(f"error: --tables-only: no {scores}; run the comparison first")
        rows = json.loads(scores.read_text())
    else:
        saved = args.out / "scores.json"  # an earlier invocation's rows: what is done is kept
        previous = {r["run"]: r for r in json.loads(saved.read_text())} if saved.is_file() else {}
        rows = []
        for i, run in enumerate(runs):
            rows.append(run_one(run, args.out / run.name, overrides, irn=args.irn,
                                oracle_images=args.oracle_images, tolerance=args.tolerance,
                                progress=not args.no_progress, previous=previous.get(str(run))))
            later = [previous[str(r)] for r in runs[i + 1:] if str(r) in previous]
            write_json(saved, rows + later)  # an interrupted invocation loses nothing
    text = table(rows)
    write_text(args.out / "table.md", text)
    if args.figure:
        per_class_figure(rows, args.figure)
    print(text)


if __name__ == "__main__":
    main()
