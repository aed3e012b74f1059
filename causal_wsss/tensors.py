"""Tensor arguments of the public functions: a torch.Tensor as it is, a numpy array as a tensor,
anything else refused with one line naming the function and the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import DataError


def as_tensor(owner: str, name: str, value: Any) -> torch.Tensor:
    """``value`` itself if a tensor; a numpy array as a tensor (shared memory where it can be:
    ``torch.as_tensor``; flipped views are copied, torch refuses negative strides); DataError
    naming ``owner`` and ``name`` otherwise. O(1) for tensors."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if any(s < 0 for s in value.strides):
            value = value.copy()
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"{owner}: {name} is a numpy array of dtype {value.dtype}, which "
                            f"torch cannot hold; expected numbers") from None
    raise DataError(f"{owner}: {name} must be a torch.Tensor or a numpy array, got "
                    f"{type(value).__name__}")
