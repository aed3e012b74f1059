"""What a CAM method declares (:class:`CamMethod`) and what it is given (:class:`CamRound`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    """One stage of a method after ``cam_train``.

    ``files``: ``(path in round_k/, kind)`` pairs (kinds of :func:`causal_wsss.runfolder.file_problem`:
    zip, npy, json, png); ``inputs``: the stages it is computed from, as ``(round offset,
    stage)``; ``method``: the ``cam.method`` it belongs to (set by :class:`CamMethod`).
    """

    name: str
    files: tuple[tuple[str, str], ...] = ()
    inputs: tuple[tuple[int, str], ...] = ((0, "cam_train"),)
    method: str = ""
    makes_cam_net: bool = True  # the round's CAMs (and IRN) are computed from its network
    enabled: Callable[[Any], bool] | None = None  # cfg -> whether it runs (None: always)


@dataclass(frozen=True)
class CamRound:
    """What a method's ``train`` gets for one round.

    ``model``: the stage-0 network as the round built it (a CamNet, wrapped in
    :class:`~causal_wsss.models.context.ContextCamNet` from round 1 on); ``cam_net``: the CamNet
    itself; ``timed(stage, fn)``: runs ``fn`` unless the stage's record exists, records it;
    ``rows_by_name``: image name -> row of the context queries (CONTA rounds).
    """

    cfg: Any
    r: int
    round_dir: Path
    model: Any
    cam_net: Any
    sets: dict
    timed: Callable[[str, Callable[[], dict]], dict]
    device: Any
    dist_info: Any
    progress: bool
    logger: Any
    rows_by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class CamStages:
    """What a method's ``train`` returns: the ``cam_train`` record (stage 0), the trained network
    the round's CAMs come from (on the device, weights loaded) and figures for the report entry."""

    record: dict
    model: Any
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CamMethod:
    """A CAM method: its name, a one-line description, its own stages and its training."""

    name: str
    description: str
    train: Callable[[CamRound], CamStages]
    stages: tuple[StageSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(
            StageSpec(s.name, s.files, s.inputs, self.name, s.makes_cam_net, s.enabled) for s in self.stages))
