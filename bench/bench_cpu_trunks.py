"""Training-step and inference times of the CPU presets' networks, fp32 against bf16 autocast.

What sized the `cpu` preset (docs/benchmarks.md, "The cpu preset's networks"): one SGD step of the
CAM network on a batch of 16 crops of 256 px at output stride 16 and 32, channels_last, bf16
autocast forced on (``CAUSAL_WSSS_CPU_AMP=1`` is implied here: autocast is entered directly), the
former from-scratch ResNet-18 beside it as the reference; and one AdamW step of the
segmentation network at the two batch/crop sizes considered. Minimum of the timed repeats after
one warm-up. Run on idle cores:

    .venv/bin/python bench/bench_cpu_trunks.py [--repeat 3] [--skip-bf16]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from causal_wsss.models.cam_net import build_cam_net
from causal_wsss.models.seg_net import build_seg_net


def _time(step, repeat: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def cam_step(backbone: str, weights: str, output_stride: int, amp: bool, channels_last: bool,
             repeat: int) -> float:
    torch.manual_seed(0)
    net = build_cam_net(6, backbone=backbone, weights=weights, output_stride=output_stride,
                        trunk_depth=3 if backbone == "resnet18" else 4).train()
    x = torch.randn(16, 3, 256, 256)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    target = torch.randint(0, 2, (16, 6)).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = net(x).logits
        F.multilabel_soft_margin_loss(logits.float(), target).backward()
        opt.step()
        opt.zero_grad()
    return _time(step, repeat)


def seg_step(batch: int, crop: int, repeat: int) -> float:
    torch.manual_seed(0)
    net = build_seg_net(7, arch="tiny", backbone="mobilenet_v2", weights="imagenet").train()
    x, y = torch.randn(batch, 3, crop, crop), torch.randint(0, 7, (batch, crop, crop))
    opt = torch.optim.AdamW(net.param_groups(1e-3), lr=1e-3)

    def step() -> None:
        out = F.interpolate(net(x), size=(crop, crop), mode="bilinear", align_corners=False)
        F.cross_entropy(out, y).backward()
        opt.step()
        opt.zero_grad()
    return _time(step, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-bf16", action="store_true", help="skip the (slow) bf16 rows")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    ref = cam_step("resnet18", "none", 16, False, False, args.repeat)
    rows = [("CAM: resnet18 to layer3, scratch, OS16, fp32 (the former cpu preset's net)", ref)]
    for os_, amp, cl in ((16, False, False), (16, False, True), (32, False, False),
                         (8, False, False), (16, True, False)):
        if amp and args.skip_bf16:
            continue
        label = (f"CAM: mobilenet_v2 ImageNet, OS{os_}, {'bf16' if amp else 'fp32'}"
                 f"{', channels_last' if cl else ''}")
        rows.append((label, cam_step("mobilenet_v2", "imagenet", os_, amp, cl, args.repeat)))
    print("| step (batch 16, 256 px) | seconds | vs the resnet18 row |\n|---|---|---|")
    for label, sec in rows:
        print(f"| {label} | {sec:.2f} | {sec / ref:.2f}x |")
    print("\n| segmentation step (mobilenet_v2, frozen stem, OS16, AdamW) | seconds |\n|---|---|")
    for batch, crop in ((8, 224), (16, 256)):
        print(f"| {batch} crops of {crop} px | {seg_step(batch, crop, args.repeat):.2f} |")


if __name__ == "__main__":
    main()
