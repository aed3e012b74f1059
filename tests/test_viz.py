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
    assert len(fig.axes) == 2 * 3 + 2  # the grey row's colour bar and the CAM rows'
    assert [b.get_ylabel() for b in fig.axes[6:]] == ["", "CAM / its maximum"]
    widths = {round(ax.get_position().width, 6) for ax in fig.axes[:6]}
    assert len(widths) == 1  # the bars take no width from any row
    plt.close(fig)


def test_cam_grid_difference_row_is_centred_on_zero():
    images = [np.zeros((8, 8, 3), np.uint8)] * 2
    maps = [np.full((8, 8), 0.5), np.full((8, 8), -0.25)]
    fig = viz.plot_cam_grid(images, {"CAM": maps, "diff": maps}, diff_rows=("diff",))
    diff = fig.axes[4].images[0]
    assert diff.get_cmap().name == "RdBu_r" and diff.get_clim() == (-0.5, 0.5)
    plt.close(fig)


def test_twins_figure_one_line_per_class_and_network_and_the_stars():
    contexts = ["sky", "grass", "road"]
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    logits = {"confounded": np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 1.0]]),
              "interventional": np.zeros((3, 2))}
    fig = viz.plot_twins(images, contexts, logits, ["horse", "person"],
                         {"horse": "grass", "person": "road"},
                         cams=[np.ones((8, 8))] * 3, cam_class="horse")
    assert len(fig.axes) == 3 + 1 + 1  # the twins, the logits and the CAM colour bar
    ax = fig.axes[3]
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) == 3]
    assert len(curves) == 2 * 2
    stars = [ln for ln in ax.lines if ln.get_marker() == "*" and len(ln.get_xdata()) == 1]
    assert sorted((float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in stars) == [
        (1.0, 0.0), (1.0, 2.0), (2.0, 0.0), (2.0, 1.0)]  # each class at its preferred context
    assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() == "--"
            and len(ln.get_xdata()) == 2] == [0.0]  # logit 0 (p = 0.5)
    assert "preferred by horse" in fig.axes[1].get_title()
    plt.close(fig)


class _Labels:
    names = ["a", "b", "c", "d"]
    classes = ("background", "horse", "person", "car")

    def label_matrix(self):
        return np.array([[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 1]], bool)


def test_pair_columns_show_both_classes_of_a_pair_first():
    cols = viz.pair_columns(_Labels(), 10, [("horse", "person")])
    assert cols == [("b", "horse"), ("b", "person"), ("d", "horse"), ("d", "person"),
                    ("a", "car"), ("c", "person")]
    assert viz.pair_columns(_Labels(), 3, [("horse", "person")], max_pairs=1) == [
        ("b", "horse"), ("b", "person"), ("a", "car")]


def test_attention_has_the_uniform_reference():
    alpha = np.array([0.2, 0.0, 0.3, 0.1, 0.4])  # one entry masked out: uniform is 1/4
    fig = viz.plot_attention(alpha, ("background", "a", "b", "c", "d", "e"))
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--"]
    assert line.get_ydata()[0] == pytest.approx(0.25)
    assert "1/4" in line.get_label()
    plt.close(fig)


def test_evidence_sweep_baseline_visible_beside_an_identical_conta():
    stat = {"mean": 40.0, "lo": 39.0, "hi": 41.0}
    res = {"rounds": {"conta@0.9": {"0": {"pseudo_miou": stat}, "1": {"pseudo_miou": stat}}},
           "sweep": {}}
    fig = viz.plot_evidence_sweep(res)
    drawn = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 1 and ln.get_marker() in "so"]
    base = next(ln for ln in drawn if ln.get_marker() == "s")
    conta = next(ln for ln in drawn if ln.get_marker() == "o")
    assert base.get_linewidth() > conta.get_linewidth() and conta.get_linestyle() == "--"
    assert base.get_xdata()[0] != conta.get_xdata()[0]  # side by side, not on top
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
