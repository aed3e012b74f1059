"""Benchmark IRNet's random walk (``causal_wsss.irn.random_walk``: sparse steps) against the dense matrix-power reference: images per second, peak memory and the largest difference.

Example (a small CPU run):

    .venv/bin/python bench/bench_random_walk.py --device cpu --sizes 120x90,160x120,500x375 \
        --exp-times 8 --json bench_random_walk.json

Sizes are image sizes WIDTHxHEIGHT (VOC's 500x375 gives the stride-4 grid 94x125). Inputs are
random stride-4 CAMs of ``--classes`` classes and a random boundary map with two walls. The
reference is IRNet's ``propagate_to_edge``: the dense (hw x hw) affinity A, T = A / colsum(A)
squared ``--exp-times`` times, x T; it runs only where the grid has at most ``--dense-max-cells``
pixels. Peak memory: ``torch.cuda.max_memory_allocated`` above the inputs on CUDA; on the CPU the
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``, Linux) of a fresh process
above its resident set before the call. Timings: best of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causal_wsss.io import write_json  # noqa: E402
from causal_wsss.irn import edge_to_affinity, path_index, random_walk  # noqa: E402


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'500x375,160x120' -> [(H, W), ...] = [(375, 500), (120, 160)]."""
    sizes = []
    for item in text.split(","):
        w, h = item.lower().split("x")
        sizes.append((int(h), int(w)))
    return sizes


def make_inputs(grid: tuple[int, int], classes: int, seed: int, device: torch.device):
    """Random stride-4 CAMs (P, h, w) in [0, 1] and a boundary map (h, w) with two walls."""
    gen = torch.Generator().manual_seed(seed)
    h, w = grid
    cams = torch.rand(classes, h, w, generator=gen)
    boundary = torch.rand(h, w, generator=gen) ** 4
    boundary[:, w // 3] = 0.9
    boundary[h // 2, :] = 0.9
    return cams.to(device), boundary.to(device)


def dense_random_walk(cams: torch.Tensor, boundary: torch.Tensor, *, beta: float,
                      exp_times: int, radius: int) -> torch.Tensor:
    """IRNet ``propagate_to_edge``: dense A (pairs of ``edge_to_affinity``, symmetric, identity
    diagonal), T = A^beta / colsum, T squared ``exp_times`` times, (P, hw) x T."""
    n, h, w = cams.shape
    paths = path_index(radius)
    aff = edge_to_affinity(boundary.unsqueeze(0), paths)[0]  # (O, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, device=cams.device),
                            torch.arange(w, device=cams.device), indexing="ij")
    dense = torch.eye(h * w, device=cams.device, dtype=cams.dtype)
    for o, (dy, dx) in enumerate(paths.offsets.tolist()):
        ok = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        src, dst = (ys * w + xs)[ok], ((ys + dy) * w + xs + dx)[ok]
        dense[src, dst] = aff[o][ok]
        dense[dst, src] = aff[o][ok]
    trans = dense.pow(beta)
    trans = trans / trans.sum(0, keepdim=True)
    for _ in range(exp_times):
        trans = trans @ trans
    x = (cams * (1 - boundary)).view(n, h * w)
    return (x @ trans).view(n, h, w)


def _rss_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return hwm, rss


def _cpu_peak_child(kind: str, grid: tuple[int, int], classes: int, seed: int,
                    kwargs: dict) -> float:
    """In a fresh process: warm the code path up on a 6x6 grid, reset the peak resident set,
    run once on ``grid`` and return the peak above the resident set before the run, in MiB."""
    torch.set_num_threads(1)
    fn = random_walk if kind == "sparse" else dense_random_walk
    fn(*make_inputs((6, 6), classes, seed, torch.device("cpu")), **kwargs)
    cams, boundary = make_inputs(grid, classes, seed, torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    _, before = _rss_kib()
    fn(cams, boundary, **kwargs)
    peak, _ = _rss_kib()
    return (peak - before) / 1024


def peak_memory_mib(kind: str, grid: tuple[int, int], classes: int, seed: int, kwargs: dict,
                    device: torch.device) -> float:
    """Peak memory of one walk (``kind`` sparse or dense) above what was in use before it, MiB.

    CUDA: ``max_memory_allocated``. CPU: a spawned process (fresh allocator, no cached blocks)
    reads its peak resident set, so the number includes every temporary the call allocates.
    """
    if device.type == "cuda":
        cams, boundary = make_inputs(grid, classes, seed, device)
        fn = random_walk if kind == "sparse" else dense_random_walk
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(cams, boundary, **kwargs)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_cpu_peak_child, (kind, grid, classes, seed, kwargs))


def time_best(fn, repeat: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeat`` calls (after one warm-up) and the last result."""
    result = fn()
    best = math.inf
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, result


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or '-' when it was not measured."""
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--sizes", default="120x90,160x120,500x375",
                        help="comma-separated image sizes WIDTHxHEIGHT (default %(default)s)")
    parser.add_argument("--exp-times", type=int, default=8,
                        help="2^exp_times walk steps (IRNet 8, default %(default)s)")
    parser.add_argument("--classes", type=int, default=3, help="CAM channels (default 3)")
    parser.add_argument("--beta", type=float, default=10.0, help="affinity power (default 10)")
    parser.add_argument("--radius", type=int, default=5, help="affinity radius (default 5)")
    parser.add_argument("--dense-max-cells", type=int, default=1600,
                        help="run the dense reference only up to this many grid pixels "
                             "(default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {"beta": args.beta, "exp_times": args.exp_times, "radius": args.radius}
    rows = []
    header = (f"{'image WxH':>10} {'grid hxw':>9} {'sparse img/s':>12} {'sparse MiB':>10} "
              f"{'dense img/s':>11} {'dense MiB':>9} {'max |diff|':>10}")
    print(f"device {device}, torch threads {torch.get_num_threads()}, classes {args.classes}, "
          f"2^{args.exp_times} steps, radius {args.radius}, beta {args.beta}")
    print(header)
    for height, width in parse_sizes(args.sizes):
        grid = (math.ceil(height / 4), math.ceil(width / 4))
        cams, boundary = make_inputs(grid, args.classes, args.seed, device)

        sparse = functools.partial(random_walk, cams, boundary, **kwargs)
        seconds, walked = time_best(sparse, args.repeat, device)
        row = {"width": width, "height": height, "grid": list(grid), "device": str(device),
               "classes": args.classes, "exp_times": args.exp_times,
               "sparse_images_per_s": 1 / seconds, "sparse_peak_mib": peak_memory_mib("sparse", grid, args.classes, args.seed, kwargs,
                                                  device),
               "dense_images_per_s": None, "dense_peak_mib": None, "max_abs_diff": None}
        if grid[0] * grid[1] <= args.dense_max_cells:
            dense = functools.partial(dense_random_walk, cams, boundary, **kwargs)
            dense_seconds, reference = time_best(dense, args.repeat, device)
            row.update(dense_images_per_s=1 / dense_seconds,
                       dense_peak_mib=peak_memory_mib("dense", grid, args.classes, args.seed, kwargs,
                                                      device),
                       max_abs_diff=float((walked - reference).abs().max()))
        rows.append(row)
        print(f"{width:>5}x{height:<4} {grid[0]:>4}x{grid[1]:<4} "
              f"{row['sparse_images_per_s']:>12.2f} {row['sparse_peak_mib']:>10.1f} "
              f"{fmt(row['dense_images_per_s'], '>11.3f')} {fmt(row['dense_peak_mib'], '>9.1f')} "
              f"{fmt(row['max_abs_diff'], '>10.2e')}")
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
