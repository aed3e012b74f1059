"""CAM methods by name (``cam.method``): the network that makes a round's CAMs and how it trains.

A method owns its network and its training stages; everything downstream (multi-scale CAMs,
their evaluation, pseudo-masks, segmentation, the confounder dictionary, the rounds) is shared
and works for any method. A method is a :class:`CamMethod`:

- ``stages``: its stages after ``cam_train`` (IRNet's CAM training, every method's stage 0),
  each with the files it leaves in ``round_k/`` and the stages it is computed from, so that the
  run folder can check, resume and redo them like any other stage;
- ``train(round_)``: runs ``cam_train`` and its own stages through ``round_.timed`` (cached,
  resumable) and returns the trained network whose CAMs the round uses (the interface of
  :class:`~causal_wsss.models.cam_net.CamNet`: ``forward(images, context)``, ``cam_maps``,
  ``classifier``), plus figures for the round's report entry.

Adding a method is one module in this package, one line in :data:`METHODS` and its tests
(docs/architecture.md).
"""

from __future__ import annotations

from ..errors import ConfigError
from . import esol, irn
from .base import CamMethod, CamRound, CamStages, StageSpec

__all__ = ["METHODS", "CamMethod", "CamRound", "CamStages", "StageSpec", "get_method",
           "method_names", "method_stages"]

METHODS: dict[str, CamMethod] = {
    "irn": irn.METHOD,
    "esol": esol.METHOD,
}
"""Registered CAM methods; a new method is one module plus one line here."""


def method_names() -> tuple[str, ...]:
    """Names accepted by ``cam.method``."""
    return tuple(METHODS)


def get_method(name: str) -> CamMethod:
    """The method ``name``; ConfigError naming ``cam.method`` when unknown."""
    if name not in METHODS:
        raise ConfigError(f"config key 'cam.method' is {name!r}; expected one of: "
                          + ", ".join(METHODS))
    return METHODS[name]


def method_stages() -> dict[str, StageSpec]:
    """Every registered method's own stages, in registry order (names are unique)."""
    out: dict[str, StageSpec] = {}
    for method in METHODS.values():
        for spec in method.stages:
            if spec.name in out:
                raise RuntimeError(f"stage {spec.name!r} is declared by two CAM methods")
            out[spec.name] = spec
    return out
