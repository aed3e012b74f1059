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

import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..constants import COCO_CATEGORIES, voc_palette
from ..errors import ConfigError, DataError
from ..io import check_folder_target, make_folder, write_bytes, write_json, write_text
from .base import Sample, Transform
from .scenes import SPEC, Scene, draw_scene, independent_pair_prob, twin_scenes
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

    def write(name: str, split: str, image_id: int, scene: Scene, **extra: Any) -> bytes:
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
        scene = draw_scene(np.random.default_rng([seed, split_id, i]), draw_rho, size,
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
                twin_scenes(seed, params["twins"], draw_rho, size, pair_prob), total=None,
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


def _image_meta(name: str, split: str, image_id: int, scene: Scene) -> dict[str, Any]:
    return {
        "name": name, "split": split, "id": image_id,
        "width": int(scene.label.shape[1]), "height": int(scene.label.shape[0]),
        "context": scene.context, "preferred": scene.preferred, "anchor": scene.anchor,
        "pair": scene.pair,
        "objects": [{"class": o.cls, "role": o.role, "bbox": list(o.bbox), "area": o.area}
                    for o in scene.objects],
    }


def _voc_xml(name: str, scene: Scene) -> str:
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


def _coco_annotations(scene: Scene, image_id: int) -> list[dict[str, Any]]:
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
