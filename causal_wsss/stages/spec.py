"""What a stage added by a CAM method or an intervention declares: its files and its inputs, so the
run folder checks, resumes and redoes it like any other stage (:mod:`causal_wsss.stage_table`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    """One stage a CAM method or an intervention adds to a round.

    ``files``: ``(path in round_k/, kind)`` pairs (kinds of :func:`causal_wsss.runfolder.file_problem`:
    zip, npy, json, png); ``inputs``: the stages it is computed from, as ``(round offset,
    stage)``; ``method``: the ``cam.method`` or ``context.intervention`` it belongs to (set by
    :class:`~causal_wsss.methods.CamMethod` / :class:`~causal_wsss.interventions.Intervention`).
    """

    name: str
    files: tuple[tuple[str, str], ...] = ()
    inputs: tuple[tuple[int, str], ...] = ((0, "cam_train"),)
    method: str = ""
    makes_cam_net: bool = True  # (methods) the round's CAMs (and IRN) are computed from its network
    enabled: Callable[[Any], bool] | None = None  # cfg -> whether it runs (None: always)
