"""``context.intervention=paste``: do(context) by re-composition, as CDA (Su et al., ICCV 2021).

Stage ``paste_bank`` cuts an object bank from round t - 1's pseudo-masks: every training image
whose label holds exactly one class, and whose pseudo-mask predicts that class on 10-70% of its
pixels (``paste.min_fg``, ``paste.max_fg``), gives one object: the predicted mask dilated by
``paste.dilate`` px, cut to its bounding box, with the image's pixels under it. No ground truth
is read (only the image labels that weak supervision has anyway).

During round t's CAM training a share ``paste.share`` of the training samples (drawn per
sample and epoch) get one object of a class they do not contain, at a uniform position, its long
side a uniform ``paste.scale`` fraction of the host's short side; the label becomes the union.
Original and pasted images train together (the other samples are untouched). The pasted class
is uniform over the classes the host lacks, whatever the host's context: so a class lands on
the contexts of the images that lack it, close to the marginal distribution of contexts and
independent of the class, which is the intervention do(context) on that object. Pasting happens
on the full image, before the training crop and flip, so the object also gets the usual
augmentation; the CAM network is the round-0 one (same initial weights and data order).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import sample_generator
from ..runtime import progress_bar, stage_seed
from ..stages.models import initial_cam_model
from ..stages.spec import StageSpec
from .bank import CropBank, read_pseudo_mask
from .base import Intervened, Intervention, InterventionRound

BANK_FILE = "paste_bank/bank.npz"


def cut_object(image: np.ndarray, mask: np.ndarray, cls: int, *, dilate: int
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rgb (h, w, 3), alpha (h, w))``: the pixels of ``image`` where ``mask == cls``, dilated by
    ``dilate`` px (a square window), cut to their bounding box; None when the class is absent."""
    inside = torch.from_numpy(mask == cls)[None, None].float()  # (1, 1, H, W)
    if dilate > 0:
        inside = F.max_pool2d(inside, 2 * dilate + 1, stride=1, padding=dilate)
    alpha = inside[0, 0].numpy() > 0
    rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
    if rows.size == 0:
        return None
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return image[top:bottom, left:right].copy(), alpha[top:bottom, left:right].copy()


def build_paste_bank(train_ds, prev_dir: Path, out_path: Path, *, min_fg: float, max_fg: float,
                     dilate: int, progress: bool = False) -> dict:
    """Stage ``paste_bank``: the object bank of round t - 1's pseudo-masks (module docstring);
    returns the stage record (objects per class, the images considered)."""
    labels = train_ds.label_matrix()  # (N, K - 1) bool: image labels, weak supervision
    classes = train_ds.classes
    crops: list[tuple[np.ndarray, np.ndarray, int]] = []
    single = np.flatnonzero(labels.sum(1) == 1)
    rejected = {"too_small": 0, "too_large": 0}
    for i in progress_bar(single, desc="paste bank", disable=not progress, leave=False):
        cls = int(np.flatnonzero(labels[i])[0]) + 1
        mask = read_pseudo_mask(prev_dir, train_ds.names[i], len(classes))
        share = float((mask == cls).mean())
        if share < min_fg or share > max_fg:
            rejected["too_small" if share < min_fg else "too_large"] += 1
            continue
        cut = cut_object(train_ds.load_image(int(i)), mask, cls, dilate=dilate)
        if cut is not None:
            crops.append((*cut, cls))
    bank = CropBank.from_crops(crops)
    bank.save(out_path)
    counts = np.bincount(bank.classes, minlength=len(classes))
    return {"objects": len(bank), "single_class_images": int(single.size),
            "rejected": rejected,
            "objects_per_class": {classes[c]: int(counts[c]) for c in range(1, len(classes))}}


class PasteTransform:
    """Pastes one bank object onto a share of the samples (module docstring); epoch-aware.

    Randomness comes from :func:`~causal_wsss.data.transforms.sample_generator` ``(seed, index,
    epoch)`` with a seed of its own, so the same sample gets the same paste in a resumed run.
    """

    def __init__(self, bank: CropBank, *, share: float, scale: tuple[float, float], seed: int,
                 num_classes: int) -> None:
        self.bank, self.share, self.scale = bank, float(share), tuple(scale)
        self.seed = stage_seed(seed, "paste")
        self.by_class = {c: np.flatnonzero(bank.classes == c) for c in range(1, num_classes)}
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __call__(self, sample: dict) -> dict:
        g = sample_generator(self.seed, sample["index"], int(self._epoch))
        if float(torch.rand((), generator=g)) >= self.share:
            return sample
        labels = sample["labels"]  # (K - 1,) float
        absent = [c for c, idx in self.by_class.items() if idx.size and labels[c - 1] == 0]
        if not absent:
            return sample
        cls = absent[int(torch.randint(len(absent), (), generator=g))]
        k = int(self.by_class[cls][int(torch.randint(len(self.by_class[cls]), (), generator=g))])
        lo, hi = self.scale
        frac = lo + (hi - lo) * float(torch.rand((), generator=g))
        image = sample["image"]  # (3, H, W) uint8
        H, W = (int(v) for v in image.shape[-2:])
        rgb, alpha = self.bank.crop(k)
        h0, w0 = alpha.shape
        factor = min(frac * min(H, W) / max(h0, w0), H / h0, W / w0)  # fits inside the host
        h, w = max(1, round(h0 * factor)), max(1, round(w0 * factor))
        obj = F.interpolate(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), size=(h, w),
                            mode="bilinear", align_corners=False, antialias=True)[0]
        obj = obj.round().clamp(0, 255).to(torch.uint8)  # (3, h, w)
        keep = F.interpolate(torch.from_numpy(alpha)[None, None].float(), size=(h, w),
                             mode="nearest-exact")[0, 0] > 0  # (h, w)
        top = int(torch.randint(H - h + 1, (), generator=g))
        left = int(torch.randint(W - w + 1, (), generator=g))
        return paste_object(sample, obj, keep, top, left, cls)


def paste_object(sample: dict, obj: torch.Tensor, keep: torch.Tensor, top: int, left: int,
                 cls: int) -> dict:
    """``sample`` with ``obj`` (``uint8 (3, h, w)``) pasted where ``keep`` at ``(top, left)``: the
    object's pixels under its mask, the host's elsewhere; label = the union; a mask, if the
    sample has one, gets the class under the object."""
    h, w = keep.shape
    out = dict(sample)
    image = sample["image"].clone()
    window = image[:, top:top + h, left:left + w]
    image[:, top:top + h, left:left + w] = torch.where(keep[None], obj, window)
    out["image"] = image
    labels = sample["labels"].clone()
    labels[cls - 1] = 1.0
    out["labels"] = labels
    if "mask" in sample:
        mask = sample["mask"].clone()
        region = mask[top:top + h, left:left + w]
        mask[top:top + h, left:left + w] = torch.where(keep, torch.full_like(region, cls), region)
        out["mask"] = mask
    return out


def prepare(round_: InterventionRound) -> Intervened:
    """Stage ``paste_bank``, then round 0's network trained on original and pasted images."""
    cfg, p = round_.cfg, round_.cfg.paste
    train_ds = round_.sets["train"]
    path = round_.round_dir / BANK_FILE
    record = round_.timed("paste_bank", lambda: build_paste_bank(
        train_ds, round_.prev_dir, path, min_fg=p.min_fg, max_fg=p.max_fg, dilate=p.dilate,
        progress=round_.progress))
    bank = CropBank.load(path)
    if len(bank) == 0:  # the round then repeats round 0 (same seed, same images): say why
        logging.getLogger("causal_wsss").warning(
            "paste: no object passed the bank's rule (a single-class image whose pseudo-mask "
            "covers paste.min_fg..paste.max_fg of it): nothing is pasted this round")
    cam_net = initial_cam_model(cfg, train_ds.num_classes - 1)
    paste = PasteTransform(bank, share=p.share, scale=p.scale, seed=cfg.seed,
                           num_classes=train_ds.num_classes)
    return Intervened(model=cam_net, cam_net=cam_net, pre_transform=paste,
                      summary={"paste_objects": record["objects"]})


INTERVENTION = Intervention(
    name="paste",
    description="do(context) by re-composition (CDA): objects cut from the last pseudo-masks "
                "pasted onto images that lack their class",
    prepare=prepare,
    stages=(StageSpec("paste_bank", files=((BANK_FILE, "zip"),), inputs=((-1, "pseudo"),)),),
)
