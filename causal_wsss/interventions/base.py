"""What an intervention declares (:class:`Intervention`), what it is given for a round
(:class:`InterventionRound`) and what it hands the round's CAM training (:class:`Intervened`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..stages.spec import StageSpec


@dataclass(frozen=True)
class InterventionRound:
    """What an intervention's ``prepare`` gets in round ``r`` >= 1.

    ``prev_dir``: round ``r - 1``'s folder, the only source an intervention may read (its
    pseudo-masks ``pseudo/``, its segmentation predictions ``pred/``, its networks), never the
    ground truth; ``timed(stage, fn)`` runs and records one of the intervention's own stages
    (skipped when its record exists); ``query_sets`` / ``query_names`` / ``rows_by_name``: the
    images that get context queries (train first), CONTA's rows.
    """

    cfg: Any
    r: int
    round_dir: Path
    prev_dir: Path
    sets: dict
    query_sets: list
    query_names: list[str]
    rows_by_name: dict[str, int]
    timed: Callable[[str, Callable[[], dict]], dict]
    device: Any
    dist_info: Any
    progress: bool
    logger: Any


@dataclass
class Intervened:
    """What the round's CAM training uses: ``model`` (the network ``cam_train`` trains, e.g. a
    :class:`~causal_wsss.models.context.ContextCamNet`) and ``cam_net`` (the CamNet inside it);
    ``train_set`` (the training images, or a view that changes them; None = ``sets["train"]``);
    ``pre_transform`` (a per-sample, epoch-aware transform before the training crop);
    ``context_fn(trained model)`` (the ``make_cams`` hook, None when the network takes no
    context); ``summary``: figures for the round's report entry."""

    model: Any
    cam_net: Any
    train_set: Any = None
    pre_transform: Any = None
    context_fn: Callable[[Any], Callable | None] | None = None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Intervention:
    """An intervention of rounds t >= 1: its name, a one-line description, its own stages (run
    before ``cam_train``, in the order given), ``prepare`` and an optional ``check`` of the config,
    run before any work (a ConfigError naming the key). ``oracle=True`` marks a diagnostic
    that reads the data generator's record (never a method: its name starts with ``oracle_``)."""

    name: str
    description: str
    prepare: Callable[[InterventionRound], Intervened]
    stages: tuple[StageSpec, ...] = ()
    oracle: bool = False
    check: Callable[[Any], None] | None = None  # (cfg) -> None: refuse a bad setting up front

    def __post_init__(self) -> None:
        if self.oracle != self.name.startswith("oracle_"):
            raise ValueError(f"intervention {self.name!r}: diagnostics that read the generator's "
                             "record are named oracle_*, and only they")
        object.__setattr__(self, "stages", tuple(
            replace(s, method=self.name, makes_cam_net=False) for s in self.stages))
