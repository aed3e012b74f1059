"""One ``cpu`` round, stage by stage: seconds of today's code path beside the new one, FLOPs,
achieved GFLOP/s and the share of these cores' measured peak for that work.

    python bench/bench_round.py                  # the benchmark data, old and new path, one run
    python bench/bench_round.py --no-compare     # the new path only
    python bench/bench_round.py --repeat 2       # best of 2 per stage, the paths alternating
    python bench/bench_round.py --old-numerics 2 # old = the code path of numerics version 2
    python bench/bench_round.py --old-numerics 3 --old-cpu-amp on
                                                 # today's code in bf16 beside fp32 (a CPU
                                                 # with bf16 units: what they would buy)

The data are the benchmark (``causal-wsss synth``: 400 training and 100 validation images of
about 280 px, rho 0.9, do(context) twins of 20 validation images; generated once into
``--data``, the demo's folder by default). Each path runs a whole round 0 of the preset
(:func:`causal_wsss.pipeline.run_experiment`, ``rounds=0``) into a fresh folder under
``--out`` (in this process, or each in its own, see "Allocator" below):

- **old**: the code path before issue 29: the speed-ups off
  (:func:`causal_wsss.runtime.use_speedups`) and no working size (``cam_infer.work_long=0``);
  with ``--old-numerics 2`` the path of numerics version 2 instead (the first pass's speed-ups,
  the preset's working size), so the second pass's gain is measured alone; with
  ``--old-cpu-amp on`` under bf16 autocast on the CPU (``CAUSAL_WSSS_CPU_AMP=1``, the default
  on CPUs with bf16 units before they were measured), so with ``--old-numerics 3`` (today's
  code) the ratio is what bf16 buys (``off``: float32, against a new path run with the
  variable set). By default (``auto``) the old path runs as it ran on this CPU: versions 1 and
  2 in bf16 where the CPU has bf16 units, in float32 where it has none;
- **new**: the code as it is, with the preset's settings.

With ``--repeat N`` the paths alternate (old, new, new, old, ...) and each stage keeps its
best time, so the ratios compare like with like on a shared machine.

**Allocator.** The command line (and this script) preloads tcmalloc where it is installed
(:func:`causal_wsss.runtime.reexec_with_tcmalloc`), one of the issue's speed-ups; the code
before the issue ran on the C library's malloc, which a process cannot switch back to. So by
default (``--old-allocator auto`` with ``--old-numerics 1``) every round runs in a fresh process
of its own (``--processes``), the old ones on malloc and the new ones on tcmalloc, and the table
says which allocator each path had. ``--old-allocator same`` keeps both paths on this process's
allocator (and in it, unless ``--processes``).

FLOPs are those of ``torch.utils.flop_counter`` (convolutions and matrix products, forward and
backward; with the weight gradient of a grouped convolution counted per group, which torch's
own formula does not), counted on the meta device (no arithmetic) for every input shape the stage feeds its
network: each training step, each image at each scale. The peak for a stage's work is measured
here, in the same run: the aten convolutions (and their backward passes) of one representative
unit of the stage (a training step, an image's multi-scale CAMs) are replayed one by one on
random data, each in its faster layout (contiguous or channels_last), best of 3, and the peak is
their FLOPs over their summed times; a large matmul gives the cores' overall peak. Both are
measured in the dtype the stage's network runs in on this machine: bfloat16 where the stage's
``amp`` key is on and the CPU has bf16 units (:func:`causal_wsss.runtime.amp_dtype`; autocast
runs the convolutions in bf16), else float32. The share of peak is then the achieved rate over
that peak. Stages without network work (CAM
evaluation, pseudo-masks and their scoring) count no FLOPs: they are shown with their seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal_wsss.cam import scaled_size, work_size_for  # noqa: E402
from causal_wsss.config import apply_overrides, resolve  # noqa: E402
from causal_wsss.constants import BENCHMARK_SIZE, BENCHMARK_TWINS, NUMERICS  # noqa: E402
from causal_wsss.data.synthetic import generate_synthetic, load_meta  # noqa: E402
from causal_wsss.io import write_json  # noqa: E402
from causal_wsss.models.seg_net import build_seg_net  # noqa: E402
from causal_wsss.pipeline import run_experiment  # noqa: E402
from causal_wsss.runtime import (  # noqa: E402
    CPU_AMP_ENV,
    REEXEC_ENV,
    TCMALLOC_ENV,
    allocator_name,
    amp_dtype,
    cpu_has_bf16,
    cpu_model,
    use_speedups,
)
from causal_wsss.segmentation import segmentation_loss  # noqa: E402
from causal_wsss.stages.datasets import load_datasets, query_datasets  # noqa: E402
from causal_wsss.stages.models import build_cam_model  # noqa: E402

STAGES = ("cam_train", "cams", "cam_eval", "twin_eval", "pseudo", "pseudo_eval", "seg_train",
          "seg_eval")
"""The stages of a round 0 without IRN refinement, in running order."""

COLUMNS = ("stage", "old_s", "new_s", "speedup", "old_cpu_s", "new_cpu_s", "cpu_speedup",
           "dtype", "gflop", "gflop_per_s", "peak_gflop_per_s", "share_of_peak", "share_of_matmul_peak")
"""The columns of the table (``--json`` writes one dict per stage with these keys)."""

FIGURES = ("cam_miou", "cam_miou_best", "pseudo_miou", "seg_miou", "context_effect",
           "cam_miou_in_context", "cam_miou_out_of_context")

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}

_CONV_OPS = {torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default}
_MM_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}


# --------------------------------------------------------------------------------------------
# FLOPs on the meta device, and the census of a stage's convolutions


class Shape(tuple):
    """The shape of a tensor argument in a recorded call (other arguments are kept as they are)."""


class Census(TorchDispatchMode):
    """Records every convolution (forward and backward) and matrix product: the op and the
    shapes and arguments needed to replay it on real tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in _CONV_OPS or func in _MM_OPS:
            spec = tuple(Shape(a.shape) if isinstance(a, torch.Tensor)
                         else tuple(a) if isinstance(a, list) else a for a in args)
            self.calls.append((func, spec))
        return func(*args, **(kwargs or {}))


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward pass: the forward's for each gradient it computes.

    torch's own formula ignores ``groups`` for the weight gradient, which counts a depthwise
    convolution's (MobileNetV2's) C times over.
    """
    output_mask = args[-1]
    forward = 2 * math.prod(grad_out_shape) * math.prod(w_shape[1:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_mode() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flop})


class Counter:
    """FLOPs of network calls on the meta device, cached by input shape."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def count(self, key, fn) -> int:
        if key not in self.cache:
            with flop_mode() as counter:
                fn()
            self.cache[key] = counter.get_total_flops()
        return self.cache[key]


def census_of(fn) -> list[tuple]:
    with Census() as census:
        fn()
    return census.calls


def _meta(module: torch.nn.Module) -> torch.nn.Module:
    return module.to("meta")


def cam_train_unit(cfg, num_fg: int):
    """One CAM training step (forward, loss, backward) on the meta device."""
    net = _meta(build_cam_model(replace_weights(cfg), num_fg)).train()
    c = cfg.cam

    def step() -> None:
        x = torch.randn(c.batch_size, 3, c.crop_size, c.crop_size, device="meta")
        out = net(x)
        loss = F.multilabel_soft_margin_loss(out.logits, torch.zeros_like(out.logits))
        loss.backward()
    return step


def replace_weights(cfg):
    """``cfg`` with ``weights=none`` (the meta device needs no weights; same network)."""
    return apply_overrides(cfg, ["cam.weights=none", "seg.weights=none"])


def cam_image_unit(net, size: tuple[int, int], scales, flip: bool):
    """The network work of one image's multi-scale (+ flip) CAMs at working size ``size``."""
    def run() -> None:
        with torch.no_grad():
            for scale in scales:
                h, w = scaled_size(size, scale)
                net.cams(torch.randn(2 if flip else 1, 3, h, w, device="meta"))
    return run


def logits_unit(net, size: tuple[int, int]):
    def run() -> None:
        with torch.no_grad():
            net(torch.randn(1, 3, *size, device="meta"))
    return run


def seg_train_unit(cfg, num_classes: int):
    s = cfg.seg
    net = _meta(build_seg_net(num_classes, arch=s.arch, backbone=s.backbone, weights="none")).train()

    def step() -> None:
        x = torch.randn(s.batch_size, 3, s.crop_size, s.crop_size, device="meta")
        masks = torch.zeros(s.batch_size, s.crop_size, s.crop_size, dtype=torch.long, device="meta")
        segmentation_loss(net(x), masks).backward()
    return step


def seg_eval_unit(net, size: tuple[int, int]):
    def run() -> None:
        with torch.no_grad():
            net(torch.randn(1, 3, *size, device="meta"))
    return run


def image_sizes(ds) -> list[tuple[int, int]]:
    """(H, W) of every image of ``ds`` (the synthetic sidecar, else the file headers)."""
    from PIL import Image

    voc_root = getattr(ds, "voc_root", None)
    if voc_root is not None and (Path(voc_root) / "synthetic.json").is_file():
        sizes = {img["name"]: (img["height"], img["width"]) for img in load_meta(voc_root)["images"]}
        if all(n in sizes for n in ds.names):
            return [sizes[n] for n in ds.names]
    out = []
    for i in range(len(ds)):
        with Image.open(ds.image_path(i)) as img:
            out.append((img.height, img.width))
    return out


def stage_work(cfg, sets, *, shared_twin_scores: bool) -> dict[str, dict]:
    """Per stage: ``flops`` (the whole stage) and ``unit`` (a function running one
    representative unit of its network work on the meta device, for the census)."""
    counter = Counter()
    train_ds = sets["train"]
    num_fg = train_ds.num_classes - 1
    work: dict[str, dict] = {}
    with use_speedups(False):  # the FLOPs are the same; the meta device needs no folding
        steps = cfg.cam.epochs * (len(train_ds) // cfg.cam.batch_size)
        unit = cam_train_unit(cfg, num_fg)
        work["cam_train"] = {"flops": steps * counter.count("cam_train", unit), "unit": unit}

        net = _meta(build_cam_model(replace_weights(cfg), num_fg)).eval()
        ci = cfg.cam_infer

        def cam_flops(sizes) -> int:
            total = 0
            for size in sizes:
                work_size = work_size_for(size, ci.work_long)
                total += counter.count(("cams", work_size),
                                       cam_image_unit(net, work_size, ci.scales, ci.flip))
            return total

        cam_sets, _ = query_datasets(sets)
        sizes = [s for ds in cam_sets for s in image_sizes(ds)]
        median = sorted(sizes, key=lambda s: s[0] * s[1])[len(sizes) // 2]
        work["cams"] = {"flops": cam_flops(sizes),
                        "unit": cam_image_unit(net, work_size_for(median, ci.work_long),
                                               ci.scales, ci.flip)}
        if "twins" in sets:
            twins = sets["twins"]
            meta = load_meta(twins.voc_root)
            kinds = {img["name"]: img.get("kind") for img in meta["images"]}
            tw_sizes = image_sizes(twins)
            flops = cam_flops([s for n, s in zip(twins.names, tw_sizes) if kinds.get(n) == "twin"])
            for n, s in zip(twins.names, tw_sizes):
                if shared_twin_scores and kinds.get(n) == "twin":
                    continue  # its scores come from its CAMs' scale-1 pass
                ws = work_size_for(s, ci.work_long)
                flops += counter.count(("logits", ws), logits_unit(net, ws))
            work["twin_eval"] = {"flops": flops, "unit": work["cams"]["unit"]}

        s = cfg.seg
        per_epoch = len(train_ds) // s.batch_size
        seg_steps = math.ceil(s.iterations / per_epoch) * per_epoch
        unit = seg_train_unit(cfg, train_ds.num_classes)
        work["seg_train"] = {"flops": seg_steps * counter.count("seg_train", unit), "unit": unit}
        seg = _meta(build_seg_net(train_ds.num_classes, arch=s.arch, backbone=s.backbone,
                                  weights="none")).eval()
        val_sizes = image_sizes(sets["val"])
        flops = sum(counter.count(("seg_eval", size), seg_eval_unit(seg, size))
                    for size in val_sizes)
        median = sorted(val_sizes, key=lambda s: s[0] * s[1])[len(val_sizes) // 2]
        work["seg_eval"] = {"flops": flops, "unit": seg_eval_unit(seg, median)}
    return work


# --------------------------------------------------------------------------------------------
# the peak: a stage's own convolutions replayed at their best layout, and a large matmul


def _best(fn, repeat: int = 3) -> float:
    fn()  # warm-up (oneDNN builds its kernels for the shape)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _replay(func, spec, layout, dtype: torch.dtype = torch.float32) -> float:
    """Seconds of one recorded op on random ``dtype`` data, its 4-d tensors in ``layout``."""
    def value(a):
        if not isinstance(a, Shape):
            return a
        t = torch.randn(tuple(a), dtype=dtype)
        return t.contiguous(memory_format=layout) if len(a) == 4 else t

    args = [value(a) for a in spec]
    return _best(lambda: func(*args))


def peak_for(unit, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """(GFLOP/s at the best layout of each op, FLOPs) of the recorded ops of ``unit``, replayed
    in ``dtype``."""
    calls = census_of(unit)
    flops_by = {}
    total_flops = best_time = 0.0
    for func, spec in calls:
        key = (func, spec)
        if key not in flops_by:
            flops_by[key] = _op_flops(func, spec)
            times = [_replay(func, spec, fmt, dtype)
                     for fmt in (torch.contiguous_format, torch.channels_last)]
            flops_by[key] = (flops_by[key], min(times))
        flops, seconds = flops_by[key]
        total_flops += flops
        best_time += seconds
    return total_flops / best_time / 1e9 if best_time else math.nan, total_flops


def _op_flops(func, spec) -> int:
    args = [torch.empty(tuple(a), device="meta") if isinstance(a, Shape) else a for a in spec]
    with flop_mode() as counter:
        func(*args)
    return counter.get_total_flops()


def matmul_peak(n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / _best(lambda: a @ b) / 1e9


def stage_dtypes(cfg) -> dict[str, torch.dtype]:
    """The dtype each stage's convolutions run in on this machine (bf16 under autocast where
    the stage's ``amp`` key is on and :func:`causal_wsss.runtime.amp_dtype` gives bf16)."""
    from causal_wsss.config import cam_infer_amp

    bf16 = amp_dtype(torch.device("cpu")) == torch.bfloat16
    amp = {"cam_train": cfg.cam.amp, "cams": cam_infer_amp(cfg), "twin_eval": cam_infer_amp(cfg),
           "seg_train": cfg.seg.amp, "seg_eval": cfg.seg.amp}
    return {stage: torch.bfloat16 if bf16 and on else torch.float32 for stage, on in amp.items()}


class cpu_amp_env:
    """Within the block, ``CAUSAL_WSSS_CPU_AMP`` is ``value`` (``None``: left as it is)."""

    def __init__(self, value: str | None) -> None:
        self.value, self.saved = value, None

    def __enter__(self) -> None:
        self.saved = os.environ.get(CPU_AMP_ENV)
        if self.value is not None:
            os.environ[CPU_AMP_ENV] = self.value

    def __exit__(self, *exc) -> None:
        if self.value is None:
            return
        if self.saved is None:
            os.environ.pop(CPU_AMP_ENV, None)
        else:
            os.environ[CPU_AMP_ENV] = self.saved


# --------------------------------------------------------------------------------------------
# side by side on the same inputs: the heavy stages' work, old and new path alternating


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: all its threads) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def ab_parts(cfg_old, cfg_new, sets, *, images: int, steps: int, tmp: Path) -> dict:
    """Functions ``{part: {"old": fn, "new": fn}}`` timing the same work both ways: the CAMs of
    the first ``images`` training images (the stage's code, ImageNet trunk, untrained head; with
    the preset's working size and at the source size), their evaluation, ``steps`` CAM training
    steps and ``steps`` segmentation training steps on fixed batches."""
    from causal_wsss.cam import make_cams
    from causal_wsss.config import cam_infer_amp
    from causal_wsss.stages.models import initial_cam_model

    train_ds = sets["train"]
    ds = train_ds.subset(train_ds.names[:images])
    num_fg = train_ds.num_classes - 1
    cam_net = initial_cam_model(cfg_new, num_fg)
    parts: dict[str, dict] = {"cams": {}, "cams_source_size": {}, "cam_eval": {},
                              "cam_train": {}, "seg_train": {}}
    source = apply_overrides(cfg_new, ["cam_infer.work_long=0"])
    for part, name, cfg in (("cams", "old", cfg_old), ("cams", "new", cfg_new),
                            ("cams_source_size", "old", cfg_old),
                            ("cams_source_size", "new", source)):
        ci = cfg.cam_infer

        def cams(cfg=cfg, ci=ci, name=name) -> None:
            out = tmp / f"cams_{name}"
            shutil.rmtree(out, ignore_errors=True)
            make_cams(cam_net, ds, out, batch_size=ci.batch_size, scales=ci.scales,
                      flip=ci.flip, amp=cam_infer_amp(cfg), progress=False,
                      work_long=ci.work_long)
        parts[part][name] = cams

    from causal_wsss.runtime import DistInfo
    from causal_wsss.stages.cams import stage_cam_eval

    def cam_eval() -> None:  # the CAMs the new path wrote (the cams part runs first)
        stage_cam_eval(cfg_new, ds, tmp / "cams_new", device=torch.device("cpu"),
                       dist_info=DistInfo(), progress=False)
    parts["cam_eval"] = {"old": cam_eval, "new": cam_eval}

    c, sg = cfg_new.cam, cfg_new.seg
    gen = torch.Generator().manual_seed(0)
    cam_x = torch.randn(c.batch_size, 3, c.crop_size, c.crop_size, generator=gen)
    cam_y = (torch.rand(c.batch_size, num_fg, generator=gen) < 0.3).float()
    seg_x = torch.randn(sg.batch_size, 3, sg.crop_size, sg.crop_size, generator=gen)
    seg_y = torch.randint(0, train_ds.num_classes, (sg.batch_size, sg.crop_size, sg.crop_size),
                          generator=gen)
    seg_net = build_seg_net(train_ds.num_classes, arch=sg.arch, backbone=sg.backbone,
                            weights=sg.weights)
    if sg.channels_last:
        seg_net = seg_net.to(memory_format=torch.channels_last)
        seg_x = seg_x.contiguous(memory_format=torch.channels_last)

    def train_steps(net, loss_fn, lr: float) -> None:
        net.train()
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(net).backward()
            opt.step()

    for name in ("old", "new"):
        parts["cam_train"][name] = lambda: train_steps(
            cam_net, lambda n: F.multilabel_soft_margin_loss(n(cam_x).logits, cam_y), 1e-4)
        parts["seg_train"][name] = lambda: train_steps(
            seg_net, lambda n: segmentation_loss(n(seg_x), seg_y), 1e-4)
    return parts


def run_ab(parts: dict, repeat: int) -> list[dict]:
    """Best of ``repeat`` per part and path, the paths alternating (old, new, new, old, ...)."""
    rows = []
    for part, fns in parts.items():
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for rep in range(repeat):
            for name in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                with use_speedups(name == "new"):
                    times[name].append(_timed(fns[name]))
        old, new = (min(t[0] for t in times[n]) for n in ("old", "new"))
        old_cpu, new_cpu = (min(t[1] for t in times[n]) for n in ("old", "new"))
        rows.append({"part": part, "old_s": old, "new_s": new, "speedup": old / new,
                     "old_cpu_s": old_cpu, "new_cpu_s": new_cpu, "cpu_speedup": old_cpu / new_cpu,
                     "old_all": times["old"], "new_all": times["new"]})
        print(f"[bench] {part}: wall old {old:.2f} s, new {new:.2f} s ({old / new:.2f}x); CPU "
              f"old {old_cpu:.2f} s, new {new_cpu:.2f} s ({old_cpu / new_cpu:.2f}x)", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# the rounds


def run_path(cfg, out: Path, fast: bool | int, cpu_amp: str | None = None) -> dict:
    """One round 0 of ``cfg`` into a fresh ``out`` on the code path ``fast``
    (:func:`use_speedups`); its seconds and CPU seconds per stage, total, figures, allocator."""
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    with use_speedups(fast), cpu_amp_env(cpu_amp):
        report = run_experiment(cfg, out, progress=False)
    total = time.perf_counter() - t0
    seconds, cpu = {}, {}
    for stage in STAGES:
        path = out / "round_0" / f"{stage}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            seconds[stage], cpu[stage] = record["seconds"], record.get("cpu_seconds")
    entry = report["rounds"][0]
    return {"total": total, "seconds": seconds, "cpu_seconds": cpu,
            "figures": {k: entry.get(k) for k in FIGURES if k in entry},
            "allocator": allocator_name()}


def malloc_env(environ: dict) -> dict:
    """``environ`` for a child process on the C library's malloc: tcmalloc taken out of
    ``LD_PRELOAD`` and ``CAUSAL_WSSS_TCMALLOC=0``, so that it does not re-execute itself."""
    env = dict(environ)
    preload = [lib for lib in env.get("LD_PRELOAD", "").split(":") if lib and "tcmalloc" not in lib]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    env.pop(REEXEC_ENV, None)
    env[TCMALLOC_ENV] = "0"
    return env


def run_path_in_child(argv: list[str], name: str, rep: int, out: Path, *, malloc: bool) -> dict:
    """:func:`run_path` for path ``name`` in a fresh process (this script with ``--one-path``),
    on malloc where ``malloc`` else on this process's allocator; its result as run_path's."""
    result = out / f"{name}_{rep}.result.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *argv,
               "--one-path", name, "--one-rep", str(rep)]
    env = malloc_env(os.environ) if malloc else dict(os.environ)
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0 or not result.is_file():
        raise SystemExit(f"bench_round: error: the {name} round in its own process failed "
                         f"(exit status {done.returncode}): {' '.join(command)}")
    return json.loads(result.read_text())


def machine() -> str:
    return (f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"bf16 units: {'yes' if cpu_has_bf16() else 'no'}; allocator {allocator_name()}")


def fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def old_cpu_amp(choice: str, old_numerics: int, has_bf16: bool, *, ab: bool = False) -> str:
    """``--old-cpu-amp`` with ``auto`` resolved: the old path's precision as it ran on this CPU.
    Until numerics version 3 ``amp=true`` ran bf16 autocast on every CPU with bf16 units (float32
    on every CPU is a decision of the version-3 code, docs/benchmarks.md "On a CPU with bf16
    units"), so the code before the issue ran bf16 there: against it in float32 the ratio would
    flatter today's code (on that CPU, one run of each: 1.75x, against 1.54x as it ran). ``--ab``
    runs both paths in this process's precision."""
    if choice != "auto":
        return choice
    return "on" if old_numerics < 3 and has_bf16 and not ab else "same"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth", help="benchmark data folder (generated once)")
    p.add_argument("--out", default="runs/bench_round", help="folder for the rounds' run folders")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                   help="also run today's code path (old) beside the new one (default: yes)")
    p.add_argument("--old-numerics", type=int, default=1, choices=range(1, NUMERICS + 1),
                   help="the code path the old round runs: numerics version 1 (before the "
                        "issue; default) or a later one (causal_wsss.constants.NUMERICS; "
                        f"{NUMERICS}, today's, with a different --old-cpu-amp only)")
    p.add_argument("--old-cpu-amp", choices=("auto", "same", "on", "off"), default="auto",
                   help="on: the old round runs bf16 autocast on the CPU "
                        "(CAUSAL_WSSS_CPU_AMP=1; needs a CPU with bf16 units), off: float32; "
                        "same: as this process's environment says; auto (default): as the old "
                        "code path ran on this CPU (--old-numerics 1 and 2: bf16 where the CPU "
                        "has bf16 units, their default then; today's: same)"),
    p.add_argument("--repeat", type=int, default=1, help="rounds per path; best time per stage")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--train", type=int, default=400)
    p.add_argument("--val", type=int, default=100)
    p.add_argument("--size", type=int, default=BENCHMARK_SIZE)
    p.add_argument("--twins", type=int, default=BENCHMARK_TWINS)
    p.add_argument("--no-peak", action="store_true", help="skip the FLOPs and the peak")
    p.add_argument("--ab", action="store_true",
                   help="instead of whole rounds: the heavy stages' work side by side on the same "
                        "inputs, old and new alternating, best of --repeat (default 3)")
    p.add_argument("--ab-images", type=int, default=48, help="--ab: images for the CAMs")
    p.add_argument("--ab-steps", type=int, default=4, help="--ab: training steps per part")
    p.add_argument("--old-allocator", choices=("auto", "same", "malloc"), default="auto",
                   help="malloc: the old rounds run on the C library's malloc, as the code "
                        "before the issue did (the command line now preloads tcmalloc where "
                        "installed); same: on this process's allocator; auto (default): malloc "
                        "for --old-numerics 1, same otherwise")
    p.add_argument("--processes", action=argparse.BooleanOptionalAction, default=None,
                   help="run every round in a fresh process of its own (default: only where "
                        "the old path needs another allocator than this process has)")
    p.add_argument("--one-path", choices=("old", "new"), help=argparse.SUPPRESS)
    p.add_argument("--one-rep", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", default="", help="write the table and figures to this file")
    p.add_argument("overrides", nargs="*", help="config overrides for both paths (key=value)")
    args = p.parse_args(argv)
    args.old_cpu_amp = old_cpu_amp(args.old_cpu_amp, args.old_numerics, cpu_has_bf16(),
                                   ab=args.ab)
    if args.ab and (args.old_numerics != 1 or args.old_cpu_amp != "same"):
        p.error("--ab compares with the code path before the issue only (--old-numerics 1, "
                "--old-cpu-amp same)")
    new_bf16 = amp_dtype(torch.device("cpu")) == torch.bfloat16
    old_bf16 = {"same": new_bf16, "on": True, "off": False}[args.old_cpu_amp]
    if args.old_numerics == NUMERICS and old_bf16 == new_bf16:
        p.error(f"--old-numerics {NUMERICS} is today's code path: it needs an --old-cpu-amp "
                f"that differs from the new path's ({'on' if new_bf16 else 'off'})")
    if (old_bf16 or new_bf16) and not cpu_has_bf16():
        p.error("a path would run bf16 autocast, but this CPU has no bf16 units (torch would "
                f"emulate it, 8-15x slower): use --old-cpu-amp same and unset {CPU_AMP_ENV}")
    if args.threads:
        torch.set_num_threads(args.threads)

    data = generate_synthetic(args.data, n_train=args.train, n_val=args.val, rho=0.9, seed=0,
                              size=args.size, twins=min(args.twins, args.val))
    root = data.parents[1] if data.name == "VOC2012" else data
    cfg_new = resolve(args.preset, [f"data.root={Path(root).resolve()}", *args.overrides],
                      rounds=0)
    cfg_old = apply_overrides(cfg_new, ["cam_infer.work_long=0"]) if args.old_numerics == 1 \
        else cfg_new
    out = Path(args.out)
    if args.ab:
        print(f"machine: {machine()}", flush=True)
        parts = ab_parts(cfg_old, cfg_new, load_datasets(cfg_new), images=args.ab_images,
                         steps=args.ab_steps, tmp=out / "ab")
        rows = run_ab(parts, max(args.repeat, 3) if args.repeat == 1 else args.repeat)
        print("\n| part | old s | new s | speedup | old CPU s | new CPU s | CPU speedup |\n"
              "|---|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['part']} | {row['old_s']:.2f} | {row['new_s']:.2f} | "
                  f"{row['speedup']:.2f}x | {row['old_cpu_s']:.2f} | {row['new_cpu_s']:.2f} | "
                  f"{row['cpu_speedup']:.2f}x |")
        if args.json:
            write_json(args.json, {"machine": machine(), "ab": rows, "images": args.ab_images,
                                   "steps": args.ab_steps})
        return 0
    runs: dict[str, list[dict]] = defaultdict(list)
    old_amp = {"same": None, "on": "1", "off": "0"}[args.old_cpu_amp]
    paths = {"old": (cfg_old, args.old_numerics, old_amp), "new": (cfg_new, True, None)}
    if args.one_path:  # a child of run_path_in_child: one round, its result as JSON
        cfg, fast, amp = paths[args.one_path]
        write_json(out / f"{args.one_path}_{args.one_rep}.result.json",
                   run_path(cfg, out / f"{args.one_path}_{args.one_rep}", fast, amp))
        return 0
    old_allocator = args.old_allocator
    if old_allocator == "auto":
        old_allocator = "malloc" if args.old_numerics == 1 else "same"
    old_malloc = args.compare and old_allocator == "malloc" and allocator_name() != "malloc"
    processes = old_malloc if args.processes is None else args.processes
    if old_malloc and not processes:
        p.error("--old-allocator malloc needs --processes: this process runs "
                f"{allocator_name()}, which cannot be unloaded")
    child_argv = list(sys.argv[1:] if argv is None else argv)
    order = ["old", "new"] if args.compare else ["new"]
    for rep in range(args.repeat):
        for name in (order if rep % 2 == 0 else order[::-1]):
            print(f"[bench] {name} path, round {rep + 1}/{args.repeat} ...", flush=True)
            if processes:
                out.mkdir(parents=True, exist_ok=True)
                malloc = (name == "old" and old_malloc) or allocator_name() == "malloc"
                runs[name].append(run_path_in_child(child_argv, name, rep, out, malloc=malloc))
            else:
                runs[name].append(run_path(paths[name][0], out / f"{name}_{rep}", *paths[name][1:]))
            print(f"[bench] {name}: {runs[name][-1]['total']:.1f} s "
                  f"({runs[name][-1]['allocator']})", flush=True)

    def best(name: str, stage: str, key: str = "seconds") -> float | None:
        values = [r[key][stage] for r in runs.get(name, []) if r[key].get(stage) is not None]
        return min(values) if values else None

    rows = []
    matmul: dict = {}
    work: dict = {}
    dtypes = stage_dtypes(cfg_new)
    if not args.no_peak:
        print("[bench] counting FLOPs and measuring the peak ...", flush=True)
        sets = load_datasets(cfg_new)
        work = stage_work(cfg_new, sets, shared_twin_scores=True)
        matmul = {dtype: matmul_peak(dtype=dtype) for dtype in set(dtypes.values())}
    for stage in STAGES:
        old, new = best("old", stage), best("new", stage)
        if new is None:
            continue
        old_cpu, new_cpu = best("old", stage, "cpu_seconds"), best("new", stage, "cpu_seconds")
        row = {"stage": stage, "old_s": old, "new_s": new,
               "speedup": old / new if old is not None and new else None,
               "old_cpu_s": old_cpu, "new_cpu_s": new_cpu,
               "cpu_speedup": old_cpu / new_cpu if old_cpu is not None and new_cpu else None,
               "dtype": DTYPE_NAMES[dtypes[stage]] if stage in dtypes else None,
               "gflop": None, "gflop_per_s": None, "peak_gflop_per_s": None,
               "share_of_peak": None, "share_of_matmul_peak": None}
        if stage in work:
            flops = work[stage]["flops"]
            peak, _ = peak_for(work[stage]["unit"], dtypes[stage])
            rate = flops / new / 1e9
            row.update(gflop=flops / 1e9, gflop_per_s=rate, peak_gflop_per_s=peak,
                       share_of_peak=rate / peak,
                       share_of_matmul_peak=rate / matmul[dtypes[stage]])
        rows.append(row)
    totals = {name: min(r["total"] for r in rs) for name, rs in runs.items()}
    stage_sums = {name: sum(best(name, s) or 0.0 for s in STAGES) for name in runs}

    print(f"\nmachine: {machine()}")
    print(f"preset {args.preset}, {args.train} training images of about {args.size} px; best of "
          f"{args.repeat} per stage; matmul peak "
          + (", ".join(f"{fmt(v)} GFLOP/s (2048^3 {DTYPE_NAMES[d]})" for d, v in matmul.items())
             or "not measured")
          + (f"; old path {'bfloat16' if old_bf16 else 'float32'} ({CPU_AMP_ENV}={old_amp})"
             if old_amp else "")
          + "; allocator " + ", ".join(f"{name} {runs[name][0]['allocator']}" for name in runs)
          + ("; every round in its own process" if processes else "") + "\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = [row["stage"], fmt(row["old_s"]), fmt(row["new_s"]),
                 fmt(row["speedup"], 2) + ("x" if row["speedup"] else ""),
                 fmt(row["old_cpu_s"]), fmt(row["new_cpu_s"]),
                 fmt(row["cpu_speedup"], 2) + ("x" if row["cpu_speedup"] else ""),
                 fmt(row["dtype"]), fmt(row["gflop"], 0), fmt(row["gflop_per_s"]), fmt(row["peak_gflop_per_s"]),
                 fmt(None if row["share_of_peak"] is None else 100 * row["share_of_peak"], 0)
                 + ("%" if row["share_of_peak"] is not None else ""),
                 fmt(None if row["share_of_matmul_peak"] is None
                     else 100 * row["share_of_matmul_peak"], 0)
                 + ("%" if row["share_of_matmul_peak"] is not None else "")]
        print("| " + " | ".join(cells) + " |")
    old_total, new_total = totals.get("old"), totals["new"]
    cpu_sums = {name: sum(best(name, s, "cpu_seconds") or 0.0 for s in STAGES) for name in runs}
    old_cpu = cpu_sums.get("old")
    print(f"| **round** | {fmt(old_total)} | {fmt(new_total)} | "
          f"{fmt(old_total / new_total if old_total else None, 2)}"
          f"{'x' if old_total else ''} | {fmt(old_cpu)} | {fmt(cpu_sums['new'])} | "
          f"{fmt(old_cpu / cpu_sums['new'] if old_cpu else None, 2)}{'x' if old_cpu else ''} "
          "| | | | | | |")
    print(f"\nstages alone: old {fmt(stage_sums.get('old'))} s, new {fmt(stage_sums['new'])} s "
          "(the round adds loading the data and the networks); CPU s: the stage's CPU time "
          "(all threads, data-loader workers included), what a shared machine does not inflate")
    print("\nfigures (round 0):")
    for key in FIGURES:
        vals = {name: rs[0]["figures"].get(key) for name, rs in runs.items()}
        if any(v is not None for v in vals.values()):
            print(f"  {key}: " + ", ".join(f"{n} {fmt(v, 3)}" for n, v in vals.items()))
    if args.json:
        write_json(args.json, {"machine": machine(), "preset": args.preset, "rows": rows,
                               "totals": totals, "cpu_totals": cpu_sums,
                               "matmul_gflop_per_s": {DTYPE_NAMES[d]: v for d, v in matmul.items()},
                               "old_cpu_amp": args.old_cpu_amp, "old_numerics": args.old_numerics,
                               "allocators": {n: rs[0]["allocator"] for n, rs in runs.items()},
                               "processes": processes,
                               "figures": {n: [r["figures"] for r in rs] for n, rs in runs.items()},
                               "runs": runs})
    return 0


if __name__ == "__main__":
    from causal_wsss.errors import ConfigError
    from causal_wsss.runtime import reexec_with_tcmalloc

    try:  # tcmalloc where installed (docs/benchmarks.md, "The memory allocator")
        reexec_with_tcmalloc([sys.executable, *sys.argv])
    except ConfigError as exc:
        raise SystemExit(f"bench_round: error: {exc}") from None
    raise SystemExit(main())
