"""Pseudo-mask mIoU of IRN refinement over its three thresholds, on a finished round 0.

IRNet's thresholds (confident foreground 0.30, confident background 0.05, background after the
random walk 0.25; method.md section 4) suit CAMs of an ImageNet ResNet-50, whose best
background threshold is about 0.15. The CAMs of the `cpu` and `cpu_scratch` presets are
diffuse, with a best threshold of about 0.65-0.75, so those values mark most of the image as
confident foreground. This script trains IRN once per (fg, bg) pair on the cached CAMs
of ``RUN/round_0`` and scores the random walk at each background threshold:

    python scripts/tune_irn_thresholds.py runs/evidence/rho0.9_seed0 --out runs/irn_tuning \\
        --ir 0.30,0.05 0.60,0.30 0.80,0.40 --sem 0.25 0.5 0.7

``--oracle`` adds a diagnostic that needs no IRN training: the same random walk, with the
boundary map read off the ground-truth masks (:func:`causal_wsss.irn.ground_truth_boundary`: on
the stride-4 grid, the cells just *outside* each object, and where two objects touch a one-cell
strip of the one with the smaller label). It separates the two halves of IRN: if the walk with
true boundaries beats the plain threshold, the propagation works and a poor result comes from
the learned boundaries. It first runs a sanity check: perfect CAMs (the ground-truth class
indicators) through the same walk must score within ``--tolerance`` points of the same maps
without a walk, on the first ``--oracle-images`` training images; otherwise the script stops
with exit status 1, since a diagnostic that erases what it should keep measures nothing.

Trailing ``KEY=VALUE`` overrides change the run's saved configuration for this script only,
e.g. to give a run made before the `cpu` preset followed IRNet's protocol that protocol:

    python scripts/tune_irn_thresholds.py runs/evidence/rho0.9_seed0 --out runs/oracle \
        --ir --sem 0.25 0.5 0.7 --oracle pseudo.walk_reach=0.2988

It reads nothing but the run folder's config, CAM cache and CAM network, and writes IR labels,
boundary networks and pseudo-masks under ``--out``. The pair and threshold it finds are meant to
be chosen once (on one seed) and then fixed for every seed and round, as the `cpu` preset's
``pseudo.bg_threshold`` was.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder whose round_0 has cam_net.pt and cams/")
    p.add_argument("--out", type=Path, required=True, help="folder for the tuning outputs")
    p.add_argument("--ir", nargs="*", default=["0.30,0.05"], metavar="FG,BG",
                   help="confident foreground, background threshold pairs of the IR labels "
                        "(none: no IRN training, e.g. with --oracle)")
    p.add_argument("--sem", type=float, nargs="+", default=[0.25],
                   help="background thresholds after the random walk")
    p.add_argument("--oracle", action="store_true",
                   help="also walk with ground-truth boundaries (a diagnostic, not a method), "
                        "after its sanity check on perfect CAMs")
    p.add_argument("--oracle-images", type=int, default=40,
                   help="images of the sanity check (default 40; 0 = all)")
    p.add_argument("--tolerance", type=float, default=5.0,
                   help="largest mIoU loss (points) the sanity check accepts (default 5)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides applied to the run's saved configuration")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_intermixed_args()

    from dataclasses import replace

    import torch

    from causal_wsss.checkpoint import load_checkpoint
    from causal_wsss.config import ExperimentConfig, apply_overrides, check_config
    from causal_wsss.io import write_json
    from causal_wsss.irn import make_ir_label_files, make_irn_refiner, oracle_scores, train_irn
    from causal_wsss.pseudo_masks import make_pseudo_masks
    from causal_wsss.runtime import DistInfo, seed_everything, stage_seed
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import build_cam_model
    from causal_wsss.stages.pseudo import score_label_folder

    cfg = check_config(apply_overrides(ExperimentConfig.load(args.run / "config.json"),
                                       args.overrides))
    round0 = args.run / "round_0"
    train = load_datasets(cfg)["train"]
    device = torch.device("cpu")
    cam_net = build_cam_model(cfg, train.num_classes - 1)
    load_checkpoint(round0 / "cam_net.pt", model=cam_net)
    dist, progress = DistInfo(), not args.no_progress
    rows = []
    for pair in args.ir:
        fg, bg = (float(x) for x in pair.split(","))
        pcfg = replace(cfg.pseudo, conf_fg_threshold=fg, conf_bg_threshold=bg)
        folder = args.out / f"ir_{fg}_{bg}"
        make_ir_label_files(train, round0 / "cams", folder / "ir_label", fg_threshold=fg,
                            bg_threshold=bg, crf=pcfg.ir_crf, progress=progress)
        if not (folder / "irn.pt").is_file():
            seed_everything(stage_seed(cfg.seed, "irn"))
            train_irn(cam_net, train, folder / "ir_label", pcfg, crop_size=cfg.cam.crop_size,
                      device=device, out_dir=folder, seed=cfg.seed, progress=progress,
                      momentum=cfg.cam.momentum)
        for sem in args.sem:
            refiner = make_irn_refiner(cam_net, folder / "irn.pt",
                                       replace(pcfg, sem_seg_bg_threshold=sem), device=device)
            out = folder / f"pseudo_{sem}"
            make_pseudo_masks(train, round0 / "cams", out, bg_threshold=sem, refine=refiner,
                              progress=progress)
            miou = score_label_folder(train, out, dist_info=dist, progress=progress)["miou"]
            rows.append({"conf_fg": fg, "conf_bg": bg, "sem_seg_bg": sem, "pseudo_miou": miou})
            print(f"fg {fg:.2f} bg {bg:.2f} sem {sem:.2f}: pseudo-mask mIoU {miou:.1f}", flush=True)
    if args.oracle:
        sanity = oracle_scores(train, cfg.pseudo, args.sem, max_images=args.oracle_images,
                               progress=progress)
        failed = []
        for sem in args.sem:
            walk, plain = sanity["walk"][sem], sanity["no_walk"][sem]
            rows.append({"conf_fg": None, "conf_bg": None, "sem_seg_bg": sem, "pseudo_miou": walk,
                         "no_walk_miou": plain, "boundaries": "ground truth",
                         "cams": "perfect", "images": args.oracle_images})
            ok = walk >= plain - args.tolerance
            failed += [] if ok else [sem]
            print(f"sanity, perfect CAMs, sem {sem:.2f}: walk on ground-truth boundaries "
                  f"{walk:.1f}, no walk {plain:.1f} ({'pass' if ok else 'FAIL'}, tolerance "
                  f"{args.tolerance:g})", flush=True)
        if failed:
            write_json(args.out / "tuning.json", rows)
            raise SystemExit(f"oracle sanity check failed at sem {failed}: the walk on "
                             "ground-truth boundaries loses what perfect CAMs hold")
        found = oracle_scores(train, cfg.pseudo, args.sem, cam_dir=round0 / "cams",
                              progress=progress)
        for sem in args.sem:
            rows.append({"conf_fg": None, "conf_bg": None, "sem_seg_bg": sem,
                         "pseudo_miou": found["walk"][sem], "no_walk_miou": found["no_walk"][sem],
                         "boundaries": "ground truth", "cams": "run"})
            print(f"ground-truth boundaries, the run's CAMs, sem {sem:.2f}: pseudo-mask mIoU "
                  f"{found['walk'][sem]:.1f} (no walk {found['no_walk'][sem]:.1f})", flush=True)
    write_json(args.out / "tuning.json", rows)
    rows = [r for r in rows if r.get("boundaries") != "ground truth"]
    if not rows:
        return
    best = max(rows, key=lambda r: r["pseudo_miou"])
    print(f"best: pseudo.conf_fg_threshold={best['conf_fg']} pseudo.conf_bg_threshold="
          f"{best['conf_bg']} pseudo.sem_seg_bg_threshold={best['sem_seg_bg']} "
          f"({best['pseudo_miou']:.1f})")


if __name__ == "__main__":
    main()
