"""The confounder dictionary equals a hand-computed average of known masks."""

from __future__ import annotations

import numpy as np
import pytest

from causal_wsss.confounders import (
    ConfounderDictionary,
    build_confounder_dictionary,
    queries_from_grids,
    resize_labels,
)

CLASSES = ("background", "a", "b", "c")


def _grids():
    g = np.zeros((3, 2, 2), dtype=np.uint8)
    g[0] = [[1, 1], [0, 0]]  # class a on top
    g[1] = [[1, 0], [2, 2]]  # a top-left, b bottom
    g[2] = [[2, 255], [0, 2]]  # b, one ignored pixel
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)  # image 1 not labelled b
    return g, labels


def test_dictionary_matches_hand_average():
    g, labels = _grids()
    d = build_confounder_dictionary(g, labels, classes=CLASSES, prior="freq")
    # a: images 0, 1 -> mean of [[1,1],[0,0]] and [[1,0],[0,0]]
    np.testing.assert_allclose(d.masks[1], [[1.0, 0.5], [0.0, 0.0]])
    # b: image 1 is excluded (label disagrees), image 2 only: [[1,0],[0,1]] (255 not counted)
    np.testing.assert_allclose(d.masks[2], [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(d.masks[3], 0.0)
    # background: all 3 images contain 0
    np.testing.assert_allclose(d.masks[0], [[0, 1 / 3], [2 / 3, 1 / 3]], atol=1e-6)
    assert d.counts.tolist() == [2, 1, 0]
    np.testing.assert_allclose(d.prior, [2 / 3, 1 / 3, 0.0], atol=1e-6)
    assert d.valid.tolist() == [True, True, False]


def test_without_label_agreement_and_uniform_prior():
    g, labels = _grids()
    d = build_confounder_dictionary(g, labels, classes=CLASSES, prior="uniform",
                                    agree_with_labels=False, chunk=1)
    np.testing.assert_allclose(d.masks[2], [[0.5, 0.0], [0.5, 1.0]])
    assert d.counts.tolist() == [2, 2, 0]
    np.testing.assert_allclose(d.prior, [0.5, 0.5, 0.0])


def test_save_load_round_trip(tmp_path):
    g, labels = _grids()
    d = build_confounder_dictionary(g, labels, classes=CLASSES)
    d.save(tmp_path / "round_1")
    e = ConfounderDictionary.load(tmp_path / "round_1")
    np.testing.assert_array_equal(d.masks, e.masks)
    np.testing.assert_array_equal(d.prior, e.prior)
    assert e.classes == CLASSES and e.foreground().shape == (3, 4)


def test_queries_and_resize():
    g, _ = _grids()
    q = queries_from_grids(g)
    assert q.shape == (3, 4) and q[1].tolist() == [1, 0, 1, 1] and q[2].tolist() == [1, 0, 0, 1]
    oh = queries_from_grids(g, mode="onehot", num_classes=4)
    assert oh.shape == (3, 16) and oh[2].sum() == 3
    big = np.kron(np.array([[1, 2], [3, 0]], dtype=np.uint8), np.ones((5, 7), dtype=np.uint8))
    np.testing.assert_array_equal(resize_labels(big, 2), [[1, 2], [3, 0]])
    with pytest.raises(ValueError):
        queries_from_grids(g, mode="soft")
