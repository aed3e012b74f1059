"""The regime search: which trunk, image size and schedule make round-0 CAMs object-centred on a CPU?

For each named candidate (a preset plus overrides and a synthetic image size) and each seed, this
trains the CAM network on a synthetic set, caches its multi-scale CAMs and evaluates them with
the round's own CAM evaluation (mIoU over the data set's classes at the fixed and best threshold,
leakage beside the uniform-map value, contrast, precision): the stages of a round up to
``cam_eval``, nothing after. Two data sets per size, written once under ``OUT/data``: the
confounded one (``--rho``) and the interventional one (context independent of the class).

Resumable: every (candidate, data, seed) is a folder with the pipeline's stage records; a rerun
skips what is finished. The table (``OUT/regime.md`` and ``OUT/regime.json``) is rewritten after
every run.

    python scripts/regime_search.py --out runs/regime --candidates old new --seeds 0 1 2
    python scripts/regime_search.py --list        # the candidates and what each changes
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Each candidate: (preset, synthetic size, overrides, what it tests).
CANDIDATES: dict[str, tuple[str, int, tuple[str, ...], str]] = {
    "old": ("cpu_scratch", 150, (), "the former cpu preset: ResNet-18 to layer3 from scratch, ~150 px"),
    "scratch280": ("cpu_scratch", 280,
                   ("cam.crop_size=256", "cam.resize_long=(224,336)"),
                   "the same network from scratch at ~280 px: resolution alone"),
    "mnv2_150": ("cpu", 150, ("cam.crop_size=128", "cam.resize_long=(112,176)"),
                 "pretrained MobileNetV2 at ~150 px: the trunk alone"),
    "new": ("cpu", 280, (), "the new cpu preset: pretrained MobileNetV2, ~280 px, 2 epochs"),
    "new_ep4": ("cpu", 280, ("cam.epochs=4",), "the new preset, 4 epochs"),
    "new_ep4_s360": ("cpu", 360, ("cam.epochs=4", "cam.crop_size=320", "cam.resize_long=(288,432)"),
                     "4 epochs at ~360 px"),
    "new_ep4_lr3": ("cpu", 280, ("cam.epochs=4", "cam.lr=0.003"),
                    "4 epochs with a 3x smaller learning rate"),
    "new_s1": ("cpu", 280, ("cam_infer.scales=(1.0,)",), "the new preset, single-scale CAMs"),
    "new_os8": ("cpu", 280, ("cam.output_stride=8",),
                "the new preset at output stride 8 (several times the training cost on a CPU)"),
}

KEYS = ("cam_miou_best", "cam_threshold_best", "cam_miou", "contrast_context", "contrast_partner",
        "leakage", "leakage_uniform", "precision_best", "precision_best_fp_context",
        "precision_best_fp_objects")


TWIN_KEYS = ("context_effect", "fp_rate_preferred", "fp_rate_other", "partner_effect")


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/regime", help="output folder (default runs/regime)")
    p.add_argument("--candidates", nargs="+", default=["old", "new"],
                   help="candidate names (see --list); default: old new")
    p.add_argument("--data", nargs="+", default=["interventional", "confounded"],
                   choices=["interventional", "confounded"], help="which data sets (default both)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    p.add_argument("--rho", type=float, default=0.9, help="confounding of the confounded set")
    p.add_argument("--data-seed", type=int, default=0, help="the data sets' own seed (fixed)")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--eval-split", default="val",
                   help="split whose CAMs are scored (default val: 4x fewer images than train)")
    p.add_argument("--twins", type=int, default=40,
                   help="validation images whose do(context) twins score each run (0: none)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true", help="print the candidates and exit")
    return p.parse_args(argv)


def data_root(out: Path, kind: str, size: int, args: argparse.Namespace, twins: int = 0) -> Path:
    """The data set of one kind and size (written once). ``twins``: the same set plus the twins
    of its first validation images, in a folder of its own (the other images are the same bytes)."""
    from causal_wsss.data.synthetic import generate_synthetic

    name = f"{kind}_s{size}" + ("" if kind == "interventional" else f"_rho{args.rho}")
    root = out / "data" / (name + (f"_twins{twins}" if twins else ""))
    generate_synthetic(root, n_train=args.train, n_val=args.val, rho=args.rho,
                       seed=args.data_seed, size=size, interventional=kind == "interventional",
                       twins=twins)
    return root


def twin_scores(candidate: str, kind: str, seed: int, args: argparse.Namespace) -> dict:
    """The do(context) score figures of one trained run on the twins of its data (cached in the
    run folder as ``twin_scores.json``): context effect, false positives on context alone,
    partner effect (:func:`causal_wsss.context_effects.context_effects`)."""
    import json

    from causal_wsss.checkpoint import load_checkpoint
    from causal_wsss.config import resolve
    from causal_wsss.context_effects import context_effects, twin_logits
    from causal_wsss.data.synthetic import load_meta
    from causal_wsss.io import write_json
    from causal_wsss.runtime import choose_device
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import build_cam_model

    run_dir = Path(args.out) / candidate / kind / f"seed{seed}"
    path = run_dir / "twin_scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    preset, size, overrides, _ = CANDIDATES[candidate]
    root = data_root(Path(args.out), kind, size, args, twins=args.twins)
    cfg = resolve(preset, [f"data.root={root.resolve()}", *overrides], seed=seed, rounds=0)
    sets = load_datasets(cfg)
    device = choose_device(cfg.device)
    model = build_cam_model(cfg, sets["train"].num_classes - 1)
    load_checkpoint(run_dir / "cam_net.pt", model=model, map_location=device)
    meta = load_meta(root)
    logits = twin_logits(model.to(device), sets["twins"], device=device, amp=cfg.cam.amp,
                         meta=meta, batch_size=cfg.cam_infer.batch_size)
    result = context_effects(logits, sets["twins"].names, meta, sets["twins"].classes)
    write_json(path, result)
    return result


def run_one(candidate: str, kind: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and evaluate round-0 CAMs of one candidate; returns cam_eval plus seconds."""
    from causal_wsss.checkpoint import load_checkpoint
    from causal_wsss.config import resolve
    from causal_wsss.pipeline import StageLog
    from causal_wsss.runtime import init_distributed, seed_everything, setup_logging, stage_seed
    from causal_wsss.stages.cam_train import stage_cam_train
    from causal_wsss.stages.cams import stage_cam_eval, stage_cams
    from causal_wsss.stages.datasets import load_datasets
    from causal_wsss.stages.models import build_cam_model

    preset, size, overrides, _ = CANDIDATES[candidate]
    out = Path(args.out)
    root = data_root(out, kind, size, args)
    run_dir = out / candidate / kind / f"seed{seed}"
    cfg = resolve(preset, [f"data.root={root.resolve()}", f"data.eval_split={args.eval_split}",
                           *overrides], seed=seed, rounds=0)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    log = StageLog(run_dir, True)
    done = log.get("cam_eval")
    if done is not None:
        return done
    dist_info, device = init_distributed(cfg.device)
    logger = setup_logging(run_dir)
    sets = load_datasets(cfg)
    seed_everything(stage_seed(cfg.seed, "cam"))
    model = build_cam_model(cfg, sets["train"].num_classes - 1)
    progress = not args.no_progress
    t0 = time.perf_counter()
    train = log.get("cam_train") or log.put("cam_train", {
        **stage_cam_train(cfg, model, sets["train"], run_dir, device=device, dist_info=dist_info,
                          progress=progress, logger=logger), "seconds": time.perf_counter() - t0})
    load_checkpoint(run_dir / "cam_net.pt", model=model, map_location=device)
    t1 = time.perf_counter()
    cams = log.get("cams") or log.put("cams", stage_cams(
        cfg, model, [sets["eval"]], run_dir / "cams", device=device, dist_info=dist_info,
        progress=progress, context_fn=None))
    result = stage_cam_eval(cfg, sets["eval"], run_dir / "cams", device=device,
                            dist_info=dist_info, progress=progress)
    result.update(train_seconds=train["seconds"], cam_seconds=cams["seconds"],
                  eval_seconds=time.perf_counter() - t1 - cams["seconds"])
    return log.put("cam_eval", result)


def summarise(out: Path, rows: list[dict]) -> str:
    """Mean ± sample SD over seeds of each (candidate, data) cell, per-seed values in the json."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["candidate"], row["data"]), []).append(row)
    head = ("| candidate | data | seeds | CAM best (t) | CAM @0.15 | contrast ctx | contrast partner "
            "| leakage (uniform) | precision best (fp ctx / objects) | context effect "
            "| FP on context alone: preferred / other | train s "
            "| per seed: CAM best / contrast ctx / context effect |")
    lines = [head, "|" + "---|" * 13]
    summary = []
    for (cand, kind), items in groups.items():
        def stat(key: str, items: list[dict] = items) -> tuple[float, float]:
            v = np.array([it[key] for it in items], dtype=float)
            return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")

        s = {k: stat(k) for k in (*KEYS, *TWIN_KEYS, "train_seconds")}
        summary.append({"candidate": cand, "data": kind, "seeds": [it["seed"] for it in items],
                        "mean_sd": s, "per_seed": items})

        def f(key: str, digits: int = 1, s: dict = s) -> str:
            m, sd = s[key]
            return f"{m:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")
        per_seed = "; ".join(f"{it['cam_miou_best']:.1f} / {it['contrast_context']:.2f} / "
                             f"{it['context_effect']:.2f}" for it in items)
        lines.append(
            f"| {cand} | {kind} | {len(items)} | {f('cam_miou_best')} ({s['cam_threshold_best'][0]:.2f}) "
            f"| {f('cam_miou')} | {f('contrast_context')} | {f('contrast_partner')} "
            f"| {f('leakage', 3)} ({s['leakage_uniform'][0]:.3f}) "
            f"| {f('precision_best', 2)} ({s['precision_best_fp_context'][0]:.2f} / "
            f"{s['precision_best_fp_objects'][0]:.2f}) | {f('context_effect', 2)} "
            f"| {s['fp_rate_preferred'][0]:.2f} / {s['fp_rate_other'][0]:.2f} "
            f"| {s['train_seconds'][0]:.0f} "
            f"| {per_seed} |")
    table = "\n".join(lines)
    from causal_wsss.io import write_json, write_text

    write_json(out / "regime.json", summary)
    write_text(out / "regime.md", table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, (preset, size, overrides, what) in CANDIDATES.items():
            print(f"{name:12s} preset={preset} size={size} {' '.join(overrides)}\n{'':12s} {what}")
        return 0
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown:
        print(f"unknown candidate(s) {unknown}; expected some of {', '.join(CANDIDATES)}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    for cand in args.candidates:
        for kind in args.data:
            for seed in args.seeds:
                run_one(cand, kind, seed, args)
                if args.twins:
                    twin_scores(cand, kind, seed, args)
                print(summarise(out, collect(out)), flush=True)
    return 0


def collect(out: Path) -> list[dict]:
    """Every finished (candidate, data, seed) under ``out``, in CANDIDATES order: the table
    covers all runs so far, whichever command made them."""
    import json

    rows = []
    for cand in CANDIDATES:
        for kind in ("interventional", "confounded"):
            folder = out / cand / kind
            seeds = sorted(int(p.name[4:]) for p in folder.glob("seed*") if p.name[4:].isdigit())
            for seed in seeds:
                path = folder / f"seed{seed}" / "cam_eval.json"
                if path.is_file():
                    result = json.loads(path.read_text())
                    twins_path = path.parent / "twin_scores.json"
                    twins = json.loads(twins_path.read_text()) if twins_path.is_file() else {}
                    rows.append({"candidate": cand, "data": kind, "seed": seed,
                                 **{k: result[k] for k in (*KEYS, "train_seconds")},
                                 **{k: _num(twins.get(k)) for k in TWIN_KEYS}})
    return rows


if __name__ == "__main__":
    sys.exit(main())
