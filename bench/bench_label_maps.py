"""The segmentation network's label maps, ``argmax(1)`` (before 2026-12-08) against
``max(1).indices`` (today): the stage's two inference passes on a round's trained network, one
thread, each way in a fresh process, alternating (argmax, max, max, argmax, ...): predicting the
training and twin images (``seg_predict``) and scoring the validation images (``seg_eval``),
with the mIoU, which must be the same both ways.

    python bench/bench_label_maps.py DATA_ROOT RUN_DIR [--round 0] [--repeat 2]

``RUN_DIR``: a ``cpu``-preset run folder on ``DATA_ROOT`` whose round has a ``seg.pt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _argmax_labels() -> None:
    """Make ``Tensor.max(1)`` on a 4-D tensor give argmax's indices by argmax itself (the code
    before the change), for this process only."""
    import torch

    original = torch.Tensor.max

    def max_by_argmax(self, *args, **kwargs):
        if args == (1,) and not kwargs and self.dim() == 4:
            return torch.return_types.max((self.amax(1), self.argmax(1)))
        return original(self, *args, **kwargs)

    torch.Tensor.max = max_by_argmax


def one(root: str, run: str, rnd: int, way: str) -> dict:
    """One pass each way in this process: seconds and mIoU."""
    import torch

    torch.set_num_threads(1)
    if way == "argmax":
        _argmax_labels()
    from causal_wsss.config import resolve
    from causal_wsss.segmentation import evaluate_segmentation, predict_masks
    from causal_wsss.stages.datasets import load_datasets, query_datasets
    from causal_wsss.stages.segmentation import load_seg_model

    cfg = resolve("cpu", [f"data.root={Path(root).resolve()}"], seed=0, rounds=1)
    sets = load_datasets(cfg)
    _, query = query_datasets(sets)
    net = load_seg_model(cfg, sets["train"].num_classes, Path(run) / f"round_{rnd}",
                         device=torch.device("cpu"))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for ds in query:
            predict_masks(net, ds, tmp, device="cpu", progress=False)
    t1 = time.perf_counter()
    scores = evaluate_segmentation(net, sets["val"], device="cpu",
                                   num_classes=sets["val"].num_classes, progress=False)
    return {"way": way, "predict_s": t1 - t0, "eval_s": time.perf_counter() - t1,
            "images": sum(len(ds) for ds in query), "seg_miou": 100 * scores.miou}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the data set's root (data.root)")
    p.add_argument("run", help="a cpu-preset run folder on it")
    p.add_argument("--round", type=int, default=0, help="the round whose seg.pt is used")
    p.add_argument("--repeat", type=int, default=2, help="processes each way")
    p.add_argument("--one", choices=("argmax", "max"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.root, args.run, args.round, args.one)))
        return 0
    if not (Path(args.run) / f"round_{args.round}" / "seg.pt").is_file():
        p.error(f"{args.run}/round_{args.round}/seg.pt: no such file (a round with a "
                "segmentation network is needed)")
    ways = [w for k in range(args.repeat) for w in (("argmax", "max") if k % 2 == 0
                                                    else ("max", "argmax"))]
    rows = []
    for way in ways:
        out = subprocess.run([sys.executable, __file__, args.root, args.run, "--round",
                              str(args.round), "--one", way], capture_output=True, text=True,
                             check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{way:6s} predict {rows[-1]['images']} images {rows[-1]['predict_s']:.2f} s, "
              f"score val {rows[-1]['eval_s']:.2f} s, seg mIoU {rows[-1]['seg_miou']:.4f}",
              flush=True)
    if len({round(r["seg_miou"], 10) for r in rows}) != 1:
        print("the two ways gave different mIoU", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
