"""Seconds and minor page faults of one CAM training step of the `cpu` preset's network
(MobileNetV2, ImageNet features, output stride 16, batch 16 of 256 px, channels_last, SGD), on
whatever memory allocator this process runs (docs/benchmarks.md, "The memory allocator"):

    CAUSAL_WSSS_TCMALLOC=0 python bench/bench_allocator.py                  # glibc's malloc
    LD_PRELOAD=libtcmalloc_minimal.so.4 python bench/bench_allocator.py     # tcmalloc

(The script does not re-execute itself: the allocator is the one it was started with.)
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal_wsss.models.cam_net import build_cam_net  # noqa: E402
from causal_wsss.runtime import allocator_name  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = build_cam_net(6, backbone="mobilenet_v2", weights="imagenet", output_stride=16,
                        trunk_depth=4).train().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.crop, args.crop).contiguous(
        memory_format=torch.channels_last)
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=0.01,
                          momentum=0.9)
    target = torch.randint(0, 2, (args.batch, 6)).float()

    def step() -> None:
        F.multilabel_soft_margin_loss(net(x).logits, target).backward()
        opt.step()
        opt.zero_grad()

    for _ in range(2):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - t0) / args.steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    print(f"allocator {allocator_name()}: {seconds:.3f} s a step, {faults:.0f} minor page faults "
          "a step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
