"""``context.intervention=control_extra_steps``: the control of ``context_negatives`` for its
longer epoch (a control of ours, added after the pre-registration of docs/results.md section 7).

``context_negatives`` adds share / (1 - share) x N samples to every epoch, so its round 1 takes
that many more optimiser steps than round 0 (25% at the default share 0.2). This control adds
the same number of samples, but each is a repeat of a training image drawn at random (with a
seed of its own) with its own labels and its own augmentation (a new sample index): the same
number of steps, no new information. What ``context_negatives`` gains beyond this control is
what context alone adds.
"""

from __future__ import annotations

import numpy as np
import torch

from ..runtime import stage_seed
from ..stages.models import initial_cam_model
from .base import Intervened, Intervention, InterventionRound
from .negatives import extra_samples


class RepeatsView(torch.utils.data.Dataset):
    """``base`` plus ``extra`` repeats of its samples (``picks[j]`` for sample ``len(base) + j``),
    each with a new name and index, so that its augmentation is drawn anew."""

    def __init__(self, base, picks: np.ndarray) -> None:
        self.base, self.picks = base, np.asarray(picks, dtype=np.int64)
        self.extra = int(self.picks.size)
        self.names = [*base.names, *(f"repeat_{j:06d}" for j in range(self.extra))]

    def __len__(self) -> int:
        return len(self.base) + self.extra

    def __getitem__(self, i: int) -> dict:
        n = len(self.base)
        if i < n:
            return self.base[i]
        sample = self.base[int(self.picks[i - n])]
        return {**sample, "name": self.names[i], "index": i}


def repeat_picks(n_images: int, extra: int, seed: int) -> np.ndarray:
    """``extra`` training-image indices drawn uniformly with replacement (seeded)."""
    rng = np.random.default_rng(stage_seed(seed, "extra_steps"))
    return rng.integers(0, n_images, size=extra) if n_images else np.zeros(0, np.int64)


def prepare(round_: InterventionRound) -> Intervened:
    """Round 0's network on the training images plus as many repeats as ``context_negatives``
    would add context crops (``negatives.share``)."""
    cfg = round_.cfg
    train_ds = round_.sets["train"]
    extra = extra_samples(len(train_ds), cfg.negatives.share)
    view = RepeatsView(train_ds, repeat_picks(len(train_ds), extra, cfg.seed))
    cam_net = initial_cam_model(cfg, train_ds.num_classes - 1)
    return Intervened(model=cam_net, cam_net=cam_net, train_set=view,
                      summary={"repeat_samples": view.extra})


INTERVENTION = Intervention(
    name="control_extra_steps",
    description="control of context_negatives: as many extra samples, each a repeat of a "
                "training image with its labels (the longer epoch without the context)",
    prepare=prepare,
    stages=(),
)
