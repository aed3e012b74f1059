"""The ``causal-wsss`` command: data generation, statistics, the CONTA pipeline and its stages.

Every error the project anticipates (a wrong folder, a corrupt image, an unknown config key)
is printed as one line naming the file or key, and the command exits with status 2.

The torch-bound modules (data sets, the pipeline) and matplotlib (the figures) are imported
inside the commands that use them, so that ``--help``, ``config`` and a mistyped option answer
without loading torch (about 1.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import resolve
from .constants import BENCHMARK_SIZE, BENCHMARK_TWINS
from .errors import CausalWSSSError, ConfigError
from .report import format_report_table, format_rounds_table

DEMO_INTERVENTION = "context_negatives"
"""The intervention `causal-wsss demo` runs beside CONTA: the arm that reads no ground truth with
the largest share of the interventional gap closed at rho 0.97 in docs/results.md section 7."""

DEMO_SIZES = {"n_train": 160, "n_val": 50, "twins": 10, "rho": 0.97}
"""The quick demo's data set (``data/demo``): the benchmark's generator and image size with
fewer images (160 training images: 10 CAM training steps an epoch) and the do(context) twins of
10 validation images, at rho 0.97, the strength of confounding of the interventions' primary
endpoint (docs/results.md section 7), so that ``make demo`` takes about 4 minutes on two idle
cores. ``--full`` runs the benchmark itself (``data/synth``: 400 / 100 images, twins of 20, rho
0.9), as the notebooks do."""

DEMO_OVERRIDES = ("seg.iterations=30", "seg.last_round=false")
"""The quick demo's changes to the preset: a shorter segmentation schedule for round 0 (whose
predictions build CONTA's dictionary), and no segmentation network in the last round, whose
comparison is on pseudo-masks and CAMs (the protocol's endpoints)."""

EPILOG = """\
examples:
  causal-wsss demo                                   # the CONTA demo on synthetic data (cpu preset)
  causal-wsss synth data/synth --train 400 --val 100 --rho 0.9 --seed 0
  causal-wsss stats --dataset voc --root data/synth --split train
  causal-wsss run --dataset voc --root /data/VOC --preset paper --rounds 3 --out runs/voc
  causal-wsss run --dataset voc --root data/synth --preset cpu cam.epochs=10 seed=1

  causal-wsss run --root data/synth --preset cpu --rounds 1 --out runs/esol cam.method=esol

config overrides are section.key=value pairs; sections: data, cam, cam_infer, pseudo, seg, context,
esol. cam.method chooses the CAM method: irn (IRNet's CAM, default) or esol (docs/esol.md).
"""


def _folder(text: str) -> str:
    """An output folder option: an empty path would be the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; expected the path of a folder")
    return text


def _count(text: str) -> int:
    """A non-negative integer option (``--top``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is {text!r}; expected an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"is {value}; expected an integer >= 0")
    return value


def _add_run_args(p: argparse.ArgumentParser, *, rounds: bool = True) -> None:
    p.add_argument("--dataset", default=None, help="voc | coco | synthetic (default: the preset's, voc)")
    p.add_argument("--root", default=None,
                   help="data root: the folder holding VOCdevkit/ (or VOC2012/ itself), or the COCO "
                        "folder holding train2014/, val2014/, annotations/; default $CAUSAL_WSSS_DATA")
    p.add_argument("--preset", default="cpu", help="smoke | cpu | gpu | paper (default: cpu)")
    if rounds:
        p.add_argument("--rounds", type=int, default=None,
                       help="CONTA rounds after the baseline round 0 (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--out", required=True, type=_folder,
                   help="run directory (resumable: rerun to continue)")
    p.add_argument("--refine", default=None, choices=["none", "crf", "irn"],
                   help="pseudo-mask refinement (default: the preset's)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. cam.epochs=3 seg.iterations=500")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="causal-wsss",
        description="CONTA: causal intervention for weakly-supervised semantic segmentation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="write the confounded synthetic benchmark (VOC layout)",
                       description="Write a confounded synthetic data set in the PASCAL VOC 2012 "
                                   "layout (and COCO's with --coco). Same seed, same bytes.")
    p.add_argument("out", type=_folder, help="output folder (VOC tree under OUT/VOCdevkit/VOC2012)")
    p.add_argument("--train", type=int, default=400, help="training images (default 400)")
    p.add_argument("--val", type=int, default=100, help="validation images (default 100)")
    p.add_argument("--rho", type=float, default=0.9,
                   help="probability that a class appears on its preferred context and that a "
                        "co-occurring pair is placed together (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=BENCHMARK_SIZE,
                   help=f"long side of the images in pixels (default {BENCHMARK_SIZE})")
    p.add_argument("--coco", action="store_true", help="also write the COCO 2014 layout in OUT/coco")
    p.add_argument("--interventional", action="store_true",
                   help="draw from the interventional distribution: context independent of the "
                        "class, partners independent (--rho is then ignored); the upper bound "
                        "that de-confounding is compared with")
    p.add_argument("--twins", type=int, nargs="?", const=-1, default=0, metavar="N",
                   help="add the split 'twins' for the first N validation images (all without N): "
                        "their objects on each context, without their partner, and each context "
                        "without objects (the do(context) figures)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("stats", help="image counts and class co-occurrence of a data set split",
                       description="Images per class, pairwise co-occurrence counts and P(b | a).")
    p.add_argument("--dataset", required=True, help="voc | coco | synthetic")
    p.add_argument("--root", required=True, help="data root (see `causal-wsss run --help`)")
    p.add_argument("--split", default="train", help="split name (default train)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--top", type=_count, default=15, help="pairs shown in the table (default 15)")

    p = sub.add_parser("run", help="run the CONTA pipeline: round 0 (baseline) and rounds 1..T",
                       description="Round 0 trains the baseline CAM network, extracts CAMs, makes "
                                   "pseudo-masks and trains the segmentation model; each CONTA "
                                   "round rebuilds the confounder dictionary from the last "
                                   "segmentation predictions and retrains with the context "
                                   "adjustment. Every stage is cached in --out.")
    _add_run_args(p)

    p = sub.add_parser("demo", help="the main job: CONTA and the best intervention on the "
                                    "synthetic benchmark (cpu preset)",
                       description="Generates a synthetic confounded set (cached), runs round 0 "
                                   "and one CONTA round (--rounds), then the same rounds with "
                                   "--intervention on the same round 0; prints both side by side "
                                   "and writes the figures. Every stage is cached: rerun to resume. "
                                   "By default a quick version (160 training images at rho "
                                   "0.97, about 4 minutes on 2 cores); --full runs the "
                                   "benchmark itself.")
    p.add_argument("--out", default=None, type=_folder,
                   help="run directory (default runs/demo; runs/demo_full with --full)")
    p.add_argument("--data", default=None, type=_folder,
                   help="synthetic data folder (default data/demo; data/synth with --full)")
    p.add_argument("--full", action="store_true",
                   help="the benchmark at full size (400 training images at rho 0.9, twins of "
                        "20, the preset's segmentation in every round), as the notebooks run "
                        "it: about 13 minutes on 2 cores instead of 4")
    p.add_argument("--preset", default="cpu", help="cpu (default) or smoke")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds after round 0 (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--intervention", default=DEMO_INTERVENTION, metavar="NAME",
                   help=f"also run this intervention's round 1 on the same round 0 and compare "
                        f"(default {DEMO_INTERVENTION}, the best of docs/results.md section 7; "
                        f"'none' to skip; names: context.intervention's)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")

    p = sub.add_parser("config", help="print the resolved config of a preset with overrides")
    p.add_argument("--preset", default="cpu")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_synthetic

    root = generate_synthetic(args.out, n_train=args.train, n_val=args.val, rho=args.rho,
                              seed=args.seed, coco=args.coco, size=args.size,
                              progress=not args.no_progress, interventional=args.interventional,
                              twins=args.val if args.twins == -1 else args.twins)
    print(f"synthetic data set ready: {root}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from .data import build_dataset
    from .data.stats import cooccurrence_stats, format_stats_table

    dataset = build_dataset(args.dataset, args.root, args.split)
    stats = cooccurrence_stats(dataset)
    if args.json:
        print(json.dumps(stats))
    else:
        print(format_stats_table(stats, top=args.top))
    return 0


def _resolve_run_config(args: argparse.Namespace):
    root = args.root or os.environ.get("CAUSAL_WSSS_DATA", "")
    top = {"seed": args.seed, "rounds": getattr(args, "rounds", None), "device": args.device}
    extra = []
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if root:
        extra.append(f"data.root={Path(root).expanduser().resolve()}")
    if args.refine:
        extra.append(f"pseudo.refine={args.refine}")
    return resolve(args.preset, [*extra, *args.overrides], **top)


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_experiment

    cfg = _resolve_run_config(args)
    if not cfg.data.root:
        raise ConfigError("no data root: pass --root or set CAUSAL_WSSS_DATA (for VOC the folder "
                          "holding VOCdevkit/, for COCO the folder holding train2014/)")
    try:
        report = run_experiment(cfg, args.out, progress=not args.no_progress)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # torchrun: leave the group cleanly
            dist.destroy_process_group()
    print(format_report_table(report))
    return 0


def run_demo(*, out: str | Path | None = None, data: str | Path | None = None,
             preset: str = "cpu", rounds: int = 1, seed: int = 0,
             overrides: list[str] | tuple[str, ...] = (), progress: bool = True, full: bool = False,
             n_train: int | None = None, n_val: int | None = None, rho: float | None = None,
             size: int | None = None, twins: int | None = None,
             figures_dir: str | Path | None = None,
             intervention: str | None = DEMO_INTERVENTION) -> dict:
    """The main job: synthetic confounded data (cached), round 0 + CONTA rounds into ``out``
    and, unless ``intervention`` is None or "none", the same rounds with
    ``context.intervention=intervention`` into ``<out>_<intervention>``, sharing round 0; the
    table of both and the figures. Returns CONTA's report.

    The data come from the benchmark's generator (``size`` default ``BENCHMARK_SIZE`` px, with
    do(context) twins), so every round's report carries the context effect, in/out-of-context
    CAM mIoU and the false positives on context alone. By default the quick demo:
    :data:`DEMO_SIZES` in ``data/demo`` and :data:`DEMO_OVERRIDES` before ``overrides``;
    ``full=True``: the benchmark itself in ``data/synth`` (400 / 100 images, twins of
    ``BENCHMARK_TWINS``, rho 0.9), the preset unchanged, into ``runs/demo_full``. Explicit
    ``n_train``, ``n_val``, ``twins``, ``rho`` override either. The figures
    (``viz.save_demo_figures``) are drawn here, in the command-line layer, so that the
    pipeline's computation never imports the plotting.
    """
    from .data.synthetic import generate_synthetic
    from .evidence import run_sharing_round0
    from .interventions import get_intervention
    from .pipeline import run_experiment
    from .viz import save_demo_figures

    intervention = None if intervention in (None, "none", "conta") else intervention
    if intervention is not None:
        get_intervention(intervention)  # an unknown name: one line, before any work
    sizes = ({"n_train": 400, "n_val": 100, "twins": BENCHMARK_TWINS, "rho": 0.9} if full
             else DEMO_SIZES)
    rho = sizes["rho"] if rho is None else rho
    n_train = sizes["n_train"] if n_train is None else n_train
    n_val = sizes["n_val"] if n_val is None else n_val
    twins = min(sizes["twins"], n_val) if twins is None else twins
    out = Path(out if out is not None else ("runs/demo_full" if full else "runs/demo"))
    data = Path(data if data is not None else ("data/synth" if full else "data/demo"))
    overrides = [*(() if full else DEMO_OVERRIDES), *overrides]
    size = BENCHMARK_SIZE if size is None else size
    generate_synthetic(data, n_train=n_train, n_val=n_val, rho=rho, seed=seed, size=size,
                       twins=twins, progress=progress)
    cfg = resolve(preset, [f"data.root={data.resolve()}", *overrides], seed=seed,
                  rounds=rounds)
    report = run_experiment(cfg, out, progress=progress)
    print(format_report_table(report))
    arms = {}
    if intervention is not None and rounds >= 1:
        arm_out = out.parent / f"{out.name}_{intervention}"
        arm_cfg = resolve(preset, [f"data.root={data.resolve()}", *overrides,
                                   f"context.intervention={intervention}"], seed=seed,
                          rounds=rounds)
        arm_report = run_sharing_round0(arm_cfg, arm_out, out, progress=progress)
        arms[intervention] = (arm_report, arm_out)
        last = report["rounds"][-1]["round"]
        print()
        print(format_rounds_table(
            {"round 0 (baseline)": report["rounds"][0], f"CONTA round {last}": report["rounds"][-1],
             f"{intervention} round {last}": arm_report["rounds"][-1]},
            title=f"the same round 0, then CONTA or {intervention} ({arm_out})"))
    if not full and preset == "cpu":
        print(f"\n(the quick demo: {n_train} training images at rho {rho}, one seed; "
              "`causal-wsss demo --full` runs the benchmark of the notebooks, and "
              "docs/results.md section 7 the same comparison over 5 seeds)")
    for path in save_demo_figures(report, out, figures_dir=figures_dir, arms=arms):
        print(f"figure: {path}")
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(out=args.out, data=args.data, preset=args.preset, rounds=args.rounds, seed=args.seed,
             overrides=args.overrides, progress=not args.no_progress, full=args.full,
             intervention=args.intervention)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(resolve(args.preset, args.overrides).to_dict(), indent=2))
    return 0


TRAINING_COMMANDS = ("run", "demo")
"""The commands re-executed with tcmalloc (:func:`causal_wsss.runtime.reexec_with_tcmalloc`)."""

COMMANDS = {"synth": _cmd_synth, "stats": _cmd_stats, "run": _cmd_run, "demo": _cmd_demo,
            "config": _cmd_config}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``causal-wsss`` and ``python -m causal_wsss``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if argv is None and args.command in TRAINING_COMMANDS:  # the program itself, not a
            # call from Python, and a command that trains: a faster allocator
            from .runtime import reexec_with_tcmalloc  # imports torch: not for the quick ones

            reexec_with_tcmalloc([sys.executable, "-m", "causal_wsss", *sys.argv[1:]])
        return COMMANDS[args.command](args)
    except CausalWSSSError as exc:
        print(f"causal-wsss {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the checks could not foresee (disk full, EROFS)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"causal-wsss {args.command}: error: cannot read or write{where}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"causal-wsss {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
