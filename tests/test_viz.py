"""Figure helpers of causal_wsss.viz that the course's figures rely on: resume-safe loss
curves, masked diagonals, captions off the arrows, colour legends and bars, evidence axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from causal_wsss import scm, viz  # noqa: E402


def _xy(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def test_loss_history_after_a_resume_puts_epoch_means_at_their_steps():
    # 5 epochs of 100 steps; the process resumed after epoch 3, so the callback saw 301-500
    steps = list(range(301, 501))
    losses = [1.0] * 100 + [0.5] * 100
    epochs = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 6)]
    fig = viz.plot_loss_history(steps, losses, epochs=epochs)
    means = [ln for ln in fig.axes[0].lines if ln.get_label() == "epoch mean"][0]
    x, _ = _xy(means)
    assert list(x) == [100, 200, 300, 400, 500]
    plt.close(fig)
    # the step recorded in the history wins
    epochs = [{"epoch": 1, "loss": 1.0, "step": 7}, {"epoch": 2, "loss": 0.5, "step": 14}]
    assert viz.epoch_end_steps(epochs, [1, 2, 3]) == [7.0, 14.0]
    assert viz.epoch_end_steps([{"epoch": 2, "loss": 1.0}], steps_per_epoch=50) == [100.0]


def test_loss_history_running_mean_never_spans_a_gap():
    steps = [*range(1, 21), *range(101, 121)]  # two sessions
    fig = viz.plot_loss_history(steps, [1.0] * 20 + [3.0] * 20, window=5)
    running = [ln for ln in fig.axes[0].lines if ln.get_color() == "tab:blue" and ln.get_linewidth() == 2]
    assert len(running) == 2
    for line in running:
        _, y = _xy(line)
        assert len(set(np.round(y, 6))) == 1  # each stretch averages only its own losses
    plt.close(fig)


def test_cooccurrence_diagonal_is_masked_and_off_the_scale():
    stats = {"classes": ["horse", "person", "dog"], "image_counts": {"horse": 10, "person": 8, "dog": 5},
             "cooccurrence": {"horse": {"horse": 10, "person": 4, "dog": 1},
                              "person": {"horse": 4, "person": 8, "dog": 0},
                              "dog": {"horse": 1, "person": 0, "dog": 5}}}
    fig = viz.plot_cooccurrence(stats)
    image = fig.axes[0].images[0]
    data = image.get_array()
    assert np.ma.is_masked(data) and data.mask.diagonal().all()
    assert image.get_clim()[1] == pytest.approx(0.5)  # P(person | horse) = 0.5, not the 1.00
    assert "1.00" not in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)


def _segment_distance(p, a, b) -> float:
    p, a, b = (np.asarray(v, float) for v in (p, a, b))
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(p - (a + t * (b - a))))


@pytest.mark.parametrize("cut", [False, True])
def test_graph_captions_are_not_drawn_over_the_arrows(cut):
    graph = scm.conta_graph()
    if cut:
        graph = scm.intervene(graph, "X")
    layout = scm.conta_layout()
    fig = viz.plot_graph(graph, layout)
    ax = fig.axes[0]
    assert len(ax.texts) >= 4
    for node in graph.nodes:
        dx, dy = viz._caption_side(graph, layout, node)
        anchor = (layout[node][0] + 0.2 * dx, layout[node][1] + 0.2 * dy)
        for u, v in graph.edges:
            assert _segment_distance(anchor, layout[u], layout[v]) > 0.05, (node, u, v)
    assert viz._caption_side(scm.conta_graph(), layout, "C") == (0, 1)  # above: both arrows go down
    plt.close(fig)
    assert viz._caption_side(nx.DiGraph([("a", "b")]), {"a": (0, 0), "b": (1, 0)}, "a") == (0, -1)


def test_label_grids_get_a_class_legend():
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    masks = [np.full((8, 8), 13, np.uint8), np.full((8, 8), 15, np.uint8)]
    masks[1][0, 0] = 255
    classes = ("background", *[f"c{i}" for i in range(1, 13)], "horse", "c14", "person")
    fig = viz.plot_label_grid(images, {"ground truth": masks}, classes=classes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["horse", "person", "void / ignored"]
    plt.close(fig)
    fig = viz.plot_image_mask_grid(images, masks, classes=classes)
    assert fig.legends and plt.close(fig) is None
    fig = viz.plot_label_grid(images, {"ground truth": masks})
    assert not fig.legends
    plt.close(fig)


def test_cam_grid_gray_row_has_a_colour_bar():
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    maps = [np.linspace(0, 1, 64).reshape(8, 8)] * 2
    fig = viz.plot_cam_grid(images, {"boundary map": maps, "CAM": maps}, gray_rows=("boundary map",))
    gray = fig.axes[2].images[0]
    assert gray.get_cmap().name == "gray" and gray.get_clim() == (0, 1)
    assert len(fig.axes) == 2 * 3 + 1  # one colour bar
    plt.close(fig)


def test_dictionary_has_one_scale_and_a_colour_bar():
    masks = np.zeros((4, 5, 5))
    masks[1] = 0.2
    masks[3] = 0.8
    fig = viz.plot_dictionary(masks, ("background", "a", "b", "c"))
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert {im.get_clim() for im in shown} == {(0.0, 0.8)}
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    plt.close(fig)


def test_evidence_legend_below_and_leakage_on_its_whole_range():
    summary = {rho: {r: {k: (0.5 + r / 100, 0.01, 3) for k in viz.EVIDENCE_KEYS} for r in (0, 1)}
               for rho in (0.5, 0.97)}
    for plot in (viz.plot_evidence, viz.plot_rho_sweep):
        fig = plot(summary)
        assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
        leak = fig.axes[list(viz.EVIDENCE_KEYS).index("leakage")]
        assert leak.get_ylim() == (0.0, 1.0)
        plt.close(fig)


def test_threshold_sweep_legend_outside_the_axes():
    fig = viz.plot_threshold_sweep({"a": [(0.1, 20.0), (0.15, 25.0), (0.2, 22.0)]})
    legend = fig.axes[0].get_legend()
    assert legend.get_bbox_to_anchor().x0 > fig.axes[0].get_window_extent().x1 - 1
    plt.close(fig)
