"""Tests for the figures of notebooks 03-05 in causal_wsss.viz (loss curve, threshold sweep, leakage, label maps)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from causal_wsss import viz
from causal_wsss.constants import voc_palette


def test_error_map_colours_each_case():
    pred = np.array([[1, 1, 0, 0]], bool)
    truth = np.array([[1, 0, 1, 0]], bool)
    out = viz.error_map(pred, truth, valid=np.array([[1, 1, 1, 0]], bool))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0].tolist() == [[40, 180, 60], [220, 40, 40], [50, 90, 230], [128, 128, 128]]
    assert viz.error_map(pred, truth)[0, 3].tolist() == [0, 0, 0]


def test_plot_loss_history_running_mean_and_epochs():
    steps, losses = list(range(1, 9)), [8.0, 6.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    fig = viz.plot_loss_history(steps, losses, window=4,
                                epochs=[{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 2.0}])
    raw, running, epochs = fig.axes[0].get_lines()
    np.testing.assert_allclose(running.get_xdata(), [4, 5, 6, 7, 8])
    np.testing.assert_allclose(running.get_ydata(), [5.0, 3.5, 2.5, 2.0, 2.0])
    np.testing.assert_allclose(epochs.get_xdata(), [4, 8])  # the last step of each epoch
    plt.close(fig)
    fig = viz.plot_loss_history([], [], epochs=[{"epoch": 1, "loss": 0.5}])  # resumed: epochs only
    assert fig.axes[0].get_xlabel() == "epoch" and len(fig.axes[0].get_lines()) == 1
    plt.close(fig)


def test_plot_threshold_sweep_marks_best_and_fixed():
    curve = [(0.1, 10.0), (0.15, 20.0), (0.2, 40.0), (0.3, 30.0)]
    fig = viz.plot_threshold_sweep({"a": curve}, fixed=0.15)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert "a (best 40.0 at 0.20)" in lines
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in stars] == [(0.2, 40.0)]
    assert [t.get_text() for t in ax.texts] == ["20.0"]  # the value at the fixed threshold
    plt.close(fig)
    # two curves with close values at the fixed threshold: labels stacked, higher value on top
    fig = viz.plot_threshold_sweep({"a": curve, "b": [(t, m - 0.5) for t, m in curve]})
    at = {t.get_text(): t.xyann[1] for t in fig.axes[0].texts}  # label heights, data units
    assert set(at) == {"20.0", "19.5"} and at["20.0"] == 20.0
    assert at["20.0"] - at["19.5"] >= 0.06 * (40.0 - 9.5) - 1e-9  # moved apart, order kept
    plt.close(fig)


def test_plot_rounds_draws_shares_on_their_whole_scale():
    entry = {"cam_miou": 16.0, "cam_miou_best": 40.0, "pseudo_miou": 39.9, "seg_miou": 42.0,
             "leakage": 0.829, "leakage_background": 0.764, "leakage_cooccur": 0.065}
    report = {"rounds": [{"round": 0, **entry}, {"round": 1, **entry, "leakage": 0.830}]}
    fig = viz.plot_rounds(report)
    assert fig.axes[1].get_ylim() == (0.0, 1.0)  # a 0.001 change stays a 0.001 change
    assert fig.axes[0].get_ylim() == (0.0, 50.0)
    plt.close(fig)


def test_plot_leakage_split_stacks_and_skips_empty_classes():
    per_class = {"horse": {"leakage_cooccur": 0.2, "leakage_background": 0.5, "pairs": 3},
                 "car": {"leakage_cooccur": 0.0, "leakage_background": 0.3, "pairs": 1},
                 "cat": {"leakage_cooccur": float("nan"), "leakage_background": float("nan"),
                         "pairs": 0}}
    fig = viz.plot_leakage_split(per_class)
    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(bars) == 4  # two classes x (background, co-occurring)
    tops = sorted(round(b.get_y() + b.get_height(), 6) for b in bars)
    assert tops == [0.3, 0.3, 0.5, 0.7]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["horse", "car"]
    plt.close(fig)


def test_plot_leakage_split_marks_a_uniform_maps_leakage():
    per_class = {"horse": {"leakage_cooccur": 0.2, "leakage_background": 0.5, "pairs": 3,
                           "leakage_uniform": 0.9},
                 "car": {"leakage_cooccur": 0.0, "leakage_background": 0.3, "pairs": 1,
                         "leakage_uniform": None}}
    fig = viz.plot_leakage_split(per_class)
    (ticks,) = fig.axes[0].collections
    (segment,) = ticks.get_segments()
    assert segment[:, 1].tolist() == [0.9, 0.9] and segment[0, 0] < 0 < segment[1, 0]
    assert "a uniform map's leakage" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)


def test_plot_share_matrix_and_label_grid():
    values = np.array([[0.25, 0.75], [1.0, 0.0]])
    fig = viz.plot_share_matrix(values, ["a", "b"], ["x", "y"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.25", "0.75", "1.00", "0.00"]
    plt.close(fig)
    image = np.zeros((4, 5, 3), np.uint8)
    labels = np.array([[0, 1, 255, 2, 2]] * 4, np.uint8)
    fig = viz.plot_label_grid([image, image], {"gt": [labels, labels], "pred": [labels, labels]},
                              col_titles=["one", "two"])
    axes = np.array(fig.axes).reshape(3, 2)
    np.testing.assert_array_equal(axes[1, 0].images[0].get_array(), voc_palette()[labels])
    assert axes[2, 0].get_ylabel() == "pred" and axes[0, 1].get_title() == "two"
    plt.close(fig)


@pytest.mark.parametrize("with_truth", [True, False])
def test_plot_cam_inspection_panels(with_truth):
    image = np.full((6, 6, 3), 100, np.uint8)
    cam = np.linspace(0, 1, 36).reshape(6, 6)
    predicted = cam > 0.5
    labels = np.zeros((6, 6), np.uint8)
    labels[3:, :] = 13
    truth = labels == 13 if with_truth else None
    fig = viz.plot_cam_inspection(image, cam, predicted, labels if with_truth else None, truth)
    assert len(fig.axes) == 4
    shown = fig.axes[2].images[0].get_array()
    if with_truth:
        np.testing.assert_array_equal(shown, viz.error_map(predicted, truth, labels != 255))
        assert fig.axes[3].images
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[-3:] == ["mask: hit", "mask: outside the object", "mask: missed"]
        plt.close(fig)
        classes = [f"c{i}" for i in range(21)]
        fig = viz.plot_cam_inspection(image, cam, predicted, labels, truth, classes=classes)
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == ["c0", "c13", "mask: hit", "mask: outside the object", "mask: missed"]
    else:
        assert not fig.axes[3].images and not fig.axes[3].axison
    plt.close(fig)
