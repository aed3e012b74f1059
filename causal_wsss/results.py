"""The results of full-scale runs beside the published numbers: the numbers CONTA and its baselines
published (with how far each was verified), the source of every ``paper`` preset value, and
reading finished run folders' reports into tables (pandas, no plotting)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

PUBLISHED_MIOU: dict[str, tuple[dict[str, Any], ...]] = {
    "voc": (
        {"method": "IRNet", "cam": 48.3, "pseudo": 66.5, "seg_val": 63.5, "seg_test": 64.8,
         "source": "paper, docs/method.md §6 [V-issue/2nd] (IRNet's own paper, ResNet-50 DeepLab)"},
        {"method": "IRNet + CONTA", "cam": 48.8, "pseudo": 67.9, "seg_val": 65.3, "seg_test": 66.1,
         "source": "paper, docs/method.md §6 [U] (seg values approximate, low confidence)"},
        {"method": "SEAM", "cam": 55.4, "pseudo": 63.6, "seg_val": 64.5, "seg_test": 65.7,
         "source": "paper, docs/method.md §6 [V] (SEAM's own paper, ResNet-38)"},
        {"method": "SEAM + CONTA", "cam": 56.2, "pseudo": 65.4, "seg_val": 66.1, "seg_test": 66.7,
         "source": "paper, docs/method.md §6: seg val/test [V-2nd], CAM/pseudo-mask [U]"},
    ),
    "coco": (
        {"method": "IRNet*", "seg_val": 32.6, "source": "paper, docs/method.md §6 [U]"},
        {"method": "IRNet* + CONTA", "seg_val": 33.4,
         "source": "paper, docs/method.md §6 [V-2nd] (33.4 verified; its pairing with IRNet* [U])"},
        {"method": "SEAM*", "seg_val": 31.9, "source": "paper, docs/method.md §6 [U]"},
        {"method": "SEAM* + CONTA", "seg_val": 32.8, "source": "paper, docs/method.md §6 [U]"},
    ),
}
"""mIoU (%) published for CONTA and its baselines (method.md section 6; "*" = re-implemented in
the CONTA paper); the tag in ``source`` says how far each number was verified."""


RESULT_COLUMNS = {"cam": "CAM (train)", "pseudo": "pseudo-mask (train)", "seg_val": "seg (val)",
                  "seg_test": "seg (test)"}
"""Columns of :func:`results_table`: key of :data:`PUBLISHED_MIOU` -> column title."""


PAPER_PRESET_SOURCES: dict[str, str] = {
    "preset": "the `paper` preset (causal_wsss/config.py)",
    "seed": "ours; docs/method.md §6 asks for means over seeds",
    "rounds": "docs/method.md §4: T = 3 [U]",
    "device": "ours (auto: CUDA when present)",
    "data.dataset": "docs/method.md §5: PASCAL VOC 2012",
    "data.root": "your copy (--root / CAUSAL_WSSS_DATA)",
    "data.train_split": "docs/method.md §4-5: train_aug, 10,582 images (falls back to train)",
    "data.eval_split": "docs/method.md §5: CAM and pseudo-mask mIoU on VOC train (1,464)",
    "data.val_split": "docs/method.md §5: segmentation mIoU on VOC val (1,449)",
    "data.num_workers": "ours (loader processes; no effect on results)",
    "data.max_images": "ours (0 = every image)",
    "data.twins_split": "ours (the do(context) twins of a synthetic set; absent on VOC/COCO, so unused)",
    "cam.backbone": "docs/method.md §4 CAM stage [V-code]: ResNet-50",
    "cam.weights": "docs/method.md §4: torchvision ImageNet weights",
    "cam.output_stride": "docs/method.md §4: strides (2,2,2,1), OS 16",
    "cam.trunk_depth": "docs/method.md §4: all four ResNet stages",
    "cam.freeze_bn": "docs/method.md §4: FixedBatchNorm",
    "cam.freeze_stem": "docs/method.md §4: conv1/bn1 frozen, stage-2 output detached",
    "cam.epochs": "docs/method.md §4: 5 epochs",
    "cam.batch_size": "docs/method.md §4: batch 16",
    "cam.crop_size": "docs/method.md §4: random crop 512",
    "cam.resize_long": "docs/method.md §4: long side resized to [320, 640]",
    "cam.optimizer": "docs/method.md §4: SGD (IRNet PolyOptimizer)",
    "cam.lr": "docs/method.md §4: 0.1 backbone",
    "cam.head_lr_mult": "docs/method.md §4: head 1.0 = 10x",
    "cam.weight_decay": "docs/method.md §4: 1e-4",
    "cam.momentum": "docs/method.md §4 and 7.5: IRNet's effective momentum 1e-4",
    "cam.poly_power": "docs/method.md §4: poly 0.9",
    "cam.amp": "ours, a speed setting that is not IRNet's: bf16 autocast in CAM training and "
               "CAM inference (IRNet runs both in fp32); it moves a trained network's "
               "normalised CAMs by up to 6.5e-3 on a CPU, 4.8e-2 on an H200; on a CPU it runs fp32 "
               "unless CAUSAL_WSSS_CPU_AMP=1 (measured: no faster training and 0.87 points of "
               "pseudo-mask mIoU lost even with bf16 units; docs/benchmarks.md); cam.amp=false "
               "gives IRNet's fp32",
    "cam.channels_last": "ours (memory layout; no effect on results)",
    "cam.method": "ours: the CAM method; irn = IRNet's CAM as in CONTA (esol: docs/esol.md)",
    "cam.checkpoint": "ours: empty = round 0 trains its CAM network (a path evaluates one trained elsewhere)",
    "cam_infer.scales": "docs/method.md §4: scales (1.0, 0.5, 1.5, 2.0)",
    "cam_infer.flip": "docs/method.md §4: each scale with its flip",
    "cam_infer.bg_threshold": "docs/method.md §5: IRNet cam_eval_thres 0.15",
    "cam_infer.sweep": "docs/method.md §5 [R]: best over 0.05-0.60, step 0.01",
    "cam_infer.batch_size": "ours (throughput)",
    "cam_infer.max_side": "docs/method.md §4: native image size (0)",
    "cam_infer.work_long": "docs/method.md §4: native image size (0)",
    "cam_infer.amp": "docs/method.md §4: IRNet's CAMs are fp32 (false); bf16 inference moved "
                     "CAM mIoU by -0.26 and pseudo-mask mIoU by -0.28 on a cpu-preset round "
                     "(docs/benchmarks.md), so the paper preset infers in fp32 whatever cam.amp",
    "pseudo.refine": "docs/method.md §4 pseudo-mask stage: IRNet (IR labels, IRNet, random walk)",
    "pseudo.bg_threshold": "docs/method.md §5: 0.15, used by refine none/crf only",
    "pseudo.conf_fg_threshold": "docs/method.md §4: conf_fg_thres 0.30",
    "pseudo.conf_bg_threshold": "docs/method.md §4: conf_bg_thres 0.05",
    "pseudo.ir_crf": "docs/method.md §4: dense CRF on the IR label maps",
    "pseudo.sem_seg_bg_threshold": "docs/method.md §4: sem_seg_bg_thres 0.25",
    "pseudo.beta": "docs/method.md §4: beta 10",
    "pseudo.exp_times": "docs/method.md §4: exp_times 8 (256 steps)",
    "pseudo.irn_radius": "docs/method.md §4: path-index radius 10",
    "pseudo.irn_epochs": "docs/method.md §4: 3 epochs",
    "pseudo.irn_batch_size": "docs/method.md §4: batch 32",
    "pseudo.walk_reach": "docs/method.md §4: 0 = IRNet's radius 5 and exp_times as given (a fraction "
                         "> 0 scales the walk to smaller images; docs/method-decisions.md)",
    "pseudo.irn_steps": "docs/method.md §4: 0 = irn_epochs epochs (IRNet's 3 epochs of 10,582 images "
                        "= 993 steps; N > 0 counts steps, docs/method-decisions.md)",
    "seg.arch": "docs/method.md §4 segmentation stage [V-code]: DeepLab-v2",
    "seg.backbone": "docs/method.md §4: ResNet-101",
    "seg.weights": "docs/method.md §4 and 7.6: ImageNet initialisation",
    "seg.iterations": "docs/method.md §4: 20,000 (VOC; COCO config 100,000)",
    "seg.batch_size": "docs/method.md §4: 5 x iter_size 2 = 10",
    "seg.crop_size": "docs/method.md §4: crop 321",
    "seg.scales": "docs/method.md §4: random scale {0.5, 0.75, 1.0, 1.25, 1.5}",
    "seg.lr": "docs/method.md §4: 2.5e-4",
    "seg.momentum": "docs/method.md §4: 0.9",
    "seg.weight_decay": "docs/method.md §4: 5e-4",
    "seg.poly_power": "docs/method.md §4: poly 0.9",
    "seg.optimizer": "docs/method.md §4: SGD",
    "seg.amp": "ours (bf16 autocast for speed)",
    "seg.channels_last": "ours (memory layout; no effect on results)",
    "seg.last_round": "ours: true (every round trains and scores the segmentation network, as the "
                      "paper does; false only in the quick demo)",
    "context.grid": "docs/method.md §2 [R]: 64 x 64 grid",
    "context.prior": "docs/method.md §2 and 7.4 [R]: empirical frequency",
    "context.query": "docs/method.md §2 [R] step 5: binary foreground map",
    "context.agree_with_labels": "docs/method.md §2 [R] step 3: intersect with image labels",
    "context.fuse_at": "docs/method.md §3 and 7.6 [R]: concatenated at layer4",
    "context.m_scale": "docs/method.md §3 [R]: identity (faithful)",
    "context.l2_normalize": "docs/method.md §7.3 [R]: off",
    "context.attention": "Eq. 3 (learned); 'uniform' is our control (docs/method-decisions.md)",
    "context.source": "docs/method.md §7.1: the segmentation model's masks; 'gt' is the paper's upper-bound ablation",
    "context.adjustment": "docs/method.md §3: nwgm = Eq. 3 (exact = our backdoor sum at the head)",
    "context.optimizer": "docs/method.md §3: same = the network's SGD, 10x group (ours: sgd/adamw)",
    "context.lr": "docs/method.md §3: 0 = the 10x group's learning rate",
    "context.intervention": "CONTA's adjustment (the paper); the others are ours (docs/results.md 7)",
    # ESOL (cam.method=esol only): re-implemented from the abstract and the official figure;
    # [R] = our decision where the sources are silent (docs/esol.md)
    "paste.share": "ours [R]: half of an epoch's images get one object (CDA: originals and pasted together)",
    "paste.scale": "ours [R]: object long side / host short side, inside the benchmark's 0.35-0.95",
    "paste.dilate": "ours [R]: 2 px of the predicted mask's rim come along",
    "paste.min_fg": "the interventions issue: objects covering at least 10% of their image",
    "paste.max_fg": "the interventions issue: objects covering at most 70% of their image",
    "negatives.share": "ours [R]: about a fifth of each batch is context alone (W-OoD: a share)",
    "negatives.crop": "ours [R]: crop side = half the image's short side",
    "negatives.per_image": "ours [R]: at most 2 context crops per training image",
    "negatives.margin": "ours: 0 = crops may touch the predicted foreground (the pre-registered "
                        "arm; docs/results.md 7.3 runs 0.057 post hoc)",
    "negatives.folder": "ours: \"\" = crops of the predicted background; a folder of the user's "
                        "background photographs is W-OoD's setting",
    "esol.sampler_op": "ours: grid_sample, equal to torchvision deform_conv2d, faster on CPUs",
    "esol.sampler": "ours: deformable = ESOL; identity = no sampler (a control, not ESOL)",
    "esol.r_max": "docs/esol.md [R]: offsets bounded to 8 feature cells (tanh)",
    "esol.clip_q": "docs/esol.md [R]: Clip Op at the per-channel 0.9-quantile of F1",
    "esol.clip_images": "docs/esol.md [R]: 200 training crops",
    "esol.lambda_rev": "docs/esol.md [R]: DANN ramp of the reversed gradient",
    "esol.lambda_rev_max": "docs/esol.md [R]: 1",
    "esol.guard_outside": "docs/esol.md [R]: halve lambda_rev above 20% taps off the map",
    "esol.lambda_area": "docs/esol.md [R]: area weight 0.1",
    "esol.epochs_expand": "docs/esol.md [R]: 5 epochs",
    "esol.epochs_shrink": "docs/esol.md [R]: 5 epochs",
    "esol.lr_head": "docs/esol.md [R]: 0.01",
    "esol.lr_offset": "docs/esol.md [R]: 0.001",
    "esol.lr_backbone": "docs/esol.md [R]: 0.001 (reading B only)",
    "esol.momentum": "docs/esol.md [R]: SGD momentum 0.9",
    "esol.train_backbone": "docs/esol.md: reading A (figure: no gradient into the backbone)",
    "esol.extract_from": "docs/esol.md [V-fig]: final CAMs from the shrinkage head",
    "esol.diagnostics": "ours: also score stage-0 and expansion CAMs",
}
"""Where each value of the ``paper`` preset comes from (``docs/method.md`` sections; "ours"
marks engineering settings; those that change the numbers, such as ``cam.amp``, say so)."""


def config_sources_table(cfg: Any, sources: dict[str, str] | None = None) -> Any:
    """A pandas table (one row per config key ``section.key``): its value in ``cfg`` (an
    ``ExperimentConfig``) and its source (``sources``, default :data:`PAPER_PRESET_SOURCES`;
    keys it lacks read "not in the source list")."""
    import pandas as pd  # about 0.5 s: imported on use

    sources = PAPER_PRESET_SOURCES if sources is None else sources
    rows = []
    for key, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, val in items:
            name = key if sub is None else f"{key}.{sub}"
            shown = tuple(val) if isinstance(val, list) else val
            rows.append({"key": name, "value": str(shown),
                         "source": sources.get(name, "not in the source list")})
    return pd.DataFrame(rows).set_index("key")


def _measured(report: dict, path: Path) -> str:
    day = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()
    return f"measured here: {report['preset']}, seed {report['seed']}, {day}"


def load_report(path: str | Path) -> tuple[dict, str]:
    """A run's ``report.json`` and its note ``measured here: <preset>, seed S, <date>`` (the
    date is the file's modification day)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
        return report, _measured(report, path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read run report {path}: {exc}; expected the report.json a "
                         "`causal-wsss run` writes") from exc


def collect_reports(runs_dir: str | Path) -> dict[str, tuple[dict, str]]:
    """Every run report under ``runs_dir`` as ``label -> (report, note)`` (:func:`load_report`):
    ``<run>/report.json`` (label ``<run>``) and the ``{"rho/seed": report}`` bundle
    ``evidence/reports.json`` of ``scripts/conta_evidence.py`` (labels ``evidence/rho/seed``)."""
    runs_dir = Path(runs_dir)
    found = {path.parent.name: load_report(path)
             for path in sorted(runs_dir.glob("*/report.json"))}
    bundle = runs_dir / "evidence" / "reports.json"
    if bundle.is_file():
        try:
            for tag, report in json.loads(bundle.read_text()).items():
                found[f"evidence/{tag}"] = (report, _measured(report, bundle))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot read report bundle {bundle}: {exc}; expected "
                             "{'rho/seed': report} as scripts/conta_evidence.py writes") from exc
    return found


def results_table(dataset: str, report: dict | None = None, measured: str = "") -> Any:
    """Published mIoU (%) of :data:`PUBLISHED_MIOU` for ``dataset`` (voc | coco) above our rows.

    Our rows come from a run ``report``: round 0 (the IRNet-style baseline) and each CONTA round
    t >= 1, with CAM mIoU at the fixed threshold (method.md 5), pseudo-mask mIoU on the eval
    split and segmentation mIoU on val; ``measured`` (e.g. from :func:`load_report`) fills
    their source. Without a report one row says "not run yet". NaN = not reported.
    """
    import pandas as pd  # about 0.5 s: imported on use

    if dataset not in PUBLISHED_MIOU:
        raise ValueError(f"results_table: no published numbers for data set '{dataset}'; "
                         f"expected one of: {', '.join(PUBLISHED_MIOU)}")
    rows = [dict(row) for row in PUBLISHED_MIOU[dataset]]
    if report is None:
        rows.append({"method": "ours", "source": "not run yet"})
    else:
        for e in report["rounds"]:
            name = "ours, round 0 (baseline)" if e["round"] == 0 else f"ours + CONTA, round {e['round']}"
            rows.append({"method": name, "cam": e["cam_miou"], "pseudo": e["pseudo_miou"],
                         "seg_val": e["seg_miou"], "source": measured or "measured here"})
    table = pd.DataFrame(rows, columns=["method", *RESULT_COLUMNS, "source"])
    return table.rename(columns=RESULT_COLUMNS).set_index("method")


GPU_STAGE_RATES: dict[str, dict[str, Any]] = {
    "cam_train": {"rate": (86.0, 86.0), "unit": "crops/s",
                  "source": "docs/benchmarks.md, the gpu preset end to end on one H200: "
                            "cam_train at crop 512, batch 16"},
    "cams": {"rate": (5.1, 210.0), "unit": "img/s",
             "source": "docs/benchmarks.md: 5.1 img/s when every size differs (the gpu preset "
                       "end to end), 210 img/s at a few repeated sizes (batched multi-scale CAMs "
                       "on one H200)"},
    "ir_crf": {"rate": (1 / 0.23, 1 / 0.11), "unit": "img/s",
               "source": "an estimate, not measured: 0.11 to 0.23 s per image for the CRF on "
                         "IRNet's labels on one CPU core"},
    "irn_train": {"rate": (89.0, 89.0), "unit": "img/s",
                  "source": "docs/benchmarks.md, the gpu preset end to end: irn_train"},
    "pseudo": {"rate": (15.0, 15.0), "unit": "img/s",
               "source": "docs/benchmarks.md, the gpu preset end to end: IRN boundaries, "
                         "random walk and pseudo-mask PNGs"},
    "seg_train": {"rate": (72.0, 72.0), "unit": "crops/s",
                  "source": "docs/benchmarks.md, the gpu preset end to end: batch 10 at crop "
                            "321 with DeepLabV3-ResNet-101 (DeepLab-v2 not timed)"},
    "seg_predict": {"rate": (17.0, 17.0), "unit": "img/s",
                    "source": "docs/benchmarks.md, the gpu preset end to end: seg_predict"},
}
"""Stage rates measured once on one NVIDIA H200 (``bench/gpu_check.sh``, 2026-11-26, the ``gpu``
preset with random weights on 500 px synthetic images, so per-image costs like VOC's), as
``(slow, fast)`` ranges; the CRF's is an estimate. :func:`gpu_round_projection` projects a
round from them; ``tests/test_results.py`` checks each measured rate against
``docs/benchmarks.md``."""


def gpu_round_projection(n_train: int, n_val: int, *, cam_epochs: int, irn_epochs: int,
                         seg_iterations: int, seg_batch: int) -> list[dict[str, Any]]:
    """How long one round of the ``paper`` pipeline takes on one H200-class GPU, stage by stage,
    projected from :data:`GPU_STAGE_RATES`: rows ``{"stage", "work", "rate", "minutes":
    (low, high)}`` (the segmentation network's predictions cover the ``n_train`` training images
    for the next dictionary and the ``n_val`` validation images for its score). A projection,
    not a measurement: say so where it is shown."""
    if min(n_train, n_val, cam_epochs, irn_epochs, seg_iterations, seg_batch) < 0:
        raise ValueError("gpu_round_projection: counts must be >= 0")
    work = {"cam_train": (cam_epochs * n_train, f"{cam_epochs} epochs of {n_train:,} crops"),
            "cams": (n_train, f"{n_train:,} images, 4 scales + flips"),
            "ir_crf": (n_train, f"{n_train:,} images"),
            "irn_train": (irn_epochs * n_train, f"{irn_epochs} epochs of {n_train:,} images"),
            "pseudo": (n_train, f"{n_train:,} images"),
            "seg_train": (seg_iterations * seg_batch,
                          f"{seg_iterations:,} iterations of batch {seg_batch}"),
            "seg_predict": (n_train + n_val, f"{n_train + n_val:,} images (train + val)")}
    rows = []
    for stage, (count, what) in work.items():
        info = GPU_STAGE_RATES[stage]
        slow, fast = info["rate"]
        rate = (f"{slow:.3g} {info['unit']}" if slow == fast
                else f"{slow:.3g} to {fast:.3g} {info['unit']}")
        rows.append({"stage": stage, "work": what, "rate": rate,
                     "minutes": (count / fast / 60, count / slow / 60)})
    return rows


def gpu_projection_table(rows: list[dict[str, Any]]) -> Any:
    """:func:`gpu_round_projection`'s rows as a pandas table with a total row (minutes, rounded)."""
    import pandas as pd  # about 0.5 s: imported on use

    low = sum(r["minutes"][0] for r in rows)
    high = sum(r["minutes"][1] for r in rows)
    shown = [{"stage": r["stage"], "work": r["work"], "measured rate (H200)": r["rate"],
              "minutes (projection)": _span(*r["minutes"])} for r in rows]
    shown.append({"stage": "round", "work": "", "measured rate (H200)": "",
                  "minutes (projection)": _span(low, high)})
    return pd.DataFrame(shown).set_index("stage")


def _span(low: float, high: float) -> str:
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f} to {high:.0f}"


def projection_hours(rows: list[dict[str, Any]], rounds: int = 1) -> tuple[float, float]:
    """Total hours (low, high) of ``rounds`` rounds of :func:`gpu_round_projection`'s rows."""
    return (rounds * sum(r["minutes"][0] for r in rows) / 60,
            rounds * sum(r["minutes"][1] for r in rows) / 60)
