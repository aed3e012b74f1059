"""Tests for the confounded synthetic benchmark (causal_wsss.data.synthetic)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causal_wsss.constants import COCO_CATEGORIES, IGNORE_INDEX, VOC_CLASSES, voc_palette
from causal_wsss.data.scenes import SPEC
from causal_wsss.data.synthetic import (
    VOC_TO_COCO,
    SyntheticVOC,
    context_map,
    generate_synthetic,
    load_meta,
    measured_cooccurrence,
    rle_counts,
)
from causal_wsss.errors import ConfigError, DataError

N_TRAIN, N_VAL = 40, 20


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small set with the COCO layout: 40 train + 20 val images at rho = 0.9."""
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, n_train=N_TRAIN, n_val=N_VAL, rho=0.9, seed=0, coco=True)
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _read_mask(voc: Path, name: str) -> np.ndarray:
    with Image.open(voc / "SegmentationClass" / f"{name}.png") as img:
        assert img.mode == "P"
        return np.array(img)


def _xml_objects(voc: Path, name: str) -> list[tuple[str, tuple[int, ...], str]]:
    root = ET.parse(voc / "Annotations" / f"{name}.xml").getroot()
    objs = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        objs.append((obj.findtext("name"),
                     tuple(int(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
                     obj.findtext("difficult")))
    return objs


def test_layout_and_return_value(synth: Path) -> None:
    voc = synth / "VOCdevkit" / "VOC2012"
    assert generate_synthetic(synth, n_train=N_TRAIN, n_val=N_VAL, rho=0.9, seed=0,
                              coco=True) == voc
    lists = {s: (voc / "ImageSets" / "Segmentation" / f"{s}.txt").read_text().split()
             for s in ("train", "val", "trainval")}
    assert len(lists["train"]) == N_TRAIN and len(lists["val"]) == N_VAL
    assert lists["trainval"] == lists["train"] + lists["val"]
    assert not set(lists["train"]) & set(lists["val"])
    for name in lists["trainval"]:
        for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"),
                         ("Annotations", "xml")):
            assert (voc / sub / f"{name}.{ext}").is_file()
    with Image.open(voc / "JPEGImages" / f"{lists['train'][0]}.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB"
        assert 120 <= img.width <= 161 and 100 <= img.height <= 150


def test_same_arguments_same_bytes_and_seed_changes_them(tmp_path: Path) -> None:
    kwargs = dict(n_train=12, n_val=6, rho=0.9, coco=True)
    generate_synthetic(tmp_path / "a", seed=3, **kwargs)
    generate_synthetic(tmp_path / "b", seed=3, **kwargs)
    generate_synthetic(tmp_path / "c", seed=4, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 3 * 18 + 18 + 3 + 1 + 2  # VOC files, COCO jpgs, lists, sidecar, json
    assert a == b
    jpgs = [k for k in a if k.endswith(".jpg") and "JPEGImages" in k]
    assert sum(a[k] != c[k] for k in jpgs) == len(jpgs)


def test_train_images_do_not_depend_on_val_count(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "a", n_train=8, n_val=2, seed=1)
    generate_synthetic(tmp_path / "b", n_train=8, n_val=7, seed=1)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    train = [k for k in a if "/train_" in k]
    assert len(train) == 3 * 8
    assert all(a[k] == b[k] for k in train)


def test_masks_are_voc_palette_pngs_with_a_void_band(synth: Path) -> None:
    voc = synth / "VOCdevkit" / "VOC2012"
    allowed = {0, IGNORE_INDEX} | {VOC_CLASSES.index(c) for c in SPEC.classes}
    runs = []
    for img in load_meta(synth)["images"]:
        with Image.open(voc / "SegmentationClass" / f"{img['name']}.png") as png:
            assert png.mode == "P"
            palette = np.array(png.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
            mask = np.array(png)
        np.testing.assert_array_equal(palette, voc_palette())
        assert mask.shape == (img["height"], img["width"])
        assert set(np.unique(mask).tolist()) <= allowed
        assert (mask == IGNORE_INDEX).any()
        # the band separates background from objects: no 4-neighbour pair (0, object)
        for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1], mask[1:])):
            fg_a, fg_b = (a != 0) & (a != IGNORE_INDEX), (b != 0) & (b != IGNORE_INDEX)
            assert not ((a == 0) & fg_b).any() and not ((b == 0) & fg_a).any()
        for row in mask:  # widths of void runs between background and an object
            void = np.concatenate(([0], (row == IGNORE_INDEX).astype(np.int8), [0]))
            starts, ends = np.flatnonzero(np.diff(void) == 1), np.flatnonzero(np.diff(void) == -1)
            for s, e in zip(starts, ends):
                if s > 0 and e < row.size and (row[s - 1] == 0) != (row[e] == 0):
                    runs.append(e - s)
    assert 2 <= np.median(runs) <= 3


def test_xml_labels_boxes_and_sidecar_agree_with_the_mask(synth: Path) -> None:
    voc = synth / "VOCdevkit" / "VOC2012"
    for img in load_meta(synth)["images"]:
        mask = _read_mask(voc, img["name"])
        objs = _xml_objects(voc, img["name"])
        mask_classes = {VOC_CLASSES[k] for k in np.unique(mask) if k not in (0, IGNORE_INDEX)}
        assert {name for name, _, _ in objs} == mask_classes
        assert [(o["class"], tuple(o["bbox"])) for o in img["objects"]] == \
            [(name, box) for name, box, _ in objs]
        assert all(difficult == "0" for _, _, difficult in objs)
        assert 1 <= len(objs) <= 3
        assert img["objects"][0]["role"] == "anchor" and img["objects"][0]["class"] == img["anchor"]
        for name, (x0, y0, x1, y1), _ in objs:
            assert 1 <= x0 <= x1 <= img["width"] and 1 <= y0 <= y1 <= img["height"]
            if sum(n == name for n, _, _ in objs) == 1:
                # the box holds every pixel of the class, and each of its four edges touches
                # the object (its pixels or the void band on its thin parts)
                k = VOC_CLASSES.index(name)
                ys, xs = np.nonzero(mask == k)
                assert x0 <= xs.min() + 1 and xs.max() + 1 <= x1
                assert y0 <= ys.min() + 1 and ys.max() + 1 <= y1
                box = mask[y0 - 1:y1, x0 - 1:x1]
                for edge in (box[0], box[-1], box[:, 0], box[:, -1]):
                    assert np.isin(edge, (k, IGNORE_INDEX)).any()


def test_sidecar_context_matches_the_pixels(synth: Path) -> None:
    """Each image's background colour is nearest to the mean colour of its recorded context."""
    voc = synth / "VOCdevkit" / "VOC2012"
    meta = load_meta(synth)
    colours, contexts = [], []
    for img in meta["images"]:
        mask = _read_mask(voc, img["name"])
        with Image.open(voc / "JPEGImages" / f"{img['name']}.jpg") as jpg:
            rgb = np.asarray(jpg.convert("RGB"), dtype=np.float64)
        colours.append(rgb[mask == 0].mean(axis=0))
        contexts.append(meta["contexts"].index(img["context"]))
    colours, contexts = np.array(colours), np.array(contexts)
    np.testing.assert_array_equal(
        contexts, context_map(meta, [img["name"] for img in meta["images"]]))
    centroids = np.array([colours[contexts == k].mean(axis=0)
                          for k in range(len(meta["contexts"]))])
    nearest = np.argmin(((colours[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == contexts).mean() >= 0.9


@pytest.mark.parametrize("rho", [0.9, 0.5])
def test_measured_confounding_follows_rho(tmp_path: Path, rho: float) -> None:
    out = generate_synthetic(tmp_path, n_train=300, n_val=0, rho=rho, seed=7)
    meta = load_meta(out)
    images = meta["images"]
    pooled = np.mean([img["preferred"] for img in images])
    assert abs(pooled - rho) < 0.07  # binomial sd 0.017-0.029 for 300 images
    stats = measured_cooccurrence(meta, "train")
    assert sum(stats.n_anchor.values()) == 300
    for cls in SPEC.classes:  # within 4 binomial standard deviations
        tolerance = 4 * np.sqrt(rho * (1 - rho) / stats.n_anchor[cls])
        assert abs(stats.preferred_given_anchor[cls] - rho) < tolerance
        # recomputed from the raw records
        anchored = [img for img in images if img["anchor"] == cls]
        hand = np.mean([img["context"] == SPEC.preferred_context(cls) for img in anchored])
        assert stats.preferred_given_anchor[cls] == pytest.approx(hand)
    pair_rate = np.mean([img["pair"] for img in images if img["pair"] is not None])
    assert abs(pair_rate - rho) < 0.1
    for anchor, _ in SPEC.pairs:
        tolerance = 4 * np.sqrt(rho * (1 - rho) / stats.n_anchor[anchor])
        assert abs(stats.partner_given_anchor[anchor] - rho) < tolerance
    if rho == 0.9:  # the partner is far likelier with its anchor than without
        for anchor, _ in SPEC.pairs:
            assert stats.partner_given_present[anchor] > 1.5 * stats.partner_given_absent[anchor]


def test_no_context_confounding_at_uniform_rho(tmp_path: Path) -> None:
    """At rho = 1 / n_contexts each class sees every context about equally often."""
    rho = 1 / len(SPEC.contexts)
    meta = load_meta(generate_synthetic(tmp_path, n_train=300, n_val=0, rho=rho, seed=5))
    counts = np.zeros((len(SPEC.classes), len(SPEC.contexts)))
    for img in meta["images"]:
        counts[SPEC.classes.index(img["anchor"]), SPEC.contexts.index(img["context"])] += 1
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45.3  # chi-square 99.9% quantile, 20 degrees of freedom


def test_coco_annotations_round_trip_through_pycocotools(synth: Path) -> None:
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    voc = synth / "VOCdevkit" / "VOC2012"
    meta = load_meta(synth)
    by_id = {img["id"]: img for img in meta["images"]}
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        coco = COCO(str(synth / "coco" / "annotations" / f"instances_{split}2014.json"))
        assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == \
            list(COCO_CATEGORIES)
        assert len(coco.getImgIds()) == n
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            img = by_id[image_id]
            assert info["file_name"] == f"COCO_{split}2014_{image_id:012d}.jpg"
            assert (synth / "coco" / f"{split}2014" / info["file_name"]).read_bytes() == \
                (voc / "JPEGImages" / f"{img['name']}.jpg").read_bytes()
            mask = _read_mask(voc, img["name"])
            assert (info["height"], info["width"]) == mask.shape
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert len(anns) == len(img["objects"])
            union = np.zeros(mask.shape, dtype=np.int64)
            for ann, obj in zip(anns, img["objects"]):
                assert ann["iscrowd"] == 0
                assert coco.loadCats(ann["category_id"])[0]["name"] == VOC_TO_COCO[obj["class"]]
                inst = coco.annToMask(ann).astype(bool)
                assert ann["area"] == inst.sum() == obj["area"]
                ys, xs = np.nonzero(inst)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                       ys.max() - ys.min() + 1]
                assert not union[inst].any()  # instances do not overlap
                union[inst] = VOC_CLASSES.index(obj["class"])
            keep = mask != IGNORE_INDEX
            np.testing.assert_array_equal(union[keep], mask[keep])


def test_rle_counts_against_pycocotools() -> None:
    mask_api = pytest.importorskip("pycocotools.mask")
    assert rle_counts(np.array([[0, 1], [1, 1]], dtype=bool)) == [1, 3]
    assert rle_counts(np.array([[1, 0], [1, 0]], dtype=bool)) == [0, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((7, 5)) < rng.random()
        encoded = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = mask_api.frPyObjects({"size": [7, 5], "counts": rle_counts(mask)}, 7, 5)
        assert ours["counts"] == encoded["counts"]


def test_cache_skips_a_complete_set_and_regenerates_otherwise(tmp_path: Path) -> None:
    voc = generate_synthetic(tmp_path, n_train=6, n_val=3, rho=0.9, seed=2)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    sidecar = voc / "synthetic.json"
    before = sidecar.read_bytes()
    generate_synthetic(tmp_path, n_train=6, n_val=3, rho=0.9, seed=2)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten

    missing = voc / "JPEGImages" / "val_000002.jpg"
    data = missing.read_bytes()
    missing.unlink()
    generate_synthetic(tmp_path, n_train=6, n_val=3, rho=0.9, seed=2)
    assert missing.read_bytes() == data and sidecar.read_bytes() == before

    generate_synthetic(tmp_path, n_train=6, n_val=3, rho=0.5, seed=2)
    assert load_meta(tmp_path)["params"]["rho"] == 0.5
    assert sidecar.read_bytes() != before


def test_load_meta_accepts_the_voc_roots(synth: Path) -> None:
    metas = [load_meta(p) for p in (synth, synth / "VOCdevkit", synth / "VOCdevkit" / "VOC2012")]
    assert metas[0] == metas[1] == metas[2]
    meta = metas[0]
    assert meta["params"] == {"n_train": N_TRAIN, "n_val": N_VAL, "rho": 0.9, "seed": 0,
                              "coco": True, "size": 150, "interventional": False,
                              "twins": 0}
    assert meta["preferred_context"] == dict(SPEC.preferred)
    assert [tuple(p) for p in meta["pairs"]] == list(SPEC.pairs)
    with pytest.raises(DataError, match="VOC"):
        load_meta(synth / "coco")
    with pytest.raises(DataError, match="not in the synthetic sidecar"):
        context_map(meta, ["train_000001", "nope"])


def test_synthetic_voc_dataset_adds_the_context(synth: Path) -> None:
    meta = load_meta(synth)
    ds = SyntheticVOC(synth, "val", max_images=5)
    assert len(ds) == 5 and ds.context_names == SPEC.contexts
    records = {img["name"]: img for img in meta["images"]}
    for i in range(len(ds)):
        sample = ds[i]
        record = records[sample["name"]]
        assert sample["context"] == ds.contexts[i] == SPEC.contexts.index(record["context"])
        present = {VOC_CLASSES[k + 1] for k in np.flatnonzero(sample["labels"].numpy())}
        assert present == {o["class"] for o in record["objects"]}
        assert sample["mask"].shape == sample["image"].shape[1:]


@pytest.mark.parametrize("kwargs, key", [
    ({"rho": 1.5}, "rho"), ({"n_train": -1}, "n_train"), ({"size": 10}, "size"),
    ({"n_train": 0, "n_val": 0}, "n_train"), ({"seed": -2}, "seed"),
])
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        generate_synthetic(tmp_path, **kwargs)


def test_output_path_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        generate_synthetic(target, n_train=1, n_val=0)
