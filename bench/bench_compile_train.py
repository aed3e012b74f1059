"""Training steps of a preset's CAM and segmentation networks, eager beside ``torch.compile``.

    python bench/bench_compile_train.py                 # cpu preset, 10 pairs of steps each, 2 threads
    python bench/bench_compile_train.py --steps 12 --nets cam

Each network trains SGD steps on one fixed random batch of the preset's size
(``cam.batch_size`` crops of ``cam.crop_size``; ``seg.batch_size`` crops of ``seg.crop_size``),
in this one process: one eager step, one compiled step (``torch.compile``, inductor, default
mode; this first call compiles: with a cold inductor cache on the first run on a machine, warm
after it), then ``--steps`` pairs of steps, eager and compiled alternating, so that both see the
same state of a shared machine. It prints the first steps, the median step of each path and the
median of the pairs' ratios. Why the project does not compile its training stages is in
docs/benchmarks.md ("Kept and dropped").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from causal_wsss.config import resolve  # noqa: E402
from causal_wsss.models.seg_net import build_seg_net  # noqa: E402
from causal_wsss.segmentation import segmentation_loss  # noqa: E402
from causal_wsss.stages.models import build_cam_model  # noqa: E402

NUM_FG = 6  # the synthetic benchmark's object classes


def training_problem(cfg, net_name: str):
    """(network, loss of a network on a fixed batch) for ``cam`` or ``seg`` of ``cfg``."""
    if net_name == "cam":
        c = cfg.cam
        net = build_cam_model(cfg, NUM_FG).train()
        x = torch.randn(c.batch_size, 3, c.crop_size, c.crop_size)  # (B, 3, c, c)
        y = (torch.rand(c.batch_size, NUM_FG) > 0.7).float()  # (B, K)
        return net, lambda n: F.multilabel_soft_margin_loss(n(x).logits, y)
    s = cfg.seg
    net = build_seg_net(NUM_FG + 1, arch=s.arch, backbone=s.backbone, weights=s.weights).train()
    x = torch.randn(s.batch_size, 3, s.crop_size, s.crop_size)  # (B, 3, c, c)
    y = torch.randint(0, NUM_FG + 1, (s.batch_size, s.crop_size, s.crop_size))  # (B, c, c)
    return net, lambda n: segmentation_loss(n(x), y)


def step_times(params, module, loss_fn, steps: int) -> list[float]:
    """Seconds of each of ``steps`` SGD steps of ``module``."""
    opt = torch.optim.SGD(params, lr=1e-5)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(module).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def paired_steps(params, eager, compiled, loss_fn, pairs: int) -> tuple[list[float], list[float]]:
    """Seconds of ``pairs`` steps of each module, alternating eager and compiled."""
    eager_times, compiled_times = [], []
    for _ in range(pairs):
        eager_times += step_times(params, eager, loss_fn, 1)
        compiled_times += step_times(params, compiled, loss_fn, 1)
    return eager_times, compiled_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=10,
                        help="pairs of steps (eager, compiled) after the first of each (at least 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--nets", nargs="+", choices=("cam", "seg"), default=["cam", "seg"])
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (got {args.steps})")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve(args.preset)
    print(f"preset {args.preset}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| network | eager first s | compiled first s (compiling) | eager median s/step "
          "| compiled median s/step | speed-up: median of pairs (range) |")
    print("|---|---|---|---|---|---|")
    for name in args.nets:
        net, loss_fn = training_problem(cfg, name)
        params = [p for p in net.parameters() if p.requires_grad]
        compiled_net = torch.compile(net)
        first_eager = step_times(params, net, loss_fn, 1)[0]
        first_compiled = step_times(params, compiled_net, loss_fn, 1)[0]
        eager, compiled = paired_steps(params, net, compiled_net, loss_fn, args.steps)
        ratios = [e / c for e, c in zip(eager, compiled)]
        print(f"| {name} | {first_eager:.2f} | {first_compiled:.1f} | {statistics.median(eager):.3f} "
              f"| {statistics.median(compiled):.3f} | {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
