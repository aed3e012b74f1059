"""The data sets of a round: train / eval / val (and the do(context) twins) of the config, which of
them get CAMs and context queries, and the check that the scored splits have masks."""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..config import ExperimentConfig
from ..data import build_dataset
from ..errors import ConfigError, DataError


def load_datasets(cfg: ExperimentConfig) -> dict[str, Any]:
    """The train / eval / val data sets of the config (train_aug falls back to train)."""
    d = cfg.data
    if not d.root:
        raise ConfigError("config key 'data.root' is empty; pass --root or set CAUSAL_WSSS_DATA")
    sets = {}
    try:
        sets["train"] = build_dataset(d.dataset, d.root, d.train_split, max_images=d.max_images)
    except DataError:
        if d.train_split != "train_aug":
            raise
        sets["train"] = build_dataset(d.dataset, d.root, "train", max_images=d.max_images)
    if sets["train"].split == d.eval_split:  # e.g. COCO: one read of the large JSON
        sets["eval"] = sets["train"]
    else:
        sets["eval"] = build_dataset(d.dataset, d.root, d.eval_split, max_images=d.max_images)
    sets["val"] = build_dataset(d.dataset, d.root, d.val_split, max_images=d.max_images)
    twins = _twins_dataset(cfg, sets["val"])
    if twins is not None:
        sets["twins"] = twins
    return sets


def _twins_dataset(cfg: ExperimentConfig, val_ds):
    """The do(context) twins split (``data.twins_split``) of a VOC-layout synthetic set written
    with ``causal-wsss synth --twins``, or None when the set has none (real VOC, COCO)."""
    split = cfg.data.twins_split
    voc_root = getattr(val_ds, "voc_root", None)
    if not split or cfg.data.dataset not in ("voc", "synthetic") or voc_root is None:
        return None
    if not (voc_root / "ImageSets" / "Segmentation" / f"{split}.txt").is_file() \
            or not (voc_root / "synthetic.json").is_file():
        return None
    return build_dataset(cfg.data.dataset, cfg.data.root, split)


def query_datasets(sets: dict) -> tuple[list, list]:
    """``(cam_sets, query_sets)``: the sets whose CAMs and pseudo-masks a round makes (train,
    plus eval when it has other images), and those that also get context maps and
    segmentation predictions (plus the twins, when present)."""
    train_names = set(sets["train"].names)
    extra_eval = any(n not in train_names for n in sets["eval"].names)
    cam_sets = [sets["train"]] + ([sets["eval"]] if extra_eval else [])
    return cam_sets, cam_sets + ([sets["twins"]] if "twins" in sets else [])


def names_of(datasets: list) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for ds in datasets:
        for n in ds.names:
            if n not in seen:
                seen.add(n)
                names.append(n)
    return names


def check_masks(cfg: ExperimentConfig, sets: dict) -> None:
    """Fail before any training when a split that is scored (or, with ``context.source=gt``,
    read for the confounders) has no ground-truth masks."""
    d = cfg.data
    needs = [("data.eval_split", d.eval_split, sets["eval"], "CAM and pseudo-mask evaluation"),
             ("data.val_split", d.val_split, sets["val"], "segmentation evaluation")]
    if cfg.rounds > 0 and cfg.context.source == "gt":
        needs.append(("data.train_split", sets["train"].split, sets["train"],
                      "context.source=gt (the confounders from the true masks)"))
    for key, split, ds, use in needs:
        if not ds.has_masks:
            raise ConfigError(f"config key '{key}' is {split!r}, a split without ground-truth "
                              f"masks; {use} needs them (choose a split with masks)")


def check_scales(cfg: ExperimentConfig, sets: dict) -> None:
    """Fail before any training when the smallest ``cam_infer.scales`` factor shrinks an image
    whose CAMs the round makes to nothing (read from the image headers, no decoding)."""
    smallest = min(cfg.cam_infer.scales)
    seen: set[int] = set()
    for ds in (sets[k] for k in ("train", "eval", "twins") if k in sets):
        if id(ds) in seen:
            continue
        seen.add(id(ds))
        for i in range(len(ds)):
            path = ds.image_path(i)
            try:
                with Image.open(path) as img:
                    w, h = img.size
            except (OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"cannot read image {path} ({exc}); expected a JPEG or PNG") \
                    from exc
            if round(min(w, h) * smallest) < 1:
                raise ConfigError(f"config key 'cam_infer.scales' holds {smallest:g}, which "
                                  f"shrinks {path} ({w}x{h}) to nothing; expected factors that "
                                  "keep at least one pixel of every image")
