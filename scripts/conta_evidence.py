"""Baseline vs CONTA on the synthetic benchmark over seeds and rho: the tables of docs/results.md.

THE PROTOCOL (docs/results.md, section 0): one command runs every arm resumably, in the
background if you like, and rewrites ``OUT/evidence.md`` / ``OUT/evidence.json`` after each run
(``--publish`` also copies them to docs/tables/ and draws the figures):

    nohup python scripts/conta_evidence.py --protocol --out runs/evidence --publish \
        > runs/evidence.log 2>&1 &
    python scripts/conta_evidence.py --protocol --out runs/evidence --tables-only --publish

``--only conta interventional`` restricts the arms, ``--seeds 0`` and ``--rhos 0.9`` the seeds and
rhos (one seed of one row, in minutes: ``--only exact --seeds 0``, which first runs the conta
round 0 it is paired with); ``--list`` prints the jobs in order. After the protocol proper
come the ESOL extension's jobs (docs/results.md section 6: ``cam.method=esol`` rounds 0-1 and
its ablations' round 0, seeds 0-2), e.g. ``--only esol --seeds 0``. ``--shard K/N`` runs shard K
of N, for N processes side by side on one ``--out`` (on 2 cores: two shards with
OMP_NUM_THREADS=1, docs/benchmarks.md "Rounds side by side"; such one-thread rounds differ
slightly from two-thread ones).

Every finished round's table entries are archived in ``docs/tables/evidence_runs.json`` by
``--publish`` (a few kilobytes per run: a run folder is a gigabyte and lives on one machine).
The tables read the archive as the record, so a fresh clone's ``--tables-only`` gives the
committed tables; a round rerun here is listed beside its archived value under "Reproduction"
(``--no-archive``: tables of this folder's runs only). ``--skip-archived`` skips the jobs the
archive already holds (continuing the protocol on another machine).
The older per-variant mode below stays for quick looks.

For every (rho, seed) it generates the synthetic set (cached), runs round 0 and CONTA rounds
1..T with ``causal_wsss.pipeline.run_experiment`` (resumable: rerun to continue), then writes
``table.md`` (mean +- std over seeds per round, and the paired differences round t - round 0
per seed), ``reports.json`` (every report) and optionally a figure.

Round t starts from the same initial weights, data order and augmentation as round 0 of the same
seed (``runtime.stage_seed``), so the paired difference isolates what the context adjustment
changes; its spread over seeds is the noise that any gain must beat.

    python scripts/conta_evidence.py --out runs/evidence --rhos 0.9 --seeds 0 1 2 --rounds 2
    python scripts/conta_evidence.py --out runs/evidence --rhos 0.5 0.7 0.97 --seeds 0 1 2 --rounds 1
    # a variant of the adjustment, reusing the baseline rounds of runs/evidence:
    python scripts/conta_evidence.py --out runs/ev_mmax --reuse runs/evidence --rounds 2 \\
        context.m_scale=max
    # IRN refinement against plain thresholds (reuses the trained CAM networks and CAMs):
    python scripts/conta_evidence.py --out runs/ev_irn --reuse runs/evidence --rounds 0 \\
        pseudo.refine=irn

``--compare LABEL=DIR ...`` runs nothing: it reads the ``reports.json`` of finished evidence
folders and tabulates (and with ``--figure`` draws) their paired differences side by side, at
each rho they share:

    python scripts/conta_evidence.py --compare "Eq. 3=runs/evidence" \
        "uniform control=runs/ev_uniform" --figure runs/paired.png

``--reuse DIR`` copies what does not depend on the changed keys from DIR's run of the same
(rho, seed): all of round 0 when only ``context.*`` keys differ (round 0 has no context), its
CAM stages when only ``pseudo.*`` / ``context.*`` keys differ. Any other difference is an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

KEYS = ("cam_miou", "cam_miou_best", "pseudo_miou", "seg_miou", "leakage", "leakage_background",
        "leakage_cooccur")
CAM_STAGE_FILES = ("cam_train.json", "cam_net.pt", "cams", "cam_eval.json", "cams.json")


def _differing_sections(a: dict, b: dict) -> set[str]:
    """Top-level config sections (or keys) whose values differ, ``rounds`` excepted."""
    return {k for k in set(a) | set(b) if k != "rounds" and a.get(k) != b.get(k)}


def reuse_round0(src_run: Path, dst_run: Path, cfg) -> str:
    """Copy round 0 (or its CAM stages) of ``src_run`` into ``dst_run``; returns what was copied."""
    if (dst_run / "round_0").exists() or not (src_run / "config.json").is_file():
        return "nothing"
    src_cfg = json.loads((src_run / "config.json").read_text())
    differ = _differing_sections(src_cfg, json.loads(json.dumps(cfg.to_dict())))  # tuples: lists
    if differ <= {"context"}:
        names = None  # everything
    elif differ <= {"context", "pseudo"}:
        names = CAM_STAGE_FILES
    else:
        raise SystemExit(f"--reuse: {src_run} differs in {sorted(differ)}; only context.* and "
                         "pseudo.* overrides can share round 0")
    src, dst = src_run / "round_0", dst_run / "round_0"
    tmp = dst.with_name("round_0.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in src.iterdir():
        if names is not None and item.name not in names:
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    _restamp(tmp, cfg)
    tmp.rename(dst)
    return "round 0" if names is None else "round-0 CAM stages"


def _restamp(round_dir: Path, cfg) -> None:
    """Give the copied stage records ``cfg``'s config fingerprint: the stages copied do not read
    the keys that differ (checked above), and the run folder refuses records of another config."""
    from causal_wsss.evidence import restamp_records

    restamp_records(round_dir, cfg)


def run_all(args: argparse.Namespace) -> dict:
    from causal_wsss.config import resolve
    from causal_wsss.data.synthetic import generate_synthetic
    from causal_wsss.pipeline import run_experiment

    reports: dict = {}
    for rho in args.rhos:
        for seed in args.seeds:
            data_root = Path(args.reuse) if args.reuse else Path(args.out)
            data = data_root / "data" / f"rho{rho}_seed{seed}"
            generate_synthetic(data, n_train=args.train, n_val=args.val, rho=rho, seed=seed)
            cfg = resolve(args.preset, [f"data.root={data.resolve()}", *args.overrides],
                          seed=seed, rounds=args.rounds)
            run_dir = Path(args.out) / f"rho{rho}_seed{seed}"
            if args.reuse:
                copied = reuse_round0(Path(args.reuse) / run_dir.name, run_dir, cfg)
                print(f"rho {rho} seed {seed}: reused {copied} from {args.reuse}")
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


def paired_deltas(reports: dict) -> dict:
    """{rho: {round t >= 1: {key: (mean, std, n, [per-seed deltas])}}} of round t - round 0."""
    table: dict = {}
    for tag, report in reports.items():
        rho = float(tag.split("/")[0])
        base = report["rounds"][0]
        for entry in report["rounds"][1:]:
            cell = table.setdefault(rho, {}).setdefault(entry["round"], {})
            for key in KEYS:
                cell.setdefault(key, []).append(entry[key] - base[key])
    return {rho: {r: {k: (float(np.mean(v)), float(np.std(v)), len(v), [float(x) for x in v])
                      for k, v in cells.items()}
                  for r, cells in rounds.items()} for rho, rounds in table.items()}


def _fmt(key: str, mean: float, std: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return (f"{mean:{sign}.1f} ± {std:.1f}" if "miou" in key else f"{mean:{sign}.3f} ± {std:.3f}")


HEAD = ("CAM mIoU @t", "CAM mIoU best", "pseudo mIoU", "seg mIoU (val)", "leakage", "on context",
        "on co-occurring")


def markdown(summary: dict) -> str:
    """Mean ± std over seeds, one row per (rho, round)."""
    lines = ["| rho | round | " + " | ".join(HEAD) + " | seeds |", "|" + "---|" * 10]
    for rho in sorted(summary):
        for r in sorted(summary[rho]):
            c = summary[rho][r]
            cells = [_fmt(key, *c[key][:2]) for key in KEYS]
            lines.append(f"| {rho} | {r}{' (baseline)' if r == 0 else ''} | "
                         + " | ".join(cells) + f" | {c[KEYS[0]][2]} |")
    return "\n".join(lines)


def markdown_deltas(deltas: dict) -> str:
    """Paired differences round t - round 0 (same rho, seed, data, initial weights)."""
    lines = ["| rho | round - round 0 | " + " | ".join(f"Δ {h}" for h in HEAD) + " | seeds |",
             "|" + "---|" * 10]
    for rho in sorted(deltas):
        for r in sorted(deltas[rho]):
            c = deltas[rho][r]
            cells = [_fmt(key, *c[key][:2], signed=True) for key in KEYS]
            lines.append(f"| {rho} | {r} - 0 | " + " | ".join(cells) + f" | {c[KEYS[0]][2]} |")
    return "\n".join(lines)


def compare(variants: dict[str, Path], rho: float | None = None) -> tuple[str, dict]:
    """Markdown of the paired differences of several evidence folders, and the deltas drawn.

    Returns the table and ``{variant: {round: {key: (mean, std, n, per_seed)}}}`` at ``rho``
    (default: the largest rho every folder has).
    """
    deltas = {}
    for label, folder in variants.items():
        path = Path(folder) / "reports.json"
        if not path.is_file():
            raise SystemExit(f"--compare: {path} does not exist; run the evidence for {label} first")
        deltas[label] = paired_deltas(json.loads(path.read_text()))
    shared = set.intersection(*(set(d) for d in deltas.values()))
    if not shared:
        raise SystemExit("--compare: the folders share no rho")
    rho = max(shared) if rho is None else rho
    lines = ["| variant | round - round 0 | " + " | ".join(f"Δ {h}" for h in HEAD)
             + " | seeds |", "|" + "---|" * 10]
    for label, per_rho in deltas.items():
        for r, c in sorted(per_rho[rho].items()):
            cells = [_fmt(key, *c[key][:2], signed=True) for key in KEYS]
            lines.append(f"| {label} | {r} - 0 | " + " | ".join(cells) + f" | {c[KEYS[0]][2]} |")
    return f"rho = {rho}\n\n" + "\n".join(lines), {k: v[rho] for k, v in deltas.items()}


def protocol_main(args: argparse.Namespace) -> None:
    """``--protocol``: run (or resume) the whole protocol, rewriting the tables after each run."""
    from causal_wsss.evidence import ARM_BY_NAME, Protocol, archive_runs, run_protocol, select_jobs
    from causal_wsss.evidence_tables import (
        collect,
        markdown_tables,
        per_seed_table,
        reproduction_table,
    )
    from causal_wsss.io import file_lock, write_json, write_text

    bad = [a for a in args.only or () if a not in ARM_BY_NAME]
    if bad:
        raise SystemExit(f"error: unknown arm(s) {bad} in --only; the arms are "
                         f"{' '.join(ARM_BY_NAME)}")
    proto = Protocol(Path(args.out), preset=args.preset, n_train=args.train, n_val=args.val,
                     overrides=tuple(args.overrides),
                     seeds=tuple(args.seeds) if args.seeds is not None else None,
                     rhos=tuple(args.rhos) if args.rhos is not None else None,
                     archive=None if args.no_archive else ARCHIVE,
                     skip_archived=args.skip_archived)
    if args.shard and args.tables_only:
        raise SystemExit("error: --shard runs jobs; --tables-only runs none (drop --shard)")
    if args.list:
        for i, job in enumerate(select_jobs(proto, args.only, args.shard)):
            print(f"{i:3d} {job.arm:15s} rho={job.rho} seed={job.seed} rounds 0..{job.rounds}")
        return

    def tables() -> None:
        with file_lock(proto.out / ".tables.lock"):  # shards on this --out take turns
            write_tables()

    def write_tables() -> None:
        if args.publish:
            # the tables read the archive as the record: archive first, then read it. A record
            # a rerun here replaces keeps its first run under "previous", so the reproduction
            # check survives (labelled "the record now")
            archive_runs(proto, ARCHIVE)
        res = collect(proto)
        text = markdown_tables(res) + "\n**Primary endpoint per seed**\n\n" + per_seed_table(res)
        repro = reproduction_table(res)
        if repro:
            text += ("\n**Reproduction**: rounds run twice, on two machines (pseudo-mask mIoU; "
                     "same seed, same numbers holds on one torch build and one kind of CPU only)\n\n" + repro)
        write_json(proto.out / "evidence.json", res)
        write_text(proto.out / "evidence.md", text)
        if args.publish:
            write_json(ROOT / "docs" / "tables" / "evidence.json", res)
            write_text(ROOT / "docs" / "tables" / "evidence.md", text)
            from causal_wsss.viz import (
                plot_evidence_arms,
                plot_evidence_sweep,
                plot_interventions,
                save_figure,
            )

            save_figure(plot_evidence_arms(res), ROOT / "figures" / "07_conta_evidence_arms.png")
            if res["sweep"]:
                save_figure(plot_evidence_sweep(res),
                            ROOT / "figures" / "07_conta_evidence_rho.png")
            if res.get("interventions"):
                save_figure(plot_interventions(res), ROOT / "figures" / "08_interventions_gap.png")

    if not args.tables_only:
        run_protocol(proto, only=args.only, progress=not args.no_progress, after_each=tables,
                     shard=args.shard)
    tables()
    print((proto.out / "evidence.md").read_text())


ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "docs" / "tables" / "evidence_runs.json"
PROTOCOL_ONLY = ("only", "tables_only", "publish", "list", "skip_archived", "no_archive",
                 "shard")


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), 1 <= K <= N (argparse type of ``--shard``)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: expected K/N, e.g. 1/2") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N with 1 <= K <= N, e.g. 2/2")
    return k, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", action="store_true",
                   help="run the whole protocol of docs/results.md section 0 (resumable)")
    from causal_wsss.evidence import ARMS, ESOL_ARMS, INTERVENTION_ARMS

    p.add_argument("--only", nargs="+", default=None, metavar="ARM",
                   help="with --protocol: only these arms (" + " ".join(a.name for a in ARMS)
                   + "; the ESOL extension: " + " ".join(a.name for a in ESOL_ARMS)
                   + "; the interventions: " + " ".join(a.name for a in INTERVENTION_ARMS) + ")")
    p.add_argument("--tables-only", action="store_true",
                   help="with --protocol: run nothing, rewrite the tables from finished runs")
    p.add_argument("--publish", action="store_true",
                   help="with --protocol: also write docs/tables/evidence.* and the figures")
    p.add_argument("--list", action="store_true", help="with --protocol: print the jobs")
    p.add_argument("--shard", default=None, metavar="K/N", type=parse_shard,
                   help="with --protocol: run only shard K of N (1 <= K <= N); start N "
                        "processes on the same --out, each with OMP_NUM_THREADS=1 on 2 cores "
                        "(docs/benchmarks.md, \"Rounds side by side\")")
    p.add_argument("--skip-archived", action="store_true",
                   help="with --protocol: skip the jobs whose results docs/tables/"
                   "evidence_runs.json already holds (default: rerun them, and tabulate both)")
    p.add_argument("--no-archive", action="store_true",
                   help="with --protocol: tables from this folder's runs only (by default the "
                   "committed archive docs/tables/evidence_runs.json is the record: where a run "
                   "here repeats an archived one, the archived numbers are tabulated and the "
                   "two are listed side by side under 'Reproduction')")
    p.add_argument("--out", default="runs/evidence", help="folder of the runs, data and tables")
    p.add_argument("--rhos", type=float, nargs="+", default=None,
                   help="confounding strengths (default 0.9; with --protocol: only these rhos)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (default 0 1 2; with --protocol: only these seeds, e.g. "
                   "--only exact --seeds 0 for one seed of one row)")
    p.add_argument("--rounds", type=int, default=2, help="CONTA rounds after round 0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--train", type=int, default=400, help="training images per set")
    p.add_argument("--val", type=int, default=100, help="validation images per set")
    p.add_argument("--reuse", default=None, metavar="DIR",
                   help="copy round 0 (or its CAM stages) and the data from this evidence folder")
    p.add_argument("--figure", default=None, help="also write the per-round figure here")
    p.add_argument("--sweep-figure", default=None,
                   help="also write the metrics-against-rho figure (rounds 0 and 1) here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--compare", nargs="+", default=None, metavar="LABEL=DIR",
                   help="only compare the paired differences of finished evidence folders")
    p.add_argument("--at-rho", type=float, default=None,
                   help="with --compare: the rho to compare (default: the largest shared one)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    if args.protocol:
        protocol_main(args)
        return
    misplaced = [f"--{k.replace('_', '-')}" for k in PROTOCOL_ONLY if getattr(args, k)]
    if misplaced:
        p.error(f"{' '.join(misplaced)}: needs --protocol")
    args.rhos = args.rhos or [0.9]
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    if args.compare:
        variants = dict(item.split("=", 1) for item in args.compare)
        table, deltas = compare({k: Path(v) for k, v in variants.items()}, args.at_rho)
        print(table)
        if args.figure:
            from causal_wsss.viz import plot_paired_deltas, save_figure

            save_figure(plot_paired_deltas(deltas), args.figure)
        return
    new = run_all(args)
    out = Path(args.out)
    from causal_wsss.io import write_json, write_text

    saved = out / "reports.json"  # runs of earlier invocations (other rhos) are kept
    reports = json.loads(saved.read_text()) if saved.is_file() else {}
    reports.update(new)
    write_json(saved, reports)
    table = markdown(summarise(reports)) + "\n\n" + markdown_deltas(paired_deltas(reports))
    write_text(out / "table.md", table + "\n")
    print(table)
    if args.figure:
        from causal_wsss.viz import plot_evidence, save_figure

        save_figure(plot_evidence(summarise(reports)), args.figure)
    if args.sweep_figure:
        from causal_wsss.viz import plot_rho_sweep, save_figure

        save_figure(plot_rho_sweep(summarise(reports)), args.sweep_figure)


if __name__ == "__main__":
    import sys

    from causal_wsss.errors import ConfigError
    from causal_wsss.runtime import reexec_with_tcmalloc

    try:  # tcmalloc where installed (docs/benchmarks.md, "The memory allocator")
        reexec_with_tcmalloc([sys.executable, *sys.argv])
    except ConfigError as exc:
        raise SystemExit(f"conta_evidence: error: {exc}") from None
    main()
