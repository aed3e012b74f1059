"""What a CAM method declares (:class:`CamMethod`) and what it is given (:class:`CamRound`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..stages.spec import StageSpec


@dataclass(frozen=True)
class CamRound:
    """What a method's ``train`` gets for one round.

    ``model``: the stage-0 network as the round built it (a CamNet, wrapped in
    :class:`~causal_wsss.models.context.ContextCamNet` from round 1 on); ``cam_net``: the CamNet
    itself; ``timed(stage, fn)``: runs ``fn`` unless the stage's record exists, records it;
    ``rows_by_name``: image name -> row of the context queries (CONTA rounds);
    ``train_set``: the training images the round's CAM stages read (``sets["train"]``, or the
    view an intervention made of it: pasted objects, context-only negatives);
    ``pre_transform``: a per-sample, epoch-aware transform of the intervention applied before
    the training crop (None: none); ``context_fn(model)``: the intervention's ``make_cams`` hook
    for a trained network (CONTA's per-image context maps), None when the network takes none.
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
    train_set: Any = None
    pre_transform: Any = None
    context_fn: Callable[[Any], Callable | None] | None = None

    def __post_init__(self) -> None:
        if self.train_set is None:
            object.__setattr__(self, "train_set", self.sets["train"])


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
            replace(s, method=self.name) for s in self.stages))
