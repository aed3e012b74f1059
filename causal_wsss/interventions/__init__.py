"""Interventions by name (``context.intervention``): what rounds t >= 1 change to remove the
context's influence, acting on what round t - 1 produced (its pseudo-masks, predictions and CAM
network), never on the ground truth.

Round 0 is the baseline and is never intervened on. An intervention is an :class:`Intervention`:
its own stages (run before ``cam_train``, cached and resumable like every stage) and
``prepare(round_)``, which returns the network ``cam_train`` trains, the training images it reads
and the context hook of the round's CAMs (:class:`Intervened`). Everything after ``cam_train``
is shared.

Adding one is one module in this package, one line in :data:`INTERVENTIONS` and its tests
(docs/architecture.md). Diagnostics that read the generator's record are named ``oracle_*``
and flagged in every report.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..stages.spec import StageSpec
from . import appearance, conta, extra_steps, negatives, paste
from .base import Intervened, Intervention, InterventionRound

__all__ = ["INTERVENTIONS", "Intervened", "Intervention", "InterventionRound", "get_intervention",
           "intervention_names", "intervention_stages"]

INTERVENTIONS: dict[str, Intervention] = {
    "conta": conta.INTERVENTION,
    "paste": paste.INTERVENTION,
    "context_negatives": negatives.INTERVENTION,
    "oracle_context_negatives": negatives.ORACLE,
    "conta_appearance": appearance.INTERVENTION,
    "oracle_conta_appearance": appearance.ORACLE,
    "control_extra_steps": extra_steps.INTERVENTION,
}
"""Registered interventions; a new one is one module plus one line here."""


def intervention_names() -> tuple[str, ...]:
    """Names accepted by ``context.intervention``."""
    return tuple(INTERVENTIONS)


def get_intervention(name: str) -> Intervention:
    """The intervention ``name``; ConfigError naming ``context.intervention`` when unknown."""
    if name not in INTERVENTIONS:
        raise ConfigError(f"config key 'context.intervention' is {name!r}; expected one of: "
                          + ", ".join(INTERVENTIONS))
    return INTERVENTIONS[name]


def intervention_stages() -> dict[str, StageSpec]:
    """Every registered intervention's own stages, in registry order (names are unique)."""
    out: dict[str, StageSpec] = {}
    for intervention in INTERVENTIONS.values():
        for spec in intervention.stages:
            if spec.name in out:
                raise RuntimeError(f"stage {spec.name!r} is declared by two interventions")
            out[spec.name] = spec
    return out
