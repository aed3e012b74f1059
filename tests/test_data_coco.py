"""MS-COCO reader on a tiny tree in the real layout: class mapping, polygons/RLE, crowds, bad input."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from fixtures import write_coco_tree

from causal_wsss.constants import COCO_CLASSES
from causal_wsss.data import COCOSegmentation, build_dataset
from causal_wsss.errors import DataError

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return write_coco_tree(root, seed=0)


@pytest.fixture
def coco_copy(coco, tmp_path):
    shutil.copytree(coco["root"], tmp_path / "coco")
    return tmp_path / "coco"


def _labels(row) -> list[int]:
    return (np.flatnonzero(np.asarray(row)) + 1).tolist()


def test_class_mapping_and_labels(coco):
    ds = COCOSegmentation(coco["root"], "train", drop_unlabelled=False)
    assert ds.classes == COCO_CLASSES and ds.num_classes == 81
    assert ds.names == ["COCO_train2014_000000000001", "COCO_train2014_000000000002",
                        "COCO_train2014_000000000003"]
    assert ds.image_ids == [1, 2, 3]
    assert COCO_CLASSES[80] == "toothbrush" and COCO_CLASSES[16] == "cat"
    matrix = ds.label_matrix()
    assert matrix.shape == (3, 80)
    assert _labels(matrix[0]) == [1, 80]  # person (id 1), toothbrush (id 90)
    assert _labels(matrix[1]) == [16, 17]  # cat (id 17) and the crowd's dog (id 18) counts
    assert _labels(matrix[2]) == []  # kept, all zero


def test_masks_polygon_rle_and_crowd(coco):
    ds = COCOSegmentation(coco["root"], "train", drop_unlabelled=False)
    for i, name in enumerate(ds.names):
        labels, mask = coco["expected"][name]
        assert np.array_equal(ds.load_mask(i), mask), name
        sample = ds[i]
        assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (30, 40)
        assert np.array_equal(sample["mask"].numpy(), mask.astype(np.int64))
        assert _labels(sample["labels"]) == labels
        assert sample["image"].shape == (3, 30, 40) and sample["image"].dtype == torch.uint8
    crowd = ds.load_mask(1)
    assert crowd[5, 5] == 255 and crowd[24, 34] == 255  # crowd corners: ignored
    assert crowd[15, 15] == 16  # the cat drawn over the crowd
    assert crowd[0, 0] == 0 and crowd[25, 5] == 0
    # polygon [4,4]-[16,14] covers pixel rows 4..13, columns 4..15
    person = ds.load_mask(0) == 1
    assert person.sum() == 120 and person[4, 4] and person[13, 15] and not person[14, 16]


def test_smaller_instance_drawn_last(coco_copy):
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    big = [[0, 0, 40, 0, 40, 30, 0, 30]]
    # listed first although smaller: drawing order follows area, not file order
    data["annotations"].insert(0, {**data["annotations"][0], "id": 1, "category_id": 1,
                                   "segmentation": big, "area": 1200.0})
    data["annotations"].reverse()
    path.write_text(json.dumps(data))
    mask = COCOSegmentation(coco_copy, "val").load_mask(0)
    assert mask[5, 5] == 6 and mask[20, 30] == 1


def test_unlabelled_images_dropped_on_train_by_default(coco):
    train = COCOSegmentation(coco["root"], "train2014")
    assert train.names == ["COCO_train2014_000000000001", "COCO_train2014_000000000002"]
    val = build_dataset("coco", coco["root"], "val")
    assert val.names == ["COCO_val2014_000000000004"] and _labels(val.label_matrix()[0]) == [6]
    assert len(COCOSegmentation(coco["root"], "train", max_images=1)) == 1


def test_unknown_split(coco):
    with pytest.raises(DataError, match="unknown COCO split 'test2015'.*train, train2014, val"):
        COCOSegmentation(coco["root"], "test2015")


def test_wrong_root(tmp_path):
    with pytest.raises(DataError) as err:
        COCOSegmentation(tmp_path, "val")
    msg = str(err.value)
    assert str(tmp_path / "val2014") in msg
    assert str(tmp_path / "annotations" / "instances_val2014.json") in msg


def test_pycocotools_missing(coco, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(DataError, match=r'pip install "causal-wsss\[coco\]"'):
        COCOSegmentation(coco["root"], "val")


@pytest.mark.parametrize("content, expect", [
    ("{not json", "cannot read COCO annotations"),
    ('{"images": []}', "lack an 'images' or 'annotations' list"),
    ('{"images": [{"id": 4}], "annotations": []}', "lacks file_name, height, width"),
])
def test_malformed_json(coco_copy, content, expect):
    path = coco_copy / "annotations" / "instances_val2014.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expect) as err:
        COCOSegmentation(coco_copy, "val")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("change, expect", [
    ({"category_id": 12}, "category_id 12"),  # 12 is one of COCO's gaps
    ({"image_id": 99}, "image_id 99"),
    ({"segmentation": {"counts": "@@", "size": [30, 40]}}, "cannot decode a segmentation"),
])
def test_bad_annotation(coco_copy, change, expect):
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0].update(change)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=expect) as err:
        COCOSegmentation(coco_copy, "val").load_mask(0)
    assert str(path) in str(err.value)


def test_wrong_category_names(coco_copy):
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "human"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="category id 1 is 'human'; expected 'person'"):
        COCOSegmentation(coco_copy, "val")


def test_corrupt_image(coco_copy):
    path = coco_copy / "val2014" / "COCO_val2014_000000000004.jpg"
    path.write_bytes(path.read_bytes()[:100])
    ds = COCOSegmentation(coco_copy, "val")
    with pytest.raises(DataError, match="cannot decode image") as err:
        ds[0]
    assert str(path) in str(err.value)


def _coco_cli(*args):
    import subprocess
    from pathlib import Path

    return subprocess.run([sys.executable, "-m", "causal_wsss", *args], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])


def _one_error_line(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, res.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("categories", [5, [1], ["person"], [{"id": 1}]])
def test_malformed_categories_are_one_line(coco_copy, categories):
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"] = categories
    path.write_text(json.dumps(data))
    _one_error_line(_coco_cli("stats", "--dataset", "coco", "--root", str(coco_copy), "--split",
                              "val"), str(path), "'categories'")


@pytest.mark.parametrize("file_name", ["../../elsewhere.jpg", "/tmp/elsewhere.jpg",
                                       "a/../../../elsewhere.jpg"])
def test_file_name_outside_the_image_folder_is_refused(coco_copy, file_name):
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"][-1]["file_name"] = file_name
    path.write_text(json.dumps(data))
    _one_error_line(_coco_cli("stats", "--dataset", "coco", "--root", str(coco_copy), "--split",
                              "val"), str(path), repr(file_name))


def test_empty_image_list_is_refused(coco_copy):
    """Before: 'images': [] gave a data set of 0 images, which trained on nothing and failed at
    the threshold sweep; VOC refuses an empty split list up front."""
    path = coco_copy / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["images"], data["annotations"] = [], []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="list no images") as err:
        COCOSegmentation(coco_copy, "val")
    assert str(path) in str(err.value)
    _one_error_line(_coco_cli("stats", "--dataset", "coco", "--root", str(coco_copy), "--split",
                              "val"), str(path), "list no images")


def test_train_split_without_annotated_images_is_refused(coco_copy):
    """Training drops images without annotations: none annotated leaves nothing to train on."""
    path = coco_copy / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["annotations"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="none of its 3 images has an annotation") as err:
        COCOSegmentation(coco_copy, "train")
    assert str(path) in str(err.value)
    assert len(COCOSegmentation(coco_copy, "train", drop_unlabelled=False)) == 3
