"""Tiny PASCAL VOC and MS-COCO trees in the real file formats, for tests (40x30 images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from causal_wsss.constants import COCO_CATEGORIES, IGNORE_INDEX, VOC_CLASSES, voc_palette
from causal_wsss.io import save_image, write_text

HEIGHT, WIDTH = 30, 40


def _noise_image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def _palette_png(mask: np.ndarray) -> Image.Image:
    img = Image.fromarray(mask)  # mode L
    img.putpalette(voc_palette().tobytes())  # becomes mode P, indices unchanged
    return img


def _voc_xml(name: str, objects: list[dict[str, Any]]) -> str:
    parts = [f"<annotation><folder>VOC2012</folder><filename>{name}.jpg</filename>",
             f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>",
             "<segmented>1</segmented>"]
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        part = ("<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                "<ymax>2</ymax></bndbox></part>") if obj.get("part") else ""
        parts.append(f"<object><name>{VOC_CLASSES[obj['label']]}</name><pose>Unspecified</pose>"
                     f"<truncated>0</truncated><difficult>{int(obj.get('difficult', 0))}"
                     f"</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>{part}</object>")
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _voc_objects(rng: np.random.Generator) -> list[dict[str, Any]]:
    """One object in the left half and maybe one in the right half (they never overlap)."""
    objects = []
    for x_lo in (1, 21)[: int(rng.integers(1, 3))]:
        w, h = int(rng.integers(6, 14)), int(rng.integers(6, 20))
        x0, y0 = x_lo + int(rng.integers(0, 18 - w)), 1 + int(rng.integers(0, HEIGHT - 2 - h))
        objects.append({"label": int(rng.integers(1, 21)), "box": (x0, y0, x0 + w, y0 + h)})
    return objects


def _voc_mask(objects: list[dict[str, Any]], band: bool) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for obj in objects:
        if obj.get("difficult"):
            continue
        x0, y0, x1, y1 = obj["box"]
        if band:  # VOC's void border: one pixel around the object
            mask[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = IGNORE_INDEX
        mask[y0:y1, x0:x1] = obj["label"]
    return mask


def write_voc_tree(root: str | Path, n_train: int = 3, n_val: int = 2, seed: int = 0,
                   with_aug: bool = False) -> dict[str, Any]:
    """Write ``root/VOCdevkit/VOC2012`` with JPEGs, palette PNG masks (255 band around objects),
    XML annotations and ``ImageSets/Segmentation/{train,val,trainval}.txt``.

    Train image 0 has an extra *difficult* object of a class absent from its mask (XML labels
    include it); train image 1 (if any) has a ``person`` with a ``<part><name>head``. With
    ``with_aug``, SBD's ``SegmentationClassAug/`` (greyscale PNGs without the band) covers all
    images plus two extra ids listed only in ``ImageSets/SegmentationAug/train_aug.txt``.

    Returns ``{"voc_root", "train", "val", "aug_extra", "objects", "labels", "masks"}`` where
    ``labels[id]`` is the sorted list of class indices named in the XML and ``masks[id]`` the
    ``SegmentationClass`` array (``SegmentationClassAug`` for the extra ids).
    """
    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    train = [f"2007_{k:06d}" for k in range(n_train)]
    val = [f"2008_{k:06d}" for k in range(n_val)]
    extra = [f"2009_{k:06d}" for k in range(2)] if with_aug else []
    info: dict[str, Any] = {"voc_root": voc, "train": train, "val": val, "aug_extra": extra,
                            "objects": {}, "labels": {}, "masks": {}}
    for name in train + val + extra:
        objects = _voc_objects(rng)
        if train and name == train[0]:
            absent = next(c for c in range(1, 21) if c not in {o["label"] for o in objects})
            objects.append({"label": absent, "box": (2, 2, 5, 5), "difficult": 1})
        if len(train) > 1 and name == train[1]:
            objects[0].update(label=VOC_CLASSES.index("person"), part=True)
        save_image(voc / "JPEGImages" / f"{name}.jpg", _noise_image(rng), quality=90)
        write_text(voc / "Annotations" / f"{name}.xml", _voc_xml(name, objects))
        info["objects"][name] = objects
        info["labels"][name] = sorted({o["label"] for o in objects})
        if name not in extra:
            mask = _voc_mask(objects, band=True)
            save_image(voc / "SegmentationClass" / f"{name}.png", _palette_png(mask))
            info["masks"][name] = mask
        if with_aug:
            aug = _voc_mask(objects, band=False)
            save_image(voc / "SegmentationClassAug" / f"{name}.png", Image.fromarray(aug))
            if name in extra:
                info["masks"][name] = aug
    lists = voc / "ImageSets" / "Segmentation"
    write_text(lists / "train.txt", "".join(f"{n}\n" for n in train))
    write_text(lists / "val.txt", "".join(f"{n}\n" for n in val))
    write_text(lists / "trainval.txt", "".join(f"{n}\n" for n in train + val))
    if with_aug:
        write_text(voc / "ImageSets" / "SegmentationAug" / "train_aug.txt",
                   "".join(f"{n}\n" for n in train + extra))
    return info


def uncompressed_rle(binary: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of a ``(H, W)`` binary mask: column-major run lengths, zeros first."""
    flat = binary.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = int(v), 1
    counts.append(run)
    return {"counts": counts, "size": [int(binary.shape[0]), int(binary.shape[1])]}


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    binary = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    binary[y0:y1, x0:x1] = 1
    return binary


def write_coco_tree(root: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write ``root/{train2014,val2014}/`` JPEGs and ``root/annotations/instances_*2014.json``.

    train image 1: a polygon ``person`` (category 1) covering rows 4..13, cols 4..15, and a
    compressed-RLE ``toothbrush`` (category 90) covering rows 18..25, cols 20..35;
    train image 2: a polygon ``cat`` (category 17) over rows 10..19, cols 10..19, then (listed
    after it) an uncompressed-RLE crowd ``dog`` (category 18) over rows 5..24, cols 5..34;
    train image 3: no annotation. val image 4: a polygon ``bus`` (category 6) over rows 2..9,
    cols 2..11.

    Returns ``{"root", "expected"}`` with ``expected[file stem] = (labels, mask)``: labels as
    contiguous class indices, masks as ``uint8 (30, 40)``.
    """
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(seed)
    root = Path(root)
    categories = [{"id": cid, "name": name, "supercategory": "thing"}
                  for cid, name in COCO_CATEGORIES]

    def polygon(y0: int, y1: int, x0: int, x1: int) -> list[list[float]]:
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    rle = mask_api.encode(np.asfortranarray(_box(18, 26, 20, 36)))
    rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    crowd = uncompressed_rle(_box(5, 25, 5, 35))
    splits = {
        "train2014": [
            (1, [(1, 0, polygon(4, 14, 4, 16), 120.0), (90, 0, rle, 128.0)]),
            (2, [(17, 0, polygon(10, 20, 10, 20), 100.0), (18, 1, crowd, 600.0)]),
            (3, []),
        ],
        "val2014": [(4, [(6, 0, polygon(2, 10, 2, 12), 80.0)])],
    }
    ann_id = 100
    for split, images in splits.items():
        data = {"info": {"description": "test fixture"}, "images": [], "annotations": [],
                "categories": categories}
        for image_id, anns in images:
            file_name = f"COCO_{split}_{image_id:012d}.jpg"
            save_image(root / split / file_name, _noise_image(rng), quality=90)
            data["images"].append({"id": image_id, "file_name": file_name, "height": HEIGHT,
                                   "width": WIDTH})
            for cid, iscrowd, segmentation, area in anns:
                ann_id += 1
                data["annotations"].append({"id": ann_id, "image_id": image_id,
                                            "category_id": cid, "iscrowd": iscrowd,
                                            "segmentation": segmentation, "area": area,
                                            "bbox": [0, 0, 1, 1]})
        write_text(root / "annotations" / f"instances_{split}.json", json.dumps(data))

    def mask_of(*layers: tuple[int, np.ndarray]) -> np.ndarray:
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for value, binary in layers:
            mask[binary.astype(bool)] = value
        return mask

    expected = {
        "COCO_train2014_000000000001": ([1, 80], mask_of((1, _box(4, 14, 4, 16)),
                                                         (80, _box(18, 26, 20, 36)))),
        "COCO_train2014_000000000002": ([16, 17], mask_of((IGNORE_INDEX, _box(5, 25, 5, 35)),
                                                          (16, _box(10, 20, 10, 20)))),
        "COCO_train2014_000000000003": ([], mask_of()),
        "COCO_val2014_000000000004": ([6], mask_of((6, _box(2, 10, 2, 12)))),
    }
    return {"root": root, "expected": expected}


class InMemoryDataset:
    """The part of the data contract that the CAM explorers read (names, classes, images,
    masks, the label matrix), held in memory: ``classes`` with the background first."""

    def __init__(self, names, images, masks, labels, classes) -> None:
        self.names, self._images, self._masks, self._labels = names, images, masks, labels
        self.classes = tuple(classes)
        self.num_classes = len(self.classes)

    def load_image(self, i):
        return self._images[i]

    def load_mask(self, i):
        return self._masks[i]

    def label_matrix(self):
        return self._labels
