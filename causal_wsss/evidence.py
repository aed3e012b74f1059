"""The evidence protocol for CONTA on the synthetic benchmark (docs/results.md, section 0).

One data set per confounding strength ``rho`` (its own data seed, fixed), training seeds varied;
every figure is a paired difference over training seeds (same seed, same data, same initial
trunk: :func:`causal_wsss.runtime.stage_seed`), reported with the sample standard deviation,
a 95% t interval and the per-seed values. The arms, in the order they run:

1. ``conta``: round 0 (the baseline) and CONTA rounds 1 (and 2) as specified (Eq. 3).
2. ``interventional``: the baseline's CAM network trained on the *interventional* set (context
   independent of the class; same size and generator), then evaluated on the confounded set's
   images (``cam.checkpoint``): the upper bound of what removing the confounding can give. Only
   the training runs on the interventional set (:func:`causal_wsss.pipeline.train_cam_network`):
   nothing reads the rest of a round there.
3. controls and variants of round 1, each sharing ``conta``'s round 0: the uniform-attention
   control, ``m_scale=max``, W1/W2/w_M under AdamW at a learning rate of their own, the exact
   backdoor sum at the head (our addition), the ground-truth dictionary.
4. a sweep over rho (0.5, 0.7, 0.97) of ``conta`` round 1 and ``interventional``.

The primary endpoint, fixed before any run: pseudo-mask mIoU of round 1 minus round 0 for
``conta`` at rho = 0.9 (the paper's claim). Everything else is secondary.
:func:`run_protocol` runs it (resumable: every run is a pipeline run folder) and
:func:`archive_runs` keeps every finished run's table entries;
:mod:`causal_wsss.evidence_tables` turns them into the statistics and the tables.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import resolve
from .constants import BENCHMARK_SIZE, BENCHMARK_TWINS
from .errors import ConfigError, DataError
from .io import file_lock, write_json

PRIMARY = "pseudo_miou"
"""The primary endpoint: pseudo-mask mIoU on the training images (round 1 minus round 0)."""

SECONDARY = ("cam_miou_best", "seg_miou", "context_effect", "cam_miou_out_of_context",
             "fp_rate_preferred", "contrast_context")
"""Secondary endpoints: CAM mIoU at the best threshold, segmentation mIoU (validation), and the
mechanism figures of the do(context) twins and the CAM evaluation."""

LABELS = {
    "pseudo_miou": "pseudo-mask mIoU",
    "cam_miou_best": "CAM mIoU (best thr.)",
    "seg_miou": "seg. mIoU (val)",
    "context_effect": "context effect (logit)",
    "cam_miou_out_of_context": "CAM mIoU out of context",
    "fp_rate_preferred": "FP on context alone",
    "contrast_context": "contrast (object/context)",
}
ENDPOINTS = (PRIMARY, *SECONDARY)
MAIN_RHO = 0.9
SWEEP_RHOS = (0.5, 0.7, 0.97)


@dataclass(frozen=True)
class Arm:
    """One row of the protocol: a CONTA variant (round 1 against the shared round 0) or the
    interventional baseline."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()
    note: str = ""


ARMS: tuple[Arm, ...] = (
    Arm("conta", "CONTA (Eq. 3)", (), "as specified: learned attention, SGD in the 10x group"),
    Arm("interventional", "interventional baseline", (),
        "round 0 trained on the interventional set, evaluated on the confounded images"),
    Arm("exact", "exact backdoor sum", ("context.adjustment=exact",),
        "sum_c P(Y | X, m = c) P(c) at the head (our addition)"),
    Arm("uniform", "uniform-attention control", ("context.attention=uniform",),
        "one fixed m for every image: the channel without the intervention"),
    Arm("adamw", "W1, W2, w_M under AdamW", ("context.optimizer=adamw", "context.lr=0.01"),
        "the context parameters' own optimiser, lr 0.01 (chosen before running)"),
    Arm("mmax", "m_scale=max", ("context.m_scale=max",), "m divided by its maximum"),
    Arm("gt_dict", "ground-truth dictionary", ("context.source=gt",),
        "dictionary and queries from the true masks (upper bound of the dictionary)"),
)
ESOL_ARMS: tuple[Arm, ...] = (
    Arm("esol", "ESOL (re-implemented) + CONTA", ("cam.method=esol",),
        "its own round 0 (stage 0 is IRNet's CAM training), then CONTA's round 1"),
    Arm("esol_noclip", "ESOL, no clip", ("cam.method=esol", "esol.clip_q=0"),
        "the Clip Op off"),
    Arm("esol_area002", "ESOL, area weight 0.02", ("cam.method=esol", "esol.lambda_area=0.02"),
        "the shrinkage's area term 5x weaker"),
    Arm("esol_area02", "ESOL, area weight 0.2", ("cam.method=esol", "esol.lambda_area=0.2"),
        "the shrinkage's area term 2x stronger"),
    Arm("esol_backbone", "ESOL, backbone in the expansion (reading B)",
        ("cam.method=esol", "esol.train_backbone=true"),
        "layer3/4 also descend the expansion loss"),
    Arm("esol_lroff", "ESOL, offset learning rate 0.1", ("cam.method=esol", "esol.lr_offset=0.1"),
        "does a sampler that moves expand the maps? (not in the specification's list)"),
    Arm("esol_noclip_id", "ESOL, no clip, no samplers (control)",
        ("cam.method=esol", "esol.clip_q=0", "esol.sampler=identity"),
        "the no-clip run's two head trainings on unblurred features: what the samplers add "
        "(a control of ours, added after the no-clip result)"),
)
"""ESOL (``cam.method=esol``) under the same protocol: an extension made after the
pre-registration (``docs/results.md`` section 6), not one of its comparisons. ``esol`` runs
rounds 0-1; the ablations run round 0 only and are compared with ``esol``'s round 0."""
ESOL_ABLATIONS = tuple(a.name for a in ESOL_ARMS[1:])
ESOL_CONTROLS = {"esol_noclip_id": "esol_noclip"}
"""Controls among the ablations, each also compared with the run it controls and with IRN's
round 0: ESOL without the clip minus the same without samplers is what the samplers add;
that control minus IRN's round 0 is what two more head trainings add."""
INTERVENTION_ARMS: tuple[Arm, ...] = (
    Arm("paste", "paste (re-composition, CDA)", ("context.intervention=paste",),
        "objects cut from round 0's pseudo-masks pasted onto images that lack their class"),
    Arm("negatives", "context negatives (W-OoD)", ("context.intervention=context_negatives",),
        "crops of round 0's predicted background as images with no label"),
    Arm("appearance", "CONTA, appearance dictionary", ("context.intervention=conta_appearance",),
        "Eq. 3 over prototypes of the predicted background's features (ours)"),
    Arm("oracle_negatives", "oracle: the generator's contexts as negatives",
        ("context.intervention=oracle_context_negatives",),
        "diagnostic: reads the generator (context-only images)"),
    Arm("oracle_appearance", "oracle: one entry per true context",
        ("context.intervention=oracle_conta_appearance",),
        "diagnostic: reads the generator (each image's true context)"),
    Arm("control_steps", "control: negatives' extra steps, repeats of images",
        ("context.intervention=control_extra_steps",),
        "as many extra samples as negatives, each a repeat of a training image with its labels "
        "(a control of ours, added after the first negatives round)"),
    Arm("negatives_margin", "context negatives, one-cell margin (post hoc)",
        ("context.intervention=context_negatives", "negatives.margin=0.057"),
        "crops kept one CAM cell (16 / 280 of the long side) away from the predicted "
        "foreground; added after the bank's audit (docs/results.md section 7.3)"),
)
"""The interventions of docs/results.md section 7 (pre-registered before their runs): round 1
of each, sharing the ``conta`` run's round 0 of its rho and seed; ``oracle_*`` arms read the
generator's record and are diagnostics, never claims. Arms in :data:`POST_HOC` were added after
results were seen (section 7.3) and are marked so in every verdict."""
POST_HOC = ("negatives_margin",)
POST_HOC_RHOS = (0.97,)
"""The rhos the post hoc arms run at (section 7.3 registers rho 0.97 only)."""
INTERVENTION_RHOS = (0.97, 0.9, 0.5)
INTERVENTION_NAMES = tuple(a.name for a in INTERVENTION_ARMS)
ALL_ARMS = (*ARMS, *ESOL_ARMS, *INTERVENTION_ARMS)
ARM_BY_NAME = {a.name: a for a in ALL_ARMS}
ESOL_STAGES = (("esol_stage0_", "stage 0 (IRNet's CAM)"), ("esol_expand_", "expansion"),
               ("", "shrinkage (ESOL's CAMs)"))
ESOL_CAM_KEYS = ("cam_miou_best", "precision_best", "recall_best", "contrast_context")
ESOL_KEYS = (*(prefix + k for prefix, _ in ESOL_STAGES for k in ESOL_CAM_KEYS),
             "esol_expand_mean_abs_offset", "esol_shrink_mean_abs_offset")
"""What ESOL's rounds add to the archive: each stage's CAM figures and the samplers' offsets."""
VARIANTS = ("exact", "adamw", "gt_dict", "mmax", "uniform")
"""The round-1 variants, in the order they run (most informative first: whether the NWGM, the
optimiser or the dictionary is to blame; the uniform control last, as CONTA's own attention
is already uniform to three decimals)."""


@dataclass(frozen=True)
class Job:
    """One pipeline run: ``arm`` at ``rho`` (None: the interventional training set) and ``seed``."""

    arm: str
    rho: float | None
    seed: int
    rounds: int


@dataclass
class Protocol:
    """Where the runs live and how large they are (defaults: docs/results.md, section 0)."""

    out: Path
    preset: str = "cpu"
    main_seeds: tuple[int, ...] = tuple(range(8))
    other_seeds: tuple[int, ...] = tuple(range(5))
    round2_seeds: tuple[int, ...] = tuple(range(5))
    sweep_rhos: tuple[float, ...] = SWEEP_RHOS
    variants: tuple[str, ...] = VARIANTS
    esol_seeds: tuple[int, ...] = tuple(range(3))
    esol_ablations: tuple[str, ...] = ESOL_ABLATIONS
    interventions: tuple[str, ...] = INTERVENTION_NAMES
    intervention_rhos: tuple[float, ...] = INTERVENTION_RHOS
    intervention_seeds: tuple[int, ...] = tuple(range(5))
    n_train: int = 400
    n_val: int = 100
    size: int | None = None  # default: the benchmark's
    twins: int | None = None  # default: the benchmark's
    data_seed: int = 0
    overrides: tuple[str, ...] = field(default_factory=tuple)
    seeds: tuple[int, ...] | None = None  # restrict every arm to these training seeds
    rhos: tuple[float, ...] | None = None  # restrict to these rhos (interventional training kept)
    archive: Path | None = None  # the committed per-run records (:func:`archive_runs`)
    skip_archived: bool = False  # run_protocol skips jobs the archive holds (else reruns them)

    def data_root(self, rho: float | None) -> Path:
        return self.out / "data" / ("interventional" if rho is None else f"rho{rho}")

    def run_dir(self, job: Job) -> Path:
        if job.rho is None:
            return self.out / "interventional_train" / f"seed{job.seed}"
        return self.out / job.arm / f"rho{job.rho}_seed{job.seed}"

    def jobs(self) -> list[Job]:
        """Every run, in the order that gives the primary comparison first.

        The variants and CONTA's round 2 run seed by seed (all of seed 0, then seed 1, ...):
        each pairs with CONTA's round 0 of its seed, which a session whose run folders are
        gone must rerun, so that one rerun then serves every variant of the seed (a round,
        about 4.5 minutes on 2 cores, instead of one per variant).
        """
        out = [Job("conta", MAIN_RHO, s, 1) for s in self.main_seeds]
        for s in self.main_seeds:
            out += [Job("interventional", None, s, 0), Job("interventional", MAIN_RHO, s, 0)]
        for s in dict.fromkeys((*self.other_seeds, *self.round2_seeds)):
            if s in self.other_seeds:
                out += [Job(v, MAIN_RHO, s, 1) for v in self.variants]
            if s in self.round2_seeds:
                out.append(Job("conta", MAIN_RHO, s, 2))
        for rho in self.sweep_rhos:
            out += [Job("conta", rho, s, 1) for s in self.other_seeds]
            out += [Job("interventional", rho, s, 0) for s in self.other_seeds]
        # the ESOL extension (docs/results.md section 6), after the protocol proper
        out += [Job("esol", MAIN_RHO, s, 1) for s in self.esol_seeds]
        out += [Job(a, MAIN_RHO, s, 0) for s in self.esol_seeds for a in self.esol_ablations]
        # the interventions (docs/results.md section 7): rho 0.97 first, seed by seed, so one
        # rerun of a seed's conta round 0 serves every intervention of the seed
        out += [Job(a, rho, s, 1) for rho in self.intervention_rhos
                for s in self.intervention_seeds for a in self.interventions
                if a not in POST_HOC or rho in POST_HOC_RHOS]
        if self.seeds is not None:
            out = [j for j in out if j.seed in self.seeds]
        if self.rhos is not None:
            out = [j for j in out if j.rho is None or j.rho in self.rhos]
        return out


def shard_key(job: Job) -> tuple:
    """The jobs that must run in one process, one after the other: a (rho, seed) shares its
    CONTA round 0 with every variant and intervention of it, and ESOL's stages with its
    ablations; an interventional training serves every transfer of its seed."""
    return ("interventional", job.seed) if job.arm == "interventional" else (job.rho, job.seed)


ROUND_WORK = {"round 0": 1.0, "later round": 0.94, "transfer": 0.7, "training": 0.25,
              "esol round 0": 2.4, "esol later round": 2.5, "esol ablation round 0": 1.9}
"""What a round of each kind costs, a round 0 counting 1: measured on the protocol's own rounds
(docs/benchmarks.md, "Against the targets", the two slices: one thread each, two shards side by
side; a round 0, which also predicts the training images for the next round, 232 and 269 s, a
last later round 221 and 247 s, a transfer 170 and 172 s, an interventional CAM training 58
and 66 s); ESOL's from the medians of docs/tables/evidence.md's Cost line. Only the shards'
deal reads it."""


def job_work(job: Job, seen: set[tuple]) -> float:
    """The work ``job`` adds to the rounds in ``seen`` (which it extends), in :data:`ROUND_WORK`
    units: a variant's or an intervention's round 0 is conta's, a later job of a run only adds
    its new rounds, an ESOL ablation shares ESOL's first stages."""
    if job.rho is None:
        return ROUND_WORK["training"]
    if job.arm == "interventional":
        return ROUND_WORK["transfer"]
    start = 1 if job.arm in VARIANTS or job.arm in INTERVENTION_NAMES else 0
    rounds = {(job.arm, job.rho, job.seed, r) for r in range(start, job.rounds + 1)} - seen
    seen |= rounds
    work = 0.0
    for *_, r in rounds:
        if job.arm in ESOL_ABLATIONS:
            work += ROUND_WORK["esol ablation round 0"]
        elif job.arm.startswith("esol"):
            work += ROUND_WORK["esol round 0" if r == 0 else "esol later round"]
        else:
            work += ROUND_WORK["round 0" if r == 0 else "later round"]
    return work


def shard_jobs(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` (1..``count``), in their order in ``jobs``.

    Whole :func:`shard_key` groups are dealt out, the costliest first, each to the shard with
    the least work so far (a group's work: :func:`job_work` of its jobs); the deal depends only
    on ``jobs``, so every shard of one command line, and a resumed one, computes the same split.
    """
    if not (isinstance(count, int) and isinstance(index, int) and 1 <= index <= count):
        raise ConfigError(f"shard {index}/{count}: expected K/N with 1 <= K <= N")
    cost: dict[tuple, float] = {}
    seen: set[tuple] = set()
    for job in jobs:
        key = shard_key(job)
        cost[key] = cost.get(key, 0.0) + job_work(job, seen)
    load = [0.0] * count
    owner: dict[tuple, int] = {}
    order = {key: i for i, key in enumerate(cost)}
    for key in sorted(cost, key=lambda k: (-cost[k], order[k])):
        shard = min(range(count), key=lambda i: (load[i], i))
        owner[key] = shard
        load[shard] += cost[key]
    return [job for job in jobs if owner[shard_key(job)] == index - 1]


def select_jobs(proto: Protocol, only: Sequence[str] | None = None,
                shard: tuple[int, int] | None = None) -> list[Job]:
    """``proto``'s jobs in order, restricted to the arms ``only`` and to shard ``(k, n)``."""
    jobs = [job for job in proto.jobs() if not only or job.arm in only]
    return shard_jobs(jobs, *shard) if shard is not None else jobs


def _generate(proto: Protocol, rho: float | None, progress: bool) -> Path:
    from .data.synthetic import generate_synthetic  # torch-bound: on use (the tables need no torch)

    root = proto.data_root(rho)
    with file_lock(proto.out / ".generate.lock"):  # shards may need the same set
        generate_synthetic(root, n_train=proto.n_train, n_val=proto.n_val,
                           rho=MAIN_RHO if rho is None else rho, seed=proto.data_seed,
                           size=proto.size or BENCHMARK_SIZE,
                           twins=min(BENCHMARK_TWINS, proto.n_val) if proto.twins is None
                           else proto.twins, interventional=rho is None, progress=progress)
    return root


def job_config(proto: Protocol, job: Job):
    """The resolved config of one job (data generated on first use)."""
    extra = list(ARM_BY_NAME[job.arm].overrides)
    if job.arm == "interventional" and job.rho is not None:
        ckpt = proto.run_dir(Job("interventional", None, job.seed, 0)) / "round_0" / "cam_net.pt"
        extra.append(f"cam.checkpoint={ckpt.resolve()}")
    root = proto.data_root(job.rho)
    return resolve(proto.preset, [f"data.root={root.resolve()}", *proto.overrides, *extra],
                   seed=job.seed, rounds=job.rounds)


ROUND0_FREE = ("rounds", "context", "paste", "negatives")
"""Config sections round 0 never reads (CONTA's and the interventions' keys act in rounds >= 1)."""


def share_round0(src: Path, dst: Path, cfg) -> bool:
    """Copy the finished round 0 of ``src`` (the ``conta`` run of the same rho and seed) into
    ``dst`` (a variant's run), so the variant's round 1 is paired with the very same baseline.
    A round 0 run on its own (``rounds=0``) lacks the segmentation predictions on the training
    images that the next round's dictionary needs; the variant's run adds them (seconds).

    Round 0 reads no key of :data:`ROUND0_FREE`, so only those may differ between the two configs
    (else ConfigError naming the keys; a key of ``runfolder.LATER_KEYS`` that ``src`` predates
    counts as its neutral value); the copied stage records are re-stamped with ``cfg``'s config
    fingerprint (their data fingerprint is checked as usual). Returns whether it copied.
    """
    done = (src / "round_0" / "seg_predict.json").is_file() or _finished(src, 0)
    if (dst / "round_0").exists() or not done:
        return False
    from .runfolder import LATER_KEYS  # torch-bound: on use (the tables need no torch)

    theirs = json.loads((src / "config.json").read_text())
    ours = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as in config.json
    for dotted, neutral in LATER_KEYS.items():  # a key added after src was written: its
        section, key = dotted.split(".", 1)  # neutral value is what src's code did
        for config in (theirs, ours):
            if isinstance(config.get(section), dict):
                config[section].setdefault(key, neutral)
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in ROUND0_FREE and theirs.get(k) != ours.get(k))
    if differ:
        raise ConfigError(f"cannot share round 0 of {src}: its config differs in {differ}; "
                          "only the keys of rounds >= 1 (context.*, paste.*, negatives.*) may "
                          "differ")
    tmp = dst / "round_0.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "round_0", tmp)
    restamp_records(tmp, cfg, shared_from=src)
    tmp.rename(dst / "round_0")
    return True


def run_sharing_round0(cfg, out: str | Path, base: str | Path, *, progress: bool = True) -> dict:
    """Run ``cfg`` (rounds >= 1 of another intervention, e.g. ``context.intervention=paste``)
    into ``out`` with round 0 copied from the finished run ``base`` (:func:`share_round0`: the
    configs may differ only in the keys of rounds >= 1), so both runs' round 1 start from the
    same baseline; returns the report. Used by the demo and notebook 08."""
    from .pipeline import run_experiment  # torch-bound: on use (the tables need no torch)

    share_round0(Path(base), Path(out), cfg)
    return run_experiment(cfg, out, progress=progress)


def share_esol_stages(src: Path, dst: Path, cfg) -> list[str]:
    """Copy into ``dst`` (an ESOL ablation's run) the round-0 stages of ``src`` (the ``esol``
    run of the same rho and seed) that the keys in which the two differ cannot change: stage 0
    (``cam_train``) when only ``esol.*`` keys differ, and also ``cam_expand`` and ``esol_eval``
    when those are all shrinkage keys (:data:`causal_wsss.methods.esol.SHRINK_ONLY_KEYS`). The
    ablation's round 0 then starts from the very networks ESOL's did, and its stage-0 and (for
    the shrinkage ablations) expansion figures are ESOL's own; the copied records are
    re-stamped with ``cfg``'s fingerprint and marked ``shared_from`` (such a round is not
    timed). Returns the stages copied (none when ``dst`` has a round 0 or ``src`` lacks them);
    ConfigError when a key outside ``esol.*`` differs."""
    from .methods.esol import SHRINK_ONLY_KEYS  # torch-bound: on use (the tables need no torch)

    src_round = src / "round_0"
    if (dst / "round_0").exists() or not (src / "config.json").is_file():
        return []
    theirs = json.loads((src / "config.json").read_text())
    ours = json.loads(json.dumps(cfg.to_dict()))
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in ("rounds", "esol") and theirs.get(k) != ours.get(k))
    if differ:
        raise ConfigError(f"cannot share ESOL's stages of {src}: its config differs in {differ}; "
                          "only esol.* keys may differ")
    esol_a, esol_b = theirs.get("esol", {}), ours.get("esol", {})
    esol_differ = {k for k in set(esol_a) | set(esol_b) if esol_a.get(k) != esol_b.get(k)}
    files = {"cam_train": ("cam_net.pt",)}
    if esol_differ <= SHRINK_ONLY_KEYS:
        files.update({"cam_expand": ("cam_expand.pt",), "esol_eval": ()})
    if not all((src_round / f"{stage}.json").is_file()
               and all((src_round / f).is_file() for f in extra)
               for stage, extra in files.items()):
        return []
    tmp = dst / "round_0.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for stage, extra in files.items():
        for name in (f"{stage}.json", *extra):
            shutil.copy2(src_round / name, tmp / name)
    restamp_records(tmp, cfg, shared_from=src)
    tmp.rename(dst / "round_0")
    return list(files)


def restamp_records(round_dir: Path, cfg, *, shared_from: Path | None = None) -> None:
    """Give the stage records of a copied round ``cfg``'s config fingerprint (the run folder
    refuses records of another config; callers check that the copied stages do not read the
    keys that differ). Unreadable records are left for the run folder to report."""
    from .runfolder import config_fingerprint  # torch-bound: on use (the tables need no torch)
    from .stage_table import STAGES

    fingerprint = config_fingerprint(cfg)
    for stage in STAGES:
        path = round_dir / f"{stage}.json"
        try:
            record = json.loads(path.read_text()) if path.is_file() else None
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("inputs"), dict):
            record["inputs"]["config"] = fingerprint
        if shared_from is not None:
            record["shared_from"] = str(Path(shared_from).resolve())
        write_json(path, record)


def run_protocol(proto: Protocol, *, only: Sequence[str] | None = None, progress: bool = True,
                 after_each: Callable[[], None] | None = None, max_jobs: int | None = None,
                 shard: tuple[int, int] | None = None) -> int:
    """Run (or resume) every job of ``proto`` in order; returns how many ran to completion.

    ``only``: restrict to these arm names. ``after_each()`` runs after every job (the script
    rewrites its tables there). A job whose report already has its rounds costs a few seconds.
    ``shard=(k, n)``: only shard k of n (:func:`shard_jobs`), for n processes sharing ``out``.
    """
    from .pipeline import run_experiment, train_cam_network  # torch-bound: on use

    archived = load_archive(proto.archive) if proto.skip_archived else {}
    done = 0
    for job in select_jobs(proto, only, shard):
        if max_jobs is not None and done >= max_jobs:
            break
        run_dir = proto.run_dir(job)
        if _finished(run_dir, job.rounds) or is_archived(archived, proto, job):
            continue
        if job.rho is None:  # the interventional CAM training: its network is all that is used
            if _trained(run_dir):
                continue
            _generate(proto, None, progress)
            print(f"[evidence] interventional CAM training, seed={job.seed}", flush=True)
            train_cam_network(job_config(proto, job), run_dir, progress=progress)
            done += 1
            if after_each is not None:
                after_each()
            continue
        if job.arm == "interventional" and job.rho is not None:
            src = proto.run_dir(Job("interventional", None, job.seed, 0))
            if not _trained(src):
                continue  # its training job comes first in the order; skipped under --only
        _generate(proto, job.rho, progress)
        cfg = job_config(proto, job)
        if job.arm in VARIANTS or job.arm in INTERVENTION_NAMES:
            # the variant's round 1 is paired with conta's round 0 of the same seed: run that
            # round 0 first when it is missing (e.g. under --only, or when only archived)
            base = Job("conta", job.rho, job.seed, 0)
            base_dir = proto.run_dir(base)
            if not (run_dir / "round_0").exists() and not _finished(base_dir, 0):
                print(f"[evidence] conta rho={job.rho} seed={job.seed} round 0 (shared by "
                      f"{job.arm})", flush=True)
                run_experiment(job_config(proto, base), base_dir, progress=progress)
            share_round0(base_dir, run_dir, cfg)
        shared = []
        if job.arm in ESOL_ABLATIONS:  # ESOL's stages that the ablated keys cannot change
            shared = share_esol_stages(proto.run_dir(Job("esol", job.rho, job.seed, 0)),
                                       run_dir, cfg)
        print(f"[evidence] {job.arm} rho={job.rho} seed={job.seed} rounds 0..{job.rounds}"
              + (f" (sharing esol's {', '.join(shared)})" if shared else ""), flush=True)
        run_experiment(cfg, run_dir, progress=progress)
        done += 1
        if after_each is not None:
            after_each()
    return done


def _trained(run_dir: Path) -> bool:
    """Whether round 0's CAM training in ``run_dir`` is finished (its record is written last)."""
    return (run_dir / "round_0" / "cam_train.json").is_file() and \
        (run_dir / "round_0" / "cam_net.pt").is_file()


def _finished(run_dir: Path, rounds: int) -> bool:
    path = run_dir / "report.json"
    if not path.is_file():
        return False
    try:
        have = [e["round"] for e in json.loads(path.read_text())["rounds"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    return all(r in have for r in range(rounds + 1))


def is_archived(archived: dict, proto: Protocol, job: Job) -> bool:
    """Whether the archive holds every round of ``job``; the interventional training job
    (``rho`` None) counts as archived when every transfer job of its seed is."""
    if not archived:
        return False
    if job.rho is None:
        transfers = [j for j in proto.jobs()
                     if j.arm == "interventional" and j.rho is not None and j.seed == job.seed]
        return bool(transfers) and all(is_archived(archived, proto, j) for j in transfers)
    rec = archived.get(_run_key(job, proto))
    return rec is not None and all(str(r) in rec["rounds"] for r in range(job.rounds + 1))


# --------------------------------------------------------------------------------------------
# reading finished run folders


def read_reports(proto: Protocol) -> dict[tuple[str, float], dict[int, dict]]:
    """{(arm, rho): {seed: {round: entry}}} of every report under ``proto.out``."""
    found: dict[tuple[str, float], dict[int, dict]] = {}
    for arm in ALL_ARMS:
        folder = proto.out / arm.name
        if not folder.is_dir():
            continue
        for run in sorted(folder.glob("rho*_seed*")):
            path = run / "report.json"
            if not path.is_file():
                continue
            rho_s, seed_s = run.name[3:].split("_seed")
            report = json.loads(path.read_text())
            rounds = {e["round"]: e for e in report["rounds"]}
            for r in rounds:
                seconds = _round_seconds(run, r, partial=arm.name in ESOL_ABLATIONS)
                if seconds is not None:
                    rounds[r] = {**rounds[r], "seconds": seconds}
            for r in rounds:
                rounds[r] = {**rounds[r], **per_class_values(run / f"round_{r}")}
            numerics = numerics_of(run)
            for r in rounds:
                rounds[r] = {**rounds[r], "numerics": numerics}
            history = _round1_history(run)
            if history and 1 in rounds:
                rounds[1] = {**rounds[1], "epoch_history": history}
            found.setdefault((arm.name, float(rho_s)), {})[int(seed_s)] = rounds
    return found


def numerics_of(run: Path) -> int:
    """The numerics version (:data:`causal_wsss.constants.NUMERICS`) a run folder's rounds were
    made with: the ``numerics`` stamp of its round-0 CAM training record (written from version 3
    on); else 2 when its ``config.json`` has the ``cam_infer.work_long`` key (written only by
    the code of version 2); else 1."""
    try:
        stamp = json.loads((run / "round_0" / "cam_train.json").read_text()).get("numerics")
        if isinstance(stamp, int) and stamp >= 1:
            return stamp
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return 1
    return 2 if isinstance(cfg, dict) and "work_long" in (cfg.get("cam_infer") or {}) else 1


def record_numerics(rec: dict) -> int:
    """The oldest numerics version among an (archived or reduced) record's rounds."""
    return min((int(e.get("numerics") or 1) for e in rec.get("rounds", {}).values()), default=1)


def _round_seconds(run: Path, r: int, *, partial: bool = False) -> float | None:
    """The wall seconds ``run`` spent on round ``r``: the sum of its stage records' ``seconds``.
    None when no record says, or when part of the round was copied from another run (a
    variant's shared round 0): such a round did not cost what a round costs. ``partial``: the
    copied stages cost nothing and the rest is summed (an ESOL ablation's round 0, which shares
    ESOL's first stages: a kind of round of its own)."""
    total, found = 0.0, False
    for path in sorted((run / f"round_{r}").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict):
            continue
        if "shared_from" in record:
            if partial:
                continue
            return None
        if isinstance(record.get("seconds"), (int, float)):
            total, found = total + float(record["seconds"]), True
    return total if found else None


PER_CLASS_PREFIXES = ("pseudo_iou/", "fp_preferred/")
"""Per-class figures a round's archive entry carries (``pseudo_iou/horse``: the class's
pseudo-mask IoU; ``fp_preferred/horse``: the share of its preferred context's context-only
twins scored positive), read from the round's stage records."""


def per_class_values(round_dir: Path) -> dict[str, float]:
    """``pseudo_iou/<class>`` and ``fp_preferred/<class>`` of one round folder (those its
    ``pseudo_eval.json`` and ``twin_eval.json`` hold; unreadable records give nothing)."""
    out: dict[str, float] = {}
    for name, field_, prefix in (("pseudo_eval.json", None, "pseudo_iou/"),
                                 ("twin_eval.json", "fp_rate_preferred", "fp_preferred/")):
        try:
            record = json.loads((round_dir / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        table = record.get("iou_per_class" if field_ is None else "per_class") \
            if isinstance(record, dict) else None
        for cls, v in (table or {}).items():
            v = v.get(field_) if field_ is not None and isinstance(v, dict) else v
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
                out[prefix + str(cls)] = float(v)
    return out


def _round1_history(run: Path) -> list[dict]:
    path = run / "round_1" / "cam_train.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("history", [])


def value_of(entry: dict | None, key: str) -> float | None:
    if entry is None:
        return None
    v = entry.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# --------------------------------------------------------------------------------------------
# the archive: every finished run's table entries, committed (a run folder is gigabytes and
# lives on one machine; the archive is a few kilobytes per run and travels with the repository)

ARCHIVE_FORMAT = 1
_HISTORY_KEYS = ("w_m_abs", "alpha_max_mean", "attention_logit_std", "alpha_uniform")
INTERVENTION_KEYS = ("partner_effect", "cam_miou_in_context", "fp_rate_other",
                     "paste_objects", "negative_crops", "negative_samples", "appearance_k",
                     "repeat_samples")
"""What the interventions' rounds add to the archive (secondary figures and their banks' sizes)."""
_ROUND_KEYS = (*ENDPOINTS, "context_share", "seconds", "numerics",
               *(k for k in ESOL_KEYS if k not in ENDPOINTS), *INTERVENTION_KEYS)


def _run_key(job: Job, proto: Protocol) -> str:
    return str(proto.run_dir(job).relative_to(proto.out)).replace("\\", "/")


def _reduce(rounds: dict[int, dict]) -> dict[str, Any]:
    """What the tables read from one run: each round's endpoints and round 1's first and last
    epoch of the context monitor."""
    out: dict[str, Any] = {"rounds": {}}
    for r, entry in sorted(rounds.items()):
        out["rounds"][str(r)] = {k: value_of(entry, k) for k in entry
                                 if k in _ROUND_KEYS or k.startswith(PER_CLASS_PREFIXES)}
    hist = (rounds.get(1) or {}).get("epoch_history") or []
    if hist:
        out["epoch_history"] = [{k: float(h[k]) for k in _HISTORY_KEYS if k in h}
                                for h in (hist[0], hist[-1])]
    return out


def load_archive(path: Path | None) -> dict[str, dict]:
    """{run key (``arm/rho0.9_seed3``): record} of the committed archive ({} when absent)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); restore it with git") from exc
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        raise DataError(f"{path} is not an evidence archive of format {ARCHIVE_FORMAT}")
    return data["runs"]


def machine_id() -> dict[str, str]:
    """Where a run ran: the torch build, the CPU instruction set torch dispatches to, and the
    boot (one session's machine). Same seed, same numbers holds on one build *and* one kind of
    CPU only: a rerun of round 0 on another machine of the same build moved pseudo-mask mIoU by
    0.4 points, so paired differences are only taken within one run's rounds."""
    import torch  # on use: the tables need no torch

    boot = Path("/proc/sys/kernel/random/boot_id")
    return {"torch": torch.__version__.split("+")[0],
            "cpu": str(torch.backends.cpu.get_cpu_capability()),
            "session": boot.read_text().strip()[:8] if boot.is_file() else "unknown"}


def archive_runs(proto: Protocol, path: Path, *, source: str = "run folder") -> int:
    """Add the reduced record of every finished run under ``proto.out`` to the archive at
    ``path``; returns how many rounds were added.

    A run's rounds must come from one machine (round t − round 0 is a paired difference). So a
    run folder's rounds are added to the archived record only when that record was made on this
    machine (:func:`machine_id`'s session); a run folder holding rounds the record lacks, made
    elsewhere (e.g. round 2 after round 1 was archived by another session), *replaces* the
    record, the old one kept under ``previous``. A round already archived is otherwise never
    overwritten (a rerun is compared with it: ``collect``'s reproduction check), except by a
    run folder made on newer numerics (:data:`~causal_wsss.constants.NUMERICS`) that holds every
    round of the record: it replaces the record, the old one kept under ``previous`` (so the reproduction check
    still lists both). Records of runs that are not here are kept.
    """
    here = machine_id()
    runs = load_archive(path)
    n = 0
    for (arm, rho), by_seed in read_reports(proto).items():
        for seed, rounds in by_seed.items():
            key = _run_key(Job(arm, rho, seed, 0), proto)
            rec = _reduce(rounds)
            old = runs.get(key)
            new_rounds = set(rec["rounds"]) - set((old or {}).get("rounds", {}))
            mine = old is not None and old.get("machine", {}).get("session") == here["session"]
            newer = (old is not None and not mine and record_numerics(rec) > record_numerics(old)
                     and set(old["rounds"]) <= set(rec["rounds"]))
            # figures of this machine's rounds archived before they were kept (timings,
            # per-class values): added, never overwritten
            later = {r: {k: v for k, v in e.items() if k not in old["rounds"][r]}
                     for r, e in rec["rounds"].items() if mine and r in old["rounds"]}
            later = {r: e for r, e in later.items() if e}
            if old is not None and not new_rounds and not later and not newer:
                continue
            if not mine or newer:
                previous = [] if old is None else [*old.pop("previous", []), old]
                runs[key] = {"rounds": {}, "source": source, "machine": here,
                             **({"previous": previous} if previous else {})}
                new_rounds = set(rec["rounds"])
            target = runs[key]
            for r, extra in later.items():
                target["rounds"][r].update(extra)
            for r in sorted(new_rounds):
                target["rounds"][r] = {**rec["rounds"][r], "torch": here["torch"]}
                n += 1
            if "epoch_history" in rec and "1" in new_rounds:
                target["epoch_history"] = rec["epoch_history"]
            target["rounds"] = dict(sorted(target["rounds"].items()))
    write_json(path, {"format": ARCHIVE_FORMAT,
                      "note": "per-run entries of the evidence tables (causal_wsss.evidence); "
                              "written by scripts/conta_evidence.py --protocol --publish; each "
                              "run's rounds come from one machine",
                      "runs": dict(sorted(runs.items()))})
    return n
