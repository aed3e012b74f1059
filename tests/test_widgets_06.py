"""Tests for notebook 06's view: AttentionExplorer and viz.plot_context_panel, called directly."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from causal_wsss.errors import ConfigError, DataError
from causal_wsss.models.context import ContextAdjustment
from causal_wsss.widgets import AttentionExplorer

CLASSES = ("background", "cat", "dog", "horse", "person")  # n = 4 foreground classes
PRIOR = np.array([0.1, 0.2, 0.3, 0.4])


def _images(n: int, size: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _explorer() -> AttentionExplorer:
    alpha = np.array([[0.1, 0.6, 0.2, 0.1],
                      [0.05, 0.05, 0.1, 0.8],
                      [0.25, 0.25, 0.25, 0.25]])
    queries = np.zeros((3, 4, 4))
    queries[0, :2] = 1
    queries[1, :, 1] = 1
    m = np.arange(48, dtype=float).reshape(3, 4, 4) / 100
    return AttentionExplorer(["a", "b", "c"], _images(3), queries, alpha, m, CLASSES, PRIOR)


def _bars(ax) -> list[float]:
    return [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]


def test_top_class_and_line():
    ex = _explorer()
    assert ex.top("a") == ("dog", pytest.approx(0.6))
    assert ex.top("b") == ("person", pytest.approx(0.8))
    assert ex.top("c") == ("cat", pytest.approx(0.25))  # ties: the first class
    fig, line = ex.figure("b")
    assert line == "image=b top=person alpha=0.80"
    plt.close(fig)


def test_figure_shows_the_image_query_alpha_and_m():
    ex = _explorer()
    fig, _ = ex.figure("a")
    ax_img, ax_q, ax_a, ax_m = fig.axes[:4]
    np.testing.assert_array_equal(ax_img.get_images()[0].get_array(), ex.images[0])
    np.testing.assert_array_equal(ax_q.get_images()[0].get_array(), ex.queries[0])
    np.testing.assert_allclose(ax_m.get_images()[0].get_array(), ex.m[0])
    heights = _bars(ax_a)  # alpha, then alpha * P(c) renormalised
    np.testing.assert_allclose(heights[:4], ex.alpha[0])
    weighted = ex.alpha[0] * PRIOR
    np.testing.assert_allclose(heights[4:8], weighted / weighted.sum())
    assert [t.get_text() for t in ax_a.get_xticklabels()] == list(CLASSES[1:])
    plt.close(fig)


def test_show_prints_and_closes(capsys):
    before = plt.get_fignums()
    assert _explorer().show("c") == "image=c top=cat alpha=0.25"
    assert "image=c top=cat alpha=0.25" in capsys.readouterr().out
    assert plt.get_fignums() == before


def test_widget_calls_update_on_change(capsys):
    box = _explorer().widget()
    dropdown = box.children[0]
    assert isinstance(dropdown, widgets.Dropdown) and dropdown.value == "a"
    assert "image=a top=dog alpha=0.60" in capsys.readouterr().out  # drawn once when built
    dropdown.value = "b"
    assert "image=b top=person alpha=0.80" in capsys.readouterr().out


def test_rejects_inconsistent_inputs():
    ex = _explorer()
    with pytest.raises(DataError, match="as many"):
        AttentionExplorer(["a", "b"], ex.images, ex.queries, ex.alpha, ex.m, CLASSES)
    with pytest.raises(DataError, match=r"alpha \(N, 4\)"):
        AttentionExplorer(ex.names, ex.images, ex.queries, ex.alpha[:, :3], ex.m, CLASSES)
    with pytest.raises(DataError, match="prior"):
        AttentionExplorer(ex.names, ex.images, ex.queries, ex.alpha, ex.m, CLASSES, PRIOR[:2])
    with pytest.raises(ConfigError, match="unknown image"):
        ex.figure("zzz")


def test_notebook_flow_from_context_module_matches_eq3_by_hand():
    """The notebook feeds ContextAdjustment's (m, alpha) to the explorer; check the shown m
    against m = sum_i alpha_i P(c_i) c_i and alpha against a softmax computed by hand."""
    rng = np.random.default_rng(1)
    g = 4
    dictionary = rng.uniform(0, 1, (len(CLASSES), g, g)).astype(np.float32)  # row 0 = bg
    queries = (rng.uniform(0, 1, (3, g * g)) > 0.5).astype(np.float32)
    ctx = ContextAdjustment(dictionary, PRIOR, queries=queries)
    with torch.no_grad():
        for lin in (ctx.w1, ctx.w2):  # larger weights than the N(0, 0.02) init: a non-uniform alpha
            lin.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, lin.weight.shape)))
        m, alpha = ctx(index=torch.arange(3))
    w1, w2 = (lin.weight.detach().double().numpy() for lin in (ctx.w1, ctx.w2))
    c = dictionary[1:].reshape(4, -1).astype(np.float64)
    scores = (queries @ w1.T) @ (c @ w2.T).T / np.sqrt(len(CLASSES))  # e = n + 1
    ref_alpha = np.exp(scores - scores.max(1, keepdims=True))
    ref_alpha /= ref_alpha.sum(1, keepdims=True)
    ref_m = ((ref_alpha * PRIOR) @ c).reshape(3, g, g)
    ex = AttentionExplorer(["a", "b", "c"], _images(3), queries.reshape(3, g, g), alpha.numpy(),
                           m[:, 0].numpy(), CLASSES, PRIOR)
    np.testing.assert_allclose(ex.alpha, ref_alpha, rtol=1e-4, atol=1e-6)
    k = int(np.argmax(ref_alpha[1]))
    fig, line = ex.figure("b")
    assert line == f"image=b top={CLASSES[k + 1]} alpha={ref_alpha[1, k]:.2f}"
    shown = [im for im in fig.axes[3].get_children() if isinstance(im, AxesImage)][0]
    np.testing.assert_allclose(shown.get_array(), ref_m[1], rtol=1e-4, atol=1e-7)
    plt.close(fig)


def test_attention_panel_shows_only_the_data_sets_classes():
    alpha = np.array([[0.0, 0.7, 0.0, 0.3], [0.0, 0.2, 0.0, 0.8]])
    prior = np.array([0.0, 0.5, 0.0, 0.5])  # cat and horse have no dictionary entry
    queries, m = np.zeros((2, 4, 4)), np.zeros((2, 4, 4))
    explorer = AttentionExplorer(["a", "b"], _images(2), queries, alpha, m, CLASSES, prior)
    assert explorer.shown == [1, 3]
    fig, _ = explorer.figure("a")
    ax = fig.axes[2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dog", "person"]
    plt.close(fig)
    chosen = AttentionExplorer(["a", "b"], _images(2), queries, alpha, m, CLASSES, prior,
                               present=("cat", "dog", "person"))
    assert chosen.shown == [0, 1, 3]
    with pytest.raises(DataError, match="zebra"):
        AttentionExplorer(["a", "b"], _images(2), queries, alpha, m, CLASSES, prior,
                          present=("zebra",))
