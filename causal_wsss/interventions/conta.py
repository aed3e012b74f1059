"""``context.intervention=conta``: CONTA's backdoor adjustment as the paper specifies it (Eq. 3).

Stage ``confounders`` builds the dictionary C (per-class average masks of the previous round's
segmentation predictions), its prior P(c) and every image's query
(:mod:`causal_wsss.stages.confounders`); the round's CAM network gets the context channel m of
:class:`~causal_wsss.models.context.ContextAdjustment` at its head, trained with it, and its CAMs
are made with each image's own m.
"""

from __future__ import annotations

from ..models.context import ContextCamNet
from ..runtime import seed_everything, stage_seed
from ..stages.cams import context_fn_for
from ..stages.confounders import load_context_module, stage_confounders
from ..stages.models import initial_cam_model
from ..stages.spec import StageSpec
from .base import Intervened, Intervention, InterventionRound


def prepare(round_: InterventionRound) -> Intervened:
    """Stage ``confounders``, then the round's starting network with its context channel (the
    same trunk as round 0's: :func:`~causal_wsss.stages.models.initial_cam_model`)."""
    cfg, r = round_.cfg, round_.r
    train_ds = round_.sets["train"]
    classes = train_ds.classes
    round_.timed("confounders", lambda: stage_confounders(
        cfg, round_.prev_dir, round_.round_dir, round_.query_names, train_ds.label_matrix(),
        classes, progress=round_.progress, datasets=round_.query_sets))
    cam_net = initial_cam_model(cfg, len(classes) - 1, with_context=True)
    seed_everything(stage_seed(cfg.seed, f"context_{r}"))
    cam_net.new_modules["context"] = load_context_module(cfg, round_.round_dir, len(classes))
    if cfg.context.adjustment == "exact":
        cam_net.set_context_mixture(cam_net.new_modules["context"].mixture_weights())
    rows = round_.rows_by_name
    return Intervened(model=ContextCamNet(cam_net), cam_net=cam_net,
                      context_fn=lambda model: context_fn_for(model, rows))


INTERVENTION = Intervention(
    name="conta",
    description="CONTA's Eq. 3: a context channel m from the confounder dictionary at the head",
    prepare=prepare,
    stages=(StageSpec("confounders",
                      files=(("confounders/dictionary.npy", "npy"),
                             ("confounders/prior.npy", "npy"),
                             ("confounders/meta.json", "json"),
                             ("confounders/queries.npy", "npy")),
                      inputs=((-1, "seg_predict"),)),),
)
