"""Sample transforms (rescale, flip, crop with padding), batching and on-device normalisation.

Transforms map a sample dict (see ``base.SegmentationDataset``) to a new one. They work on the
``uint8`` image tensor with torch's uint8 antialiased resize, keeping DataLoader workers cheap;
normalisation to float happens later, on the device, with :func:`normalize`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from .base import Sample, Transform

MEAN_UINT8: tuple[int, ...] = tuple(round(255 * m) for m in IMAGENET_MEAN)
"""ImageNet mean colour in uint8 (124, 116, 104): padding with it gives zeros after normalize."""


def sample_generator(seed: int, index: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, index, epoch)`` alone.

    A sample's augmentation therefore does not depend on which DataLoader worker draws it, on
    the batch order or on the number of workers.
    """
    state = np.random.SeedSequence([int(seed), int(index), int(epoch)]).generate_state(
        2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed((int(state[0]) << 32) | int(state[1]))
    return generator


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of a ``uint8 (3, H, W)`` image to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if tuple(size) == (1, 1) and image.dtype == torch.uint8:
        # torch's uint8 antialiased kernel fails an internal assert on a 1x1 output (a tiny
        # cam.resize_long or seg.scales); the float kernel, rounded, gives what it would
        out = F.interpolate(image[None].float(), size=size, mode="bilinear",
                            align_corners=False, antialias=True)[0]
        return out.round().clamp(0, 255).to(torch.uint8)  # (3, 1, 1)
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0]  # (3, h, w)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize (pixel centres, as PIL) of a ``(H, W)`` label mask (values
    0..255), keeping its dtype."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    resized = F.interpolate(mask.to(torch.uint8)[None, None], size=size, mode="nearest-exact")
    return resized[0, 0].to(mask.dtype)  # (h, w)


def crop_pad(x: torch.Tensor, top: int, left: int, crop: int,
             fill: Sequence[int] | int) -> torch.Tensor:
    """The ``crop x crop`` window of ``x (..., h, w)`` starting at ``(top, left)``.

    ``top``/``left`` may be negative and the window may run past the far edge: pixels outside
    ``x`` take ``fill`` (one value, or one per channel).
    """
    h, w = x.shape[-2:]
    out = torch.empty((*x.shape[:-2], crop, crop), dtype=x.dtype)
    if isinstance(fill, int):
        out.fill_(fill)
    else:
        out.copy_(torch.tensor(fill, dtype=x.dtype).view(-1, 1, 1).expand_as(out))
    y0, y1 = max(top, 0), min(top + crop, h)
    x0, x1 = max(left, 0), min(left + crop, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = x[..., y0:y1, x0:x1]
    return out


def _window_start(size: int, crop: int, generator: torch.Generator) -> int:
    """Random start of a ``crop`` window over ``size`` pixels (IRNet ``get_random_crop_box``).

    A longer side is cropped at a random offset; a shorter side is placed at a random offset
    inside the padded window, i.e. the window starts at a negative coordinate.
    """
    space = size - crop
    offset = int(torch.randint(0, abs(space) + 1, (), generator=generator))
    return offset if space >= 0 else -offset


class RandomGeometry(abc.ABC):
    """Random rescale, then random crop with padding, then random horizontal flip.

    Adds ``crop_box`` (``float32 (4,)`` = ``(x0, y0, x1, y1)``): the part of the original
    image, in normalised coordinates (0..1 across the image, beyond where padded), that the crop
    shows before flipping; and ``flipped`` (``bool`` tensor). A map ``m`` aligned with the
    original image goes through the same geometry by sampling it at ``crop_box`` and mirroring
    it when ``flipped`` (method.md section 7, item 9). Images are padded with
    :data:`MEAN_UINT8`, masks with ``IGNORE_INDEX``.

    Randomness comes from :func:`sample_generator` ``(seed, sample["index"], epoch)``; call
    :meth:`set_epoch` before iterating each epoch. The epoch lives in shared memory, so the
    change also reaches ``persistent_workers`` DataLoader workers.
    """

    def __init__(self, crop_size: int, flip: bool = True, seed: int = 0) -> None:
        if int(crop_size) <= 0:
            raise ConfigError(f"crop_size must be a positive number of pixels, got {crop_size}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.crop_size = int(crop_size)
        self.flip = bool(flip)
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch mixed into every sample's generator."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s augmentations (call before iterating the DataLoader)."""
        self._epoch.fill_(int(epoch))

    @abc.abstractmethod
    def target_size(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int]:
        """The rescaled ``(h, w)`` of a ``height x width`` image."""

    def __call__(self, sample: Sample) -> Sample:
        generator = sample_generator(self.seed, sample["index"], self.epoch)
        image = sample["image"]  # (3, H, W) uint8
        h, w = self.target_size(int(image.shape[-2]), int(image.shape[-1]), generator)
        flipped = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        crop = self.crop_size
        top = _window_start(h, crop, generator)
        left = _window_start(w, crop, generator)

        out = dict(sample)
        image = crop_pad(resize_image(image, (h, w)), top, left, crop, MEAN_UINT8)  # (3, c, c)
        out["image"] = image.flip(-1) if flipped else image
        if "mask" in sample:
            mask = resize_mask(sample["mask"].to(torch.uint8), (h, w))  # uint8: 8x less to move
            mask = crop_pad(mask, top, left, crop, IGNORE_INDEX)  # (c, c)
            out["mask"] = (mask.flip(-1) if flipped else mask).long()
        out["crop_box"] = torch.tensor([left / w, top / h, (left + crop) / w, (top + crop) / h],
                                       dtype=torch.float32)  # (4,)
        out["flipped"] = torch.tensor(flipped)
        return out


class TrainTransform(RandomGeometry):
    """CAM-training augmentation (IRNet ``train_cam``): long side rescaled to a random integer in
    ``resize_long = (lo, hi)`` (inclusive), flip, random ``crop_size`` crop padded with the mean
    colour (method.md section 4: [320, 640], crop 512)."""

    def __init__(self, crop_size: int, resize_long: tuple[int, int] = (320, 640),
                 flip: bool = True, seed: int = 0) -> None:
        super().__init__(crop_size, flip, seed)
        lo, hi = (int(v) for v in resize_long)
        if not 0 < lo <= hi:
            raise ConfigError(f"resize_long must be (lo, hi) with 0 < lo <= hi, got {resize_long}")
        self.resize_long = (lo, hi)

    def target_size(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int]:
        lo, hi = self.resize_long
        target = int(torch.randint(lo, hi + 1, (), generator=generator))
        scale = target / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))


class SegTrainTransform(RandomGeometry):
    """Segmentation-training augmentation (DeepLab): rescale by a factor drawn from ``scales``,
    flip, random ``crop_size`` crop; image padded with the mean colour, mask with 255
    (method.md section 4: scales {0.5, 0.75, 1.0, 1.25, 1.5}, crop 321)."""

    def __init__(self, crop_size: int, scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5),
                 flip: bool = True, seed: int = 0) -> None:
        super().__init__(crop_size, flip, seed)
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"scales must be a non-empty list of positive factors, got {scales}")

    def target_size(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int]:
        scale = self.scales[int(torch.randint(0, len(self.scales), (), generator=generator))]
        return max(1, round(height * scale)), max(1, round(width * scale))


class EvalTransform:
    """Evaluation transform: shrink so that the long side is at most ``max_side`` (0 = keep size),
    keeping the aspect ratio; the mask follows with nearest-neighbour resampling."""

    def __init__(self, max_side: int = 0) -> None:
        if int(max_side) < 0:
            raise ConfigError(f"max_side must be >= 0 (0 = native size), got {max_side}")
        self.max_side = int(max_side)

    def __call__(self, sample: Sample) -> Sample:
        height, width = (int(v) for v in sample["image"].shape[-2:])
        if not self.max_side or max(height, width) <= self.max_side:
            return sample
        scale = self.max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        out = dict(sample)
        out["image"] = resize_image(sample["image"], size)  # (3, h, w)
        if "mask" in sample:
            out["mask"] = resize_mask(sample["mask"], size)  # (h, w)
        return out


class Compose:
    """Transforms applied in order; :meth:`set_epoch` reaches every one that draws per epoch."""

    def __init__(self, *transforms: Transform) -> None:
        self.transforms = tuple(t for t in transforms if t is not None)

    def set_epoch(self, epoch: int) -> None:
        for t in self.transforms:
            if hasattr(t, "set_epoch"):
                t.set_epoch(epoch)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample


class TransformView(torch.utils.data.Dataset):
    """``dataset`` seen through ``transform`` (applied to each sample), without copying or
    mutating it; keeps its ``names``."""

    def __init__(self, dataset, transform) -> None:
        self.base, self.transform = dataset, transform
        self.names = dataset.names

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return self.transform(self.base[i])


def collate_list(samples: list[Sample]) -> dict[str, object]:
    """Batch samples of different sizes: ``image`` and ``mask`` stay lists of tensors,
    equal-shape tensors (``labels (B, K-1)``, ``crop_box``) are stacked, ``index`` becomes an
    ``int64 (B,)`` tensor and everything else (``name``) a list."""
    batch: dict[str, object] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in ("image", "mask"):
            batch[key] = values
        elif key == "index":
            batch[key] = torch.tensor(values, dtype=torch.int64)  # (B,)
        elif all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def normalize(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """``uint8 (B, 3, H, W)`` (or ``(3, H, W)``) -> ``float32`` ``(x / 255 - mean) / std`` with
    the ImageNet statistics, computed on ``device`` (the uint8 tensor is moved first: 4x less
    to copy)."""
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"normalize expects uint8 images of shape (B, 3, H, W) or (3, H, W), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if device is not None:
        images = images.to(device, non_blocking=True)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1) * 255
    return (images.float() - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: float ``(..., 3, H, W)`` -> ``uint8``, rounded and clipped."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1) * 255
    return (images.float() * std + mean).round().clamp(0, 255).to(torch.uint8)
