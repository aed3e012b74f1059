"""The CONTA pipeline: round 0 (the IRNet-style baseline) and CONTA rounds 1..T, each stage cached.

This module only orders the stages and caches them; each stage is a function of
:mod:`causal_wsss.stages`, and the CAM method's own stages come from :mod:`causal_wsss.methods`.
One round (method.md section 4, Fig. 4 of the paper):

0. (rounds >= 1) build the confounder dictionary C and prior P(c) from the previous round's
   segmentation predictions on the training images (:mod:`causal_wsss.stages.confounders`);
1. train the CAM classifier, with the context adjustment of Eq. 3 concatenated at the last
   features from round 1 on (:mod:`causal_wsss.stages.cam_train`, through the ``cam.method``);
2. multi-scale + flip CAMs of the training images and their evaluation (mIoU at the fixed
   background threshold and the best over a sweep, leakage; :mod:`causal_wsss.stages.cams`),
   and the do(context) figures on the twins (:mod:`causal_wsss.stages.twins`);
3. pseudo-masks (threshold, optionally CRF or IRN refinement) and their mIoU
   (:mod:`causal_wsss.stages.pseudo`);
4. train the segmentation model on the pseudo-masks, evaluate on ``val``, predict the training
   images for the next round's dictionary (:mod:`causal_wsss.stages.segmentation`); in the last
   round only if ``seg.last_round`` (the default).

Every network is retrained from its initialisation in every round (method.md 7.10). Each stage
writes ``round_k/<stage>.json`` when it is finished; a rerun skips finished stages and resumes an
interrupted one (checkpoints per epoch, per-image files skipped). ``report.json`` holds one entry
per finished round, mIoU in percent (:func:`causal_wsss.report.format_report_table` prints it).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .config import ExperimentConfig, check_config
from .errors import ConfigError
from .interventions import Intervened, InterventionRound, get_intervention
from .io import write_json
from .methods import CamRound, get_method
from .runfolder import check_out_folder, open_run_folder, read_record
from .runtime import (
    allocator_name,
    amp_dtype,
    barrier,
    cpu_amp_enabled,
    cpu_seconds,
    init_distributed,
    numerics_level,
    seed_everything,
)
from .stages.cams import ROUND_CAM_KEYS, stage_cam_eval, stage_cams
from .stages.confounders import check_context_config
from .stages.datasets import (
    check_masks,
    check_scales,
    load_datasets,
    names_of,
    query_datasets,
)
from .stages.models import check_networks, initial_cam_model
from .stages.pseudo import check_optional_packages, irn_stages, score_label_folder, stage_pseudo
from .stages.segmentation import (
    load_seg_model,
    stage_seg_eval,
    stage_seg_predict,
    stage_seg_train,
)
from .stages.twins import ROUND_TWIN_KEYS, stage_twin_eval


def autocast_name(device: torch.device) -> str:
    """The dtype the ``amp=true`` keys run in on ``device`` here, as a record stores it."""
    return str(amp_dtype(device) or torch.float32).removeprefix("torch.")


_MIXED_HINTS = {
    "numerics": "run it with CAUSAL_WSSS_SPEEDUPS set to that level, or start a new folder",
    "autocast_dtype": "resume it on the same kind of device, with CAUSAL_WSSS_CPU_AMP as it was "
                      "(1 for bfloat16 on a CPU, unset for float32), or start a new folder",
    "torch_threads": "resume it with as many torch threads (OMP_NUM_THREADS), or start a new "
                     "folder (a CPU's floats depend on how many threads add them up)",
}


def warn_mixed_numerics(out: Path, device: torch.device, logger) -> list[str]:
    """On a resumed run: one warning per stamp when finished stages were computed on another
    code path (``numerics``), in another precision (``autocast_dtype``) or, on a CPU, with
    another number of torch threads (``torch_threads``) than this process runs, since the
    stages still to come would mix the two. Records without the stamps (made before them) and
    unreadable ones (the stage check names those) are passed over. Returns the warnings."""
    now = {"numerics": numerics_level(), "autocast_dtype": autocast_name(device)}
    if device.type == "cpu":
        now["torch_threads"] = torch.get_num_threads()
    first: dict[str, tuple[str, object]] = {}
    for path in sorted(out.glob("round_*/*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        for key, value in now.items():
            if key in record and record[key] != value and key not in first:
                first[key] = (str(path.relative_to(out)), record[key])
    notes = []
    for key, (path, value) in first.items():
        notes.append(f"resuming: {path} was computed with {key}={value}, this process runs "
                     f"{key}={now[key]}, so the run would mix the two: {_MIXED_HINTS[key]}")
        logger.warning("%s", notes[-1])
    return notes


class StageLog:
    """Reads and writes ``round_k/<stage>.json``: a stage is done when its file exists.

    Each record carries ``inputs`` (the data and config fingerprints of
    :func:`causal_wsss.runfolder.run_inputs`), checked when a run folder is resumed.
    """

    def __init__(self, round_dir: Path, is_main: bool, inputs: dict | None = None) -> None:
        self.dir, self.is_main, self.inputs = round_dir, is_main, inputs

    def get(self, stage: str) -> dict | None:
        return read_record(self.dir / f"{stage}.json")

    def put(self, stage: str, result: dict) -> dict:
        if self.inputs is not None:
            result = {**result, "inputs": self.inputs}
        if self.is_main:
            write_json(self.dir / f"{stage}.json", result)
        return result


def run_round(cfg: ExperimentConfig, r: int, out: Path, sets: dict, *, device: torch.device,
              dist_info, progress: bool, logger, inputs: dict | None = None,
              cam_only: bool = False) -> dict | None:
    """Run (or resume) round ``r``; returns its report entry. ``inputs``: stored in each record.
    ``cam_only``: stop once the CAM method has trained its network(s) and return None."""
    round_dir = out / f"round_{r}"
    round_dir.mkdir(parents=True, exist_ok=True)
    log = StageLog(round_dir, dist_info.is_main, inputs)
    train_ds, eval_ds, val_ds = sets["train"], sets["eval"], sets["val"]
    classes = train_ds.classes
    num_fg = len(classes) - 1
    cam_datasets, query_sets = query_datasets(sets)
    query_names = names_of(query_sets)  # train first: the dictionary is built from its rows
    rows_by_name = {n: i for i, n in enumerate(query_names)}
    twins_ds = sets.get("twins")
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], dict]) -> dict:
        done = log.get(stage)
        if done is not None:
            return done
        logger.info("round %d: %s", r, stage)
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.init()  # the peak-memory counters need an initialised CUDA context
            torch.cuda.reset_peak_memory_stats(device)
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        result = fn()
        result["seconds"] = result.get("seconds", time.perf_counter() - t0)
        result["cpu_seconds"] = cpu_seconds() - cpu0
        result["numerics"] = numerics_level()  # which code path's floats (constants.NUMERICS)
        # and which dtype the amp=true keys run in here (runtime.amp_dtype: fp32 on a CPU unless
        # CAUSAL_WSSS_CPU_AMP=1), so records made in different precisions can be told apart
        result["autocast_dtype"] = autocast_name(device)
        # a CPU's floats also depend on the thread count (docs/benchmarks.md, "Rounds side by
        # side": 1 and 2 threads move segmentation mIoU by up to 0.8 points)
        result["torch_threads"] = torch.get_num_threads()
        if on_cuda:  # this process's peak GPU memory in the stage, for sizing a run
            result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            logger.info("round %d: %s took %.1f s, peak GPU memory %.0f MiB", r, stage,
                        result["seconds"], result["cuda_peak_mib"])
        timings[stage] = result["seconds"]
        barrier()
        return log.put(stage, result)

    # Same initial trunk in every round, and the same on a resumed run as on an uninterrupted
    # one; from round 1 on the intervention (context.intervention) runs its own stages and hands
    # over the network to train, the training images and the CAMs' context hook.
    if r > 0:
        done = get_intervention(cfg.context.intervention).prepare(InterventionRound(
            cfg=cfg, r=r, round_dir=round_dir, prev_dir=out / f"round_{r - 1}", sets=sets,
            query_sets=query_sets, query_names=query_names, rows_by_name=rows_by_name,
            timed=timed, device=device, dist_info=dist_info, progress=progress, logger=logger))
    else:
        cam_net = initial_cam_model(cfg, num_fg)
        done = Intervened(model=cam_net, cam_net=cam_net)
    cam_net = done.cam_net

    # the CAM method (cam.method) trains stage 0 (cam_train) and its own stages
    trained = get_method(cfg.cam.method).train(CamRound(
        cfg=cfg, r=r, round_dir=round_dir, model=done.model, cam_net=cam_net, sets=sets,
        timed=timed, device=device, dist_info=dist_info, progress=progress, logger=logger,
        rows_by_name=rows_by_name, train_set=done.train_set, pre_transform=done.pre_transform,
        context_fn=done.context_fn))
    if cam_only:
        return None
    cam_train, model = trained.record, trained.model
    ctx_fn = done.context_fn(model) if done.context_fn is not None else None
    cache_dir = round_dir / "cams"
    timed("cams", lambda: stage_cams(cfg, model, cam_datasets, cache_dir, device=device,
                                     dist_info=dist_info, progress=progress, context_fn=ctx_fn))
    cam_eval = timed("cam_eval", lambda: stage_cam_eval(cfg, eval_ds, cache_dir, device=device,
                                                        dist_info=dist_info, progress=progress))
    twin_eval = None
    if twins_ds is not None:
        twin_eval = timed("twin_eval", lambda: stage_twin_eval(
            cfg, model, twins_ds, round_dir / "twin_cams", cam_eval["cam_threshold_best"],
            device=device, dist_info=dist_info, progress=progress, context_fn=ctx_fn))
    if cfg.pseudo.refine == "irn":
        irn_stages(cfg, cam_net, train_ds, cache_dir, round_dir, timed, device=device,
                    dist_info=dist_info, progress=progress, logger=logger)
    pseudo_dir = round_dir / "pseudo"
    timed("pseudo", lambda: stage_pseudo(cfg, cam_datasets, cache_dir, pseudo_dir,
                                         dist_info=dist_info, progress=progress))
    pseudo_eval = timed("pseudo_eval", lambda: score_label_folder(
        eval_ds, pseudo_dir, dist_info=dist_info, progress=progress))

    seg_holder: dict[str, nn.Module] = {}  # the trained network, built once for both uses

    def seg_train() -> dict:
        seg_holder["model"], result = stage_seg_train(cfg, train_ds, pseudo_dir, round_dir,
                                                      device=device, dist_info=dist_info,
                                                      progress=progress)
        return result

    def seg_model() -> nn.Module:
        if "model" not in seg_holder:
            seg_holder["model"] = load_seg_model(cfg, len(classes), round_dir, device=device)
        return seg_holder["model"]

    seg_eval_res = {"seg_miou": None}  # the last round with seg.last_round=false trains none
    if r < cfg.rounds or cfg.seg.last_round:
        timed("seg_train", seg_train)
        seg_eval_res = timed("seg_eval", lambda: stage_seg_eval(
            seg_model(), val_ds, device=device, dist_info=dist_info, progress=progress))
    if r < cfg.rounds:
        timed("seg_predict", lambda: stage_seg_predict(
            seg_model(), query_sets, round_dir / "pred", device=device, dist_info=dist_info,
            progress=progress))

    entry = {"round": r, "cam_miou": cam_eval["cam_miou"], "cam_threshold": cam_eval["cam_threshold"],
             "cam_miou_best": cam_eval["cam_miou_best"],
             "cam_threshold_best": cam_eval["cam_threshold_best"],
             "pseudo_miou": pseudo_eval["miou"], "seg_miou": seg_eval_res["seg_miou"],
             "leakage": cam_eval["leakage"], "leakage_cooccur": cam_eval["leakage_cooccur"],
             "leakage_background": cam_eval["leakage_background"],
             **{key: cam_eval[key] for key in ROUND_CAM_KEYS if key in cam_eval}}
    if twin_eval is not None:
        entry.update({key: twin_eval[key] for key in ROUND_TWIN_KEYS if key in twin_eval})
    entry.update(trained.summary)  # the method's own figures (ESOL: stage-0 and expansion CAMs)
    entry.update(done.summary)  # the intervention's (e.g. how many objects were pasted)
    for key in ("context_weight_mean_abs", "context_weight_vs_feature_weight", "context_share",
                "alpha_max_mean", "alpha_top_class_share", "m_spread"):
        if key in cam_train:
            entry[key] = cam_train[key]
    # a figure with nothing to average (no pairs, nothing predicted) is null, not NaN
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in entry.items()}


def train_cam_network(cfg: ExperimentConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Only round 0's CAM training of ``cfg`` (the ``cam_train`` stage; ``cam.method=irn``) into
    the run folder ``out``; returns the trained ``round_0/cam_net.pt``.

    For a network that is only used elsewhere (``cam.checkpoint`` of another run: the evidence
    protocol's interventional CAM training, evaluated on the confounded sets). The folder is the
    one :func:`run_experiment` would make with ``cfg``, and the network is the one it would train
    (the same seed, data and order: nothing that runs later draws from the generators first),
    so ``run_experiment`` on the same folder resumes from it into a whole round. Its report has
    no round until then.
    """
    if cfg.cam.checkpoint:
        raise ConfigError(f"train_cam_network: config key 'cam.checkpoint' is "
                          f"{cfg.cam.checkpoint!r}; there is nothing to train")
    if cfg.cam.method != "irn":  # another method's network is not the one in cam_net.pt
        raise ConfigError(f"train_cam_network works with cam.method=irn only (this config has "
                          f"cam.method={cfg.cam.method!r})")
    _, folder = _run(cfg, out, progress=progress, cam_only=True)
    return folder / "round_0" / "cam_net.pt"


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, progress: bool = True) -> dict:
    """Run round 0 and CONTA rounds 1..``cfg.rounds`` into ``out``; returns the report.

    Rerunning with the same config resumes; a different config for an existing ``out`` with
    results is an error naming the keys (only ``rounds`` may differ; finished rounds beyond
    ``rounds`` stay in the report). ``data.root`` is made absolute first, so the same folder
    named relatively (a notebook's ``../data/synth``) or absolutely is the same config.

    Nothing is written before the config values, the data sets, the networks' names and ``out``
    are checked. ``out`` is then locked (:class:`causal_wsss.runfolder.RunLock`) and checked
    against the data and config (:func:`causal_wsss.runfolder.check_stages`): changed inputs
    are refused, and stages whose files are missing or unreadable are redone.
    """
    return _run(cfg, out, progress=progress, cam_only=False)[0]


def _run(cfg: ExperimentConfig, out: str | Path, *, progress: bool,
         cam_only: bool) -> tuple[dict, Path]:
    """:func:`run_experiment` (``cam_only``: :func:`train_cam_network`); returns the report and
    the run folder's checked path."""
    if cfg.data.root:
        cfg = replace(cfg, data=replace(cfg.data, root=str(Path(cfg.data.root).expanduser().resolve())))
    check_config(cfg)
    check_context_config(cfg)
    get_method(cfg.cam.method)  # an unknown cam.method is refused before anything is written
    intervention = get_intervention(cfg.context.intervention)  # so is an unknown intervention
    if intervention.check is not None:
        intervention.check(cfg)  # and its own bad settings
    check_optional_packages(cfg)
    cpu_amp_enabled()  # a bad CAUSAL_WSSS_CPU_AMP is refused before anything is written
    if cfg.cam.checkpoint and cfg.cam.method != "irn":
        raise ConfigError(f"config key 'cam.checkpoint' works with cam.method=irn only (this run "
                          f"has cam.method={cfg.cam.method!r})")
    if cfg.cam.checkpoint and not Path(cfg.cam.checkpoint).is_file():
        raise ConfigError(f"config key 'cam.checkpoint' is {cfg.cam.checkpoint!r}, which is not a "
                          "file; expected a round's cam_net.pt (or \"\" to train round 0)")
    out = check_out_folder(out)
    dist_info, device = init_distributed(cfg.device)
    seed_everything(cfg.seed)
    sets = load_datasets(cfg)
    check_masks(cfg, sets)
    check_scales(cfg, sets)
    check_networks(cfg, sets["train"].num_classes)
    with open_run_folder(out, cfg, sets, is_main=dist_info.is_main) as folder:
        logger = folder.logger
        backend = torch.distributed.get_backend() if dist_info.group else "none"
        logger.info("data: %s train=%d eval=%d val=%d; device %s, world size %d, process group %s; "
                    "allocator %s", cfg.data.dataset, len(sets["train"]), len(sets["eval"]),
                    len(sets["val"]), device, dist_info.world_size, backend, allocator_name())
        warn_mixed_numerics(out, device, logger)
        report = {"dataset": cfg.data.dataset, "preset": cfg.preset, "seed": cfg.seed, "rounds": []}
        if cfg.rounds > 0:  # which intervention rounds >= 1 ran; oracle: it read the generator
            report.update(intervention=intervention.name, oracle=intervention.oracle)
        if cam_only:
            run_round(cfg, 0, out, sets, device=device, dist_info=dist_info, progress=progress,
                      logger=logger, inputs=folder.inputs, cam_only=True)
            return folder.report(report), out
        for r in range(cfg.rounds + 1):
            report["rounds"].append(run_round(cfg, r, out, sets, device=device,
                                              dist_info=dist_info, progress=progress,
                                              logger=logger, inputs=folder.inputs))
            if dist_info.is_main:
                write_json(out / "report.json", folder.report(report))
        return folder.report(report), out
