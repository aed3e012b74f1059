"""Reading a user's weights file: a state dict saved with ``torch.save``, checked on load."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WeightsError


def load_state_dict_file(path: str | Path, *, option: str = "seg.weights") -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``); unwraps ``model``/``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{option}={path}: no such file; expected a torchvision state dict "
                           "(.pth) of the network, 'imagenet' or 'none'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means an unusable file
        raise WeightsError(f"{option}={path} is not a readable state dict "
                           f"({type(exc).__name__}: {exc})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{option}={path} holds a {type(state).__name__}, expected a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
