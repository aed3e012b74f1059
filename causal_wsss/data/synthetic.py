"""The confounded synthetic benchmark: VOC/COCO-layout images whose classes prefer a context and a partner.

Each image is drawn from a small structural causal model whose confounder is the context
(the background) and, for two classes, a co-occurring partner object:

1. an *anchor* class ``a`` is drawn uniformly from :attr:`SyntheticSpec.classes`;
2. the context is ``preferred(a)`` with probability ``rho``, otherwise one of the other
   contexts uniformly, so ``P(context = preferred(a) | anchor = a) = rho`` and at
   ``rho = 1 / len(contexts)`` the context is independent of the class;
3. an anchor with a partner (a horse and its rider, a boat and a person in it) gets the
   partner, touching it, with probability ``rho``: ``P(partner placed | anchor = a) = rho``;
4. with probability :attr:`SyntheticSpec.extra_prob` one extra object of any class except the
   anchor's partner is added away from the anchor (1-3 objects in all).

The objects are vector silhouettes with class-specific parts and textures (horse = body, legs,
neck, head; person = head, torso, limbs; boat = hull and sails; aeroplane = fuselage, wings,
tail; bird = body, wing, head, beak; car = body, cabin, wheels), so a small CNN trained from
scratch can tell them apart by shape, while at ``rho = 0.9`` a classifier can also lean on the
context and on the partner: the leak CONTA (method.md section 1) is meant to remove.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..constants import COCO_CATEGORIES, IGNORE_INDEX, VOC_CLASSES, voc_palette
from ..errors import ConfigError, DataError
from ..io import check_folder_target, make_folder, write_bytes, write_json, write_text
from .base import Sample, Transform
from .voc import VOCSegmentation, find_voc_root

VERSION = 2
"""Generator version, stored in the sidecar; bump it whenever the drawn bytes change.

2: the background has a random stream of its own (do(context) twins); interventional sets; twins.
"""

SPLITS = ("train", "val")
TWIN_SPLIT = "twins"

META_FILE = "synthetic.json"
JPEG_QUALITY = 90
_MAX_IMAGES = 999_999  # image ids are split_id * 10**6 + i + 1

VOC_TO_COCO: dict[str, str] = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "diningtable": "dining table", "dog": "dog", "horse": "horse", "motorbike": "motorcycle",
    "person": "person", "pottedplant": "potted plant", "sheep": "sheep", "sofa": "couch",
    "train": "train", "tvmonitor": "tv",
}
"""VOC class name -> COCO category name (the two vocabularies differ for six classes)."""


@dataclass(frozen=True)
class SyntheticSpec:
    """The benchmark's classes, contexts, preferred contexts and co-occurring pairs.

    ``preferred`` maps each class to its context; ``pairs`` lists ``(anchor, partner)``; the
    strength of both confounders is the ``rho`` argument of :func:`generate_synthetic`.
    """

    classes: tuple[str, ...] = ("aeroplane", "bird", "boat", "car", "horse", "person")
    contexts: tuple[str, ...] = ("sky", "water", "grass", "road", "indoor")
    preferred: tuple[tuple[str, str], ...] = (
        ("aeroplane", "sky"), ("bird", "sky"), ("boat", "water"), ("car", "road"),
        ("horse", "grass"), ("person", "indoor"),
    )
    pairs: tuple[tuple[str, str], ...] = (("horse", "person"), ("boat", "person"))
    extra_prob: float = 0.35

    def preferred_context(self, cls: str) -> str:
        """The context that ``cls`` appears on with probability ``rho``."""
        return dict(self.preferred)[cls]

    def partner(self, cls: str) -> str | None:
        """The class placed touching an anchor ``cls`` with probability ``rho`` (or None)."""
        return dict(self.pairs).get(cls)


SPEC = SyntheticSpec()


# ---------------------------------------------------------------------------------------------
# Public API


def generate_synthetic(out: str | os.PathLike, n_train: int = 400, n_val: int = 100,
                       rho: float = 0.9, seed: int = 0, coco: bool = False, size: int = 150,
                       progress: bool = False, interventional: bool = False,
                       twins: int | bool = 0) -> Path:
    """Write the confounded benchmark under ``out`` and return the VOC root ``out/VOCdevkit/VOC2012``.

    Layout (PASCAL VOC 2012): ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
    PNG of VOC class indices with a 255 band 2-3 px wide on object borders),
    ``Annotations/<id>.xml``, ``ImageSets/Segmentation/{train,val,trainval}.txt`` and the sidecar
    ``synthetic.json`` (see :func:`load_meta`). With ``coco=True`` also the COCO 2014 layout
    ``out/coco/{train2014,val2014}/COCO_<split>2014_<id:012d>.jpg`` (same bytes) and
    ``out/coco/annotations/instances_{train,val}2014.json`` (80 categories, one annotation per
    visible instance as uncompressed RLE, ``iscrowd=0``).

    ``interventional=True`` draws from the interventional distribution instead (``rho`` is then
    ignored): the context is uniform over all contexts whatever the class, and each pair anchor
    gets its partner with the probability :func:`independent_pair_prob` that makes the partner
    class as frequent with the anchor as without it. Training on it is the upper bound the
    backdoor adjustment P(Y | do(X)) = sum_c P(Y | X, c) P(c) tries to emulate.

    ``twins=N`` adds the split ``twins`` (VOC layout only, list ``twins.txt``) for the first
    ``N`` validation images (``True``: all of them): for each, the same objects (same shape,
    place, colour, texture and scale) drawn on each context (``twin_<i>_<context>``; the one on
    the image's own context is the validation image itself, byte for byte), the same scene
    without its partner where one was placed (``twin_<i>_nopartner``), and each context alone,
    no object (``ctx_<i>_<context>``). Sidecar entries of this split carry ``kind`` (``twin`` |
    ``no_partner`` | ``context_only``) and ``twin_of`` (the validation name).

    Image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])`` (layout)
    and ``default_rng([seed, s, i, 1])`` (background), so the same arguments give the same bytes
    and the training images do not depend on ``n_val``. The long side is about ``size`` px
    (width ``0.8-1.07 size``, height ``0.67-1.0 size``). If ``out`` already holds a complete set
    made with the same arguments and generator version, nothing is written.
    """
    params = _check_params(n_train, n_val, rho, seed, coco, size, interventional, twins)
    if not str(out).strip():  # Path("") is the current folder
        raise DataError("synthetic output folder is empty; expected the path of a folder to "
                        "write the data set into (e.g. data/synth)")
    out = check_folder_target(out, "synthetic output", DataError)
    voc_root = out / "VOCdevkit" / "VOC2012"
    if _is_complete(out, voc_root, params):
        return voc_root
    make_folder(out, "synthetic output", DataError)
    # A stale sidecar would vouch for a half-overwritten set if this run is interrupted.
    (voc_root / META_FILE).unlink(missing_ok=True)

    palette = voc_palette().ravel().tolist()
    images_meta: list[dict[str, Any]] = []
    lists: dict[str, list[str]] = {split: [] for split in (*SPLITS, TWIN_SPLIT)}
    coco_images: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    coco_anns: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    draw_rho = 1.0 / len(SPEC.contexts) if interventional else rho
    pair_prob = independent_pair_prob() if interventional else None

    def write(name: str, split: str, image_id: int, scene: _Scene, **extra: Any) -> bytes:
        jpeg = _encode(Image.fromarray(scene.image), "JPEG", quality=JPEG_QUALITY, subsampling=0)
        label_img = Image.fromarray(scene.label, mode="P")
        label_img.putpalette(palette)
        write_bytes(voc_root / "JPEGImages" / f"{name}.jpg", jpeg)
        write_bytes(voc_root / "SegmentationClass" / f"{name}.png", _encode(label_img, "PNG"))
        write_text(voc_root / "Annotations" / f"{name}.xml", _voc_xml(name, scene))
        lists[split].append(name)
        images_meta.append({**_image_meta(name, split, image_id, scene), **extra})
        return jpeg

    counts = {"train": n_train, "val": n_val}
    jobs = [(split_id, split, i) for split_id, split in enumerate(SPLITS)
            for i in range(counts[split])]
    for split_id, split, i in tqdm(jobs, desc="synthetic images", disable=not progress):
        image_id = split_id * 10**6 + i + 1
        name = f"{split}_{i + 1:06d}"
        scene = _draw_scene(np.random.default_rng([seed, split_id, i]), draw_rho, size,
                            bg_rng=np.random.default_rng([seed, split_id, i, 1]),
                            pair_prob=pair_prob)
        jpeg = write(name, split, image_id, scene)
        if coco:
            file_name = f"COCO_{split}2014_{image_id:012d}.jpg"
            write_bytes(out / "coco" / f"{split}2014" / file_name, jpeg)
            coco_images[split].append({"id": image_id, "file_name": file_name,
                                       "height": scene.label.shape[0],
                                       "width": scene.label.shape[1]})
            coco_anns[split].extend(_coco_annotations(scene, image_id))
    if twins:
        for job, (name, twin_of, scene, kind) in enumerate(tqdm(
                _twin_scenes(seed, params["twins"], draw_rho, size, pair_prob), total=None,
                desc="twins", disable=not progress)):
            write(name, TWIN_SPLIT, 2 * 10**6 + job + 1, scene, kind=kind, twin_of=twin_of)

    seg_dir = voc_root / "ImageSets" / "Segmentation"
    for split in SPLITS:
        write_text(seg_dir / f"{split}.txt", "".join(f"{n}\n" for n in lists[split]))
    write_text(seg_dir / "trainval.txt", "".join(f"{n}\n" for s in SPLITS for n in lists[s]))
    if twins:
        write_text(seg_dir / f"{TWIN_SPLIT}.txt", "".join(f"{n}\n" for n in lists[TWIN_SPLIT]))
    if coco:
        categories = [{"id": cid, "name": cname, "supercategory": ""}
                      for cid, cname in COCO_CATEGORIES]
        for split in SPLITS:
            for k, ann in enumerate(coco_anns[split]):
                ann["id"] = (SPLITS.index(split) * 10**7) + k + 1
            write_json(out / "coco" / "annotations" / f"instances_{split}2014.json",
                       {"info": {"description": "causal-wsss synthetic benchmark",
                                 "version": str(VERSION)},
                        "images": coco_images[split], "annotations": coco_anns[split],
                        "categories": categories}, indent=None)
    write_json(voc_root / META_FILE, _meta(params, images_meta, pair_prob))
    return voc_root


def _twin_scenes(seed: int, n_twins: int, rho: float, size: int,
                 pair_prob: dict[str, float] | None):
    """Yield ``(name, twin_of, scene, kind)`` for the twins split (see :func:`generate_synthetic`)."""
    contexts = SPEC.contexts
    for i in range(n_twins):
        val_name = f"val_{i + 1:06d}"

        def draw(bg_seed: list[int], i: int = i, **kwargs: Any) -> _Scene:
            return _draw_scene(np.random.default_rng([seed, 1, i]), rho, size,
                               bg_rng=np.random.default_rng(bg_seed), pair_prob=pair_prob,
                               **kwargs)
        own = draw([seed, 1, i, 1])
        for k, context in enumerate(contexts):
            scene = own if context == own.context else draw([seed, 1, i, 2, k], context=context)
            yield f"twin_{i + 1:06d}_{context}", val_name, scene, "twin"
        if own.pair:
            yield (f"twin_{i + 1:06d}_nopartner", val_name,
                   draw([seed, 1, i, 1], drop_partner=True), "no_partner")
        for k, context in enumerate(contexts):
            yield (f"ctx_{i + 1:06d}_{context}", val_name,
                   draw([seed, 1, i, 3, k], context=context, draw_objects=False), "context_only")


def independent_pair_prob(spec: SyntheticSpec | None = None) -> dict[str, float]:
    """P(partner placed | anchor) for each pair anchor that makes the partner independent of it.

    In the interventional set the partner class (a person) must be as frequent in images with
    the anchor (a horse) as in images without it: ``P(person | horse) = P(person | no horse)``.
    Both sides are computed exactly from the sampling scheme (anchor uniform; partner placed with
    probability q_a; one extra with probability ``extra_prob``, uniform over the classes other
    than the anchor's partner; extras that cannot be placed, a few percent, are ignored) and the
    q_a solved by bisection, each given the others, until they agree to 1e-9.
    """
    spec = spec or SPEC
    anchors = [a for a, _ in spec.pairs]
    q = dict.fromkeys(anchors, 0.5)

    def gap(anchor: str, value: float) -> float:
        trial = {**q, anchor: value}
        partner = spec.partner(anchor)
        with_a = without_a = p_with = p_without = 0.0
        for cls in spec.classes:
            p_anchor = 1.0 / len(spec.classes)
            mate = spec.partner(cls)
            pair_options = [(trial[cls], True), (1 - trial[cls], False)] if mate else [(1.0, False)]
            allowed = [c for c in spec.classes if c != mate]
            extra_options = [(1 - spec.extra_prob, None)] + [
                (spec.extra_prob / len(allowed), c) for c in allowed]
            for p_pair, placed in pair_options:
                for p_extra, extra in extra_options:
                    prob = p_anchor * p_pair * p_extra
                    present = {cls} | ({mate} if placed else set()) | ({extra} if extra else set())
                    if anchor in present:
                        with_a += prob
                        p_with += prob * (partner in present)
                    else:
                        without_a += prob
                        p_without += prob * (partner in present)
        return p_with / with_a - p_without / without_a

    for _ in range(50):
        previous = dict(q)
        for anchor in anchors:
            lo, hi = 0.0, 1.0
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if gap(anchor, mid) < 0 else (lo, mid)
            q[anchor] = (lo + hi) / 2
        if max(abs(q[a] - previous[a]) for a in anchors) < 1e-9:
            break
    return q


def load_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read the sidecar ``synthetic.json`` written by :func:`generate_synthetic`.

    ``root`` is the output folder, its ``VOCdevkit/`` or ``VOCdevkit/VOC2012/``. The dict holds
    ``version``, ``params`` (the generator arguments), ``classes``, ``contexts``,
    ``preferred_context`` (class -> context), ``pairs`` (``[anchor, partner]``) and ``images``:
    one entry per image with ``name``, ``split``, ``id``, ``width``, ``height``, ``context``,
    ``preferred`` (whether the context is the anchor's preferred one), ``anchor``, ``pair``
    (whether the partner was placed; None when the anchor has none) and ``objects``
    (``class``, ``role`` in anchor/partner/extra, ``bbox`` = VOC 1-based inclusive
    ``[xmin, ymin, xmax, ymax]``, ``area`` = visible pixels).
    """
    path = find_voc_root(root) / META_FILE
    if not path.is_file():
        raise DataError(f"no synthetic sidecar at {path}; expected a data set written by "
                        "generate_synthetic (causal-wsss synth)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read synthetic sidecar {path}: {exc}; expected JSON") from exc
    missing = [k for k in ("version", "params", "classes", "contexts", "preferred_context",
                           "pairs", "images") if k not in meta]
    if missing:
        raise DataError(f"synthetic sidecar {path} lacks key(s) {', '.join(missing)}; "
                        "regenerate it with generate_synthetic")
    return meta


def context_map(meta: dict[str, Any], names: Iterable[str]) -> np.ndarray:
    """Context index (into ``meta["contexts"]``) of each image in ``names``: ``int64 (N,)``."""
    index = {c: k for k, c in enumerate(meta["contexts"])}
    by_name = {img["name"]: index[img["context"]] for img in meta["images"]}
    names = list(names)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(f"image '{unknown[0]}' (and {len(unknown) - 1} more) not in the "
                        "synthetic sidecar; expected names from the same generated set")
    return np.array([by_name[n] for n in names], dtype=np.int64)


@dataclass(frozen=True)
class Cooccurrence:
    """Empirical confounding of a generated split (see :func:`measured_cooccurrence`).

    Per class: ``preferred_given_anchor`` = P(context = preferred | anchor = class), the
    parameter check (about ``rho``); ``preferred_given_present`` = P(context = preferred |
    class in image), what a classifier sees. Per pair anchor: ``partner_given_anchor`` =
    P(partner placed | anchor), about ``rho``; ``partner_given_present`` / ``partner_given_absent``
    = P(partner in image | anchor class in / not in image), whose ratio is the co-occurrence
    lift. ``n_anchor`` / ``n_present``: image counts. NaN where a count is zero.
    """

    split: str | None
    preferred_given_anchor: dict[str, float]
    preferred_given_present: dict[str, float]
    partner_given_anchor: dict[str, float]
    partner_given_present: dict[str, float]
    partner_given_absent: dict[str, float]
    n_anchor: dict[str, int]
    n_present: dict[str, int]


def measured_cooccurrence(meta: dict[str, Any], split: str | None = None) -> Cooccurrence:
    """Measure the context and partner confounding of ``split`` (None = all images) from the sidecar."""
    images = [img for img in meta["images"] if split is None or img["split"] == split]
    if not images:
        raise DataError(f"no images of split '{split}' in the synthetic sidecar; expected one "
                        f"of: {', '.join(sorted({img['split'] for img in meta['images']}))}")
    preferred = meta["preferred_context"]
    present = [{o["class"] for o in img["objects"]} for img in images]

    def rate(hits: list[bool]) -> float:
        return float(np.mean(hits)) if hits else math.nan

    pref_anchor, pref_present, n_anchor, n_present = {}, {}, {}, {}
    for cls in meta["classes"]:
        anchored = [img["context"] == preferred[cls] for img in images if img["anchor"] == cls]
        having = [img["context"] == preferred[cls] for img, p in zip(images, present) if cls in p]
        pref_anchor[cls], pref_present[cls] = rate(anchored), rate(having)
        n_anchor[cls], n_present[cls] = len(anchored), len(having)
    part_anchor, part_present, part_absent = {}, {}, {}
    for anchor, partner in meta["pairs"]:
        part_anchor[anchor] = rate([bool(img["pair"]) for img in images
                                    if img["anchor"] == anchor])
        part_present[anchor] = rate([partner in p for p in present if anchor in p])
        part_absent[anchor] = rate([partner in p for p in present if anchor not in p])
    return Cooccurrence(split, pref_anchor, pref_present, part_anchor, part_present, part_absent,
                        n_anchor, n_present)


class SyntheticVOC(VOCSegmentation):
    """A generated benchmark read as VOC, plus each image's context.

    Adds ``meta`` (:func:`load_meta`), ``context_names`` and ``contexts`` (``int64 (N,)``,
    aligned with ``names``), and puts ``context`` (int) in every sample dict.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Transform | None = None, max_images: int = 0) -> None:
        super().__init__(root, split, transform=transform, max_images=max_images)
        self.meta = load_meta(root)
        self.context_names: tuple[str, ...] = tuple(self.meta["contexts"])
        self.contexts = context_map(self.meta, self.names)  # (N,)

    def __getitem__(self, i: int) -> Sample:
        sample = super().__getitem__(i)
        sample["context"] = int(self.contexts[self._check_index(i)])
        return sample


# ---------------------------------------------------------------------------------------------
# Parameters, cache and file formats


def _check_params(n_train: int, n_val: int, rho: float, seed: int, coco: bool,
                  size: int, interventional: bool = False, twins: int | bool = 0) -> dict[str, Any]:
    for key, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or not 0 <= value <= _MAX_IMAGES:
            raise ConfigError(f"synthetic {key} must be an integer in 0..{_MAX_IMAGES}, "
                              f"got {value!r}")
    if n_train + n_val == 0:
        raise ConfigError("synthetic n_train + n_val must be >= 1, got 0 images")
    if not 0.0 <= float(rho) <= 1.0:
        raise ConfigError(f"synthetic rho must lie in [0, 1], got {rho!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or not 64 <= size <= 2048:
        raise ConfigError(f"synthetic size must be an integer in 64..2048 (px, long side), "
                          f"got {size!r}")
    if twins is True:
        twins = n_val
    if isinstance(twins, bool) or not isinstance(twins, (int, np.integer)) or twins < 0:
        raise ConfigError(f"synthetic twins must be True, False or a number of validation images "
                          f"(>= 0), got {twins!r}")
    if twins > n_val:
        raise ConfigError(f"synthetic twins are drawn from the validation images; twins={twins} "
                          f"asks for more than n_val={n_val}")
    return {"n_train": int(n_train), "n_val": int(n_val), "rho": float(rho), "seed": int(seed),
            "coco": bool(coco), "size": int(size), "interventional": bool(interventional),
            "twins": int(twins)}


def _meta(params: dict[str, Any], images: list[dict[str, Any]],
          pair_prob: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "distribution": "interventional" if params["interventional"] else "confounded",
        "pair_prob": pair_prob,
        "generator": "causal_wsss.data.synthetic",
        "version": VERSION,
        "params": params,
        "classes": list(SPEC.classes),
        "contexts": list(SPEC.contexts),
        "preferred_context": dict(SPEC.preferred),
        "pairs": [list(p) for p in SPEC.pairs],
        "extra_prob": SPEC.extra_prob,
        "images": images,
    }


def _is_complete(out: Path, voc_root: Path, params: dict[str, Any]) -> bool:
    """Whether ``out`` holds every file of a set generated with ``params`` by this version."""
    try:
        meta = load_meta(voc_root)
    except DataError:
        return False
    if meta.get("version") != VERSION or meta.get("params") != params:
        return False
    lists = (*SPLITS, "trainval", *((TWIN_SPLIT,) if params["twins"] else ()))
    paths = [voc_root / "ImageSets" / "Segmentation" / f"{s}.txt" for s in lists]
    for img in meta["images"]:
        name = img["name"]
        paths += [voc_root / "JPEGImages" / f"{name}.jpg",
                  voc_root / "SegmentationClass" / f"{name}.png",
                  voc_root / "Annotations" / f"{name}.xml"]
        if params["coco"] and img["split"] in SPLITS:
            paths.append(out / "coco" / f"{img['split']}2014"
                         / f"COCO_{img['split']}2014_{img['id']:012d}.jpg")
    if params["coco"]:
        paths += [out / "coco" / "annotations" / f"instances_{s}2014.json" for s in SPLITS]
    return all(p.is_file() for p in paths)


def _encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _image_meta(name: str, split: str, image_id: int, scene: _Scene) -> dict[str, Any]:
    return {
        "name": name, "split": split, "id": image_id,
        "width": int(scene.label.shape[1]), "height": int(scene.label.shape[0]),
        "context": scene.context, "preferred": scene.preferred, "anchor": scene.anchor,
        "pair": scene.pair,
        "objects": [{"class": o.cls, "role": o.role, "bbox": list(o.bbox), "area": o.area}
                    for o in scene.objects],
    }


def _voc_xml(name: str, scene: _Scene) -> str:
    height, width = scene.label.shape
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "causal-wsss synthetic"
    size_el = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size_el, key).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for obj in scene.objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = obj.cls
        ET.SubElement(el, "pose").text = obj.pose
        ET.SubElement(el, "truncated").text = str(int(obj.truncated))
        ET.SubElement(el, "occluded").text = str(int(obj.occluded))
        box = ET.SubElement(el, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox):
            ET.SubElement(box, key).text = str(value)
        ET.SubElement(el, "difficult").text = "0"
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _coco_annotations(scene: _Scene, image_id: int) -> list[dict[str, Any]]:
    """One COCO annotation per visible instance; the mask is uncompressed RLE (column-major)."""
    name_to_id = {cname: cid for cid, cname in COCO_CATEGORIES}
    height, width = scene.instances.shape
    anns = []
    for k, obj in enumerate(scene.objects, start=1):
        mask = scene.instances == k  # (H, W)
        xmin, ymin, xmax, ymax = obj.bbox  # VOC 1-based inclusive
        anns.append({
            "image_id": image_id,
            "category_id": name_to_id[VOC_TO_COCO[obj.cls]],
            "segmentation": {"size": [height, width], "counts": rle_counts(mask)},
            "area": float(obj.area),
            "bbox": [float(xmin - 1), float(ymin - 1), float(xmax - xmin + 1),
                     float(ymax - ymin + 1)],
            "iscrowd": 0,
        })
    return anns


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a ``bool (H, W)`` mask: alternating runs of 0s and 1s
    over the column-major (Fortran-order) pixels, starting with a (possibly empty) run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")  # (H * W,)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(int).tolist()


# ---------------------------------------------------------------------------------------------
# Scene sampling


@dataclass(frozen=True)
class _Object:
    cls: str
    role: str  # anchor | partner | extra
    bbox: tuple[int, int, int, int]  # VOC 1-based inclusive xmin, ymin, xmax, ymax (visible)
    area: int  # visible pixels
    pose: str  # VOC pose: Left | Right (the way the object faces)
    truncated: bool
    occluded: bool


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, VOC class indices and 255 on borders
    instances: np.ndarray  # (H, W) uint8, 0 = background, k = objects[k - 1]
    context: str
    preferred: bool
    anchor: str
    pair: bool | None
    objects: list[_Object]


@dataclass(frozen=True)
class _Pose:
    """Where an object lies: pixel centre of its canonical origin, scale (px/unit), angle, flip."""

    cx: float
    cy: float
    scale: float
    angle: float  # radians, clockwise on screen
    flip: int  # +1 faces right, -1 faces left

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        uf = self.flip * u
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (self.cx + self.scale * (c * uf - s * v), self.cy + self.scale * (s * uf + c * v))

    def box(self, extent: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Pixel bounding box ``(x0, y0, x1, y1)`` of the canonical ``extent`` rectangle."""
        u0, u1, v0, v1 = extent
        pts = [self.to_pixel(u, v) for u in (u0, u1) for v in (v0, v1)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return min(xs), min(ys), max(xs), max(ys)

    def shifted(self, dx: float, dy: float) -> _Pose:
        return _Pose(self.cx + dx, self.cy + dy, self.scale, self.angle, self.flip)


def _draw_scene(rng: np.random.Generator, rho: float, size: int, *,
                bg_rng: np.random.Generator, pair_prob: dict[str, float] | None = None,
                context: str | None = None, drop_partner: bool = False,
                draw_objects: bool = True) -> _Scene:
    """Sample and draw one image of the structural causal model described in the module doc.

    ``rng`` draws the layout (size, anchor, context, partner, every object and its texture) and
    ``bg_rng`` the background's texture, so that re-drawing with the same two seeds but another
    ``context`` (a do(context) twin), ``drop_partner=True`` (the same scene without its partner)
    or ``objects=False`` (the background alone) changes only what is asked. The twins replay
    every draw of the layout, the overridden ones included, so all later draws are the same.

    ``pair_prob``: P(partner placed | anchor) per pair anchor; None = ``rho`` (the confounded
    benchmark). The interventional set passes :func:`independent_pair_prob` and ``rho = 1 /
    len(contexts)``.
    """
    width = int(round(size * rng.uniform(0.8, 1.07)))
    height = int(round(size * rng.uniform(0.67, 1.0)))
    classes, contexts = SPEC.classes, SPEC.contexts

    anchor = classes[rng.integers(len(classes))]
    pref = SPEC.preferred_context(anchor)
    if rng.random() < rho:
        drawn_context = pref
    else:
        others = [c for c in contexts if c != pref]
        drawn_context = others[rng.integers(len(others))]
    context = drawn_context if context is None else context
    partner = SPEC.partner(anchor)
    pair_p = rho if pair_prob is None or partner is None else pair_prob[anchor]
    pair = bool(rng.random() < pair_p) if partner is not None else None

    image = _BACKGROUNDS[context](bg_rng, height, width)  # (H, W, 3) float32
    if not draw_objects:
        rgb = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        empty = np.zeros((height, width), dtype=np.uint8)
        return _Scene(rgb, empty, empty.copy(), context, False, "", None, [])

    # The anchor group: anchor plus, where placed, its partner; poses relative to the anchor.
    short = min(height, width)
    group: list[tuple[str, str, _Figure, _Pose]] = []
    anchor_fig = _FIGURES[anchor](rng)
    long_px = short * rng.uniform(*_ANCHOR_SIZE[anchor])
    anchor_pose = _Pose(0.0, 0.0, long_px / anchor_fig.length, _angle(rng, anchor),
                        1 if rng.random() < 0.5 else -1)
    group.append((anchor, "anchor", anchor_fig, anchor_pose))
    if pair:
        group = _attach_partner(rng, anchor, anchor_fig, anchor_pose, partner)
    boxes = [pose.box(fig.extent) for _, _, fig, pose in group]
    gx0, gy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    gx1, gy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    dx = _fit(rng, gx0, gx1, width)
    dy = _fit(rng, gy0, gy1, height)
    group = [(c, r, f, p.shifted(dx, dy)) for c, r, f, p in group]
    group_box = (gx0 + dx, gy0 + dy, gx1 + dx, gy1 + dy)

    placed = []
    if rng.random() < SPEC.extra_prob:
        allowed = [c for c in classes if c != partner]
        extra = allowed[rng.integers(len(allowed))]
        fig = _FIGURES[extra](rng)
        lo, hi = _ANCHOR_SIZE[extra]
        pose = _Pose(0.0, 0.0, short * rng.uniform(0.6 * lo, 0.8 * hi) / fig.length,
                     _angle(rng, extra), 1 if rng.random() < 0.5 else -1)
        x0, y0, x1, y1 = pose.box(fig.extent)
        best, best_overlap = None, math.inf
        for _ in range(8):  # the candidate overlapping the anchor group least
            cand = pose.shifted(_fit(rng, x0, x1, width), _fit(rng, y0, y1, height))
            overlap = _box_overlap(cand.box(fig.extent), group_box)
            if overlap < best_overlap:
                best, best_overlap = cand, overlap
        if best_overlap <= 0.25:
            placed.append((extra, "extra", fig, best))
    placed.extend(group)  # drawn back to front: the extra lies behind the anchor group

    instances = np.zeros((height, width), dtype=np.uint8)  # (H, W)
    drawn = []
    for k, (cls, role, fig, pose) in enumerate(placed, start=1):
        paint = not (drop_partner and role == "partner")
        full_area, truncated = _render(image, instances, k, fig, pose, rng, paint=paint)
        if paint:
            drawn.append((k, cls, role, fig, pose, full_area, truncated))

    objects = []
    order = sorted(range(len(drawn)), key=lambda j: _ROLE_ORDER[drawn[j][2]])
    relabel = np.zeros(256, dtype=np.uint8)
    for new_k, j in enumerate(order, start=1):
        k, cls, role, fig, pose, full_area, truncated = drawn[j]
        ys, xs = np.nonzero(instances == k)
        relabel[k] = new_k
        objects.append(_Object(
            cls=cls, role=role,
            bbox=(int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1),
            area=int(xs.size), pose="Right" if pose.flip > 0 else "Left",
            truncated=truncated, occluded=xs.size < 0.95 * full_area))
    instances = relabel[instances]  # objects listed anchor, partner, extra
    class_of = np.zeros(256, dtype=np.uint8)
    for k, obj in enumerate(objects, start=1):
        class_of[k] = VOC_CLASSES.index(obj.cls)
    label = class_of[instances]  # (H, W)
    label[_void_band(instances)] = IGNORE_INDEX
    rgb = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)  # (H, W, 3)
    pair = False if drop_partner and pair else pair
    return _Scene(rgb, label, instances, context, context == pref, anchor, pair, objects)


_ROLE_ORDER = {"anchor": 0, "partner": 1, "extra": 2}

# Anchor long side as a fraction of the image's short side; extras are drawn smaller.
_ANCHOR_SIZE = {"aeroplane": (0.6, 0.95), "bird": (0.35, 0.6), "boat": (0.55, 0.9),
                "car": (0.55, 0.9), "horse": (0.6, 0.9), "person": (0.55, 0.85)}


def _angle(rng: np.random.Generator, cls: str) -> float:
    limit = {"aeroplane": 20.0, "bird": 15.0}.get(cls, 5.0)
    return math.radians(rng.uniform(-limit, limit))


def _fit(rng: np.random.Generator, lo: float, hi: float, extent: int) -> float:
    """A shift keeping ``[lo, hi]`` inside ``[0, extent]`` up to 10% truncation (centred if too big)."""
    slack = 0.1 * (hi - lo)
    a, b = -lo - slack, extent - hi + slack
    if a >= b:
        return extent / 2 - (lo + hi) / 2
    return float(rng.uniform(a, b))


def _box_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Fraction of box ``a`` covered by box ``b``."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)


def _attach_partner(rng: np.random.Generator, anchor: str, fig: _Figure, pose: _Pose,
                    partner: str) -> list[tuple[str, str, _Figure, _Pose]]:
    """The anchor and its partner touching it, listed back to front."""
    if anchor == "horse":  # a rider on the saddle, drawn over the horse
        rider = _person(rng, pose="ride")
        scale = pose.scale * rng.uniform(0.5, 0.58)
        hx, hy = pose.to_pixel(*fig.points["saddle"])
        rider_pose = _Pose(0.0, 0.0, scale, pose.angle, pose.flip)
        ox, oy = rider_pose.to_pixel(*rider.points["hips"])
        return [(anchor, "anchor", fig, pose),
                (partner, "partner", rider, rider_pose.shifted(hx - ox, hy - oy))]
    if anchor == "boat":  # a person standing in the stern, the hull hiding the legs
        sailor = _person(rng, pose="stand")
        scale = pose.scale * rng.uniform(0.4, 0.48)
        hx, hy = pose.to_pixel(*fig.points["deck"])
        sailor_pose = _Pose(0.0, 0.0, scale, pose.angle, pose.flip)
        ox, oy = sailor_pose.to_pixel(*sailor.points["feet"])
        return [(partner, "partner", sailor, sailor_pose.shifted(hx - ox, hy - oy)),
                (anchor, "anchor", fig, pose)]
    raise ConfigError(f"no partner placement defined for anchor class '{anchor}'")


def _void_band(instances: np.ndarray) -> np.ndarray:
    """``bool (H, W)``: pixels with another instance (or background) 1 px away in any direction,
    plus object pixels with one 2 px away along an axis: a band about 3 px wide on each border.

    An instance the band would leave with under 10% (or 8) of its pixels keeps them all, so
    every annotated object stays visible in the mask (small images, thin partners).
    """
    h, w = instances.shape
    pad = np.pad(instances, 2, mode="edge")  # (H + 4, W + 4)
    band = np.zeros((h, w), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            band |= pad[2 + dy:2 + dy + h, 2 + dx:2 + dx + w] != instances
    inner = np.zeros((h, w), dtype=bool)
    for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2)):
        inner |= pad[2 + dy:2 + dy + h, 2 + dx:2 + dx + w] != instances
    band |= inner & (instances > 0)
    for k in range(1, int(instances.max()) + 1):
        own = instances == k
        if (own & ~band).sum() < max(8, 0.1 * own.sum()):
            band &= ~own
    return band


# ---------------------------------------------------------------------------------------------
# Backgrounds: one textured picture per context, float32 (H, W, 3) in [0, 1]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinearly upsampled uniform noise with features about ``cell`` px wide: ``(H, W)``."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 1)


def _grain(rng: np.random.Generator, h: int, w: int, amount: float) -> np.ndarray:
    return rng.normal(0.0, amount, (h, w, 1)).astype(np.float32)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top = _jitter(rng, (0.2, 0.42, 0.82), 0.08)
    horizon = _jitter(rng, (0.72, 0.85, 0.97), 0.05)
    t = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None, None]
    img = top * (1 - t) + horizon * t + np.zeros((1, w, 1), np.float32)
    clouds = _smooth_noise(rng, h, w, rng.uniform(18, 35))
    clouds = np.clip((clouds - rng.uniform(0.45, 0.75)) * 3.0, 0, 1)[..., None]
    img = img * (1 - clouds) + 0.97 * clouds
    return np.clip(img + _grain(rng, h, w, 0.01), 0, 1)


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    deep = _jitter(rng, (0.04, 0.22, 0.42), 0.06)
    light = _jitter(rng, (0.15, 0.45, 0.6), 0.06)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    period = rng.uniform(5, 9)
    phase = 2 * np.pi * (y / period + 0.25 * np.sin(2 * np.pi * x / rng.uniform(25, 45)
                                                       + rng.uniform(0, 2 * np.pi)))
    waves = 0.5 + 0.5 * np.sin(phase)  # (H, W)
    t = np.clip(waves * 0.6 + _smooth_noise(rng, h, w, 20) * 0.4, 0, 1)[..., None]
    img = deep * (1 - t) + light * t
    sparkle = (waves > 0.93) & (rng.random((h, w)) < 0.35)
    img[sparkle] = img[sparkle] * 0.4 + 0.6
    return np.clip(img + _grain(rng, h, w, 0.015), 0, 1)


def _grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    dark = _jitter(rng, (0.12, 0.32, 0.08), 0.05)
    light = _jitter(rng, (0.38, 0.62, 0.2), 0.06)
    blades = rng.random((h // 5 + 2, w), dtype=np.float32)  # streaks 5 px tall
    rows = np.arange(h) // 5
    frac = ((np.arange(h) % 5) / 5.0).astype(np.float32)[:, None]
    streaks = blades[rows] * (1 - frac) + blades[rows + 1] * frac  # (H, W)
    t = np.clip(0.55 * streaks + 0.45 * _smooth_noise(rng, h, w, 24), 0, 1)[..., None]
    img = dark * (1 - t) + light * t
    return np.clip(img + _grain(rng, h, w, 0.03), 0, 1)


def _road(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grey = float(rng.uniform(0.3, 0.48))
    base = np.clip(np.array([grey, grey, grey * 1.03], np.float32)
                   + rng.uniform(-0.02, 0.02, 3).astype(np.float32), 0, 1)
    img = base * (0.9 + 0.2 * _smooth_noise(rng, h, w, 30))[..., None]
    img = img + _grain(rng, h, w, 0.045)
    paint = _jitter(rng, (0.95, 0.95, 0.92), 0.03) if rng.random() < 0.6 else \
        _jitter(rng, (0.95, 0.8, 0.15), 0.04)
    x = np.arange(w)[None, :]
    y = np.arange(h)[:, None]
    period, dash, thick = rng.uniform(18, 30), rng.uniform(0.45, 0.65), rng.integers(3, 5)
    for _ in range(int(rng.integers(1, 3))):
        y0 = int(rng.integers(h // 5, h - thick))
        lane = (y >= y0) & (y < y0 + thick) & (((x + rng.uniform(0, period)) % period)
                                               < dash * period)
        img[lane] = paint
    kerb = int(rng.integers(2, max(3, h // 10)))
    img[:kerb] = _jitter(rng, (0.62, 0.6, 0.56), 0.05)
    return np.clip(img, 0, 1)


def _indoor(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    wall = _jitter(rng, (0.86, 0.78, 0.62), 0.08)
    stripe = wall * rng.uniform(0.82, 0.92)
    floor = _jitter(rng, (0.5, 0.32, 0.17), 0.06)
    x = np.arange(w)[None, :]
    y = np.arange(h)[:, None]
    period = rng.uniform(8, 16)
    stripes = ((x + rng.uniform(0, period)) % period) < period * 0.35  # (1, W)
    img = np.where(stripes[..., None], stripe, wall) + np.zeros((h, 1, 1), np.float32)
    horizon = int(h * rng.uniform(0.6, 0.78))
    plank = rng.uniform(6, 10)
    grain = 0.85 + 0.3 * _smooth_noise(rng, h, w, 6)
    lines = ((y + rng.uniform(0, plank)) % plank) < 1.0  # (H, 1)
    floor_img = floor * grain[..., None] * np.where(lines, 0.7, 1.0)[..., None]
    img[horizon:] = floor_img[horizon:]
    img[max(horizon - 3, 0):horizon] = _jitter(rng, (0.95, 0.94, 0.9), 0.03)  # skirting board
    return np.clip(img + _grain(rng, h, w, 0.012), 0, 1).astype(np.float32)


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "sky": _sky, "water": _water, "grass": _grass, "road": _road, "indoor": _indoor,
}


# ---------------------------------------------------------------------------------------------
# Objects: silhouettes built from ellipses, capsules and convex polygons in canonical units
# (facing right, v pointing down), rasterised on the object's bounding patch only.

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
ColourFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Part:
    mask: MaskFn  # (u, v) -> bool, same shape
    colour: np.ndarray | ColourFn  # (3,) or (u, v) -> (n, 3) on the masked coordinates
    texture: float = 0.0  # amplitude of the object's noise field on this part


@dataclass(frozen=True)
class _Figure:
    parts: list[_Part]  # back to front
    extent: tuple[float, float, float, float]  # canonical u0, u1, v0, v1
    points: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def length(self) -> float:
        """Canonical long side (units), so that ``scale = long_px / length``."""
        u0, u1, v0, v1 = self.extent
        return max(u1 - u0, v1 - v0)


def _ellipse(cu: float, cv: float, a: float, b: float, angle: float = 0.0) -> MaskFn:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        du, dv = u - cu, v - cv
        p, q = c * du + s * dv, -s * du + c * dv
        return (p / a) ** 2 + (q / b) ** 2 <= 1.0
    return fn


def _capsule(u0: float, v0: float, u1: float, v1: float, r: float) -> MaskFn:
    du, dv = u1 - u0, v1 - v0
    length2 = max(du * du + dv * dv, 1e-12)

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = np.clip(((u - u0) * du + (v - v0) * dv) / length2, 0.0, 1.0)
        return (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2 <= r * r
    return fn


def _polygon(*points: tuple[float, float]) -> MaskFn:
    """A convex polygon (vertices in either order)."""
    pts = list(points)

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        pos = np.ones(u.shape, dtype=bool)
        neg = np.ones(u.shape, dtype=bool)
        for (a_u, a_v), (b_u, b_v) in zip(pts, pts[1:] + pts[:1]):
            cross = (b_u - a_u) * (v - a_v) - (b_v - a_v) * (u - a_u)
            pos &= cross >= 0
            neg &= cross <= 0
        return pos | neg
    return fn


def _both(first: MaskFn, second: MaskFn) -> MaskFn:
    return lambda u, v: first(u, v) & second(u, v)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32)


def _shade(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb * factor, 0, 1).astype(np.float32)


def _stripes(first: np.ndarray, second: np.ndarray, period: float, axis: str) -> ColourFn:
    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        coord = v if axis == "v" else u
        return np.where(((coord / period) % 1.0 < 0.5)[:, None], first, second)
    return fn


def _horse(rng: np.random.Generator) -> _Figure:
    coats = [(0.45, 0.26, 0.13), (0.6, 0.33, 0.15), (0.13, 0.11, 0.1), (0.58, 0.57, 0.55),
             (0.88, 0.86, 0.8), (0.84, 0.68, 0.4)]
    coat = _jitter(rng, coats[rng.integers(len(coats))], 0.05)
    mane = _shade(coat, 0.45) if coat.mean() > 0.3 else _shade(coat + 0.25, 1.0)
    far = _shade(coat, 0.75)
    hoof = np.array([0.12, 0.1, 0.08], np.float32)
    stride = rng.uniform(-0.12, 0.12)
    body_len = rng.uniform(0.56, 0.66)
    parts = [
        _Part(_capsule(-0.55, -0.12, -0.8 - 0.05 * rng.random(), 0.3, 0.06), mane, 0.08),
        _Part(_capsule(-0.36, 0.1, -0.4 - stride, 0.72, 0.065), far, 0.06),
        _Part(_capsule(0.36, 0.1, 0.4 + stride, 0.72, 0.065), far, 0.06),
        _Part(_ellipse(0.0, -0.02, body_len, 0.27), coat, 0.07),
        _Part(_capsule(0.42, -0.1, 0.72, -0.5, 0.14), coat, 0.07),
        _Part(_ellipse(0.84, -0.46, 0.22, 0.1, 38.0), coat, 0.07),
        _Part(_polygon((0.64, -0.6), (0.72, -0.6), (0.67, -0.76)), coat, 0.05),
        _Part(_capsule(0.38, -0.22, 0.66, -0.62, 0.05), mane, 0.08),
        _Part(_capsule(-0.46, 0.12, -0.5 + stride, 0.72, 0.07), coat, 0.07),
        _Part(_capsule(0.46, 0.12, 0.5 - stride, 0.72, 0.07), coat, 0.07),
        _Part(_ellipse(-0.5 + stride, 0.74, 0.08, 0.045), hoof),
        _Part(_ellipse(0.5 - stride, 0.74, 0.08, 0.045), hoof),
    ]
    return _Figure(parts, (-0.92, 1.1, -0.8, 0.8), {"saddle": (-0.05, -0.24)})


def _person(rng: np.random.Generator, pose: str = "stand") -> _Figure:
    skin = _jitter(rng, [(0.96, 0.8, 0.66), (0.8, 0.6, 0.45), (0.55, 0.38, 0.26),
                         (0.35, 0.23, 0.16)][rng.integers(4)], 0.03)
    hair = _jitter(rng, [(0.1, 0.07, 0.05), (0.4, 0.25, 0.12), (0.85, 0.7, 0.4),
                         (0.5, 0.5, 0.5)][rng.integers(4)], 0.04)
    shirt = _hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.95))
    shirt_colour: np.ndarray | ColourFn = shirt
    if rng.random() < 0.4:
        shirt_colour = _stripes(shirt, _shade(shirt, 0.55), rng.uniform(0.08, 0.14), "v")
    trousers = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.45))
    shoe = np.array([0.1, 0.08, 0.07], np.float32)
    reach = rng.uniform(-0.08, 0.12, 2)
    parts = [_Part(_capsule(-0.12, -0.58, -0.22 - reach[0], -0.06, 0.07), _shade(shirt, 0.7))]
    if pose == "ride":
        parts += [
            _Part(_capsule(0.0, 0.02, 0.2, 0.28, 0.095), trousers, 0.04),
            _Part(_capsule(0.2, 0.28, 0.12, 0.62, 0.08), trousers, 0.04),
            _Part(_ellipse(0.16, 0.66, 0.1, 0.05), shoe),
        ]
    else:
        spread = rng.uniform(0.02, 0.14)
        parts += [
            _Part(_capsule(-0.07, 0.05, -0.08 - spread, 0.9, 0.085), trousers, 0.04),
            _Part(_capsule(0.07, 0.05, 0.08 + spread, 0.9, 0.085), trousers, 0.04),
            _Part(_ellipse(-0.06 - spread, 0.94, 0.1, 0.05), shoe),
            _Part(_ellipse(0.1 + spread, 0.94, 0.1, 0.05), shoe),
        ]
    parts += [
        _Part(_polygon((-0.17, -0.64), (0.17, -0.64), (0.15, 0.1), (-0.15, 0.1)), shirt_colour,
              0.03),
        _Part(_capsule(0.0, -0.72, 0.0, -0.6, 0.06), skin),
        _Part(_ellipse(0.0, -0.8, 0.12, 0.145), skin, 0.02),
        _Part(_both(_ellipse(0.0, -0.84, 0.135, 0.13), lambda u, v: v < -0.84), hair, 0.05),
        _Part(_capsule(0.12, -0.58, 0.24 + reach[1], -0.08, 0.07), shirt),
        _Part(_ellipse(0.24 + reach[1], -0.05, 0.06, 0.06), skin),
    ]
    return _Figure(parts, (-0.42, 0.42, -1.0, 1.0), {"hips": (0.0, 0.05), "feet": (0.0, 0.95)})


def _boat(rng: np.random.Generator) -> _Figure:
    hull = _hsv(rng.random(), rng.uniform(0.3, 0.85), rng.uniform(0.3, 0.85))
    band = _shade(hull, 1.6) if hull.mean() < 0.5 else _shade(hull, 0.5)
    sail = _jitter(rng, (0.95, 0.93, 0.86), 0.04)
    mast = np.array([0.35, 0.28, 0.2], np.float32)
    top = rng.uniform(-1.0, -0.85)
    parts = [
        _Part(_capsule(0.0, 0.0, 0.0, top, 0.025), mast),
        _Part(_polygon((-0.04, top + 0.05), (-0.04, -0.1), (-0.62, -0.1)), sail, 0.03),
    ]
    if rng.random() < 0.7:
        parts.append(_Part(_polygon((0.04, top + 0.12), (0.04, -0.1), (0.62, -0.1)),
                           _shade(sail, 0.93), 0.03))
    hull_shape = _polygon((-0.96, -0.02), (1.0, -0.08), (0.72, 0.36), (-0.74, 0.36))
    parts += [
        _Part(hull_shape, hull, 0.05),
        _Part(_both(hull_shape, lambda u, v: np.abs(v - 0.1) < 0.045), band),
    ]
    return _Figure(parts, (-0.98, 1.02, -1.02, 0.38), {"deck": (-0.76, 0.2)})


def _car(rng: np.random.Generator) -> _Figure:
    paint = _hsv(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.35, 0.95))
    glass = _jitter(rng, (0.55, 0.68, 0.78), 0.05)
    roof = -rng.uniform(0.5, 0.65)

    def sheen(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        factor = 1.0 + 0.35 * np.exp(-((v + 0.1) / 0.06) ** 2)  # highlight along the waist
        return np.clip(paint[None, :] * factor[:, None], 0, 1)
    dark = np.array([0.07, 0.07, 0.08], np.float32)
    hub = np.array([0.72, 0.72, 0.75], np.float32)
    parts = [
        _Part(_polygon((-0.55, -0.18), (0.45, -0.18), (0.25, roof), (-0.42, roof)), paint, 0.02),
        _Part(_polygon((-0.47, -0.22), (-0.06, -0.22), (-0.06, roof + 0.05),
                       (-0.38, roof + 0.05)), glass, 0.04),
        _Part(_polygon((0.02, -0.22), (0.37, -0.22), (0.21, roof + 0.05),
                       (0.02, roof + 0.05)), glass, 0.04),
        _Part(_polygon((-1.0, -0.2), (0.98, -0.2), (1.0, 0.22), (-1.0, 0.22)), sheen, 0.02),
        _Part(_ellipse(0.93, -0.08, 0.06, 0.05), np.array([1.0, 0.95, 0.7], np.float32)),
        _Part(_ellipse(-0.96, -0.08, 0.04, 0.05), np.array([0.8, 0.1, 0.08], np.float32)),
    ]
    for cu in (-0.6, 0.6):
        parts += [_Part(_ellipse(cu, 0.22, 0.22, 0.22), dark, 0.05),
                  _Part(_ellipse(cu, 0.22, 0.1, 0.1), hub)]
    return _Figure(parts, (-1.0, 1.0, roof, 0.44))


def _aeroplane(rng: np.random.Generator) -> _Figure:
    body = _jitter(rng, (0.9, 0.9, 0.92), 0.08)
    livery = _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9))
    grey = _shade(body, 0.7)
    window = np.array([0.15, 0.17, 0.22], np.float32)
    fuselage = _ellipse(0.0, 0.0, 1.0, 0.13)
    parts = [
        _Part(_polygon((0.05, -0.05), (-0.15, -0.05), (-0.32, -0.34), (-0.24, -0.34)), grey),
        _Part(_polygon((-0.6, -0.06), (-0.93, -0.06), (-1.0, -0.5), (-0.86, -0.5)), livery,
              0.02),
        _Part(fuselage, body, 0.02),
        _Part(_both(fuselage, lambda u, v: np.abs(v - 0.03) < 0.025), livery),
        _Part(_both(_both(fuselage, lambda u, v: np.abs(v + 0.035) < 0.02),
                    lambda u, v: ((u * 14.0) % 1.0 < 0.5) & (u > -0.7) & (u < 0.75)), window),
        _Part(_polygon((0.82, -0.07), (0.93, -0.04), (0.88, -0.01), (0.78, -0.03)), window),
        _Part(_polygon((0.16, 0.03), (-0.14, 0.03), (-0.44, 0.5), (-0.3, 0.5)), body, 0.02),
        _Part(_ellipse(-0.06, 0.24, 0.13, 0.06), grey, 0.03),
        _Part(_polygon((-0.7, 0.01), (-0.84, 0.01), (-1.0, 0.16), (-0.92, 0.16)), grey),
    ]
    return _Figure(parts, (-1.02, 1.02, -0.52, 0.52))


def _bird(rng: np.random.Generator) -> _Figure:
    plumage = _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.9))
    wing = _shade(plumage, 0.6)
    belly = np.clip(plumage * 0.4 + 0.55, 0, 1).astype(np.float32)
    beak = _jitter(rng, (0.95, 0.65, 0.1), 0.05)
    eye = np.array([0.05, 0.05, 0.05], np.float32)
    feathers = _stripes(wing, _shade(wing, 0.75), 0.09, "u")
    flying = rng.random() < 0.5
    parts = [
        _Part(_polygon((-0.3, -0.06), (-0.95, -0.22), (-0.9, 0.16), (-0.3, 0.12)), wing, 0.1),
    ]
    if not flying:
        parts += [_Part(_capsule(-0.06, 0.22, -0.1, 0.56, 0.035), beak),
                  _Part(_capsule(0.08, 0.22, 0.1, 0.56, 0.035), beak)]
    parts += [
        _Part(_ellipse(0.0, 0.0, 0.48, 0.3, -10.0), plumage, 0.12),
        _Part(_ellipse(0.08, 0.12, 0.34, 0.16, -10.0), belly, 0.1),
        _Part(_ellipse(0.45, -0.3, 0.2, 0.19), plumage, 0.12),
        _Part(_polygon((0.6, -0.36), (0.6, -0.24), (0.9, -0.3)), beak),
        _Part(_ellipse(0.52, -0.34, 0.04, 0.04), eye),
    ]
    if flying:
        parts.append(_Part(_polygon((-0.32, -0.1), (0.2, -0.1), (-0.2, -0.75),
                                    (-0.5, -0.95)), feathers, 0.1))
    else:
        parts.append(_Part(_ellipse(-0.12, -0.04, 0.38, 0.17, 15.0), feathers, 0.1))
    return _Figure(parts, (-0.96, 0.92, -1.0, 0.6))


_FIGURES: dict[str, Callable[[np.random.Generator], _Figure]] = {
    "aeroplane": _aeroplane, "bird": _bird, "boat": _boat, "car": _car, "horse": _horse,
    "person": _person,
}


def _render(image: np.ndarray, instances: np.ndarray, k: int, fig: _Figure, pose: _Pose,
            rng: np.random.Generator, paint: bool = True) -> tuple[int, bool]:
    """Paint ``fig`` at ``pose`` into ``image`` (float (H, W, 3)) and mark it ``k`` in
    ``instances``; returns the drawn pixel count and whether the image border cut it.

    ``paint=False`` draws the same random numbers and paints nothing (a twin without the object).
    """
    height, width = instances.shape
    bx0, by0, bx1, by1 = pose.box(fig.extent)
    x0, y0 = max(int(math.floor(bx0)), 0), max(int(math.floor(by0)), 0)
    x1, y1 = min(int(math.ceil(bx1)) + 1, width), min(int(math.ceil(by1)) + 1, height)
    truncated = bx0 < 0 or by0 < 0 or bx1 > width or by1 > height
    if x1 <= x0 or y1 <= y0:
        return 0, truncated
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - pose.cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - pose.cx
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    u = pose.flip * (c * xs + s * ys) / pose.scale  # (h, w) canonical units
    v = (-s * xs + c * ys) / pose.scale  # (h, w)
    noise = rng.normal(0.0, 1.0, u.shape).astype(np.float32)  # (h, w)
    if not paint:
        return 0, truncated
    v0, v1 = fig.extent[2], fig.extent[3]
    light = 1.12 - 0.24 * (v - v0) / (v1 - v0)  # lit from above
    patch = image[y0:y1, x0:x1]
    ids = instances[y0:y1, x0:x1]
    union = np.zeros(u.shape, dtype=bool)
    for part in fig.parts:
        m = part.mask(u, v)
        if not m.any():
            continue
        colour = part.colour(u[m], v[m]) if callable(part.colour) else part.colour[None, :]
        factor = light[m] * (1.0 + part.texture * noise[m])
        patch[m] = np.clip(colour * factor[:, None], 0, 1)
        ids[m] = k
        union |= m
    return int(union.sum()), truncated
