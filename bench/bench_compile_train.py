"""Training steps of a preset's CAM and segmentation networks, eager beside ``torch.compile``.

    python bench/bench_compile_train.py                 # cpu preset, 8 steps of each, 2 threads
    python bench/bench_compile_train.py --steps 12 --nets cam

Each network trains ``--steps`` SGD steps on one fixed random batch of the preset's size
(``cam.batch_size`` crops of ``cam.crop_size``; ``seg.batch_size`` crops of ``seg.crop_size``),
first eager, then compiled (``torch.compile``, inductor, default mode), in this one process. It
prints the first step of each (the compiled one includes compiling: with a cold inductor cache
the first run on a machine, warm after it) and the median of the others. Why the project does
not compile its training stages is in docs/benchmarks.md ("Kept and dropped").
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=8, help="steps per path (at least 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--nets", nargs="+", choices=("cam", "seg"), default=["cam", "seg"])
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps must be at least 2 (got {args.steps}): the first step is reported apart")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve(args.preset)
    print(f"preset {args.preset}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| network | eager first s | eager median s/step | compiled first s (compiling) "
          "| compiled median s/step | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in args.nets:
        net, loss_fn = training_problem(cfg, name)
        params = [p for p in net.parameters() if p.requires_grad]
        eager = step_times(params, net, loss_fn, args.steps)
        compiled = step_times(params, torch.compile(net), loss_fn, args.steps)
        e, c = statistics.median(eager[1:]), statistics.median(compiled[1:])
        print(f"| {name} | {eager[0]:.2f} | {e:.3f} | {compiled[0]:.1f} | {c:.3f} | {e / c:.2f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
