"""Batched multi-scale + flip CAM extraction on the device (IRNet ``make_cam``) and the on-disk CAM cache of one round."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .data.transforms import denormalize, normalize
from .errors import DataError
from .io import atomic_path
from .models.fold import fold_batchnorm
from .runtime import autocast, eval_mode, inference_context, speedups_enabled, unwrap_parallel

IRNET_SCALES = (1.0, 0.5, 1.5, 2.0)
"""IRNet ``cam_scales`` (method.md section 4, CAM inference)."""

CAM_SUFFIX = ".npz"


@dataclass
class ImageCams:
    """The CAMs of one image, positive classes only (IRNet's saved ``keys``/``cam``/``high_res``).

    keys: (P,) int64 foreground class indices (0-based: VOC label = key + 1).
    high_res: (P, H, W) float32 in [0, 1], each map divided by its own max (+1e-5).
    stride4: (P, ceil(H/4), ceil(W/4)) float32, normalised the same way, or None.
    """

    keys: torch.Tensor
    high_res: torch.Tensor
    stride4: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the full-resolution maps."""
        return int(self.high_res.shape[-2]), int(self.high_res.shape[-1])

    def dense(self, num_classes_fg: int) -> torch.Tensor:
        """(K, H, W) maps with zeros on the negative classes."""
        out = self.high_res.new_zeros((num_classes_fg, *self.size))
        out[self.keys] = self.high_res
        return out

    def to(self, device: torch.device | str) -> ImageCams:
        """A copy on ``device``."""
        s4 = None if self.stride4 is None else self.stride4.to(device)
        return ImageCams(self.keys.to(device), self.high_res.to(device), s4)


@dataclass
class CamBatch:
    """CAMs of a batch of same-sized images, packed: only the positive (image, class) pairs.

    labels: (B, K) bool, the classes kept. high_res: (P, H, W) and stride4: (P, h4, w4) (or
    None), P = labels.sum(), rows in row-major (image, class) order, i.e. ``labels.nonzero()``.
    """

    labels: torch.Tensor
    high_res: torch.Tensor
    stride4: torch.Tensor | None
    logits: torch.Tensor | None = None  # (B, K) scores of the scale-1 unflipped pass, if asked

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def images(self) -> list[ImageCams]:
        """One :class:`ImageCams` per image, in batch order (views, no copy)."""
        counts = self.labels.sum(1).tolist()
        highs = self.high_res.split(counts)
        s4s = self.stride4.split(counts) if self.stride4 is not None else [None] * len(counts)
        return [ImageCams(row.nonzero().squeeze(1), h, s)
                for row, h, s in zip(self.labels, highs, s4s)]

    def dense(self) -> torch.Tensor:
        """(B, K, H, W) full-resolution maps with zeros on the negative classes."""
        out = self.high_res.new_zeros((*self.labels.shape, *self.high_res.shape[-2:]))
        out[self.labels] = self.high_res
        return out


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(round(H * s), round(W * s)), halves to even, as IRNet's ``pil_rescale`` (``np.round``)."""
    return round(size[0] * scale), round(size[1] * scale)


def _bicubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic filter (Keys, a = -0.5), evaluated as PIL writes it, in float64."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def _pil_bicubic_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (out, k) int64 and fixed-point weights (out, k) int32 of PIL's bicubic
    resampling of one axis (Pillow ``precompute_coeffs`` + ``normalize_coeffs_8bpc``).

    PIL: scale = in / out; the filter is widened by max(scale, 1) (antialiasing when
    shrinking); output pixel i reads the inputs from int(c - support + 0.5) to
    int(c + support + 0.5) around c = (i + 0.5) scale, the weights are divided by their sum
    and rounded to multiples of 2^-22. Unused taps get weight 0 (and index 0).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale  # (out,)
    lo = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C's (int) truncates
    hi = np.minimum((center + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(ksize)  # (k,)
    valid = taps[None, :] < (hi - lo)[:, None]  # (out, k)
    w = np.where(valid, _bicubic((taps[None, :] + lo[:, None] - center[:, None] + 0.5)
                                 * (1.0 / filterscale)), 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # summed left to right, as PIL
    w = np.divide(w, total, out=w.copy(), where=total != 0.0)
    fixed = np.trunc(w * (1 << 22) + np.where(w < 0, -0.5, 0.5)).astype(np.int32)
    index = np.where(valid, lo[:, None] + taps[None, :], 0)
    return torch.from_numpy(index), torch.from_numpy(fixed)


@functools.lru_cache(maxsize=64)
def _pil_bicubic_plan(in_size: int, out_size: int) -> tuple[int, int, int, int, torch.Tensor]:
    """PIL's one-axis resampling (:func:`_pil_bicubic_taps`) as a banded matrix cut into n
    blocks of ``block`` outputs, block b reading the ``win`` source pixels from
    ``first + b * step`` (equally spaced windows, so they are a strided view of the source);
    the block size (16 to 64) that gives the least work.

    Returns (pad_before, pad_after, step, win, matrix): the source is zero-padded by
    ``pad_before``/``pad_after`` pixels so that every window lies inside it; matrix (n,
    block, win) float64 holds PIL's fixed-point weights times 2^-22 (exact binary fractions).
    """
    index, fixed = _pil_bicubic_taps(in_size, out_size)  # (out, k)
    used = fixed != 0
    out = torch.arange(out_size).unsqueeze(1).expand_as(index)  # (out, k)
    best = None
    for size in (16, 24, 32, 48, 64):
        n = -(-out_size // size)
        block = out // size
        lo = torch.full((n,), in_size).scatter_reduce(0, block[used], index[used], "amin")
        hi = torch.full((n,), -1).scatter_reduce(0, block[used], index[used], "amax") + 1
        step = max(1, size * in_size // out_size)
        first = int((lo - torch.arange(n) * step).min())  # the first window's start
        win = int((hi - first - torch.arange(n) * step).max())
        if best is None or n * size * win < best[0]:
            best = (n * size * win, size, n, block, step, first, win)
    _, size, n, block, step, first, win = best
    pad_before = max(0, -first)
    pad_after = max(0, first + (n - 1) * step + win - in_size)
    matrix = torch.zeros(n, size, win, dtype=torch.float64)
    matrix.index_put_((block[used], out[used] % size, index[used] - first - block[used] * step),
                      fixed[used].double() / (1 << 22), accumulate=True)
    return pad_before, pad_after, step, win, matrix


def _pil_pass(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """One PIL pass along the FIRST axis of x (A, ...) (grey levels, any dtype and strides):
    (out_size, ...) float64, the sum of level x fixed-point weight rounded half up and clipped
    to 0..255, as PIL's ``clip8``. Exact: every product and partial sum is a multiple of 2^-22
    below 2^10. One batched matmul of the matrix blocks with strided windows of the source."""
    pad_before, pad_after, step, win, matrix = _pil_bicubic_plan(x.shape[0], out_size)
    rest = x.shape[1:]
    length = pad_before + x.shape[0] + pad_after
    src = torch.empty((length, *rest), dtype=torch.float64, device=x.device)
    src[:pad_before] = 0
    src[pad_before + x.shape[0]:] = 0
    src[pad_before:pad_before + x.shape[0]].copy_(x)  # also puts the axis first in memory
    columns = src.numel() // length
    windows = src.as_strided((matrix.shape[0], win, columns), (step * columns, columns, 1))
    acc = torch.bmm(matrix.to(x.device), windows)  # (n, block, columns)
    acc = acc.view(-1, columns)[:out_size]
    return acc.add_(0.5).floor_().clamp_(0, 255).view(out_size, *rest)


def pil_bicubic_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize 8-bit images as IRNet's ``pil_resize`` (PIL ``Image.resize((w, h), BICUBIC)``),
    byte for byte, on their device.

    images: (..., H, W) uint8; size: (h, w). Returns uint8 (..., h, w). PIL resizes an 8-bit
    image in two separable passes, the width first (the only order of the Pillow releases IRNet
    ran on), each with the bicubic filter (a = -0.5) widened by the shrink factor (so
    antialiased when shrinking), in 22-bit fixed point, rounded and clipped back to 8 bits
    after each pass; a side that keeps its size is not filtered. On the CPU this calls PIL,
    one plane and one side at a time (recent Pillow, 13 here, may start a single call with the
    height: for some tall images being shrunk, or when the height shrinks and the width grows;
    two calls keep IRNet's order). Elsewhere (CUDA) the same integer arithmetic runs in torch
    (:func:`_pil_bicubic_torch`), which gives the same bytes (tests/test_cam.py).
    """
    height, width = size
    if height < 1 or width < 1:
        raise DataError(f"cannot resize images of shape {tuple(images.shape)} to {size}")
    if images.dtype != torch.uint8 or images.dim() < 2:
        raise DataError(f"pil_bicubic_resize expects uint8 (..., H, W) images, got "
                        f"{images.dtype} {tuple(images.shape)}")
    if images.device.type != "cpu":
        return _pil_bicubic_torch(images, size)
    from PIL import Image

    planes = images.reshape(-1, *images.shape[-2:]).contiguous().numpy()  # (N, H, W)
    out = np.empty((planes.shape[0], height, width), np.uint8)
    for i, plane in enumerate(planes):
        img = Image.fromarray(plane)  # mode L: the arithmetic of RGB, one band
        if width != img.width:
            img = img.resize((width, img.height), Image.BICUBIC)
        if height != img.height:
            img = img.resize((width, height), Image.BICUBIC)
        out[i] = np.asarray(img)
    return torch.from_numpy(out).reshape(*images.shape[:-2], height, width)


def _pil_bicubic_torch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`pil_bicubic_resize` in torch on any device: PIL's width pass, then its height
    pass (:func:`_pil_pass`)."""
    height, width = size
    x = images.reshape(-1, *images.shape[-2:]).movedim(0, -1)  # (H, W, N), a view
    if width != x.shape[1]:
        x = _pil_pass(x.transpose(0, 1), width).transpose(0, 1)
    if height != x.shape[0]:
        x = _pil_pass(x, height)
    x = x.movedim(-1, 0).reshape(*images.shape[:-2], height, width)
    return x.to(torch.uint8)


def _normalize_levels(x: torch.Tensor) -> torch.Tensor:
    """Float grey levels 0-255 -> normalised, the formula of ``transforms.normalize``."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1) * 255
    return (x - mean) / std


def extract_cams(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 scales: Sequence[float] = IRNET_SCALES, flip: bool = True,
                 out_size: tuple[int, int] | None = None, context: torch.Tensor | None = None,
                 amp: bool = True, stride4: bool = True, work_size: tuple[int, int] | None = None,
                 logits: bool = False) -> CamBatch:
    """Multi-scale + flip CAMs of a batch of same-sized images (IRNet ``make_cam``, batched).

    images: (B, 3, H, W) uint8 (what IRNet reads), or their normalised float copies
    (:func:`causal_wsss.data.transforms.normalize`; mapped back to whole grey levels for the
    resize), on the model's device; labels: (B, K) multi-hot; context: (B, Cc, Hc, Wc)
    image-aligned map for a CamNet with context channels (resized straight to each scale's
    feature grid by the network, mirrored for the flipped copy: method.md section 7, item 8).

    Each scale s works as IRNet's multi-scale data set and ``make_cam``: the 8-bit images are
    resized to (round(H s), round(W s)) with PIL's antialiased bicubic filter, rounded to 8
    bits (:func:`pil_bicubic_resize`; a scale that keeps the size uses the image as it is),
    then normalised; the batch is stacked with its mirror image and run in ONE forward pass;
    CAM = ReLU(W * F), and the mirrored half is flipped back and added. Each scale's maps of
    the positive classes are resized (bilinear, align_corners=False) to (a) the stride-4 grid
    (ceil(H/4), ceil(W/4)) and (b) the output-stride-padded size (os ceil(H/os)) then cropped
    to (H, W), IRNet's ``strided_up_size`` (IRNet hard-codes os = 16, its only stride); both
    are summed over scales in fp32 and each map is divided by its own max + 1e-5.
    ``out_size`` = (H', W') gives the full-resolution output another size than the input
    (e.g. inference on a downscaled image); the stride-4 grid follows it.
    ``work_size`` = (h, w): the size the network works at (:func:`work_size_for`); each scale
    s resizes the image straight to (round(h s), round(w s)) and the maps come back at the
    input size (or ``out_size``), so a stated working size costs no second resize.
    ``logits``: also return the image-level scores of the scale-1 unflipped half
    (``CamBatch.logits``), so that a caller needing both (the twins) runs one pass.
    The network sees channels_last inputs. ``amp``: bf16 autocast of the network (fp16 on GPUs
    without bf16), for speed; not IRNet's: it moves the normalised CAMs of a trained network by
    up to 6.5e-3 on a CPU and 4.8e-2 on an H200. On a CPU it is a no-op (fp32) unless
    ``CAUSAL_WSSS_CPU_AMP=1`` (:func:`causal_wsss.runtime.cpu_amp_enabled`: measured to cost
    0.30 points of pseudo-mask mIoU for 1.2x even with bf16 units; docs/benchmarks.md).
    ``amp=False`` runs IRNet's fp32.
    """
    net = unwrap_parallel(model)
    if (images.dim() != 4 or images.shape[1] != 3
            or not (images.dtype == torch.uint8 or images.is_floating_point())):
        raise DataError(f"images have shape {tuple(images.shape)} and dtype {images.dtype}; "
                        "expected a uint8 batch (B, 3, H, W) or its normalised float copy")
    batch, _, height, width = images.shape
    if labels.shape != (batch, net.num_classes):
        raise DataError(f"labels have shape {tuple(labels.shape)}; expected ({batch}, "
                        f"{net.num_classes})")
    if context is not None and context.shape[0] != batch:
        raise DataError(f"context has {context.shape[0]} rows for {batch} images")
    if not scales:
        raise DataError("extract_cams needs at least one scale")
    work_h, work_w = work_size if work_size is not None else (height, width)
    if logits and 1.0 not in scales:
        raise DataError("extract_cams(logits=True) needs the scale 1.0 among the scales")
    for scale in scales:
        if min(scaled_size((work_h, work_w), scale)) < 1:
            raise DataError(f"scale {scale} shrinks a {work_h}x{work_w} image to nothing")
    device = images.device
    out_h, out_w = out_size if out_size is not None else (height, width)
    stride = net.output_stride
    # IRNet's strided_up_size, carried over to the output size when it differs from the
    # size the network works at
    up_size = (round(stride * math.ceil(work_h / stride) * out_h / work_h),
               round(stride * math.ceil(work_w / stride) * out_w / work_w))
    scores = None
    grid4 = (math.ceil(out_h / 4), math.ceil(out_w / 4))
    positive = labels > 0  # (B, K)
    rows = positive.flatten().nonzero().squeeze(1)  # (P,) indices into B * K

    high = torch.zeros((rows.numel(), out_h, out_w), device=device)  # (P, H, W)
    low = torch.zeros((rows.numel(), *grid4), device=device) if stride4 else None
    ctx = context
    if flip and context is not None:
        ctx = torch.cat([context, context.flip(-1)])  # (2B, Cc, Hc, Wc)
    with inference_context(), eval_mode(net):
        if images.dtype == torch.uint8:
            levels, x = images, normalize(images)  # (B, 3, H, W) uint8, float32
        else:
            levels, x = denormalize(images), images.float()
        for scale in scales:
            size = scaled_size((work_h, work_w), scale)
            xs = x if size == (height, width) else _normalize_levels(
                pil_bicubic_resize(levels, size).float())
            if flip:
                xs = torch.cat([xs, xs.flip(-1)])  # (2B, 3, h_s, w_s)
            # channels_last: faster on CPUs and GPUs (IRNet's HWC -> CHW arrays are laid out so)
            xs = xs.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                if logits and scale == 1.0:
                    out = net(xs, ctx)
                    scores = out.logits[:batch].float()  # (B, K): the unflipped half
                    maps = net.cam_maps(out.features)  # (2B, K, h, w)
                else:
                    maps = net.cams(xs, ctx)  # (2B, K, h, w)
            maps = maps.float()
            if flip:
                maps = maps[:batch] + maps[batch:].flip(-1)  # (B, K, h, w)
            maps = maps.flatten(0, 1)[rows].unsqueeze(1)  # (P, 1, h, w)
            high += F.interpolate(maps, size=up_size, mode="bilinear",
                                  align_corners=False)[:, 0, :out_h, :out_w]
            if low is not None:
                low += F.interpolate(maps, size=grid4, mode="bilinear", align_corners=False)[:, 0]
        high /= high.amax(dim=(-2, -1), keepdim=True) + 1e-5
        if low is not None:
            low /= low.amax(dim=(-2, -1), keepdim=True) + 1e-5
    return CamBatch(positive, high, low, scores)


WORK_MULTIPLE = 8
"""The short side of a working size is a multiple of this (:func:`work_size_for`)."""


def work_size_for(size: tuple[int, int], work_long: int) -> tuple[int, int]:
    """The size an image of ``size`` (H, W) is rescaled to for a working size of ``work_long``:
    the long side ``work_long``, the short side in proportion, rounded to the nearest multiple
    of :data:`WORK_MULTIPLE` (the aspect moves by at most 4 px in about 250). ``size`` itself
    for 0. The rounding makes images of neighbouring sizes share one working size, so the
    network sees a few dozen shapes instead of one per image: the CPU's convolution kernels,
    built for each new shape, are then reused (about 15% of a CAM image's time on 2 cores)."""
    if not work_long:
        return size
    h, w = size
    if h >= w:
        return work_long, max(WORK_MULTIPLE, WORK_MULTIPLE * round(w * work_long / h / WORK_MULTIPLE))
    return max(WORK_MULTIPLE, WORK_MULTIPLE * round(h * work_long / w / WORK_MULTIPLE)), work_long


def extract_cams_list(model: nn.Module, images: Sequence[torch.Tensor],
                      labels: torch.Tensor | Sequence[torch.Tensor], *, batch_size: int = 8,
                      contexts: Sequence[torch.Tensor] | None = None,
                      device: torch.device | str | None = None, **kwargs) -> list[ImageCams]:
    """:func:`extract_cams` over images of different sizes, batched by size, in input order.

    images: sequence of uint8 (3, H_i, W_i) tensors, or all their normalised float copies (any
    device; moved to ``device``, default the model's); labels: (N, K) or N tensors (K,); contexts: N tensors (Cc, Hc, Wc)
    of one shape, or None. Images of one size go through the network ``batch_size`` at a
    time (VOC has few distinct sizes, so most batches are full). ``kwargs`` go to
    :func:`extract_cams`.
    """
    if len(images) != len(labels) or (contexts is not None and len(contexts) != len(images)):
        raise DataError(f"extract_cams_list: {len(images)} images, {len(labels)} label rows, "
                        f"{'no' if contexts is None else len(contexts)} contexts; expected equal")
    if len({image.dtype for image in images}) > 1:
        raise DataError("extract_cams_list: the images mix dtypes "
                        f"{sorted(str(d) for d in {image.dtype for image in images})}; expected "
                        "all uint8 or all normalised float")
    if device is None:
        device = next(unwrap_parallel(model).parameters()).device
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        buckets.setdefault(tuple(image.shape[-2:]), []).append(i)
    out: list[ImageCams | None] = [None] * len(images)
    for indices in buckets.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = torch.stack([images[i] for i in chunk]).to(device)  # (b, 3, H, W)
            lab = torch.stack([torch.as_tensor(labels[i]) for i in chunk]).to(device)  # (b, K)
            ctx = None if contexts is None else torch.stack([contexts[i] for i in chunk]).to(device)
            for i, cams in zip(chunk, extract_cams(model, batch, lab, context=ctx,
                                                   **kwargs).images()):
                out[i] = cams
    return out  # type: ignore[return-value]


def save_cams(path: str | Path, high_res: torch.Tensor, keys: torch.Tensor,
              stride4: torch.Tensor | None = None) -> None:
    """Write one image's CAMs atomically as an uncompressed ``.npz`` of float16 maps.

    high_res: (P, H, W) positive classes only; keys: (P,) their foreground indices;
    stride4: (P, ceil(H/4), ceil(W/4)) or None. Arrays ``keys`` (int16), ``high_res`` and
    ``cam`` (IRNet's names). float16 keeps values in [0, 1] to within 2.5e-4.
    """
    if high_res.dim() != 3 or keys.shape != (high_res.shape[0],):
        raise DataError(f"save_cams({path}): high_res {tuple(high_res.shape)} and keys "
                        f"{tuple(keys.shape)}; expected (P, H, W) and (P,)")
    arrays = {"keys": keys.detach().to("cpu", torch.int16).numpy(),
              "high_res": high_res.detach().to("cpu", torch.float16).numpy()}
    if stride4 is not None:
        arrays["cam"] = stride4.detach().to("cpu", torch.float16).numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_cams(path: str | Path) -> ImageCams:
    """Read a file written by :func:`save_cams` -> float32 :class:`ImageCams` on the CPU.

    DataError naming the file when it cannot be read (whatever numpy or zipfile raise: a bad
    CRC, a truncated archive, a mangled ``.npy`` header) or holds arrays of the wrong shapes.
    """
    path = Path(path)
    try:
        with np.load(path) as data:
            keys = data["keys"]
            high = data["high_res"]
            low = data["cam"] if "cam" in data else None
    except Exception as exc:  # noqa: BLE001 - whatever a broken file raises, it is broken
        reason = str(exc) or type(exc).__name__  # np.load of an empty file: a bare EOFError
        raise DataError(f"cannot read CAM file {path}: {reason}; expected an .npz with arrays "
                        "'keys', 'high_res' (and 'cam') written by causal_wsss.cam.save_cams (in "
                        "a run folder, rerun: the stage that wrote it is redone)") from exc
    p = keys.shape[0] if keys.ndim == 1 else -1
    if (keys.ndim != 1 or keys.dtype.kind not in "iu" or high.ndim != 3 or high.shape[0] != p
            or (low is not None and (low.ndim != 3 or low.shape[0] != p))):
        raise DataError(f"cannot read CAM file {path}: arrays 'keys' {keys.shape}, 'high_res' "
                        f"{high.shape}" + (f", 'cam' {low.shape}" if low is not None else "")
                        + "; expected (P,), (P, H, W) and (P, h, w) as causal_wsss.cam.save_cams "
                        "writes (in a run folder, rerun: the stage that wrote it is redone)")
    return ImageCams(torch.from_numpy(keys.astype(np.int64)),
                     torch.from_numpy(high.astype(np.float32)),
                     torch.from_numpy(low.astype(np.float32)) if low is not None else None)


class CamCache:
    """The CAMs of one round: ``<dir>/<name>.npz`` per image.

    Each file is written atomically, so a crashed run leaves only complete files and a rerun
    skips them. Under torch.distributed every rank writes the names of its own shard (the
    caller picks ``rank::world_size``, as :func:`make_cams`) and the caller puts a barrier
    before any rank reads the whole cache.
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def path(self, name: str) -> Path:
        """File of image ``name``."""
        return self.dir / f"{name}{CAM_SUFFIX}"

    def exists(self, name: str) -> bool:
        """Whether image ``name`` has a complete CAM file."""
        return self.path(name).is_file()

    def put(self, name: str, cams: ImageCams) -> None:
        """Store one image's CAMs (float16)."""
        save_cams(self.path(name), cams.high_res, cams.keys, cams.stride4)

    def get(self, name: str) -> ImageCams:
        """Load one image's CAMs (float32, CPU); DataError when absent or unreadable."""
        if not self.exists(name):
            raise DataError(f"no CAMs for image {name!r}: {self.path(name)} does not exist; run "
                            "make_cams for this round first")
        return load_cams(self.path(name))


def _as_list(items: list[dict]) -> list[dict]:
    return items


def _sorted_by_size(dataset, indices: list[int], work_long: int = 0) -> list[int]:
    """``indices`` ordered by image size (read from the file headers, no decoding), so that
    images of one size arrive together and fill whole batches, and by working size first
    (:func:`work_size_for`), so that the network sees one shape many times in a row; unchanged
    when the data set has no ``image_path`` or a header cannot be read (the loader then reports
    the file)."""
    from PIL import Image

    if not hasattr(dataset, "image_path"):
        return indices
    sizes = {}
    for i in indices:
        try:
            with Image.open(dataset.image_path(i)) as img:
                sizes[i] = img.size
        except (OSError, ValueError):
            return indices
    if not work_long:
        return sorted(indices, key=lambda i: sizes[i])
    return sorted(indices, key=lambda i: (work_size_for(sizes[i][::-1], work_long), sizes[i]))


def make_cams(model: nn.Module, dataset, cache_dir: str | Path, *, batch_size: int = 8,
              scales: Sequence[float] = IRNET_SCALES, flip: bool = True,
              device: torch.device | str = "cpu", amp: bool = True, progress: bool = True,
              rank: int = 0, world_size: int = 1, num_workers: int = 0,
              context_fn: Callable[[list[dict]], torch.Tensor] | None = None,
              work_long: int = 0, logits_out: dict[str, torch.Tensor] | None = None,
              ) -> dict[str, int]:
    """Compute and cache the CAMs of this rank's shard (``indices rank::world_size``) of ``dataset``.

    dataset: a SegmentationDataset (``names``; items with uint8 ``image`` (3, H, W), ``labels``
    (K,), ``name``). Images already in the cache are skipped, so an interrupted run resumes.
    Images are read in order of size and batched by size (at most ``4 * batch_size`` wait
    for a full batch; beyond that the largest waiting group goes through) and passed as uint8
    to :func:`extract_cams` on ``device``, which resizes and normalises them there as IRNet. ``context_fn(items)`` -> (b, Cc, Hc, Wc) gives the image-aligned
    context maps of a group of items (CONTA). The model is moved to ``device``
    (channels_last); :func:`extract_cams` runs it in eval mode (on a copy with the BatchNorms
    folded into the convolutions, :func:`causal_wsss.models.fold.fold_batchnorm`, unless the
    speed-ups are off: :func:`causal_wsss.runtime.speedups_enabled`).
    ``work_long`` > 0: every image is rescaled so that its long side is ``work_long`` before the
    multi-scale inference (:func:`work_size_for`); the cached CAMs keep the image's own size.
    ``logits_out``: a dict that receives each written image's (K,) scores of the scale-1 pass.
    Returns counts: ``total`` (this shard), ``skipped`` (already cached), ``written``.
    """
    names = getattr(dataset, "names", None)
    if names is None or len(names) != len(dataset):
        raise DataError(f"make_cams needs a data set with a 'names' list of {len(dataset)} image "
                        "ids (causal_wsss.data SegmentationDataset)")
    if not 0 <= rank < world_size:
        raise DataError(f"make_cams: rank {rank} is outside world_size {world_size}")
    device = torch.device(device)
    cache = CamCache(cache_dir)
    shard = range(rank, len(dataset), world_size)
    todo = _sorted_by_size(dataset, [i for i in shard if not cache.exists(names[i])], work_long)
    net = unwrap_parallel(model).to(device)
    if speedups_enabled():  # an inference copy: its BatchNorms folded into the convolutions
        net = fold_batchnorm(net)
    net = net.to(memory_format=torch.channels_last)
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_as_list,
                        pin_memory=device.type == "cuda")
    waiting: dict[tuple[int, int], list[dict]] = {}

    def flush(size: tuple[int, int]) -> None:
        items = waiting.pop(size)
        images = torch.stack([it["image"] for it in items]).to(device, non_blocking=True)
        if images.dtype != torch.uint8:
            raise DataError(f"data set item {items[0]['name']!r}: 'image' is {images.dtype}; "
                            "expected uint8 (3, H, W) (resizing and normalisation happen on the "
                            "device)")
        labels = torch.stack([torch.as_tensor(it["labels"]) for it in items]).to(device)
        context = context_fn(items).to(device) if context_fn is not None else None
        cams = extract_cams(net, images, labels, scales=scales, flip=flip, context=context,
                            amp=amp, work_size=work_size_for(size, work_long),
                            logits=logits_out is not None)
        for row, (item, image_cams) in enumerate(zip(items, cams.images())):
            cache.put(item["name"], image_cams)
            if logits_out is not None:
                logits_out[item["name"]] = cams.logits[row].cpu()
        bar.update(len(items))

    with tqdm(total=len(todo), desc=f"CAMs rank {rank}", disable=not progress) as bar:
        for items in loader:
            for item in items:
                size = tuple(item["image"].shape[-2:])
                waiting.setdefault(size, []).append(item)
                if len(waiting[size]) == batch_size:
                    flush(size)
            while sum(map(len, waiting.values())) > 4 * batch_size:
                flush(max(waiting, key=lambda s: len(waiting[s])))
        for size in list(waiting):
            flush(size)
    return {"total": len(shard), "skipped": len(shard) - len(todo), "written": len(todo)}
