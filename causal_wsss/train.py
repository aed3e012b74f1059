"""The training loop: plain ``train_one_epoch`` / ``fit`` functions with callbacks, DDP-aware.

One small loop serves the CAM classifier, the relation network and the segmentation network:
each caller passes a ``loss_fn(model, batch) -> loss`` that knows its own batch layout.
``fit`` checkpoints after every epoch (atomically) and resumes from the last checkpoint, so an
interrupted run ends with the same weights as an uninterrupted one: the data order and the
augmentations are functions of ``(seed, epoch, index)`` only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CausalWSSSError, ConfigError
from .runtime import DistInfo, autocast, get_dist

LossFn = Callable[[nn.Module, dict], torch.Tensor]


def poly_lambda(max_step: int, power: float) -> Callable[[int], float]:
    """Poly schedule factor ``(1 - step / max_step) ** power`` (IRNet, DeepLab)."""
    max_step = max(1, int(max_step))
    return lambda step: max(0.0, 1.0 - min(step, max_step) / max_step) ** power


def build_optimizer(param_groups: list[dict], *, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD or AdamW over ``param_groups`` (each may carry its own ``lr``).

    With ``name="sgd"`` and ``momentum=1e-4`` this reproduces IRNet's PolyOptimizer, which
    passes the weight decay positionally into SGD's momentum slot (method.md 7.5): the paper
    preset keeps that quirk on purpose, the others use ordinary momentum.
    """
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)

    raise ConfigError(f"unknown optimizer '{name}'; expected 'sgd' or 'adamw'")


class OptimizerChain(torch.optim.Optimizer):
    """Several optimisers stepped as one, so that one set of parameter groups can use another
    algorithm than the rest (CONTA's W1, W2 and w_M under AdamW while the network keeps SGD).

    ``param_groups`` lists every group (a learning-rate scheduler drives them all), and
    ``state_dict`` / ``load_state_dict`` carry each optimiser's state, so checkpoints resume.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:  # noqa: D107
        # torch.optim.Optimizer.__init__ is not called: the groups belong to the members
        self.optimizers = list(optimizers)
        self.defaults: dict = {}

    @property
    def param_groups(self) -> list[dict]:  # type: ignore[override]
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:  # type: ignore[override]
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:  # type: ignore[override]
        return {"chain": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        saved = state_dict.get("chain") if isinstance(state_dict, dict) else None
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise CausalWSSSError("the checkpoint's optimiser state was written by another "
                                  f"optimiser set-up (expected {len(self.optimizers)} chained "
                                  "optimisers); delete the checkpoint to restart the stage")
        for o, sd in zip(self.optimizers, saved):
            o.load_state_dict(sd)

    def __repr__(self) -> str:
        return "OptimizerChain(" + ", ".join(type(o).__name__ for o in self.optimizers) + ")"


def split_optimizer(param_groups: list[dict], *, name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9, special: str = "context",
                    special_name: str = "same", special_momentum: float = 0.9
                    ) -> torch.optim.Optimizer:
    """:func:`build_optimizer` over ``param_groups``, except that the group named ``special``
    gets its own algorithm ``special_name`` (``same`` = one optimiser for every group).

    ``special_name="sgd"`` uses ordinary momentum ``special_momentum`` (the paper's 0.9).
    """
    if special_name == "same" or not any(g.get("name") == special for g in param_groups):
        return build_optimizer(param_groups, name=name, lr=lr, weight_decay=weight_decay,
                               momentum=momentum)
    main = [g for g in param_groups if g.get("name") != special]
    extra = [g for g in param_groups if g.get("name") == special]
    return OptimizerChain([
        build_optimizer(main, name=name, lr=lr, weight_decay=weight_decay, momentum=momentum),
        build_optimizer(extra, name=special_name, lr=extra[0]["lr"], weight_decay=weight_decay,
                        momentum=special_momentum)])


@dataclass
class TrainState:
    """What callbacks see: progress counters and the latest losses."""

    epoch: int = 0
    step: int = 0
    max_step: int = 0
    loss: float = math.nan
    epoch_loss: float = math.nan
    lr: float = 0.0
    history: list[dict] = field(default_factory=list)


class Callback(Protocol):
    """Any object with some of ``on_step(state)``, ``on_history(state)`` (before the epoch's
    checkpoint: may add keys to ``state.history[-1]``), ``on_epoch_end(state)``."""


class LossHistory:
    """Keeps every step's loss (for plotting training curves in notebooks)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []

    def on_step(self, state: TrainState) -> None:
        self.steps.append(state.step)
        self.losses.append(state.loss)


class LogEpochs:
    """Logs one line per epoch to a ``logging.Logger``."""

    def __init__(self, logger: Any, name: str = "train") -> None:
        self.logger, self.name = logger, name

    def on_epoch_end(self, state: TrainState) -> None:
        self.logger.info("%s epoch %d: loss %.4f lr %.3g (step %d/%d)", self.name, state.epoch + 1,
                         state.epoch_loss, state.lr, state.step, state.max_step)


def _emit(callbacks: Iterable[Any], event: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(state)


def make_loader(dataset: Dataset, *, batch_size: int, seed: int, shuffle: bool = True,
                num_workers: int = 0, drop_last: bool = True, dist_info: DistInfo | None = None,
                collate_fn: Any = None, pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, sharded by rank under DDP."""
    info = dist_info or get_dist()
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=shuffle, seed=seed, drop_last=drop_last and info.distributed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last and len(dataset) // info.world_size >= batch_size,
                      collate_fn=collate_fn, pin_memory=pin_memory,
                      persistent_workers=False)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the sampler and the dataset's transform which epoch starts."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    transform = getattr(loader.dataset, "transform", None)
    if hasattr(transform, "set_epoch"):
        transform.set_epoch(epoch)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
                    loss_fn: LossFn, scheduler: Any = None, device: torch.device,
                    amp: bool = True, state: TrainState | None = None,
                    callbacks: Iterable[Any] = (), progress: bool = True,
                    desc: str = "train") -> TrainState:
    """One pass over ``loader``; returns the updated :class:`TrainState` (mean loss in ``epoch_loss``)."""
    from tqdm.auto import tqdm

    state = state or TrainState()
    model.train()
    total, count = 0.0, 0
    # the bar counts batches and is never handed the loader (see runtime.progress_bar)
    bar = tqdm(total=len(loader), desc=f"{desc} {state.epoch + 1}", disable=not progress,
               leave=False)
    for batch in loader:
        with autocast(device, amp):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.step += 1
        state.loss = float(loss.detach())
        if not math.isfinite(state.loss):
            raise CausalWSSSError(
                f"{desc}: the loss is {state.loss} at step {state.step} (lr "
                f"{optimizer.param_groups[0]['lr']:.3g}); lower the learning rate, or check the "
                "weights: with weights=none, frozen batch-norm statistics (cam.freeze_bn=true, and "
                "DeepLab-v2 always) leave the activations unnormalised")
        state.lr = optimizer.param_groups[0]["lr"]
        total += state.loss
        count += 1
        bar.update(1)
        bar.set_postfix(loss=f"{state.loss:.4f}")
        _emit(callbacks, "on_step", state)
    bar.close()
    state.epoch_loss = total / max(count, 1)
    return state


def fit(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
        epochs: int, loss_fn: LossFn, device: torch.device, scheduler: Any = None,
        checkpoint_path: str | Path | None = None, config: dict | None = None, amp: bool = True,
        callbacks: Iterable[Any] = (), progress: bool = True, desc: str = "train",
        dist_info: DistInfo | None = None) -> TrainState:
    """Train for ``epochs`` epochs, checkpointing after each and resuming from ``checkpoint_path``.

    Under DDP pass the wrapped model; only rank 0 writes the checkpoint, every rank reads it.
    """
    info = dist_info or get_dist()
    callbacks = list(callbacks)
    state = TrainState(max_step=epochs * len(loader))
    start_epoch = 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        saved = load_checkpoint(checkpoint_path, model=model, optimizer=optimizer,
                                scheduler=scheduler, map_location=device)
        start_epoch = saved["epoch"]
        state.step = saved["step"]
        state.history = list(saved.get("extra", {}).get("history", []))
    for epoch in range(start_epoch, epochs):
        state.epoch = epoch
        set_epoch(loader, epoch)
        t0 = time.perf_counter()
        train_one_epoch(model, loader, optimizer, loss_fn=loss_fn, scheduler=scheduler,
                        device=device, amp=amp, state=state, callbacks=callbacks,
                        progress=progress and info.is_main, desc=desc)
        state.history.append({"epoch": epoch + 1, "loss": state.epoch_loss, "lr": state.lr,
                              "seconds": time.perf_counter() - t0})
        # on_history: a callback may add figures to this epoch's history entry, which the
        # checkpoint then keeps; on_epoch_end runs once the epoch is safely on disk
        _emit(callbacks, "on_history", state)
        if checkpoint_path is not None and info.is_main:
            save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, scheduler=scheduler,
                            epoch=epoch + 1, step=state.step, config=config,
                            extra={"history": state.history})
        _emit(callbacks, "on_epoch_end", state)
    return state
