"""Pseudo-mask mIoU of IRN refinement over its three thresholds, on a finished round 0.

IRNet's thresholds (confident foreground 0.30, confident background 0.05, background after the
random walk 0.25; method.md section 4) suit CAMs of an ImageNet ResNet-50, whose best
background threshold is about 0.15. The `cpu` preset's CAMs (a small network trained from
scratch) are diffuse, with a best threshold of about 0.65, so those values mark most of the
image as confident foreground. This script trains IRN once per (fg, bg) pair on the cached CAMs
of ``RUN/round_0`` and scores the random walk at each background threshold:

    python scripts/tune_irn_thresholds.py runs/evidence/rho0.9_seed0 --out runs/irn_tuning \\
        --ir 0.30,0.05 0.60,0.30 0.80,0.40 --sem 0.25 0.5 0.7

``--oracle`` adds a diagnostic that needs no IRN training: the same random walk, with the
boundary map taken from the ground-truth masks (1 where a label changes within a 3x3 window of
the stride-4 grid). It separates the two halves of IRN: if the walk with true boundaries beats
the plain threshold, the propagation works and a poor result comes from the learned boundaries.

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
    p.add_argument("--ir", nargs="+", default=["0.30,0.05"], metavar="FG,BG",
                   help="confident foreground, background threshold pairs of the IR labels")
    p.add_argument("--sem", type=float, nargs="+", default=[0.25],
                   help="background thresholds after the random walk")
    p.add_argument("--oracle", action="store_true",
                   help="also walk with ground-truth boundaries (a diagnostic, not a method)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()

    from dataclasses import replace

    import torch

    from causal_wsss.checkpoint import load_checkpoint
    from causal_wsss.config import ExperimentConfig
    from causal_wsss.io import write_json
    from causal_wsss.irn import make_ir_label_files, make_irn_refiner, train_irn
    from causal_wsss.pipeline import build_cam_model, load_datasets, score_label_folder
    from causal_wsss.pseudo_masks import make_pseudo_masks
    from causal_wsss.runtime import DistInfo, seed_everything, stage_seed

    cfg = ExperimentConfig.load(args.run / "config.json")
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
        for sem in args.sem:
            miou = oracle_miou(train, round0 / "cams", cfg.pseudo, sem, progress)
            rows.append({"conf_fg": None, "conf_bg": None, "sem_seg_bg": sem,
                         "pseudo_miou": miou, "boundaries": "ground truth"})
            print(f"ground-truth boundaries, sem {sem:.2f}: pseudo-mask mIoU {miou:.1f}",
                  flush=True)
    write_json(args.out / "tuning.json", rows)
    rows = [r for r in rows if r.get("boundaries") != "ground truth"] or rows
    best = max(rows, key=lambda r: r["pseudo_miou"])
    print(f"best: pseudo.conf_fg_threshold={best['conf_fg']} pseudo.conf_bg_threshold="
          f"{best['conf_bg']} pseudo.sem_seg_bg_threshold={best['sem_seg_bg']} "
          f"({best['pseudo_miou']:.1f})")


def oracle_miou(dataset, cam_dir: Path, pcfg, threshold: float, progress: bool) -> float:
    """Pseudo-mask mIoU of IRNet's random walk on boundaries read off the ground-truth masks."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from causal_wsss.cam import CamCache
    from causal_wsss.constants import IGNORE_INDEX
    from causal_wsss.irn import semantic_labels
    from causal_wsss.metrics import ConfusionMatrix

    cache, conf = CamCache(cam_dir), ConfusionMatrix(dataset.num_classes)
    for i in tqdm(range(len(dataset)), desc=f"oracle walk {threshold}", disable=not progress):
        cams = cache.get(dataset.names[i])
        mask = torch.from_numpy(dataset.load_mask(i).astype(np.int64))  # (H, W)
        height, width = mask.shape
        grid = (math.ceil(height / 4), math.ceil(width / 4))
        small = F.interpolate(mask[None, None].float(), size=grid, mode="nearest")[0, 0]
        small[small == IGNORE_INDEX] = 0
        hi = F.max_pool2d(small[None, None], 3, 1, 1)[0, 0]
        lo = -F.max_pool2d(-small[None, None], 3, 1, 1)[0, 0]
        boundary = (hi != lo).float()  # (h, w): 1 where the label changes
        labels = semantic_labels(cams.stride4.float(), cams.keys, boundary, (height, width),
                                 beta=pcfg.beta, exp_times=pcfg.exp_times,
                                 bg_threshold=threshold).long()
        conf.update(labels, mask)
    return 100 * conf.compute().miou


if __name__ == "__main__":
    main()
