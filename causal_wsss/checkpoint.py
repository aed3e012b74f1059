"""Checkpoints: written atomically, loaded with ``weights_only=True``, resumable by epoch/step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import CausalWSSSError
from .io import torch_save


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: Any = None,
                    scheduler: Any = None, epoch: int = 0, step: int = 0,
                    config: dict | None = None, extra: dict | None = None) -> None:
    """Write model, optimizer, scheduler, progress counters and the resolved config atomically.

    A wrapped model (DDP) is unwrapped, so checkpoints load into a plain module.
    """
    module = getattr(model, "module", model)
    state = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": config or {},
        "extra": extra or {},
        "rng": torch.get_rng_state(),
    }
    torch_save(path, state)


def load_checkpoint(path: str | Path, *, model: torch.nn.Module | None = None, optimizer: Any = None,
                    scheduler: Any = None, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Uses ``torch.load(weights_only=True)``. Returns the raw dict (epoch, step, config, extra).
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not found"
        raise CausalWSSSError(f"checkpoint {path} is {what}; expected a file written by "
                              "causal_wsss.checkpoint.save_checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a broken file
        raise CausalWSSSError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                              "in a run folder, rerun: the run redoes the stage that wrote it and "
                              "the stages computed from it (elsewhere, delete it)") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CausalWSSSError(f"checkpoint {path} has no 'model' entry; expected a file written "
                              "by causal_wsss.checkpoint.save_checkpoint")
    if model is not None:
        getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("rng") is not None:
        torch.set_rng_state(state["rng"].cpu())  # map_location may have moved it to the GPU
    return state
