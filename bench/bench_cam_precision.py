"""What bf16 CAM inference and the float16 CAM cache change: CAM and pseudo-mask mIoU of one
trained ``cpu``-preset CAM network on the first N training images of a data set, three ways:
fp32 inference with a float32 cache, fp32 with the float16 cache (the project's), bf16 autocast
with the float16 cache (on a CPU without bf16 units bf16 is emulated: CAUSAL_WSSS_CPU_AMP=1).

    python bench/bench_cam_precision.py DATA_ROOT ROUND/cam_net.pt N [OUT.json]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import causal_wsss.cam as cam_mod  # noqa: E402
from causal_wsss.checkpoint import load_checkpoint  # noqa: E402
from causal_wsss.config import resolve  # noqa: E402
from causal_wsss.io import atomic_path  # noqa: E402
from causal_wsss.runtime import DistInfo  # noqa: E402
from causal_wsss.stages.cams import stage_cam_eval, stage_cams  # noqa: E402
from causal_wsss.stages.datasets import load_datasets  # noqa: E402
from causal_wsss.stages.models import initial_cam_model  # noqa: E402
from causal_wsss.stages.pseudo import score_label_folder, stage_pseudo  # noqa: E402

VARIANTS = (("fp32_cache32", "false", True), ("fp32_cache16", "false", False),
            ("bf16_cache16", "true", False))


def save_float32(path, high_res, keys, stride4=None) -> None:
    """:func:`causal_wsss.cam.save_cams` without the float16 rounding."""
    arrays = {"keys": keys.to("cpu", torch.int16).numpy(),
              "high_res": high_res.float().cpu().numpy()}
    if stride4 is not None:
        arrays["cam"] = stride4.float().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def main(argv: list[str]) -> int:
    root, checkpoint, n = argv[0], argv[1], int(argv[2])
    base = [f"data.root={root}", "data.num_workers=0"]
    cfg = resolve("cpu", base, rounds=0)
    sets = load_datasets(cfg)
    ds = sets["train"].subset(sets["train"].names[:n])
    net = initial_cam_model(cfg, ds.num_classes - 1)
    load_checkpoint(checkpoint, model=net, map_location="cpu")
    dist, cpu = DistInfo(), torch.device("cpu")
    tmp = Path(tempfile.mkdtemp())
    original_save = cam_mod.save_cams
    out: dict[str, dict] = {}
    for name, amp, float32_cache in VARIANTS:
        c = resolve("cpu", [*base, f"cam_infer.amp={amp}"], rounds=0)
        os.environ["CAUSAL_WSSS_CPU_AMP"] = "1" if amp == "true" else "0"
        cam_mod.save_cams = save_float32 if float32_cache else original_save
        t0 = time.perf_counter()
        try:
            stage_cams(c, net, [ds], tmp / name, device=cpu, dist_info=dist, progress=False,
                       context_fn=None)
        finally:
            cam_mod.save_cams = original_save
        seconds = time.perf_counter() - t0
        ev = stage_cam_eval(c, ds, tmp / name, device=cpu, dist_info=dist, progress=False)
        stage_pseudo(c, [ds], tmp / name, tmp / f"{name}_pseudo", dist_info=dist, progress=False)
        ps = score_label_folder(ds, tmp / f"{name}_pseudo", dist_info=dist, progress=False)
        out[name] = {"seconds": seconds, "cam_miou": ev["cam_miou"],
                     "cam_miou_best": ev["cam_miou_best"],
                     "cam_threshold_best": ev["cam_threshold_best"], "pseudo_miou": ps["miou"]}
        print(name, out[name], flush=True)
    reference = cam_mod.CamCache(tmp / "fp32_cache32")
    for name in ("fp32_cache16", "bf16_cache16"):
        cache = cam_mod.CamCache(tmp / name)
        largest, total, count = 0.0, 0.0, 0
        for image in ds.names:
            diff = (reference.get(image).high_res - cache.get(image).high_res).abs()
            largest = max(largest, float(diff.max()))
            total += float(diff.sum())
            count += diff.numel()
        out[name].update(max_abs_cam_diff=largest, mean_abs_cam_diff=total / count)
        print(name, "max / mean |CAM difference|", largest, total / count)
    if len(argv) > 3:
        Path(argv[3]).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
