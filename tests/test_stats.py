"""Co-occurrence statistics against counts worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import write_voc_tree

from causal_wsss.data import SegmentationDataset, VOCSegmentation
from causal_wsss.data.stats import (
    conditional_probability,
    cooccurrence_from_labels,
    cooccurrence_stats,
    format_stats_table,
)

# images: {a, b}, {a}, {a, b, c}, {}; class d never appears
ROWS = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)


class LabelsOnly(SegmentationDataset):
    """A data set whose images cannot be decoded: statistics must not need them."""

    classes = ("background", "a", "b", "c", "d")

    def __init__(self):
        super().__init__("nowhere", "train", [f"img{i}" for i in range(len(ROWS))])

    @property
    def has_masks(self):
        return False

    def image_path(self, i):
        raise AssertionError("statistics decoded an image")

    def load_mask(self, i):
        raise AssertionError("statistics decoded a mask")

    def _read_labels(self, i):
        return ROWS[i]


def test_counts_by_hand():
    stats = cooccurrence_stats(LabelsOnly())
    assert set(stats) == {"num_images", "classes", "image_counts", "cooccurrence"}
    assert stats["num_images"] == 4
    assert stats["classes"] == ["a", "b", "c", "d"]
    assert stats["image_counts"] == {"a": 3, "b": 2, "c": 1, "d": 0}
    assert stats["cooccurrence"] == {
        "a": {"a": 3, "b": 2, "c": 1, "d": 0},
        "b": {"a": 2, "b": 2, "c": 1, "d": 0},
        "c": {"a": 1, "b": 1, "c": 1, "d": 0},
        "d": {"a": 0, "b": 0, "c": 0, "d": 0},
    }
    assert json.loads(json.dumps(stats)) == stats


def test_conditional_probability_by_hand():
    cond = conditional_probability(cooccurrence_stats(LabelsOnly()))
    assert cond["a"]["b"] == pytest.approx(2 / 3) and cond["b"]["a"] == 1.0
    assert cond["a"]["c"] == pytest.approx(1 / 3) and cond["c"]["b"] == 1.0
    assert cond["a"]["a"] == 1.0 and cond["d"] == {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}


def test_table():
    table = format_stats_table(cooccurrence_stats(LabelsOnly()), top=2)
    lines = table.splitlines()
    assert lines[0] == "4 images, 3 of 4 classes present"
    rows = [line.split() for line in lines]
    assert ["a", "3", "75.0%"] in rows and ["c", "1", "25.0%"] in rows
    assert not any(r and r[0] == "d" for r in rows)  # no image: left out of the table
    assert ["a", "b", "2", "0.67", "1.00"] in rows
    assert ["a", "c", "1", "0.33", "1.00"] in rows
    assert ["b", "c", "1", "0.50", "1.00"] not in rows  # only the top 2 pairs
    assert rows.index(["a", "b", "2", "0.67", "1.00"]) < rows.index(["a", "c", "1", "0.33", "1.00"])


def test_no_pairs_and_shape_check():
    stats = cooccurrence_from_labels(np.eye(2, dtype=bool), ["x", "y"])
    assert "(no two classes share an image)" in format_stats_table(stats)
    with pytest.raises(ValueError, match="does not match 3 classes"):
        cooccurrence_from_labels(np.eye(2, dtype=bool), ["x", "y", "z"])


def test_voc_fixture_counts(tmp_path):
    info = write_voc_tree(tmp_path, n_train=5, n_val=0, seed=3)
    stats = cooccurrence_stats(VOCSegmentation(tmp_path, "train"))
    assert stats["num_images"] == 5 and len(stats["classes"]) == 20
    for a in stats["classes"]:
        ka = VOCSegmentation.classes.index(a)
        assert stats["image_counts"][a] == sum(ka in info["labels"][n] for n in info["train"])
        for b in stats["classes"]:
            kb = VOCSegmentation.classes.index(b)
            both = sum(ka in info["labels"][n] and kb in info["labels"][n] for n in info["train"])
            assert stats["cooccurrence"][a][b] == both


def test_negative_top_is_refused():
    """Before: top=-1 dropped the last pair (``pairs[:-1]``) instead of refusing."""
    from causal_wsss.errors import ConfigError

    stats = cooccurrence_stats(LabelsOnly())
    for top in (-1, -3, 1.5):
        with pytest.raises(ConfigError, match=f"top is {top!r}; expected an integer >= 0"):
            format_stats_table(stats, top=top)
    assert "most frequent pairs (top 0)" in format_stats_table(stats, top=0)
    assert ["b", "c", "1", "0.50", "1.00"] in [line.split() for line in
                                                format_stats_table(stats, top=3).splitlines()]
