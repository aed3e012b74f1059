"""do(context) figures: what de-confounding is supposed to change, measured on interventional twins.

The synthetic generator can draw every validation image's objects, unchanged, on each context
(``causal-wsss synth --twins``, split ``twins``; :func:`causal_wsss.data.synthetic.generate_synthetic`).
On real photographs nobody can do that; here, for any trained CAM network:

- **context effect** on each class's score: the class's logit on its preferred context minus
  its mean logit on the other contexts, the objects held fixed, averaged over the twin groups
  that contain the class (with the sample SD over groups). A network that uses only the object
  scores 0; a confounded one scores > 0.
- **CAM mIoU in context vs out of context**: the twins' CAMs, split by whether the image's
  context is its anchor class's preferred one, each scored at the same threshold (the round's
  best threshold on the evaluation split) over the data set's classes.
- **false positives on context alone**: on the context-only images of a class's preferred
  context, the share with ``sigmoid(logit) > 0.5`` for that class (and the same on the other
  contexts, for comparison).
- **partner effect**: an anchor's logit with its partner minus without it (a horse with and
  without its rider), same image otherwise.

Logits come from one full-image forward pass (no crop, no flip); CAMs from the configured
multi-scale + flip inference (:func:`causal_wsss.cam.make_cams`). For a CONTA network (a
:class:`~causal_wsss.models.context.ContextCamNet`) every image gets its own context map from its
query, as in training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cam import CamCache, pil_bicubic_resize, work_size_for
from .data.transforms import normalize
from .errors import DataError
from .metrics import ConfusionMatrix, cams_to_labels
from .models.fold import fold_batchnorm
from .runtime import autocast, eval_mode, inference_context, speedups_enabled, unwrap_parallel

TWIN_KINDS = ("twin", "no_partner", "context_only")


def twin_index(meta: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Sidecar entries of the twins split, by name; raises DataError for a name it lacks."""
    entries = {img["name"]: img for img in meta["images"] if img.get("kind") in TWIN_KINDS}
    missing = [n for n in names if n not in entries]
    if missing:
        raise DataError(f"twin image '{missing[0]}' (and {len(missing) - 1} more) is not in the "
                        "synthetic sidecar; expected a set written with `causal-wsss synth --twins`")
    return {n: entries[n] for n in names}


def twin_logits(model: nn.Module, dataset, *, device: torch.device, amp: bool = True,
                context_fn: Callable[[list[dict]], torch.Tensor] | None = None,
                batch_size: int = 16, meta: dict[str, Any] | None = None,
                work_long: int = 0) -> np.ndarray:
    """``(N, K)`` float32 logits of every image of ``dataset`` (one full-image pass each).

    ``model`` is a CamNet; ``context_fn(items)`` gives the CONTA context maps (b, 1, g, g) of
    a group of items, or None for a network without a context channel. Images of one size are
    batched together (the twins of one validation image share its size); the sizes come from
    the synthetic sidecar ``meta`` when given, else from decoding each image. ``work_long`` > 0
    rescales each image to that long side first (PIL bicubic, as the CAMs:
    :func:`causal_wsss.cam.work_size_for`). With the speed-ups
    (:func:`causal_wsss.runtime.speedups_enabled`) the network runs with its BatchNorms folded.
    """

    net = unwrap_parallel(model).to(device)
    if speedups_enabled():
        net = fold_batchnorm(net)
    by_size: dict[tuple[int, int], list[int]] = {}
    sizes = {img["name"]: (img["height"], img["width"]) for img in meta["images"]} if meta else {}
    for i, name in enumerate(dataset.names):
        size = sizes.get(name) or dataset.load_image(i).shape[:2]
        by_size.setdefault(tuple(size), []).append(i)
    out = np.zeros((len(dataset), net.num_classes), dtype=np.float32)
    with inference_context(), eval_mode(net):
        for size, indices in by_size.items():
            work = work_size_for(size, work_long)
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                items = [dataset[i] for i in chunk]
                images = torch.stack([it["image"] for it in items]).to(device)
                if work != tuple(images.shape[-2:]):
                    images = pil_bicubic_resize(images, work)
                images = normalize(images)
                context = context_fn(items).to(device) if context_fn is not None else None
                with autocast(device, amp):
                    logits = net(images, context=context).logits
                out[chunk] = logits.float().cpu().numpy()
    return out


def context_effects(logits: np.ndarray, names: Sequence[str], meta: dict[str, Any],
                    classes: Sequence[str]) -> dict[str, Any]:
    """The score figures (context effect, false positives, partner effect) from twin logits.

    logits: ``(N, K)`` for ``names`` (the twins split), K = the data set's foreground classes
    in ``classes[1:]`` order (``classes`` includes background at 0).
    """
    entries = twin_index(meta, names)
    row = {n: i for i, n in enumerate(names)}
    preferred = meta["preferred_context"]
    contexts = meta["contexts"]
    fg = list(classes[1:])
    groups: dict[str, dict[str, int]] = {}
    for name, img in entries.items():
        if img["kind"] == "twin":
            groups.setdefault(img["twin_of"], {})[img["context"]] = row[name]

    only = {c: [row[n] for n, img in entries.items()
                if img["kind"] == "context_only" and img["context"] == c] for c in contexts}
    per_class: dict[str, dict[str, Any]] = {}
    for cls in meta["classes"]:
        k = fg.index(cls)
        pref = preferred[cls]
        effects = []
        for members in groups.values():
            some = next(iter(members.values()))
            present = {o["class"] for o in entries[names[some]]["objects"]}
            if cls not in present or pref not in members or len(members) < 2:
                continue
            on_pref = logits[members[pref], k]
            others = [logits[r, k] for c, r in members.items() if c != pref]
            effects.append(float(on_pref - np.mean(others)))
        prob = {c: 1 / (1 + np.exp(-logits[rows, k])) if rows else np.array([])
                for c, rows in only.items()}
        fp_pref = _mean(prob[pref] > 0.5)
        fp_other = _mean(np.concatenate([prob[c] > 0.5 for c in contexts if c != pref]))
        per_class[cls] = {
            "context_effect": _mean(effects), "context_effect_sd": _sd(effects),
            "groups": len(effects),
            "fp_rate_preferred": fp_pref, "fp_rate_other": fp_other,
            "prob_preferred": _mean(prob[pref]), "context_only_images": len(only[pref]),
        }
    partner: dict[str, dict[str, Any]] = {}
    for anchor, _ in meta["pairs"]:
        k = fg.index(anchor)
        diffs = []
        for name, img in entries.items():
            if img["kind"] != "no_partner" or img["anchor"] != anchor:
                continue
            with_partner = groups.get(img["twin_of"], {}).get(img["context"])
            if with_partner is not None:
                diffs.append(float(logits[with_partner, k] - logits[row[name], k]))
        partner[anchor] = {"partner_effect": _mean(diffs), "partner_effect_sd": _sd(diffs),
                           "images": len(diffs)}
    return _json_safe({
        "context_effect": _nanmean([v["context_effect"] for v in per_class.values()]),
        "fp_rate_preferred": _nanmean([v["fp_rate_preferred"] for v in per_class.values()]),
        "fp_rate_other": _nanmean([v["fp_rate_other"] for v in per_class.values()]),
        "partner_effect": _nanmean([v["partner_effect"] for v in partner.values()]),
        "per_class": per_class, "partner": partner,
    })


def twin_cam_miou(dataset, cache_dir: Path, meta: dict[str, Any], threshold: float, *,
                  device: torch.device) -> dict[str, Any]:
    """CAM mIoU (percent, the data set's classes) of the twins in and out of their anchor's context.

    Only ``kind == "twin"`` images are scored, at the background ``threshold`` (a value, not a
    sweep: the round's best threshold on the evaluation split).
    """

    entries = twin_index(meta, dataset.names)
    used = getattr(dataset, "used_classes", None)
    confs = {key: ConfusionMatrix(dataset.num_classes, device, classes=used)
             for key in ("in_context", "out_of_context")}
    cache = CamCache(cache_dir)
    for i, name in enumerate(dataset.names):
        img = entries[name]
        if img["kind"] != "twin":
            continue
        mask = dataset.load_mask(i)
        cams = cache.get(name).dense(dataset.num_classes - 1)[None].to(device).float()
        pred = cams_to_labels(cams, threshold)  # (1, H, W)
        key = "in_context" if img["preferred"] else "out_of_context"
        confs[key].update(pred, torch.from_numpy(mask.astype(np.int64))[None].to(device))
    out = {f"cam_miou_{k}": 100 * c.miou() for k, c in confs.items()}
    out["cam_miou_context_gap"] = out["cam_miou_in_context"] - out["cam_miou_out_of_context"]
    out["twin_threshold"] = threshold
    return out


def _mean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else math.nan


def _sd(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def _nanmean(values) -> float:
    values = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return float(values.mean()) if values.size else math.nan


def _json_safe(value: Any) -> Any:
    """NaN (a figure with no images to average) -> None, recursively, so report.json stays JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
