"""Benchmark batched CAM extraction (``causal_wsss.cam``) against the one-image reference that follows IRNet's code (``bench/reference_make_cam.py``): images per second and the CAM differences.

Example (a small CPU run):

    .venv/bin/python bench/bench_cam.py --device cpu --images 6 --backbone resnet18 \
        --sizes 200x150,133x200,112x200 --json bench_cam.json

Both paths get the same network and the same uint8 images and labels. The images are crops
of a real photograph that matplotlib ships (``grace_hopper.jpg``), PIL-resized to ``--sizes``
(WIDTHxHEIGHT; VOC's 500x375 is landscape), or uniform noise (``--noise``), or the first
images of a VOC-layout data set (``--data``). Timings count source images per second over
the whole multi-scale + flip extraction, resizing included (the reference's PIL resizing and
normalisation, IRNet's data loader, is also timed alone), best of ``--repeat`` rounds after one
warm-up; each round runs every path once, in turn (comparable ratios on a shared machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_make_cam import msf_inputs, reference_cams  # noqa: E402

import causal_wsss.cam as cam_module  # noqa: E402
from causal_wsss.cam import IRNET_SCALES, extract_cams_list  # noqa: E402
from causal_wsss.checkpoint import load_checkpoint  # noqa: E402
from causal_wsss.io import write_json  # noqa: E402
from causal_wsss.models import build_cam_net  # noqa: E402


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'500x375,333x500' -> [(H, W), ...] = [(375, 500), (500, 333)]."""
    sizes = []
    for item in text.split(","):
        w, h = item.lower().split("x")
        sizes.append((int(h), int(w)))
    return sizes


def photograph() -> np.ndarray:
    """matplotlib's ``grace_hopper.jpg``, uint8 (H, W, 3)."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return np.asarray(img.convert("RGB"))


def make_inputs(n: int, sizes: list[tuple[int, int]], num_classes: int, seed: int,
                noise: bool = False):
    """n uint8 (3, H, W) images cycling through ``sizes`` (random crops of the photograph,
    PIL-resized; or uniform noise) and multi-hot labels with 1-3 positives."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    photo = None if noise else photograph()
    images = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        if noise:
            images.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
            continue
        ch, cw = (int(v) for v in torch.randint(300, 481, (2,), generator=gen))
        top = int(torch.randint(0, photo.shape[0] - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, photo.shape[1] - cw + 1, (1,), generator=gen))
        crop = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((w, h), Image.BICUBIC)
        images.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1))
    labels = torch.zeros(n, num_classes)
    for i in range(n):
        k = int(torch.randint(1, 4, (1,), generator=gen))
        labels[i, torch.randperm(num_classes, generator=gen)[:k]] = 1.0
    return images, labels


def load_inputs(root: Path, split: str, n: int, num_classes: int):
    """The first n images of a VOC-layout split, uint8 (3, H, W), and their multi-hot labels."""
    from causal_wsss.data import build_dataset

    dataset = build_dataset("voc", root, split, max_images=n)
    if dataset.num_classes - 1 != num_classes:
        raise SystemExit(f"--classes {num_classes} but {root} has {dataset.num_classes - 1}")
    items = [dataset[i] for i in range(len(dataset))]
    return [it["image"] for it in items], torch.stack([it["labels"] for it in items])


def time_interleaved(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Best wall time of each function over ``repeat`` rounds, after one warm-up call each, and
    its last result. Every round calls every function once, in turn, so that a change in the
    load of a shared machine hits all of them alike."""
    results = {name: fn() for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, results


def cam_diff(ref: list, ours: list) -> tuple[float, float, float]:
    """Largest |difference| of the full-resolution and of the stride-4 maps over all images,
    and the mean |difference| of the full-resolution maps (CAMs are normalised to [0, 1])."""
    for (keys, _, _), o in zip(ref, ours):
        if not torch.equal(keys, o.keys.cpu()):
            raise AssertionError(f"kept classes differ: {keys.tolist()} vs {o.keys.tolist()}")
    high = max(float((r[1] - o.high_res.cpu()).abs().max()) for r, o in zip(ref, ours))
    low = max(float((r[2] - o.stride4.cpu()).abs().max()) for r, o in zip(ref, ours))
    mean = (sum(float((r[1] - o.high_res.cpu()).abs().sum()) for r, o in zip(ref, ours))
            / sum(r[1].numel() for r in ref))
    return high, low, mean


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8, help="number of source images")
    parser.add_argument("--sizes", default="500x375,333x500,281x500",
                        help="comma-separated WIDTHxHEIGHT sizes, cycled over the images")
    parser.add_argument("--backbone", default="resnet50",
                        choices=["resnet50", "resnet18", "resnet101", "tiny"])
    parser.add_argument("--trunk-depth", type=int, default=4, choices=[3, 4])
    parser.add_argument("--classes", type=int, default=20, help="foreground classes K")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained CamNet checkpoint (causal_wsss.checkpoint) instead of "
                             "random weights; random weights exaggerate bf16 differences, "
                             "because a random classifier's CAM is a small difference of "
                             "large feature sums")
    parser.add_argument("--data", type=Path, default=None,
                        help="read the first --images images and their labels from this data "
                             "root (VOC layout, e.g. `causal-wsss synth` output) instead of "
                             "crops of the photograph; --sizes is then ignored")
    parser.add_argument("--noise", action="store_true",
                        help="uniform noise images instead of crops of the photograph")
    parser.add_argument("--split", default="train", help="split of --data (default train)")
    parser.add_argument("--scales", default=",".join(map(str, IRNET_SCALES)))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2,
                        help="timed rounds (each path once per round, after one warm-up)")
    parser.add_argument("--no-amp", action="store_true",
                        help="skip the bf16 path (on a CPU it runs fp32 unless "
                             "CAUSAL_WSSS_CPU_AMP=1, and that bf16 is emulated, slow, on CPUs "
                             "without bf16 instructions)")
    parser.add_argument("--old-resize", action="store_true",
                        help="also run the batched fp32 path with the resize it had before "
                             "issue 18 (bilinear on the float image, antialiased when "
                             "shrinking), to show how far that was from IRNet's CAMs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    scales = tuple(float(s) for s in args.scales.split(","))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_cam_net(args.classes, backbone=args.backbone, weights="none",
                              trunk_depth=args.trunk_depth)
    if args.checkpoint is not None:
        load_checkpoint(args.checkpoint, model=model)
    model = model.to(device).eval()
    if args.data is not None:
        images, labels = load_inputs(args.data, args.split, args.images, args.classes)
        args.sizes = ",".join(sorted({f"{im.shape[2]}x{im.shape[1]}" for im in images}))
    else:
        images, labels = make_inputs(args.images, parse_sizes(args.sizes), args.classes,
                                     args.seed, noise=args.noise)

    def run_loader():  # the reference's resizing + normalisation alone (IRNet's data loader)
        return [msf_inputs(im, scales) for im in images]

    def run_reference():  # IRNet's network in its default (contiguous) memory format
        net = model.to(memory_format=torch.contiguous_format)
        return [reference_cams(net, im, lab, scales=scales, device=device)
                for im, lab in zip(images, labels)]

    def run_ours(amp: bool):
        def run():
            net = model.to(memory_format=torch.channels_last)  # as make_cams
            return extract_cams_list(net, images, labels, batch_size=args.batch_size,
                                     scales=scales, amp=amp, device=device)
        return run

    def run_old_resize():
        def bilinear(levels, size):  # = resizing the normalised image: normalising is affine
            return F.interpolate(levels.float(), size=size, mode="bilinear",
                                 align_corners=False, antialias=size[0] < levels.shape[-2])

        original = cam_module.pil_bicubic_resize
        cam_module.pil_bicubic_resize = bilinear
        try:
            return run_ours(False)()
        finally:
            cam_module.pil_bicubic_resize = original

    paths = {"loader": run_loader, "reference": run_reference, "fp32": run_ours(False)}
    if not args.no_amp:
        paths["amp"] = run_ours(True)
    if args.old_resize:
        paths["old"] = run_old_resize
    times, outputs = time_interleaved(paths, args.repeat)
    t_loader, t_ref, ref = times["loader"], times["reference"], outputs["reference"]
    t_fp32, ours_fp32 = times["fp32"], outputs["fp32"]
    rows = [("reference (1 image, fp32)", t_ref, (0.0, 0.0, 0.0)),
            ("batched fp32", t_fp32, cam_diff(ref, ours_fp32))]
    if "amp" in times:
        rows.append(("batched amp (bf16)", times["amp"], cam_diff(ref, outputs["amp"])))
    if "old" in times:
        rows.append(("fp32, resize before #18", times["old"], cam_diff(ref, outputs["old"])))
    inputs = "data" if args.data else ("noise" if args.noise else "photograph crops")
    print(f"device={device} backbone={args.backbone} images={args.images} ({inputs}) "
          f"sizes={args.sizes} scales={scales} batch={args.batch_size} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"reference data loading alone (PIL resize + normalise): {t_loader:.3f} s "
          f"({t_loader / t_ref:.0%} of the reference)")
    print(f"{'path':28s} {'time s':>8s} {'img/s':>8s} {'speed-up':>8s} {'max|d| high':>12s} "
          f"{'max|d| s4':>10s} {'mean|d| high':>12s}")
    results = []
    for name, t, (d_high, d_low, d_mean) in rows:
        print(f"{name:28s} {t:8.3f} {args.images / t:8.2f} {t_ref / t:8.2f} {d_high:12.2e} "
              f"{d_low:10.2e} {d_mean:12.2e}")
        results.append({"path": name, "seconds": t, "images_per_s": args.images / t,
                        "speedup_vs_reference": t_ref / t, "max_abs_diff_high_res": d_high,
                        "max_abs_diff_stride4": d_low, "mean_abs_diff_high_res": d_mean})
    report = {"device": str(device), "backbone": args.backbone, "images": args.images,
              "checkpoint": str(args.checkpoint) if args.checkpoint else None,
              "data": str(args.data) if args.data else None, "inputs": inputs,
              "reference_loader_seconds": t_loader,
              "sizes": args.sizes, "scales": list(scales), "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "results": results}
    if args.json is not None:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
