"""Run-time plumbing: seeding, device choice, torch.distributed set-up, run directories, logging."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .constants import NUMERICS
from .errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the one place that touches global random state)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def stage_seed(seed: int, stage: str) -> int:
    """The seed of one stage's initialisation: a function of the run's seed and the stage name only.

    Every round seeds its networks with ``seed_everything(stage_seed(cfg.seed, "cam"))`` etc., so
    round t's CAM network starts from the same weights as round 0's (the paired comparison of
    method.md 7.10: only the context adjustment differs), and a resumed run initialises exactly
    as an uninterrupted one.
    """
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32(stage.encode())) % (2**31 - 1)


def choose_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` picks CUDA when available (the local rank's GPU under torchrun), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            idx = local_rank if local_rank is not None else 0
            return torch.device("cuda", idx)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' asks for {name!r} but CUDA is not available; "
                          "use device=cpu or device=auto")
    return device


CPU_AMP_ENV = "CAUSAL_WSSS_CPU_AMP"


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic units (AVX512-BF16 or AMX-BF16; Linux flags).

    Detection only: whether ``amp=true`` runs bf16 on the CPU is :func:`cpu_amp_enabled`'s
    decision, which is off unless asked for.
    """
    return _cpu_flags_have_bf16()


def cpu_amp_enabled() -> bool:
    """Whether the ``amp=true`` keys run bf16 autocast on the CPU: only when
    ``CAUSAL_WSSS_CPU_AMP=1`` asks for it; unset (or ``0``) they run fp32.

    Measured (docs/benchmarks.md, "On a CPU with bf16 units"): on a CPU *with* bf16 units (AMX)
    bf16 training is no faster for the project's networks (oneDNN's bf16 convolution backward is
    slower than fp32's) and bf16 everywhere cost 0.87 points of pseudo-mask mIoU over three
    seeds; bf16 CAM inference alone is 1.2x faster for 0.30 points. On a CPU *without* them
    torch emulates bf16 and autocast runs 8-15 times slower. So fp32 on every CPU by default,
    which also keeps a run's numbers in one precision whatever CPU made them; ``=1`` buys the
    CAM stages' 1.2x on a CPU with units (and warns once where it has none).
    """
    value = os.environ.get(CPU_AMP_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        if not _cpu_flags_have_bf16():
            _warn_emulated_bf16()
        return True
    raise ConfigError(f"environment variable {CPU_AMP_ENV} must be 1 or 0, got {value!r}")


@functools.lru_cache(maxsize=1)
def _warn_emulated_bf16() -> None:  # once per process: autocast() asks on every training step
    logging.getLogger("causal_wsss").warning(
        "%s=1 runs bf16 autocast on a CPU without bf16 units: torch emulates bf16, which runs "
        "8-15 times slower than fp32 (unset it for fp32)", CPU_AMP_ENV)


TCMALLOC_ENV = "CAUSAL_WSSS_TCMALLOC"
REEXEC_ENV = "CAUSAL_WSSS_REEXECUTED"  # set in the re-executed process: never twice
TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def tcmalloc_path() -> str | None:
    """The tcmalloc library (gperftools) to preload, or ``None`` where there is none (Linux
    only): this environment's ``lib`` first (conda's ``gperftools``), then the system's
    (Debian's ``libtcmalloc-minimal4``)."""
    if not sys.platform.startswith("linux"):
        return None
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        for name in TCMALLOC_NAMES:
            if (folder / name).is_file():
                return str(folder / name)
    import ctypes.util

    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)  # a soname the dynamic loader resolves
        if found:
            return found
    return None


def tcmalloc_wanted(environ: dict | None = None) -> bool:
    """``CAUSAL_WSSS_TCMALLOC``: unset or ``1``, preload tcmalloc where it is installed; ``0``,
    keep the C library's malloc. Another value is refused, naming the variable."""
    value = (os.environ if environ is None else environ).get(TCMALLOC_ENV, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {TCMALLOC_ENV} must be 1 or 0, got {value!r}")


def tcmalloc_reexec_env(environ: dict, *, cuda: bool) -> dict | None:
    """The environment to re-execute a command with tcmalloc preloaded, or ``None`` to run on.

    Measured (docs/benchmarks.md, "The memory allocator"): a CPU round is 1.11x faster with
    tcmalloc than with glibc's malloc (alternating processes), whose training steps take
    100 times the page faults (it maps blocks above its mmap threshold, at most 32 MiB,
    afresh); the numbers are the same byte for byte. ``None`` when the variable says 0, on a machine with CUDA (not
    measured there), when the user preloads an allocator (tcmalloc, jemalloc, mimalloc) or this
    process is the re-executed one, or when no tcmalloc is installed.
    """
    if not tcmalloc_wanted(environ) or cuda or environ.get(REEXEC_ENV):
        return None
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc")):
        return None  # an allocator the user chose
    lib = tcmalloc_path()
    if lib is None:
        return None
    # gperftools reports every allocation above 1 GiB on stderr; a CAM batch may be one
    quiet = environ.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return {**environ, "LD_PRELOAD": f"{lib}:{preload}" if preload else lib, REEXEC_ENV: "1",
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": quiet}


def reexec_with_tcmalloc(command: list[str]) -> None:
    """Re-execute ``command`` (this process's own command line) with tcmalloc preloaded, where
    :func:`tcmalloc_reexec_env` says so; returns where it does not apply or the re-execution
    cannot start (the process then runs on with malloc). ``CAUSAL_WSSS_TCMALLOC=0`` keeps
    malloc; a bad value raises ConfigError."""
    env = tcmalloc_reexec_env(dict(os.environ), cuda=torch.cuda.is_available())
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(command[0], command, env)
    except OSError:
        return


def allocator_name() -> str:
    """The memory allocator this process runs on: ``tcmalloc``, ``jemalloc`` or ``malloc`` (the
    C library's), read from the libraries it has mapped (Linux; elsewhere ``malloc``)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        return "malloc"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "malloc"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` says), for the
    headers of timing tables."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _cpu_flags_have_bf16() -> bool:  # read once: autocast() asks on every training step
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype where it pays, else ``None`` (autocast off, fp32).

    CUDA: bf16 where supported, else fp16. CPU: fp32 unless ``CAUSAL_WSSS_CPU_AMP=1``
    (:func:`cpu_amp_enabled`: measured to buy little and cost points, even with bf16 units).
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_amp_enabled() else None
    return None


def autocast(device: torch.device, enabled: bool = True):
    """``torch.autocast`` for ``device`` with :func:`amp_dtype`, or a disabled context."""
    dtype = amp_dtype(device)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=bool(enabled and dtype))


def cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads) and by its finished child
    processes (data-loader workers): a stage's work measured apart from the time other jobs
    on a shared machine take from it."""
    try:
        import resource  # POSIX only
    except ImportError:
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


SPEEDUPS_ENV = "CAUSAL_WSSS_SPEEDUPS"
_speedups: list[int] = []  # the innermost use_speedups() block's numerics level, if any


def numerics_level() -> int:
    """The numerics version (:data:`causal_wsss.constants.NUMERICS`) whose code path runs.

    Today's (the default) runs every speed-up of issue 29 (docs/benchmarks.md, "A cpu round").
    ``CAUSAL_WSSS_SPEEDUPS=0`` runs the code path from before them (version 1) and
    ``CAUSAL_WSSS_SPEEDUPS=2`` the path of version 2 (everything but channels_last CAM training
    on the CPU), which reproduces the runs made on that code; a :func:`use_speedups` block
    (innermost first) overrides the variable, so ``bench/bench_round.py`` times two paths in one
    process. The speed-ups that change no result (inference mode, loader processes, subnormal
    gradients) run from version 2 on.
    """
    if _speedups:
        return _speedups[-1]
    value = os.environ.get(SPEEDUPS_ENV, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return 1
    if value == "2":
        return 2
    return NUMERICS


def speedups_enabled() -> bool:
    """Whether the speed-ups of issue 29 run (numerics version 2 or later, the default):
    batch-norm folding and ``torch.inference_mode`` for inference, twins' scores taken from
    their CAM pass, the frozen stem of the CAM network folded during training
    (docs/benchmarks.md, "A cpu round"). Off with ``CAUSAL_WSSS_SPEEDUPS=0`` or in a
    ``use_speedups(False)`` block (:func:`numerics_level`). Folding moves floats by round-off
    only; the figures this changes are in docs/benchmarks.md.
    """
    return numerics_level() >= 2


@contextlib.contextmanager
def use_speedups(enabled: bool | int) -> Iterator[None]:
    """Run the block with the speed-ups on (``True``: today's numerics) or off (``False``), or
    on the code path of numerics version ``enabled`` (an int, 1 to today's)."""
    if isinstance(enabled, bool):
        level = NUMERICS if enabled else 1
    else:
        level = int(enabled)
        if not 1 <= level <= NUMERICS:
            raise ConfigError(f"use_speedups: numerics version {enabled} is not one of 1 to "
                              f"{NUMERICS}")
    _speedups.append(level)
    try:
        yield
    finally:
        _speedups.pop()


def train_channels_last(device: torch.device, configured: bool) -> bool:
    """Whether the CAM network trains channels_last: as ``configured`` (``cam.channels_last``)
    on a GPU, and on the CPU from numerics version 3 on (before, it trained contiguous on the
    CPU whatever the key said; 1.38x slower on an AVX-512 CPU, docs/benchmarks.md)."""
    return bool(configured) and (device.type == "cuda" or numerics_level() >= 3)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def loader_workers(requested: int, device: torch.device | str) -> int:
    """How many data-loader processes a stage that computes on ``device`` starts for
    ``requested`` (``data.num_workers``).

    On a GPU, all of them. On the CPU, with the speed-ups, only as many as the CPUs that torch's
    compute threads leave free: a loader process that shares a core with a compute thread
    stalls the whole thread team at every parallel region, which costs more than loading in the
    main process (2 cores, 2 threads: the `cpu` preset's CAM training 1.17x and segmentation
    training 1.3x faster with the loading inline; docs/benchmarks.md, "Second pass"). The
    data order and the augmentations are functions of the seed, epoch and index, so the number
    of workers changes no result.
    """
    requested = max(0, int(requested))
    if requested == 0 or torch.device(device).type != "cpu" or not speedups_enabled():
        return requested
    return max(0, min(requested, usable_cpus() - torch.get_num_threads()))


def flush_denormal_grads(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself; with the speed-ups, on the CPU, its gradient will have every subnormal
    value (non-zero, below float32's smallest normal 1.2e-38) set to zero before it flows on.

    A softmax of confident logits has probabilities below 1e-38, so the gradient of a
    cross-entropy holds subnormal numbers, and every multiply-add a CPU does with one goes
    through a slow microcode path: a few hundred of them per step in the ASPP head's backward
    convolutions made the `cpu` preset's segmentation training step 1.44x as long
    (docs/benchmarks.md, "Second pass"). ``torch.set_flush_denormal`` would do it for
    the whole process, but only on threads created after it is called, so not in a notebook
    whose thread pool exists already. Values below 1.2e-38 change no float32 sum they join
    (a round's report is the same byte for byte); GPUs compute subnormals at full speed, so
    there nothing is registered.
    """
    if t.requires_grad and t.device.type == "cpu" and speedups_enabled():
        t.register_hook(_zero_subnormals)
    return t


def _zero_subnormals(grad: torch.Tensor) -> torch.Tensor:
    return grad.masked_fill(grad.abs() < torch.finfo(grad.dtype).tiny, 0.0)


def inference_context():
    """``torch.inference_mode()`` with the speed-ups, else ``torch.no_grad()`` (the old path)."""
    return torch.inference_mode() if speedups_enabled() else torch.no_grad()


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) torch.distributed job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: bool = False  # a torch.distributed process group is up (torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under torchrun: models are wrapped in DDP and data sharded by rank."""
        return self.world_size > 1 or self.group


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group that torchrun describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).

    NCCL on CUDA, gloo on the CPU. Under torchrun (its ``MASTER_ADDR`` is set) the group is
    initialised even for one process, so ``torchrun --nproc_per_node 1`` takes the same DDP path
    as a multi-GPU job. Without torchrun's variables this is a one-process job and nothing is
    initialised. Returns the rank information and the device of this process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_name, local_rank=local)
    launched = world > 1 or ("MASTER_ADDR" in os.environ and "RANK" in os.environ)
    if launched and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    group = dist.is_available() and dist.is_initialized()
    return DistInfo(rank=rank, world_size=world, local_rank=local, group=group), device


def barrier() -> None:
    """Synchronise ranks (no-op in a one-process job)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def get_dist() -> DistInfo:
    """The current process's rank information (one process when torch.distributed is not up)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0")), group=True)
    return DistInfo()


def in_notebook() -> bool:
    """True inside a Jupyter kernel (an IPython kernel app is running), False in a plain
    interpreter, a script or the command line."""
    import sys

    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython() if hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def setup_logging(run_dir: str | Path | None = None, name: str = "causal_wsss",
                  filename: str = "log.txt", console_level: int | None = None) -> logging.Logger:
    """A logger that prints to stderr and, with ``run_dir``, appends to ``run_dir/filename``.

    The file gets every INFO line. The console gets ``console_level`` and above: by default INFO
    on the command line and WARNING inside a notebook (:func:`in_notebook`), where a kernel
    shows every stderr line as an error box; progress bars and warnings stay visible there, and
    the run's ``log.txt`` holds the rest.
    """
    if console_level is None:
        console_level = logging.WARNING if in_notebook() else logging.INFO
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    consoles = [h for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    if not consoles:
        stream = logging.StreamHandler()
        stream.setFormatter(fmt)
        logger.addHandler(stream)
        consoles = [stream]
    for h in consoles:
        h.setLevel(console_level)
    if run_dir is not None:
        path = Path(run_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
                h.close()
        handler = logging.FileHandler(path)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def progress_bar(iterable, **tqdm_kwargs):
    """Yield from ``iterable`` (a DataLoader, typically) under a tqdm.auto bar of ``len(iterable)``.

    The bar is never handed the iterable: tqdm.auto's asyncio class calls ``iter()`` on what it
    is given in ``__init__``, which for a DataLoader starts a second, unused set of workers
    (prefetching for nothing, and freed later, possibly inside another loader's workers).
    """
    from tqdm.auto import tqdm

    with tqdm(total=len(iterable), **tqdm_kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)



def wrap_ddp(model: nn.Module, device: torch.device, dist_info: DistInfo) -> nn.Module:
    """``model`` in DistributedDataParallel when ``dist_info`` says the run is distributed."""
    if not dist_info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel / DataParallel wrapper (itself otherwise)."""
    return model.module if hasattr(model, "module") else model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block, then the training mode it had before."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
