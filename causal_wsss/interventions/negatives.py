"""``context.intervention=context_negatives``: show the network what context alone looks like, as
W-OoD (Lee et al., CVPR 2022) does with background images; and its diagnostic
``oracle_context_negatives``.

Stage ``negative_bank`` collects square crops (side ``negatives.crop`` x the image's short side)
that lie wholly on round t - 1's predicted background: no pixel of the crop is predicted as a
class or left unsure (255) in its pseudo-mask, nor, with ``negatives.margin`` > 0, within that
fraction of the image's long side of such a pixel. At most ``negatives.per_image`` crops per
training image, at positions drawn with a seed of their own among those that qualify. During
round t's CAM training they are added to the training images as images with no label (an
all-zero target of the multi-label loss), enough of them that about ``negatives.share`` of every
batch is context alone (crops are reused when there are too few). The CAM network is the
round-0 one; the epoch is longer by share / (1 - share).

With ``negatives.folder`` set, the bank is instead the user's own photographs of the contexts
without any of the data set's classes (W-OoD trains on such a curated background set): no
ground truth of the training images is read, but the folder is a second, stronger kind of weak
label ("none of these classes here") that the user vouches for.

``oracle_context_negatives`` reads the synthetic generator instead: its context-only images
(each context drawn without objects, seeds apart from the data set's), standing for a user's
own set of background photographs. It is a diagnostic (it reads the generator's record, which a
method cannot), named and flagged as an oracle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data.scenes import SPEC, draw_scene
from ..data.synthetic import load_meta
from ..errors import ConfigError, DataError
from ..runtime import progress_bar, stage_seed
from ..stages.models import initial_cam_model
from ..stages.spec import StageSpec
from .bank import CropBank, read_pseudo_mask
from .base import Intervened, Intervention, InterventionRound

BANK_FILE = "negative_bank/bank.npz"
ORACLE_BANK_FILE = "oracle_negative_bank/bank.npz"


def _box_any(bad: np.ndarray, radius: int) -> np.ndarray:
    """``bad`` dilated by a square of half-side ``radius`` (Chebyshev distance <= radius)."""
    if radius <= 0:
        return bad
    H, W = bad.shape
    c = np.pad(bad.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(H) - radius, 0, H)
    y1 = np.clip(np.arange(H) + radius + 1, 0, H)
    x0 = np.clip(np.arange(W) - radius, 0, W)
    x1 = np.clip(np.arange(W) + radius + 1, 0, W)
    return (c[y1][:, x1] - c[y0][:, x1] - c[y1][:, x0] + c[y0][:, x0]) > 0


def background_windows(mask: np.ndarray, side: int, margin: int = 0) -> np.ndarray:
    """``(n, 2)`` top-left corners ``(y, x)`` of every ``side`` x ``side`` window of ``mask`` whose
    pixels are all 0 (predicted background; 255 = unsure does not count as background) and, with
    ``margin`` > 0, whose pixels all lie more than ``margin`` pixels (Chebyshev distance) from
    any pixel that is not 0."""
    H, W = mask.shape
    if side > min(H, W) or side < 1:
        return np.zeros((0, 2), np.int64)
    bad = np.pad(_box_any(mask != 0, margin).astype(np.int64),
                 ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = bad[side:, side:] - bad[:-side, side:] - bad[side:, :-side] + bad[:-side, :-side]
    return np.argwhere(sums == 0)  # (n, 2): corners whose window holds no foreground


def choose_crops(train_ds, prev_dir: Path, *, crop: float, per_image: int, seed: int,
                 margin: float = 0.0, progress: bool = False) -> list[tuple[int, int, int, int]]:
    """The bank's crops as ``(image index, y, x, side)``: at most ``per_image`` windows of side
    ``crop`` x the short side lying wholly on round t - 1's predicted background (and, with
    ``margin`` > 0, more than ``margin`` x the long side from anything else), at positions
    drawn with a seed of their own (reads the pseudo-masks only)."""
    chosen: list[tuple[int, int, int, int]] = []
    for i in progress_bar(range(len(train_ds)), desc="context crops", disable=not progress,
                          leave=False):
        mask = read_pseudo_mask(prev_dir, train_ds.names[i], train_ds.num_classes)
        side = max(1, round(crop * min(mask.shape)))
        corners = background_windows(mask, side, round(margin * max(mask.shape)))
        if not len(corners):
            continue
        rng = np.random.default_rng([stage_seed(seed, "negatives"), i])
        picks = corners[rng.choice(len(corners), size=min(per_image, len(corners)),
                                   replace=False)]
        chosen += [(i, int(y), int(x), side) for y, x in picks]
    return chosen


def build_negative_bank(train_ds, prev_dir: Path, out_path: Path, *, crop: float,
                        per_image: int, seed: int, margin: float = 0.0,
                        progress: bool = False) -> dict:
    """Stage ``negative_bank`` from round t - 1's pseudo-masks (module docstring)."""
    chosen = choose_crops(train_ds, prev_dir, crop=crop, per_image=per_image, seed=seed,
                          margin=margin, progress=progress)
    crops: list[tuple[np.ndarray, np.ndarray, int]] = []
    images: dict[int, np.ndarray] = {}
    for i, y, x, side in chosen:
        if i not in images:
            images = {i: train_ds.load_image(i)}  # crops come image by image
        rgb = images[i][y:y + side, x:x + side]
        crops.append((rgb, np.ones(rgb.shape[:2], bool), 0))
    bank = CropBank.from_crops(crops)
    bank.save(out_path)
    return {"crops": len(bank), "images_with_crops": len({c[0] for c in chosen}),
            "images": len(train_ds), "source": "pseudo-masks of the previous round"}


def audit_negative_bank(train_ds, prev_dir: Path, *, crop: float, per_image: int,
                        seed: int, margin: float = 0.0) -> dict:
    """What the bank of :func:`build_negative_bank` holds, measured against the **ground truth**
    (an audit that explains a round, never an input to one): per context, how many training
    images there are, how many give a crop, how many crops, and how many crops hold a pixel of
    a ground-truth object (and of which class). Needs masks and, for the contexts, a synthetic
    set (``train_ds.contexts``); without contexts every image counts under ``"all"``."""
    if not getattr(train_ds, "has_masks", False):
        raise ConfigError("the negatives' audit reads the ground-truth masks; this data set has "
                          "none")
    chosen = choose_crops(train_ds, prev_dir, crop=crop, per_image=per_image, seed=seed,
                          margin=margin)
    names = tuple(getattr(train_ds, "context_names", ("all",)))
    ctx = np.asarray(getattr(train_ds, "contexts", np.zeros(len(train_ds), np.int64)))
    classes = list(train_ds.classes)
    rows = {c: {"images": 0, "images_with_crops": 0, "crops": 0, "crops_with_object": 0,
                "object_pixels": 0.0, "by_class": {}} for c in names}
    for i in range(len(train_ds)):
        rows[names[int(ctx[i])]]["images"] += 1
    gt: dict[int, np.ndarray] = {}
    for i, y, x, side in chosen:
        row = rows[names[int(ctx[i])]]
        if i not in gt:
            gt = {i: train_ds.load_mask(i)}
            row["images_with_crops"] += 1
        window = gt[i][y:y + side, x:x + side]
        objects = (window > 0) & (window != 255)
        row["crops"] += 1
        row["object_pixels"] += float(objects.mean())
        if objects.any():
            row["crops_with_object"] += 1
            for k in np.unique(window[objects]):
                row["by_class"][classes[int(k)]] = row["by_class"].get(classes[int(k)], 0) + 1
    for row in rows.values():
        row["object_pixels"] = row["object_pixels"] / row["crops"] if row["crops"] else None
    return rows


FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
FOLDER_MAX_LONG = 512


def folder_images(folder: str | Path) -> list[Path]:
    """The images of ``negatives.folder``, sorted by name; ConfigError naming the folder when it
    is not one or holds no image."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"negatives.folder={str(folder)!r} is not a folder (it should hold "
                          "photographs of the contexts without any of the data set's classes)")
    files = sorted(f for f in folder.iterdir()
                   if f.is_file() and f.suffix.lower() in FOLDER_SUFFIXES)
    if not files:
        raise ConfigError(f"negatives.folder={str(folder)!r} holds no image "
                          f"({', '.join(FOLDER_SUFFIXES)})")
    return files


def check(cfg) -> None:
    """Before any work: a ``negatives.folder`` that is not a folder of images is refused."""
    if cfg.negatives.folder:
        folder_images(cfg.negatives.folder)


def build_folder_bank(folder: str | Path, out_path: Path, *, progress: bool = False) -> dict:
    """``negatives.folder``: the bank is every image of ``folder`` (sorted by name; PNG, JPEG,
    BMP, WebP), converted to RGB, its long side capped at 512 px (bicubic), each a context-only
    sample: the user's own photographs of the contexts without the data set's classes, W-OoD's
    setting. ConfigError naming the folder when it is not one or holds no image; DataError
    naming a file that cannot be read."""
    files = folder_images(folder)
    crops = []
    for f in progress_bar(files, desc="background photographs", disable=not progress,
                          leave=False):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                scale = FOLDER_MAX_LONG / max(im.size)
                if scale < 1:
                    im = im.resize((max(1, round(im.width * scale)),
                                    max(1, round(im.height * scale))), Image.BICUBIC)
                rgb = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"negatives.folder: cannot read {f} ({exc})") from exc
        crops.append((rgb, np.ones(rgb.shape[:2], bool), 0))
    bank = CropBank.from_crops(crops)
    bank.save(out_path)
    return {"crops": len(bank), "images": len(files), "source": f"folder {Path(folder)}"}


def build_oracle_bank(train_ds, out_path: Path, *, count: int, seed: int,
                      progress: bool = False) -> dict:
    """The generator's context-only images (``count`` of them, every context in turn) at the
    training set's image size, drawn from seeds apart from the data set's (an oracle)."""
    root = getattr(train_ds, "voc_root", None)
    if root is None or not (Path(root) / "synthetic.json").is_file():
        raise ConfigError("context.intervention=oracle_context_negatives needs a synthetic data "
                          "set (it draws the generator's context-only images); this data set has "
                          "no synthetic.json")
    size = int(load_meta(root)["params"]["size"])
    crops = []
    for j in progress_bar(range(count), desc="oracle contexts", disable=not progress,
                          leave=False):
        context = SPEC.contexts[j % len(SPEC.contexts)]
        scene = draw_scene(np.random.default_rng([stage_seed(seed, "oracle_contexts"), j]), 1.0,
                           size, bg_rng=np.random.default_rng([stage_seed(seed, "oracle_bg"), j]),
                           context=context, draw_objects=False)
        crops.append((scene.image, np.ones(scene.image.shape[:2], bool), 0))
    bank = CropBank.from_crops(crops)
    bank.save(out_path)
    return {"crops": len(bank), "images": len(train_ds), "source": "generator (oracle)"}


_CORE_KEYS = ("image", "labels", "name", "index", "mask")


def _neutral(value):
    """A stand-in of the same type for a key a data set adds to its samples (e.g. the synthetic
    set's ``context``), so that batches of images and context crops collate: -1, "", NaN, 0."""
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -1
    if isinstance(value, float):
        return float("nan")
    return type(value)()


class NegativesView(torch.utils.data.Dataset):
    """``base`` plus ``extra`` context-only samples cycled from ``bank``: image = the crop,
    labels all zero, mask all background (when ``base`` has masks), index ``len(base) + j``; any
    other key of ``base``'s samples gets a neutral value of its type."""

    def __init__(self, base, bank: CropBank, extra: int) -> None:
        if len(bank) == 0:
            extra = 0
        self.base, self.bank, self.extra = base, bank, int(extra)
        self.has_masks = bool(getattr(base, "has_masks", False))
        self.names = [*base.names, *(f"context_{j:06d}" for j in range(self.extra))]
        template = base[0] if len(base) and self.extra else {}
        self.other_keys = {k: _neutral(v) for k, v in template.items() if k not in _CORE_KEYS}

    def __len__(self) -> int:
        return len(self.base) + self.extra

    def __getitem__(self, i: int) -> dict:
        n = len(self.base)
        if i < n:
            return self.base[i]
        j = i - n
        rgb, _ = self.bank.crop(j % len(self.bank))
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # (3, h, w)
        labels = torch.zeros(self.base.num_classes - 1, dtype=torch.float32)
        sample = {**self.other_keys, "image": image, "labels": labels, "name": self.names[i],
                  "index": i}
        if self.has_masks:
            sample["mask"] = torch.zeros(image.shape[-2:], dtype=torch.int64)
        return sample


def extra_samples(n_images: int, share: float) -> int:
    """How many context samples make them ``share`` of the enlarged training set."""
    return round(share / (1.0 - share) * n_images)


def _prepare(round_: InterventionRound, *, oracle: bool) -> Intervened:
    cfg, q = round_.cfg, round_.cfg.negatives
    train_ds = round_.sets["train"]
    path = round_.round_dir / (ORACLE_BANK_FILE if oracle else BANK_FILE)
    extra = extra_samples(len(train_ds), q.share)
    if oracle:
        record = round_.timed("oracle_negative_bank", lambda: build_oracle_bank(
            train_ds, path, count=max(1, extra), seed=cfg.seed, progress=round_.progress))
    elif q.folder:
        record = round_.timed("negative_bank", lambda: build_folder_bank(
            q.folder, path, progress=round_.progress))
    else:
        record = round_.timed("negative_bank", lambda: build_negative_bank(
            train_ds, round_.prev_dir, path, crop=q.crop, per_image=q.per_image, seed=cfg.seed,
            margin=q.margin, progress=round_.progress))
    bank = CropBank.load(path)
    cam_net = initial_cam_model(cfg, train_ds.num_classes - 1)
    view = NegativesView(train_ds, bank, extra)
    if len(bank) == 0:
        round_.logger.warning("no context-only crop found in the previous round's pseudo-masks: "
                              "round %d trains on the images alone", round_.r)
    return Intervened(model=cam_net, cam_net=cam_net, train_set=view,
                      summary={"negative_crops": record["crops"], "negative_samples": view.extra})


def prepare(round_: InterventionRound) -> Intervened:
    """Stage ``negative_bank`` from the pseudo-masks, then the images plus context alone."""
    return _prepare(round_, oracle=False)


def prepare_oracle(round_: InterventionRound) -> Intervened:
    """Stage ``negative_bank`` from the generator (oracle), then the images plus context alone."""
    return _prepare(round_, oracle=True)


INTERVENTION = Intervention(
    name="context_negatives",
    description="context alone as unlabelled images (W-OoD): crops of the last pseudo-masks' "
                "background",
    prepare=prepare,
    stages=(StageSpec("negative_bank", files=((BANK_FILE, "zip"),), inputs=((-1, "pseudo"),)),),
    check=check,
)

ORACLE = Intervention(
    name="oracle_context_negatives",
    description="diagnostic (reads the generator): its context-only images as unlabelled images",
    prepare=prepare_oracle,
    stages=(StageSpec("oracle_negative_bank", files=((ORACLE_BANK_FILE, "zip"),), inputs=()),),
    oracle=True,
)
