"""The segmentation stage: train DeepLab on pseudo-masks, score it with mIoU, and save its label maps."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from .config import SegConfig
from .constants import IGNORE_INDEX
from .data.transforms import SegTrainTransform, collate_list, normalize
from .errors import ConfigError, DataError
from .metrics import ConfusionMatrix, SegmentationScores
from .models.fold import fold_batchnorm
from .models.seg_net import predict
from .pseudo_masks import save_mask_png
from .runtime import (
    DistInfo,
    autocast,
    flush_denormal_grads,
    get_dist,
    inference_context,
    progress_bar,
    speedups_enabled,
    unwrap_parallel,
)
from .train import build_optimizer, fit, make_loader, poly_lambda

CHECKPOINT_NAME = "seg.pt"


def resize_labels(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour (pixel-centre) resize of ``int64 (B, H, W)`` label maps to ``size`` (deeplab-pytorch ``resize_labels``)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    resized = F.interpolate(masks[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()  # (B, h, w)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy of ``logits (B, C, h, w)`` against ``masks (B, H, W)``, ignoring 255.

    The masks are resized to the logits' grid with nearest neighbour, as DeepLab-v2 does
    (method.md 4). Single-scale: the MSC loss over the 1x, 0.75x, 0.5x outputs and their max
    is not used (a documented deviation from CONTA's deeplab-pytorch configuration).
    """
    target = resize_labels(masks, logits.shape[-2:])  # (B, h, w)
    logits = flush_denormal_grads(logits.float())  # subnormal gradients are slow on a CPU
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def _images_to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = normalize(images, device)  # (B, 3, H, W) float32
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_segmentation(model: nn.Module, dataset, cfg: SegConfig, *, device: torch.device | str,
                       out_dir: str | os.PathLike, seed: int = 0, progress: bool = True,
                       dist_info: DistInfo | None = None, num_workers: int = 0,
                       callbacks: Iterable[Any] = ()) -> dict[str, Any]:
    """Train ``model`` (in place) on ``dataset``'s masks for ``cfg.iterations`` steps; checkpoint ``out_dir/seg.pt``.

    DeepLab-v2 recipe of CONTA (method.md 4): :class:`SegTrainTransform` (random scale from
    ``cfg.scales``, flip, ``cfg.crop_size`` crop padded with the mean / 255), ImageNet
    normalisation on the device, cross-entropy ignoring 255 (:func:`segmentation_loss`), the
    model's ``param_groups`` (DeepLab-v2: ASPP weights 10x, biases 20x lr without decay) and
    the poly schedule ``lr (1 - step / max_step) ** cfg.poly_power`` updated every step
    (deeplab-pytorch updates it every 10 steps and accumulates 2 batches of 5; here one batch
    of ``cfg.batch_size``; ImageNet RGB statistics replace its caffe BGR mean, to match the
    torchvision weights).
    ``cfg.batch_size`` is the global batch: each of the ``W`` DDP ranks loads
    ``batch_size // W``. The run lasts ``epochs = ceil(iterations / steps_per_epoch)`` whole
    epochs (``max_step = epochs * steps_per_epoch >= iterations``), so that :func:`train.fit`
    can resume it after any epoch. The data set must not carry a transform of its own.
    Returns ``{"checkpoint", "epochs", "steps_per_epoch", "steps", "final_loss", "history"}``.
    """
    info = dist_info or get_dist()
    device = torch.device(device)
    if len(dataset) == 0:
        raise DataError("train_segmentation: the training data set is empty")
    if getattr(dataset, "transform", None) is not None:
        raise DataError("train_segmentation applies SegTrainTransform itself; pass the data set "
                        f"without a transform (it has {dataset.transform!r})")
    if cfg.iterations <= 0 or cfg.batch_size <= 0:
        raise ConfigError(f"seg.iterations ({cfg.iterations}) and seg.batch_size "
                          f"({cfg.batch_size}) must be positive")
    train_set = copy.copy(dataset)
    train_set.transform = SegTrainTransform(cfg.crop_size, cfg.scales, flip=True, seed=seed)
    loader = make_loader(train_set, batch_size=max(1, cfg.batch_size // info.world_size),
                         seed=seed, shuffle=True, num_workers=num_workers, drop_last=True,
                         dist_info=info, pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise DataError(f"train_segmentation: {len(dataset)} images give no batch on this rank")
    epochs = math.ceil(cfg.iterations / steps_per_epoch)

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.param_groups(cfg.lr), name=cfg.optimizer, lr=cfg.lr,
                                weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_lambda(epochs * steps_per_epoch, cfg.poly_power))
    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def loss_fn(module: nn.Module, batch: dict) -> torch.Tensor:
        images = _images_to_device(batch["image"], device, cfg.channels_last)  # (B, 3, c, c)
        masks = batch["mask"].to(device, non_blocking=True)  # (B, c, c)
        return segmentation_loss(module(images), masks)

    checkpoint = Path(out_dir) / CHECKPOINT_NAME
    state = fit(net, loader, optimizer, epochs=epochs, loss_fn=loss_fn, device=device,
                scheduler=scheduler, checkpoint_path=checkpoint,
                config={"seg": dataclasses.asdict(cfg), "seed": seed}, amp=cfg.amp,
                callbacks=callbacks, progress=progress, desc="seg", dist_info=info)
    return {"checkpoint": str(checkpoint), "epochs": epochs, "steps_per_epoch": steps_per_epoch,
            "steps": state.step,
            "final_loss": state.history[-1]["loss"] if state.history else math.nan,
            "history": state.history}


def predict_labels(model: nn.Module, images: Sequence[torch.Tensor], *, device: torch.device | str,
                   scales: Sequence[float] = (1.0,), flip: bool = False, amp: bool = True,
                   ) -> list[torch.Tensor]:
    """Argmax label maps of ``uint8 (3, H_i, W_i)`` images of any sizes -> ``int64 (H_i, W_i)`` on ``device``.

    The batch is padded at the bottom/right to its largest size with the mean colour (zero after
    normalisation, as deeplab-pytorch pads validation images), run through :func:`predict`
    (``scales`` combined by pixel-wise max, DeepLab-v2's test protocol) and cropped back.
    Puts the model in eval mode.
    """
    with inference_context():
        return _predict_labels(model, images, device=torch.device(device), scales=scales,
                               flip=flip, amp=amp)


def _predict_labels(model: nn.Module, images: Sequence[torch.Tensor], *, device: torch.device,
                    scales: Sequence[float], flip: bool, amp: bool) -> list[torch.Tensor]:
    net = unwrap_parallel(model).eval()
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    x = torch.zeros((len(images), 3, height, width), device=device)  # (B, 3, Hmax, Wmax)
    for i, image in enumerate(images):
        x[i, :, :image.shape[-2], :image.shape[-1]] = normalize(image, device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        logits = predict(net, x, (height, width), scales=scales, flip=flip, combine="max",
                         output="logits")  # (B, C, Hmax, Wmax)
    # max's indices are argmax's labels (the first maximal class on ties, NaN as the maximum;
    # tested) and on a CPU 2-3x faster over the class dimension (docs/benchmarks.md)
    labels = logits.max(1).indices  # (B, Hmax, Wmax)
    return [labels[i, :im.shape[-2], :im.shape[-1]] for i, im in enumerate(images)]


def _prepare_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The network on ``device`` for inference: with the speed-ups a copy with its BatchNorms
    folded (:func:`causal_wsss.models.fold.fold_batchnorm`), channels_last on CUDA."""
    net = unwrap_parallel(model).to(device)
    if speedups_enabled():
        net = fold_batchnorm(net)
    return net.to(memory_format=torch.channels_last) if device.type == "cuda" else net


def evaluate_segmentation(model: nn.Module, dataset, *, device: torch.device | str,
                          num_classes: int, scales: Sequence[float] = (1.0,), flip: bool = False,
                          batch_size: int = 1, progress: bool = True,
                          dist_info: DistInfo | None = None, num_workers: int = 0,
                          amp: bool = True) -> SegmentationScores:
    """mIoU (and the other :class:`SegmentationScores`) of ``model`` on ``dataset``'s masks.

    Full-size images (method.md 5: VOC val), predictions by :func:`predict_labels`; pixels
    labelled 255 are not scored. Under DDP each rank scores images ``rank::world_size`` and the
    confusion matrices are summed with ``all_reduce``.
    """
    info = dist_info or get_dist()
    device = torch.device(device)
    net = _prepare_inference(model, device)
    was_training = net.training
    indices = list(range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_list,
                        pin_memory=device.type == "cuda")
    # The mean runs over the data set's own classes (a synthetic set uses 7 of VOC's 21).
    matrix = ConfusionMatrix(num_classes, device, classes=getattr(dataset, "used_classes", None))

    for batch in progress_bar(loader, desc="evaluate", disable=not (progress and info.is_main)):
        if "mask" not in batch:
            raise DataError(f"evaluate_segmentation: {dataset!r} has no masks to score against")
        preds = predict_labels(net, batch["image"], device=device, scales=scales, flip=flip, amp=amp)
        for pred, mask in zip(preds, batch["mask"]):
            matrix.update(pred, mask.to(device))
    net.train(was_training)
    return matrix.all_reduce().compute()


def predict_masks(model: nn.Module, dataset, out_dir: str | os.PathLike, *,
                  device: torch.device | str, progress: bool = True, rank: int = 0,
                  world_size: int = 1, scales: Sequence[float] = (1.0,), flip: bool = False,
                  batch_size: int = 1, num_workers: int = 0, amp: bool = True) -> dict[str, int]:
    """Save the argmax label map of every image as ``out_dir/<name>.png`` (VOC palette), atomically.

    CONTA builds its confounder dictionary from these predictions on the training images
    (method.md 2, [R] step 1: single scale is enough). Rank ``r`` handles images
    ``r::world_size``; existing files are skipped, so an interrupted run resumes.
    Returns ``{"images", "written", "skipped"}`` for this rank.
    """
    if not 0 <= rank < world_size:
        raise ConfigError(f"predict_masks: rank {rank} outside world_size {world_size}")
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {p[:-4] for p in os.listdir(out_dir) if p.endswith(".png")}
    mine = list(range(rank, len(dataset), world_size))
    todo = [i for i in mine if dataset.names[i] not in done]
    net = _prepare_inference(model, device)
    was_training = net.training
    loader = DataLoader(Subset(dataset, todo), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_list,
                        pin_memory=device.type == "cuda")

    for batch in progress_bar(loader, desc="predict masks", disable=not progress):
        preds = predict_labels(net, batch["image"], device=device, scales=scales, flip=flip, amp=amp)
        for name, pred in zip(batch["name"], preds):
            save_mask_png(out_dir / f"{name}.png", pred.to("cpu", torch.uint8).numpy())
    net.train(was_training)
    return {"images": len(mine), "written": len(todo), "skipped": len(mine) - len(todo)}

