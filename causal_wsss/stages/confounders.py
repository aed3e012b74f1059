"""Stage ``confounders`` (CONTA rounds >= 1): the confounder dictionary C, its prior P(c) and the
query grids, built from the previous round's segmentation predictions (method.md 4), and the
round's :class:`~causal_wsss.models.context.ContextAdjustment` read back from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ExperimentConfig
from ..confounders import (
    ConfounderDictionary,
    build_confounder_dictionary,
    ground_truth_grids,
    load_label_grids,
    load_query_grids,
    queries_from_grids,
    save_label_grids,
)
from ..errors import ConfigError, DataError
from ..models.context import ContextAdjustment


def stage_confounders(cfg: ExperimentConfig, prev_dir: Path, round_dir: Path,
                      query_names: list[str], train_labels: np.ndarray, classes, *,
                      progress: bool, datasets: list | None = None) -> dict:
    """Build C, P(c) and the query grids from the previous round's predictions.

    With ``context.source=gt`` (an upper bound, not weak supervision: the paper's ablation of
    the mask source) the ground-truth masks of ``datasets`` replace the predictions.
    """
    if cfg.context.source == "gt":
        grids = ground_truth_grids(datasets or [], query_names, cfg.context.grid,
                                   progress=progress)
    else:
        grids = load_label_grids(prev_dir / "pred", query_names, cfg.context.grid,
                                 progress=progress)
    n_train = train_labels.shape[0]
    dictionary = build_confounder_dictionary(grids[:n_train], train_labels, classes=classes,
                                             prior=cfg.context.prior,
                                             agree_with_labels=cfg.context.agree_with_labels)
    if not dictionary.valid.any():

        where = "the ground-truth masks" if cfg.context.source == "gt" else \
            f"the segmentation predictions in {prev_dir / 'pred'}"
        raise DataError(
            f"the confounder dictionary is empty: {where} show no foreground class "
            + ("that agrees with the image labels " if cfg.context.agree_with_labels else "")
            + "in any training image, so Eq. 3 has nothing to attend to. The previous round's "
            "segmentation model is too weak (train it longer: seg.iterations)"
            + (", or set context.agree_with_labels=false" if cfg.context.agree_with_labels else ""))
    folder = round_dir / "confounders"
    dictionary.save(folder)
    save_label_grids(folder / "queries.npy", grids)
    return {"classes_with_masks": int(dictionary.valid.sum()),
            "prior_max": float(dictionary.prior.max()), "grid": cfg.context.grid}


def check_context_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise ConfigError naming the key if a ``context.*`` value is not one the code knows."""
    c = cfg.context
    for key, value, allowed in (("prior", c.prior, ("freq", "uniform")),
                                ("query", c.query, ("binary", "onehot")),
                                ("m_scale", c.m_scale, ("identity", "max")),
                                ("attention", c.attention, ("learned", "uniform")),
                                ("source", c.source, ("seg", "gt")),
                                ("adjustment", c.adjustment, ("nwgm", "exact")),
                                ("optimizer", c.optimizer, ("same", "sgd", "adamw")),
                                ("fuse_at", c.fuse_at, ("layer4",))):
        if value not in allowed:
            raise ConfigError(f"config key 'context.{key}' is {value!r}; expected one of: "
                              + ", ".join(allowed)
                              + (" (layer3 and input are not implemented: with IRNet's frozen "
                                 "stem an input-level channel would never be trained, method.md "
                                 "section 3)" if key == "fuse_at" else ""))
    if c.grid < 1:
        raise ConfigError(f"config key 'context.grid' is {c.grid}; expected a positive grid size")
    return cfg


def load_context_module(cfg: ExperimentConfig, round_dir: Path, num_classes: int):
    """The round's ContextAdjustment, with its dictionary, prior and query buffer."""
    folder = round_dir / "confounders"
    dictionary = ConfounderDictionary.load(folder)
    grids = load_query_grids(folder / "queries.npy", num_labels=num_classes, grid=dictionary.grid)
    queries = queries_from_grids(grids, mode=cfg.context.query, num_classes=num_classes)
    c = check_context_config(cfg).context
    attention = "exact" if c.adjustment == "exact" else c.attention
    return ContextAdjustment(dictionary.masks, dictionary.prior, queries=queries,
                             valid=dictionary.valid, m_scale=c.m_scale,
                             l2_normalize=c.l2_normalize, attention=attention)
