"""PASCAL VOC reader on a tiny tree in the real layout: labels, masks, splits, roots, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fixtures import write_voc_tree
from PIL import Image

from causal_wsss.constants import VOC_CLASSES
from causal_wsss.data import VOCSegmentation, build_dataset, dataset_names
from causal_wsss.errors import DataError


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return root, write_voc_tree(root, n_train=4, n_val=2, seed=0, with_aug=True)


@pytest.fixture
def voc_copy(voc, tmp_path):
    """A private copy for tests that damage the tree."""
    root, info = voc
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy, {**info, "voc_root": copy / "VOCdevkit" / "VOC2012"}


def test_sample_contract(voc):
    root, info = voc
    ds = VOCSegmentation(root, "train")
    assert ds.classes == VOC_CLASSES and ds.num_classes == 21
    assert ds.names == info["train"] and len(ds) == 4 and ds.has_masks
    sample = ds[1]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 30, 40)
    assert sample["labels"].dtype == torch.float32 and sample["labels"].shape == (20,)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (30, 40)
    assert sample["name"] == info["train"][1] and sample["index"] == 1
    assert ds[-1]["name"] == info["train"][-1]
    with pytest.raises(IndexError):
        ds[4]
    # the image is the decoded JPEG, channels first
    jpeg = np.array(Image.open(ds.image_path(1)).convert("RGB"))
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), jpeg)


def test_labels_from_xml_include_difficult_and_ignore_parts(voc):
    root, info = voc
    ds = VOCSegmentation(root, "train")
    first = info["train"][0]
    difficult = [o["label"] for o in info["objects"][first] if o.get("difficult")]
    assert len(difficult) == 1
    assert difficult[0] not in np.unique(info["masks"][first])  # only the XML knows it
    for i, name in enumerate(info["train"]):
        expected = np.zeros(20, dtype=bool)
        expected[np.array(info["labels"][name]) - 1] = True
        assert np.array_equal(ds.image_labels(i), expected), name
        assert np.array_equal(ds[i]["labels"].numpy(), expected.astype(np.float32))
    assert ds.image_labels(0)[difficult[0] - 1]
    # train image 1 holds a person whose <part><name>head</name> is not a class
    assert ds.image_labels(1)[VOC_CLASSES.index("person") - 1]


def test_label_matrix_needs_no_images(voc_copy):
    root, info = voc_copy
    ds = VOCSegmentation(root, "train")
    shutil.rmtree(info["voc_root"] / "JPEGImages")
    matrix = ds.label_matrix()
    assert matrix.dtype == bool and matrix.shape == (4, 20) and not matrix.flags.writeable
    for i, name in enumerate(info["train"]):
        assert sorted(np.flatnonzero(matrix[i]) + 1) == info["labels"][name]


def test_mask_reads_palette_indices_and_keeps_ignore(voc):
    root, info = voc
    ds = VOCSegmentation(root, "val")
    for i, name in enumerate(info["val"]):
        with Image.open(ds.mask_path(i)) as img:
            assert img.mode == "P"
        mask = ds.load_mask(i)
        assert mask.dtype == np.uint8
        assert np.array_equal(mask, info["masks"][name])
        assert 255 in mask  # the void band around each object
        assert np.array_equal(ds[i]["mask"].numpy(), mask.astype(np.int64))


def test_labels_fall_back_to_mask_without_xml(voc_copy):
    root, info = voc_copy
    name = info["val"][0]
    (info["voc_root"] / "Annotations" / f"{name}.xml").unlink()
    ds = VOCSegmentation(root, "val")
    present = sorted(set(np.unique(info["masks"][name]).tolist()) - {0, 255})
    assert sorted(np.flatnonzero(ds.image_labels(0)) + 1) == present


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_variants(voc, sub):
    root, info = voc
    ds = VOCSegmentation(root / sub if sub else root, "val")
    assert ds.voc_root == info["voc_root"] and ds.names == info["val"]


def test_train_aug_split(voc):
    root, info = voc
    ds = VOCSegmentation(root, "train_aug")
    assert ds.names == info["train"] + info["aug_extra"]
    assert all(ds.mask_path(i).parent.name == "SegmentationClassAug" for i in range(len(ds)))
    extra = len(info["train"])
    assert np.array_equal(ds.load_mask(extra), info["masks"][info["aug_extra"][0]])
    assert 255 not in ds.load_mask(0)  # SBD masks have no void band
    # ordinary splits read SegmentationClass, falling back to SegmentationClassAug
    assert VOCSegmentation(root, "train").mask_path(0).parent.name == "SegmentationClass"


def test_train_aug_list_in_segmentation_folder_deeplab_format(voc_copy):
    root, info = voc_copy
    voc_root = info["voc_root"]
    shutil.rmtree(voc_root / "ImageSets" / "SegmentationAug")
    (voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in info["val"]))
    ds = VOCSegmentation(root, "train_aug")
    assert ds.names == info["val"]


def test_mask_falls_back_to_aug_folder(voc_copy):
    root, info = voc_copy
    name = info["train"][2]
    (info["voc_root"] / "SegmentationClass" / f"{name}.png").unlink()
    ds = VOCSegmentation(root, "train")
    assert ds.mask_path(2).parent.name == "SegmentationClassAug"
    assert 255 not in ds.load_mask(2)


def test_split_without_masks_has_no_mask_key(voc_copy):
    root, info = voc_copy
    lists = info["voc_root"] / "ImageSets" / "Segmentation"
    (lists / "test.txt").write_text("2009_000000\n")  # an image with no mask in SegmentationClass
    shutil.rmtree(info["voc_root"] / "SegmentationClassAug")
    ds = VOCSegmentation(root, "test")
    assert not ds.has_masks and ds.load_mask(0) is None
    assert "mask" not in ds[0]


def test_max_images_and_registry(voc):
    root, info = voc
    ds = build_dataset("voc", root, "train", max_images=2)
    assert isinstance(ds, VOCSegmentation) and ds.names == info["train"][:2]
    assert dataset_names() == ("voc", "coco", "synthetic")
    with pytest.raises(DataError):  # "synthetic" is the VOC layout plus a sidecar, absent here
        build_dataset("synthetic", root, "val")
    with pytest.raises(DataError, match="unknown data set 'imagenet'.*voc, coco, synthetic"):
        build_dataset("imagenet", root, "train")


# ---- bad input: one DataError naming the path and what was expected ----

def test_wrong_root(tmp_path):
    with pytest.raises(DataError) as err:
        VOCSegmentation(tmp_path, "train")
    msg = str(err.value)
    assert str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages") in msg
    assert str(tmp_path / "VOC2012" / "JPEGImages") in msg
    with pytest.raises(DataError, match="does not exist"):
        VOCSegmentation(tmp_path / "nowhere", "train")


def test_unknown_split_lists_available(voc):
    root, info = voc
    with pytest.raises(DataError) as err:
        VOCSegmentation(root, "tarin")
    msg = str(err.value)
    assert str(info["voc_root"] / "ImageSets" / "Segmentation" / "tarin.txt") in msg
    assert "train, trainval, val, train_aug" in msg


def test_train_aug_without_sbd_masks(voc_copy):
    root, info = voc_copy
    shutil.rmtree(info["voc_root"] / "SegmentationClassAug")
    with pytest.raises(DataError) as err:
        VOCSegmentation(root, "train_aug")
    assert str(info["voc_root"] / "SegmentationClassAug") in str(err.value)


def test_listed_image_missing(voc_copy):
    root, info = voc_copy
    path = info["voc_root"] / "JPEGImages" / f"{info['val'][1]}.jpg"
    path.unlink()
    with pytest.raises(DataError) as err:
        VOCSegmentation(root, "val")
    assert str(path) in str(err.value) and "val.txt" in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image(voc_copy, damage):
    root, info = voc_copy
    path = info["voc_root"] / "JPEGImages" / f"{info['val'][0]}.jpg"
    data = path.read_bytes()
    path.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    ds = VOCSegmentation(root, "val")
    with pytest.raises(DataError) as err:
        ds[0]
    assert str(path) in str(err.value) and "cannot decode image" in str(err.value)


def test_missing_and_unreadable_mask(voc_copy):
    root, info = voc_copy
    voc_root = info["voc_root"]
    shutil.rmtree(voc_root / "SegmentationClassAug")
    missing = voc_root / "SegmentationClass" / f"{info['val'][1]}.png"
    missing.unlink()
    ds = VOCSegmentation(root, "val")
    with pytest.raises(DataError, match="missing mask") as err:
        ds[1]
    assert str(missing) in str(err.value)

    broken = voc_root / "SegmentationClass" / f"{info['val'][0]}.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError) as err:
        ds.load_mask(0)
    assert str(broken) in str(err.value)


def test_rgb_mask_rejected(voc_copy):
    root, info = voc_copy
    path = info["voc_root"] / "SegmentationClass" / f"{info['val'][0]}.png"
    Image.open(path).convert("RGB").save(path)
    ds = VOCSegmentation(root, "val")
    with pytest.raises(DataError, match="mode 'RGB'") as err:
        ds.load_mask(0)
    assert str(path) in str(err.value)


def test_mask_size_mismatch(voc_copy):
    root, info = voc_copy
    path = info["voc_root"] / "SegmentationClass" / f"{info['val'][0]}.png"
    Image.open(path).crop((0, 0, 20, 20)).save(path)
    with pytest.raises(DataError, match="30x40") as err:
        VOCSegmentation(root, "val")[0]
    assert f"{info['val'][0]}.jpg" in str(err.value)


@pytest.mark.parametrize("xml, expect", [
    ("<annotation><object><name>dog</name>", "cannot parse annotation"),
    ("<annotation><object><name>unicorn</name></object></annotation>", "'unicorn'"),
    ("<annotation><object><pose>Left</pose></object></annotation>", "without a <name>"),
])
def test_bad_annotation_xml(voc_copy, xml, expect):
    root, info = voc_copy
    path = info["voc_root"] / "Annotations" / f"{info['val'][0]}.xml"
    path.write_text(xml)
    ds = VOCSegmentation(root, "val")
    with pytest.raises(DataError, match=expect) as err:
        ds.label_matrix()
    assert str(path) in str(err.value)


def test_empty_split_list(voc_copy):
    root, info = voc_copy
    path = info["voc_root"] / "ImageSets" / "Segmentation" / "val.txt"
    path.write_text("\n")
    with pytest.raises(DataError, match="empty") as err:
        VOCSegmentation(root, "val")
    assert str(path) in str(err.value)


# --- labels a synthetic set does not declare (its sidecar lists 6 of the 20 VOC classes) ------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from causal_wsss.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, n_train=4, n_val=2, seed=0, size=64)
    return root


@pytest.fixture
def synth_copy(synth, tmp_path):
    shutil.copytree(synth, tmp_path / "synth")
    return tmp_path / "synth", tmp_path / "synth" / "VOCdevkit" / "VOC2012"


def test_generated_labels_are_all_declared(synth):
    ds = VOCSegmentation(synth, "train")
    declared = set(ds.used_classes) | {255}
    assert len(ds.used_classes) == 7
    ds.label_matrix()
    for i in range(len(ds)):
        assert set(np.unique(ds.load_mask(i)).tolist()) <= declared


@pytest.mark.parametrize("dataset", ["voc", "synthetic"])
def test_xml_class_the_set_does_not_declare(synth_copy, dataset):
    """Before: a VOC class outside the sidecar's list became an image-level label silently."""
    root, voc_root = synth_copy
    ds = build_dataset(dataset, root, "train")
    path = voc_root / "Annotations" / f"{ds.names[1]}.xml"
    path.write_text(path.read_text().replace(
        "</annotation>", "<object><name>dog</name><difficult>0</difficult></object></annotation>"))
    with pytest.raises(DataError, match="names class 'dog'; expected one of the classes its "
                                        "synthetic sidecar") as err:
        build_dataset(dataset, root, "train").label_matrix()
    assert str(path) in str(err.value) and "synthetic.json" in str(err.value)


def test_mask_value_the_set_does_not_declare(synth_copy):
    """Before: a mask pixel of an undeclared class (12, dog) was scored as ground truth."""
    root, voc_root = synth_copy
    ds = VOCSegmentation(root, "val")
    path = ds.mask_path(0)
    with Image.open(path) as img:
        mask, palette = np.array(img), img.getpalette()
    mask[0, 0] = VOC_CLASSES.index("dog")
    damaged = Image.fromarray(mask)  # mode L, indices unchanged
    damaged.putpalette(palette)
    damaged.save(path)
    with pytest.raises(DataError, match=r"holds value 12 \(dog\), a class the data set does not "
                                        "declare") as err:
        ds.load_mask(0)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="holds value 12"):
        ds[0]
    (voc_root / "Annotations" / f"{ds.names[0]}.xml").unlink()  # labels read from the mask
    with pytest.raises(DataError, match="holds value 12"):
        VOCSegmentation(root, "val").label_matrix()


def test_undeclared_class_stops_stats_in_one_line(synth_copy):
    import subprocess
    import sys
    from pathlib import Path

    root, voc_root = synth_copy
    path = voc_root / "Annotations" / f"{VOCSegmentation(root, 'train').names[0]}.xml"
    path.write_text(path.read_text().replace("</annotation>",
                                             "<object><name>cat</name></object></annotation>"))
    res = subprocess.run([sys.executable, "-m", "causal_wsss", "stats", "--dataset", "voc",
                          "--root", str(root)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1 and str(path) in lines[0] and "'cat'" in lines[0], res.stderr
