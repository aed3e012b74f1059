"""The evidence protocol for CONTA on the synthetic benchmark (docs/results.md, section 0).

One data set per confounding strength ``rho`` (its own data seed, fixed), training seeds varied;
every figure is a paired difference over training seeds (same seed, same data, same initial
trunk: :func:`causal_wsss.runtime.stage_seed`), reported with the sample standard deviation,
a 95% t interval and the per-seed values. The arms, in the order they run:

1. ``conta``: round 0 (the baseline) and CONTA rounds 1 (and 2) as specified (Eq. 3).
2. ``interventional``: the baseline's CAM network trained on the *interventional* set (context
   independent of the class; same size and generator), then evaluated on the confounded set's
   images (``cam.checkpoint``): the upper bound of what removing the confounding can give.
3. controls and variants of round 1, each sharing ``conta``'s round 0: the uniform-attention
   control, ``m_scale=max``, W1/W2/w_M under AdamW at a learning rate of their own, the exact
   backdoor sum at the head (our addition), the ground-truth dictionary.
4. a sweep over rho (0.5, 0.7, 0.97) of ``conta`` round 1 and ``interventional``.

The primary endpoint, fixed before any run: pseudo-mask mIoU of round 1 minus round 0 for
``conta`` at rho = 0.9 (the paper's claim). Everything else is secondary.
:func:`run_protocol` runs it (resumable: every run is a pipeline run folder);
:func:`collect` and :func:`markdown_tables` turn the finished runs into the tables.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
ALL_ARMS = (*ARMS, *ESOL_ARMS)
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
        if self.seeds is not None:
            out = [j for j in out if j.seed in self.seeds]
        if self.rhos is not None:
            out = [j for j in out if j.rho is None or j.rho in self.rhos]
        return out


def _generate(proto: Protocol, rho: float | None, progress: bool) -> Path:
    from .constants import BENCHMARK_SIZE, BENCHMARK_TWINS
    from .data.synthetic import generate_synthetic

    root = proto.data_root(rho)
    generate_synthetic(root, n_train=proto.n_train, n_val=proto.n_val,
                       rho=MAIN_RHO if rho is None else rho, seed=proto.data_seed,
                       size=proto.size or BENCHMARK_SIZE,
                       twins=min(BENCHMARK_TWINS, proto.n_val) if proto.twins is None
                       else proto.twins, interventional=rho is None, progress=progress)
    return root


def job_config(proto: Protocol, job: Job):
    """The resolved config of one job (data generated on first use)."""
    from .config import resolve

    extra = list(ARM_BY_NAME[job.arm].overrides)
    if job.arm == "interventional" and job.rho is not None:
        ckpt = proto.run_dir(Job("interventional", None, job.seed, 0)) / "round_0" / "cam_net.pt"
        extra.append(f"cam.checkpoint={ckpt.resolve()}")
    root = proto.data_root(job.rho)
    return resolve(proto.preset, [f"data.root={root.resolve()}", *proto.overrides, *extra],
                   seed=job.seed, rounds=job.rounds)


def share_round0(src: Path, dst: Path, cfg) -> bool:
    """Copy the finished round 0 of ``src`` (the ``conta`` run of the same rho and seed) into
    ``dst`` (a variant's run), so the variant's round 1 is paired with the very same baseline.
    A round 0 run on its own (``rounds=0``) lacks the segmentation predictions on the training
    images that the next round's dictionary needs; the variant's run adds them (seconds).

    Round 0 reads no ``context.*`` key, so only those may differ between the two configs (else
    ConfigError naming the keys); the copied stage records are re-stamped with ``cfg``'s config
    fingerprint (their data fingerprint is checked as usual). Returns whether it copied.
    """
    from .errors import ConfigError

    done = (src / "round_0" / "seg_predict.json").is_file() or _finished(src, 0)
    if (dst / "round_0").exists() or not done:
        return False
    theirs = json.loads((src / "config.json").read_text())
    ours = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as in config.json
    differ = sorted(k for k in set(theirs) | set(ours)
                    if k not in ("rounds", "context") and theirs.get(k) != ours.get(k))
    if differ:
        raise ConfigError(f"cannot share round 0 of {src}: its config differs in {differ}; "
                          "only context.* keys may differ")
    tmp = dst / "round_0.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "round_0", tmp)
    restamp_records(tmp, cfg, shared_from=src)
    tmp.rename(dst / "round_0")
    return True


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
    from .errors import ConfigError
    from .methods.esol import SHRINK_ONLY_KEYS

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
    from .io import write_json
    from .pipeline import STAGES
    from .runfolder import config_fingerprint

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
                 after_each: Callable[[], None] | None = None, max_jobs: int | None = None) -> int:
    """Run (or resume) every job of ``proto`` in order; returns how many ran to completion.

    ``only``: restrict to these arm names. ``after_each()`` runs after every job (the script
    rewrites its tables there). A job whose report already has its rounds costs a few seconds.
    """
    from .pipeline import run_experiment

    archived = load_archive(proto.archive) if proto.skip_archived else {}
    done = 0
    for job in proto.jobs():
        if only and job.arm not in only:
            continue
        if max_jobs is not None and done >= max_jobs:
            break
        run_dir = proto.run_dir(job)
        if _finished(run_dir, job.rounds) or _archived(archived, proto, job):
            continue
        if job.arm == "interventional" and job.rho is not None:
            src = proto.run_dir(Job("interventional", None, job.seed, 0))
            if not (src / "round_0" / "cam_net.pt").is_file():
                continue  # its training job comes first in the order; skipped under --only
        _generate(proto, job.rho, progress)
        cfg = job_config(proto, job)
        if job.arm in VARIANTS:
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


def _finished(run_dir: Path, rounds: int) -> bool:
    path = run_dir / "report.json"
    if not path.is_file():
        return False
    try:
        have = [e["round"] for e in json.loads(path.read_text())["rounds"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    return all(r in have for r in range(rounds + 1))


def _archived(archived: dict, proto: Protocol, job: Job) -> bool:
    """Whether the archive holds every round of ``job``; the interventional training job
    (``rho`` None) counts as archived when every transfer job of its seed is."""
    if not archived:
        return False
    if job.rho is None:
        transfers = [j for j in proto.jobs()
                     if j.arm == "interventional" and j.rho is not None and j.seed == job.seed]
        return bool(transfers) and all(_archived(archived, proto, j) for j in transfers)
    rec = archived.get(_run_key(job, proto))
    return rec is not None and all(str(r) in rec["rounds"] for r in range(job.rounds + 1))


# --------------------------------------------------------------------------------------------
# the archive: every finished run's table entries, committed (a run folder is gigabytes and
# lives on one machine; the archive is a few kilobytes per run and travels with the repository)

ARCHIVE_FORMAT = 1
_HISTORY_KEYS = ("w_m_abs", "alpha_max_mean", "attention_logit_std", "alpha_uniform")
_ROUND_KEYS = (*ENDPOINTS, "context_share", "seconds",
               *(k for k in ESOL_KEYS if k not in ENDPOINTS))


def _run_key(job: Job, proto: Protocol) -> str:
    return str(proto.run_dir(job).relative_to(proto.out)).replace("\\", "/")


def _reduce(rounds: dict[int, dict]) -> dict[str, Any]:
    """What the tables read from one run: each round's endpoints and round 1's first and last
    epoch of the context monitor."""
    out: dict[str, Any] = {"rounds": {}}
    for r, entry in sorted(rounds.items()):
        out["rounds"][str(r)] = {k: _value(entry, k) for k in _ROUND_KEYS if k in entry}
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
        from .errors import DataError

        raise DataError(f"{path} is not valid JSON ({exc}); restore it with git") from exc
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        from .errors import DataError

        raise DataError(f"{path} is not an evidence archive of format {ARCHIVE_FORMAT}")
    return data["runs"]


def machine_id() -> dict[str, str]:
    """Where a run ran: the torch build, the CPU instruction set torch dispatches to, and the
    boot (one session's machine). Same seed, same numbers holds on one build *and* one kind of
    CPU only: a rerun of round 0 on another machine of the same build moved pseudo-mask mIoU by
    0.4 points, so paired differences are only taken within one run's rounds."""
    import torch

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
    overwritten (a rerun is compared with it: ``collect``'s reproduction check). Records of
    runs that are not here are kept.
    """
    from .io import write_json

    here = machine_id()
    runs = load_archive(path)
    n = 0
    for (arm, rho), by_seed in _reports(proto).items():
        for seed, rounds in by_seed.items():
            key = _run_key(Job(arm, rho, seed, 0), proto)
            rec = _reduce(rounds)
            old = runs.get(key)
            new_rounds = set(rec["rounds"]) - set((old or {}).get("rounds", {}))
            mine = old is not None and old.get("machine", {}).get("session") == here["session"]
            # timings of this machine's rounds archived before timings were kept
            timings = {r: v["seconds"] for r, v in rec["rounds"].items() if mine and "seconds" in v
                       and r in old["rounds"] and "seconds" not in old["rounds"][r]}
            if old is not None and not new_rounds and not timings:
                continue
            if not mine:
                previous = [] if old is None else [*old.pop("previous", []), old]
                runs[key] = {"rounds": {}, "source": source, "machine": here,
                             **({"previous": previous} if previous else {})}
                new_rounds = set(rec["rounds"])
            target = runs[key]
            for r, seconds in timings.items():
                target["rounds"][r]["seconds"] = seconds
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


# --------------------------------------------------------------------------------------------
# statistics


def _t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample SD (ddof 1), n, the 95% t interval of the mean, and the values themselves."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "lo": None, "hi": None, "values": []}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "sd": None, "n": 1, "lo": None, "hi": None, "values": v.tolist()}
    sd = float(v.std(ddof=1))
    half = _t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "lo": mean - half, "hi": mean + half,
            "values": v.tolist()}


def ratio_interval(num: Sequence[float], den: Sequence[float], *, reps: int = 4000,
                   seed: int = 0) -> dict[str, Any]:
    """mean(num) / mean(den) over paired seeds, with a 95% percentile bootstrap over seeds
    (None when the denominator's interval contains 0 or fewer than 2 pairs)."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.size != b.size or a.size < 2 or abs(b.mean()) < 1e-12:
        return {"ratio": None, "lo": None, "hi": None, "n": int(min(a.size, b.size))}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(reps, a.size))
    den_bs = b[idx].mean(axis=1)
    ok = np.abs(den_bs) > 1e-12
    ratios = a[idx].mean(axis=1)[ok] / den_bs[ok]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"ratio": float(a.mean() / b.mean()), "lo": float(lo), "hi": float(hi),
            "n": int(a.size)}


# --------------------------------------------------------------------------------------------
# collecting finished runs


def _reports(proto: Protocol) -> dict[tuple[str, float], dict[int, dict]]:
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
            history = _round1_history(run)
            if history and 1 in rounds:
                rounds[1] = {**rounds[1], "epoch_history": history}
            found.setdefault((arm.name, float(rho_s)), {})[int(seed_s)] = rounds
    return found


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


def _round1_history(run: Path) -> list[dict]:
    path = run / "round_1" / "cam_train.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("history", [])


def _value(entry: dict | None, key: str) -> float | None:
    if entry is None:
        return None
    v = entry.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _paired(a: dict[int, dict], ra: int, b: dict[int, dict], rb: int, key: str
            ) -> tuple[list[int], list[float]]:
    seeds, diffs = [], []
    for seed in sorted(set(a) & set(b)):
        x, y = _value(a[seed].get(ra), key), _value(b[seed].get(rb), key)
        if x is not None and y is not None:
            seeds.append(seed)
            diffs.append(x - y)
    return seeds, diffs


def _merge_archive(proto: Protocol, reports: dict) -> list[dict[str, Any]]:
    """Put the archive's runs into ``reports`` (in place), one source per run so that its
    rounds come from one machine: the archived record, unless the run folder here holds rounds
    the record lacks (then the run folder's). Rounds held by both are returned as pairs (the
    reproduction check). Tables of one's own runs only: ``Protocol(archive=None)``."""
    checks = []
    session = machine_id()["session"]
    for key, rec in load_archive(proto.archive).items():
        arm, _, name = key.partition("/")
        if arm not in ARM_BY_NAME or not name.startswith("rho") or "_seed" not in name:
            continue
        rho_s, seed_s = name[3:].split("_seed")
        runs = reports.setdefault((arm, float(rho_s)), {})
        have = runs.get(int(seed_s), {})
        for r_s, values in rec["rounds"].items():
            if int(r_s) in have and rec.get("machine", {}).get("session") != session:
                old, new = values.get(PRIMARY), _value(have[int(r_s)], PRIMARY)
                if old is not None and new is not None:
                    checks.append({"run": key, "round": int(r_s), "archived": old, "rerun": new,
                                   "torch_archived": values.get("torch"),
                                   "cpu_archived": rec.get("machine", {}).get("cpu")})
        # a record replaced by a rerun elsewhere (archive_runs keeps it under "previous"): the
        # rounds both made, so the reproduction check survives the replacement
        for prev in rec.get("previous", []):
            for r_s, values in prev.get("rounds", {}).items():
                old, new = values.get(PRIMARY), rec["rounds"].get(r_s, {}).get(PRIMARY)
                if old is not None and new is not None:
                    checks.append({"run": key, "round": int(r_s), "archived": old, "rerun": new,
                                   "torch_archived": values.get("torch"),
                                   "cpu_archived": prev.get("machine", {}).get("cpu"),
                                   "rerun_on": rec.get("machine")})
        if set(have) - {int(r) for r in rec["rounds"]}:
            continue  # the run folder has more: it is the run (one machine)
        entries = {}
        for r_s, values in rec["rounds"].items():
            entry = {k: v for k, v in values.items() if k != "torch"}
            if r_s == "1" and rec.get("epoch_history"):
                entry["epoch_history"] = rec["epoch_history"]
            entry["archived"] = True
            entries[int(r_s)] = entry
        runs[int(seed_s)] = dict(sorted(entries.items()))
    for runs in reports.values():  # keep seeds in order (the tables list values by seed)
        items = sorted(runs.items())
        runs.clear()
        runs.update(items)
    return checks


def _diff_in_diff(a: dict[int, dict], b: dict[int, dict], key: str
                  ) -> tuple[list[int], list[float]]:
    """Per seed, (a's round 1 − its round 0) − (b's round 1 − its round 0): a variant against
    CONTA, each paired with its own round 0, so that the comparison holds even when the two
    runs were made on different machines (round 0 is the same run within one machine)."""
    sa, da = _paired(a, 1, a, 0, key)
    sb, db = _paired(b, 1, b, 0, key)
    both = sorted(set(sa) & set(sb))
    return both, [da[sa.index(s)] - db[sb.index(s)] for s in both]


def collect(proto: Protocol) -> dict[str, Any]:
    """Every table's numbers from the finished runs and the archive (JSON-ready)."""
    reports = _reports(proto)
    reproduced = _merge_archive(proto, reports)
    conta = reports.get(("conta", MAIN_RHO), {})
    result: dict[str, Any] = {"primary": None, "rounds": {}, "paired": {}, "vs_conta": {},
                              "sweep": {}, "monitor": {}, "endpoints": list(ENDPOINTS),
                              "reproduced": reproduced}
    # primary: conta round 1 - round 0, pseudo mIoU, rho 0.9
    seeds, diffs = _paired(conta, 1, conta, 0, PRIMARY)
    result["primary"] = {**interval(diffs), "seeds": seeds}
    for (arm, rho), runs in sorted(reports.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tag = f"{arm}@{rho}"
        rounds = sorted({r for entries in runs.values() for r in entries})
        result["rounds"][tag] = {str(r): _levels(runs, r, ENDPOINTS) for r in rounds}
        base = reports.get(("conta", rho), {})
        if arm == "interventional":  # interventional round 0 - confounded round 0, by seed
            result["paired"][tag] = {"0": {k: _with_seeds(*_paired(runs, 0, base, 0, k))
                                           for k in ENDPOINTS}}
            continue
        # round t - round 0 (variants share conta's round 0: their own copy of it)
        result["paired"][tag] = {str(r): {k: _with_seeds(*_paired(runs, r, runs, 0, k))
                                          for k in ENDPOINTS} for r in rounds if r > 0}
        if arm != "conta":
            result["vs_conta"][tag] = {k: _with_seeds(*_diff_in_diff(runs, base, k))
                                       for k in ENDPOINTS}
        result["monitor"][tag] = _monitor(runs)
    for (arm, rho), runs in reports.items():
        if arm != "conta":
            continue
        inter = reports.get(("interventional", rho), {})
        row: dict[str, Any] = {}
        for k in (PRIMARY, "cam_miou_best", "context_effect"):
            s1, d_conta = _paired(runs, 1, runs, 0, k)
            s2, d_int = _paired(inter, 0, runs, 0, k)
            both = sorted(set(s1) & set(s2))
            num = [d_conta[s1.index(s)] for s in both]
            den = [d_int[s2.index(s)] for s in both]
            row[k] = {"conta": _with_seeds(s1, d_conta), "interventional": _with_seeds(s2, d_int),
                      "gap_closed": ratio_interval(num, den)}
        result["sweep"][str(rho)] = row
    result["esol"] = _esol(reports)
    result["cost"] = _cost(proto, reports)
    return result


def _esol(reports: dict) -> dict[str, Any]:
    """The ESOL extension's comparisons at the main rho, each paired by seed: ESOL's round 0
    against IRN's (the ``conta`` arm's round 0), CONTA's gain on ESOL against its gain on IRN,
    each ablation's round 0 against ESOL's; and the levels of ESOL's stages."""
    esol = reports.get(("esol", MAIN_RHO), {})
    irn = reports.get(("conta", MAIN_RHO), {})
    if not esol and not any(reports.get((a, MAIN_RHO)) for a in ESOL_ABLATIONS):
        return {}
    out: dict[str, Any] = {
        "vs_irn": {k: _with_seeds(*_paired(esol, 0, irn, 0, k)) for k in ENDPOINTS},
        "conta_gain": {k: _with_seeds(*_paired(esol, 1, esol, 0, k)) for k in ENDPOINTS},
        "conta_gain_vs_irn": {k: _with_seeds(*_diff_in_diff(esol, irn, k)) for k in ENDPOINTS},
        "ablations": {}, "stages": {}}
    for name in ESOL_ABLATIONS:
        runs = reports.get((name, MAIN_RHO), {})
        if runs:
            out["ablations"][name] = {k: _with_seeds(*_paired(runs, 0, esol, 0, k))
                                      for k in ENDPOINTS}
    out["controls"] = {}
    for name, ref in ESOL_CONTROLS.items():
        runs, controlled = reports.get((name, MAIN_RHO), {}), reports.get((ref, MAIN_RHO), {})
        if runs:
            out["controls"][name] = {
                "of": ref,
                "controlled_minus_control": {k: _with_seeds(*_paired(controlled, 0, runs, 0, k))
                                             for k in ENDPOINTS},
                "control_minus_irn": {k: _with_seeds(*_paired(runs, 0, irn, 0, k))
                                      for k in ENDPOINTS}}
    for name in ("esol", *ESOL_ABLATIONS):
        runs = reports.get((name, MAIN_RHO), {})
        if runs:
            out["stages"][name] = _levels(runs, 0, ESOL_KEYS)
    return out


def _levels(runs: dict[int, dict], r: int, keys: Sequence[str]) -> dict[str, Any]:
    """Round ``r``'s level of each key over the seeds (not a difference), with those seeds."""
    return {k: {**interval([_value(e.get(r), k) for e in runs.values()]),
                "seeds": sorted(s for s, e in runs.items() if _value(e.get(r), k) is not None)}
            for k in keys}


COST_KINDS = ("round 0", "round 1 or 2", "interventional transfer", "ESOL round 0",
              "ESOL round 1", "ESOL ablation round 0")


def _cost(proto: Protocol, reports: dict) -> dict[str, Any]:
    """Median wall minutes per kind of round over every timed round (archived or here; rounds
    timed on a loaded machine included: the median resists them), and the whole protocol at
    those medians: each job counted by the rounds it adds (a variant adds round 1 on conta's
    shared round 0; the interventional CAM training is a round 0, its transfer to each rho
    skips CAM training)."""
    times: dict[str, list[float]] = {k: [] for k in COST_KINDS}
    for (arm, _), runs in reports.items():
        for rounds in runs.values():
            for r, entry in rounds.items():
                seconds = _value(entry, "seconds")
                if seconds is not None:
                    times[_cost_kind(arm, r)].append(seconds / 60.0)
    count = dict.fromkeys(COST_KINDS, 0)
    done: dict[tuple[str, float | None, int], int] = {}
    for job in proto.jobs():
        if job.rho is None:
            count[COST_KINDS[0]] += 1
        elif job.arm in VARIANTS:
            count[COST_KINDS[1]] += 1
        else:
            first = done.get((job.arm, job.rho, job.seed), -1) + 1
            for r in range(first, job.rounds + 1):
                count[_cost_kind(job.arm, r)] += 1
            done[(job.arm, job.rho, job.seed)] = job.rounds
    median = {k: float(np.median(v)) if v else None for k, v in times.items()}

    def hours(kinds: Sequence[str]) -> float | None:
        if any(count[k] and median[k] is None for k in kinds):
            return None
        return sum(count[k] * median[k] for k in kinds if count[k]) / 60.0

    return {"median_minutes": median, "timed": {k: len(v) for k, v in times.items()},
            "rounds": count, "protocol_hours": hours(COST_KINDS[:3]),
            "esol_hours": hours(COST_KINDS[3:])}


def _cost_kind(arm: str, r: int) -> str:
    if arm in ESOL_ABLATIONS:
        return COST_KINDS[5]
    if arm.startswith("esol"):
        return COST_KINDS[3] if r == 0 else COST_KINDS[4]
    if arm == "interventional":
        return COST_KINDS[2]
    return COST_KINDS[0] if r == 0 else COST_KINDS[1]


def _with_seeds(seeds: list[int], diffs: list[float]) -> dict[str, Any]:
    return {**interval(diffs), "seeds": seeds}


def _monitor(runs: dict[int, dict]) -> dict[str, Any]:
    """The last epoch's context figures of round 1 (and the first, to see them move)."""
    out: dict[str, Any] = {}
    for key in ("w_m_abs", "alpha_max_mean", "attention_logit_std", "alpha_uniform"):
        for which, pos in (("first", 0), ("last", -1)):
            vals = []
            for entries in runs.values():
                hist = (entries.get(1) or {}).get("epoch_history") or []
                if hist and key in hist[pos]:
                    vals.append(float(hist[pos][key]))
            if vals:
                out[f"{key}_{which}"] = interval(vals)
    for key in ("context_share",):
        out[key] = interval([_value(e.get(1), key) for e in runs.values()])
    return out


# --------------------------------------------------------------------------------------------
# tables


def _fmt(stat: dict | None, digits: int = 1, signed: bool = True) -> str:
    if not stat or stat.get("mean") is None:
        return "pending"
    sign = "+" if signed else ""
    text = f"{stat['mean']:{sign}.{digits}f}"
    if stat.get("sd") is not None:
        text += f" ± {stat['sd']:.{digits}f} [{stat['lo']:{sign}.{digits}f}, {stat['hi']:{sign}.{digits}f}]"
    return text + f" (n={stat['n']})"


def _digits(key: str) -> int:
    return 2 if "miou" in key else 3 if key in ("context_effect", "contrast_context") else 3


def _per_seed(stat: dict | None, digits: int) -> str:
    if not stat or not stat.get("values"):
        return ""
    return ", ".join(f"{s}: {v:+.{digits}f}" for s, v in zip(stat.get("seeds", []), stat["values"]))


def cost_line(res: dict[str, Any]) -> str:
    """One sentence: minutes per round and the whole protocol's hours at those medians."""
    cost = res.get("cost")
    if not cost or not any(cost["timed"].values()):
        return ""
    parts = [f"{k} {cost['median_minutes'][k]:.1f} min (n={cost['timed'][k]})"
             for k in COST_KINDS if cost["timed"][k]]
    n = cost["rounds"]
    line = ("**Cost** (median wall time per round on 2 CPU cores, over the timed runs): "
            + ", ".join(parts) + f". The protocol is {n[COST_KINDS[0]]} rounds 0 (the "
            f"interventional CAM trainings included), {n[COST_KINDS[1]]} later rounds and "
            f"{n[COST_KINDS[2]]} interventional transfers")
    if cost["protocol_hours"] is not None:
        line += f": about {cost['protocol_hours']:.1f} hours at these medians"
    if n[COST_KINDS[3]] or n[COST_KINDS[4]] or n[COST_KINDS[5]]:
        line += (f"; the ESOL extension adds {n[COST_KINDS[3]]} ESOL rounds 0, "
                 f"{n[COST_KINDS[4]]} ESOL rounds 1 and {n[COST_KINDS[5]]} ablation rounds 0 "
                 "(which share ESOL's stage 0, and for the area weight its expansion)")
        line += (f", about {cost['esol_hours']:.1f} hours" if cost.get("esol_hours") is not None
                 else " (not yet timed)")
    return line + "."


def markdown_tables(res: dict[str, Any]) -> str:
    """The tables of docs/results.md section 0 (mean ± sample SD [95% t interval] (n))."""
    lines = ["Mean ± sample SD [95% t interval] (n seeds); differences are paired by training "
             "seed on fixed data.", ""]
    p = res["primary"]
    lines += ["**Primary endpoint** (pre-registered): pseudo-mask mIoU, CONTA round 1 − round 0, "
              f"rho {MAIN_RHO}: {_fmt(p, _digits(PRIMARY))}", "",
              f"per seed: {_per_seed(p, _digits(PRIMARY))}", ""]
    # per arm at the main rho: paired differences
    lines += [f"**Paired differences at rho {MAIN_RHO}** (round t − round 0; interventional: "
              "its round 0 − the confounded round 0)", "",
              "| arm | diff | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|---|" + "---|" * len(ENDPOINTS)]
    for arm in ARMS:
        cell = res["paired"].get(f"{arm.name}@{MAIN_RHO}")
        if not cell:
            lines.append(f"| {arm.label} | | " + " | ".join("pending" for _ in ENDPOINTS) + " |")
            continue
        for r, stats in sorted(cell.items()):
            diff = "int. − conf." if arm.name == "interventional" else f"round {r} − 0"
            lines.append(f"| {arm.label} | {diff} | "
                         + " | ".join(_fmt(stats[k], _digits(k)) for k in ENDPOINTS) + " |")
    lines += ["", f"**Each variant against CONTA (Eq. 3)**: (its round 1 − round 0) − (CONTA's "
              f"round 1 − round 0), rho {MAIN_RHO}", "",
              "| variant | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|" + "---|" * len(ENDPOINTS)]
    for name in VARIANTS:
        stats = res["vs_conta"].get(f"{name}@{MAIN_RHO}")
        cells = [_fmt(stats[k], _digits(k)) if stats else "pending" for k in ENDPOINTS]
        lines.append(f"| {ARM_BY_NAME[name].label} | " + " | ".join(cells) + " |")
    lines += ["", f"**Levels at rho {MAIN_RHO}** (not differences)", "",
              "| arm | round | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |",
              "|---|---|" + "---|" * len(ENDPOINTS)]
    for arm in ARMS:
        cell = res["rounds"].get(f"{arm.name}@{MAIN_RHO}", {})
        for r, stats in sorted(cell.items()):
            if arm.name in VARIANTS and r == "0":
                continue  # the shared round 0 is conta's
            lines.append(f"| {arm.label} | {r} | "
                         + " | ".join(_fmt(stats[k], _digits(k), signed=False) for k in ENDPOINTS)
                         + " |")
    lines += ["", "**What the context parameters learned** (round 1, rho 0.9; first → last epoch)",
              "", "| arm | mean abs w_M | mean largest alpha (uniform) | attention logit SD | "
              "context share of CAM magnitude |", "|---|---|---|---|---|"]
    for arm in ARMS:
        m = res["monitor"].get(f"{arm.name}@{MAIN_RHO}")
        if not m:
            continue

        def fl(key: str, digits: int = 4, m: dict = m) -> str:
            a, b = m.get(f"{key}_first"), m.get(f"{key}_last")
            if not a or not b or a["mean"] is None:
                return "–"
            return f"{a['mean']:.{digits}g} → {b['mean']:.{digits}g}"
        uni = m.get("alpha_uniform_last")
        share = m.get("context_share") or {}
        lines.append(f"| {arm.label} | {fl('w_m_abs')} | {fl('alpha_max_mean', 3)}"
                     + (f" ({uni['mean']:.3f})" if uni and uni['mean'] is not None else "")
                     + f" | {fl('attention_logit_std', 3)} | "
                     + (f"{share['mean']:.2g}" if share.get("mean") is not None else "–") + " |")
    lines += ["", "**Sweep over rho**: CONTA round 1 − round 0, interventional − confounded "
              "round 0, and the share of that gap CONTA closes (ratio of means, 95% bootstrap "
              "over seeds)", "",
              "| rho | endpoint | CONTA r1 − r0 | interventional − r0 | gap closed |",
              "|---|---|---|---|---|"]
    for rho in sorted(res["sweep"], key=float):
        for k, row in res["sweep"][rho].items():
            g = row["gap_closed"]
            gap = "–" if g["ratio"] is None else f"{g['ratio']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}]"
            lines.append(f"| {rho} | {LABELS[k]} | {_fmt(row['conta'], _digits(k))} | "
                         f"{_fmt(row['interventional'], _digits(k))} | {gap} |")
    esol = markdown_esol(res)
    if esol:
        lines += ["", esol]
    cost = cost_line(res)
    if cost:
        lines += ["", cost]
    return "\n".join(lines) + "\n"


def markdown_esol(res: dict[str, Any]) -> str:
    """The ESOL extension's tables (empty before any ESOL run)."""
    e = res.get("esol") or {}
    if not e:
        return ""
    head = "| comparison | " + " | ".join(LABELS[k] for k in ENDPOINTS) + " |"
    lines = ["**A second CAM method: ESOL** (`cam.method=esol`, re-implemented from the abstract "
             "and the official figure, not a reproduction; an extension of the protocol made "
             f"after it, `docs/results.md` section 6), rho {MAIN_RHO}, paired by training seed",
             "", head, "|---|" + "---|" * len(ENDPOINTS)]
    rows = [("ESOL round 0 − IRN round 0", e.get("vs_irn")),
            ("ESOL + CONTA: round 1 − round 0", e.get("conta_gain")),
            ("CONTA's gain on ESOL − its gain on IRN", e.get("conta_gain_vs_irn"))]
    rows += [(f"{ARM_BY_NAME[n].label} − ESOL (round 0)", st)
             for n, st in (e.get("ablations") or {}).items()]
    for name, c in (e.get("controls") or {}).items():
        rows += [(f"{ARM_BY_NAME[c['of']].label} − {ARM_BY_NAME[name].label}: what the samplers "
                  "add (round 0)", c["controlled_minus_control"]),
                 (f"{ARM_BY_NAME[name].label} − IRN round 0: what two more head trainings add",
                  c["control_minus_irn"])]
    for label, stats in rows:
        if stats and stats[PRIMARY]["n"]:
            lines.append(f"| {label} | " + " | ".join(_fmt(stats[k], _digits(k))
                                                      for k in ENDPOINTS) + " |")
    lines += _esol_levels(res)
    lines += ["", "**ESOL's stages** (round 0 levels; precision and recall of the thresholded "
              "CAMs at each network's best threshold, averaged over the foreground classes)", "",
              "| run | network | CAM mIoU (best thr.) | precision | recall | contrast "
              "(object/context) |", "|---|---|---|---|---|---|"]
    for name, stages in (e.get("stages") or {}).items():
        for prefix, network in ESOL_STAGES:
            stats = [stages.get(prefix + k) for k in ESOL_CAM_KEYS]
            if not stats[0] or not stats[0]["n"]:
                continue
            cells = [_fmt(st, 1 if k == "cam_miou_best" else 2, signed=False)
                     for st, k in zip(stats, ESOL_CAM_KEYS)]
            lines.append(f"| {_esol_label(name)} | {network} | " + " | ".join(cells) + " |")
        offsets = [stages.get(f"esol_{s}_mean_abs_offset") for s in ("expand", "shrink")]
        if all(o and o["n"] for o in offsets):
            lines.append(f"| {_esol_label(name)} | mean abs offset, expansion / shrinkage "
                         f"(feature cells) | {_fmt(offsets[0], 2, signed=False)} / "
                         f"{_fmt(offsets[1], 2, signed=False)} | | | |")
    return "\n".join(lines)


def _esol_label(name: str) -> str:
    """An ESOL arm's name in the round-0 tables (the ``esol`` arm's round 0 has no CONTA yet)."""
    return "ESOL (re-implemented)" if name == "esol" else ARM_BY_NAME[name].label


def _esol_levels(res: dict[str, Any]) -> list[str]:
    """Levels (not differences) of ESOL's rounds and ablations beside IRN's rounds on the
    same training seeds (the ``conta`` arm, restricted to ESOL's seeds)."""
    levels = res.get("rounds") or {}
    esol = levels.get(f"esol@{MAIN_RHO}") or {}
    seeds = set(((esol.get("0") or {}).get(PRIMARY) or {}).get("seeds") or [])
    if not seeds:
        return []
    keys = (PRIMARY, "cam_miou_best", "seg_miou", "context_effect")

    def on_seeds(stat: dict | None) -> dict | None:
        if not stat or not stat.get("values"):
            return None
        pairs = [(sd, v) for sd, v in zip(stat["seeds"], stat["values"]) if sd in seeds]
        return _with_seeds([sd for sd, _ in pairs], [v for _, v in pairs]) if pairs else None

    rows = [(f"IRN (IRNet's CAM), round {r}{' + CONTA' if r else ''}",
             (levels.get(f"conta@{MAIN_RHO}") or {}).get(str(r)), True) for r in (0, 1)]
    rows += [(f"ESOL (re-implemented), round {r}{' + CONTA' if r else ''}", esol.get(str(r)),
              False) for r in (0, 1)]
    rows += [(f"{ARM_BY_NAME[n].label}, round 0",
              (levels.get(f"{n}@{MAIN_RHO}") or {}).get("0"), False) for n in ESOL_ABLATIONS]
    lines = ["", f"**Levels** (rho {MAIN_RHO}; IRN on ESOL's training seeds "
             f"{', '.join(map(str, sorted(seeds)))}; CAM mIoU is the round's CAMs: ESOL's come "
             "from the shrinkage network)", "",
             "| run | " + " | ".join(LABELS[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for label, entry, restrict in rows:
        if not entry or not (entry.get(PRIMARY) or {}).get("n"):
            continue
        stats = [on_seeds(entry.get(k)) if restrict else entry.get(k) for k in keys]
        lines.append(f"| {label} | " + " | ".join(_fmt(st, _digits(k), signed=False)
                                                   for st, k in zip(stats, keys)) + " |")
    return lines


def reproduction_table(res: dict[str, Any]) -> str:
    """Runs that are both archived and rerun here: the primary endpoint's level both times."""
    rows = res.get("reproduced") or []  # reruns on another machine than the archived run's
    if not rows:
        return ""
    here = machine_id()
    lines = ["| run | round | first run | rerun | difference | first run on | rerun on |",
             "|---|---|---|---|---|---|---|"]
    for c in sorted(rows, key=lambda c: (c["run"], c["round"])):
        on = c.get("rerun_on") or here
        lines.append(f"| {c['run']} | {c['round']} | {c['archived']:.2f} | {c['rerun']:.2f} | "
                     f"{c['rerun'] - c['archived']:+.2f} | torch {c.get('torch_archived') or '?'}"
                     f", {c.get('cpu_archived') or 'CPU not recorded'} | torch "
                     f"{on.get('torch') or '?'}, {on.get('cpu') or 'CPU not recorded'}"
                     + (" (the record now)" if c.get("rerun_on") else " (here)") + " |")
    return "\n".join(lines) + "\n"


def per_seed_table(res: dict[str, Any]) -> str:
    """The primary endpoint's paired differences per seed for every arm at rho 0.9."""
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in range(8)) + " |", "|---|" + "---|" * 8]
    for arm in ARMS:
        cell = res["paired"].get(f"{arm.name}@{MAIN_RHO}", {})
        stats = cell.get("0" if arm.name == "interventional" else "1", {}).get(PRIMARY)
        if not stats:
            continue
        by_seed = dict(zip(stats["seeds"], stats["values"]))
        lines.append(f"| {arm.label} | " + " | ".join(
            f"{by_seed[s]:+.1f}" if s in by_seed else "" for s in range(8)) + " |")
    return "\n".join(lines) + "\n"


def published(path: str | Path | None = None) -> dict[str, Any] | None:
    """The committed tables of the protocol (``docs/tables/evidence.json`` of a source checkout,
    written by ``scripts/conta_evidence.py --protocol --publish``), or None when absent (e.g. an
    installed package without the repository)."""
    path = Path(path) if path is not None else \
        Path(__file__).resolve().parents[1] / "docs" / "tables" / "evidence.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from .errors import DataError

        raise DataError(f"{path} is not valid JSON ({exc}); rewrite it with "
                        "scripts/conta_evidence.py --protocol --tables-only --publish") from exc
