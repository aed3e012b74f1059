"""Figures (matplotlib): the causal graph, co-occurrence, CAM overlays, the dictionary, per-round curves.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``;
notebooks display the figure, scripts save it (:func:`save_figure`, atomic).
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from . import scm
from .config import ExperimentConfig
from .constants import voc_palette
from .errors import ConfigError
from .evidence import ARMS, INTERVENTION_ARMS, LABELS
from .io import atomic_path
from .results import RESULT_COLUMNS, results_table

_SUBPLOTS_KEYS = ("sharex", "sharey", "squeeze", "width_ratios", "height_ratios", "subplot_kw",
                  "gridspec_kw")


def new_figure(**fig_kw: Any) -> Figure:
    """``plt.figure(**fig_kw)`` on the main thread; on any other thread a figure that pyplot
    does not know (``matplotlib.figure.Figure``), which its caller displays itself.

    Why: JupyterLab (4.4 and later) sends widget messages over a kernel subshell, and ipykernel
    7 then runs a widget's callback in that subshell's thread while cells run in the main
    thread. pyplot's list of open figures is one for the process, and after every cell the
    inline backend draws and closes all of them: a figure a callback was drawing in its own
    thread was drawn by both threads at once (a partly blank image, and a stray copy in the
    running cell's output). A figure made off the main thread stays out of that list.
    """
    if threading.current_thread() is threading.main_thread():
        return plt.figure(**fig_kw)
    return Figure(**fig_kw)


def new_subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots(nrows, ncols, **kwargs)``, with the figure made by :func:`new_figure`
    (outside pyplot when called off the main thread, e.g. in a widget's callback)."""
    grid_kw = {k: kwargs.pop(k) for k in _SUBPLOTS_KEYS if k in kwargs}
    fig = new_figure(**kwargs)  # what plt.subplots does: figure(**fig_kw).subplots(...)
    return fig, fig.subplots(nrows, ncols, **grid_kw)


def close_figure(fig: Figure) -> None:
    """``plt.close(fig)`` for a figure pyplot knows; nothing for one :func:`new_figure` made off
    the main thread (pyplot's list is not touched from another thread)."""
    if threading.current_thread() is threading.main_thread():
        plt.close(fig)


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically; returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def plot_graph(graph: Any, layout: dict[str, tuple[float, float]] | None = None, *,
               highlight: Sequence[tuple[str, str]] = (), title: str = "",
               ax: Any = None) -> Figure:
    """Draw a causal DAG (networkx) with node descriptions; ``highlight`` edges drawn in red."""
    if ax is None:
        fig, ax = new_subplots(figsize=(5.5, 3.6))
    else:
        fig = ax.figure
    pos = layout or nx.spring_layout(graph, seed=0)
    hl = set(highlight)
    colors = ["tab:red" if e in hl else "0.3" for e in graph.edges]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color="#dce9f5", edgecolors="0.3",
                           node_size=1300)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=13, font_weight="bold")
    nx.draw_networkx_edges(graph, pos, ax=ax, edge_color=colors, arrowsize=20, width=2,
                           node_size=1300)
    for node, (x, y) in pos.items():
        desc = graph.nodes[node].get("description", "")
        if desc:
            dx, dy = _caption_side(graph, pos, node)
            ax.text(x + 0.2 * dx, y + 0.2 * dy, "\n".join(textwrap.wrap(desc.split(":")[0][:38], 16)),
                    ha={-1: "right", 0: "center", 1: "left"}[dx],
                    va={-1: "top", 0: "center", 1: "bottom"}[dy], fontsize=8, color="0.25",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                          "alpha": 0.8})
    ax.set_title(title)
    ax.axis("off")
    ax.margins(0.25)
    return fig


def _caption_side(graph: Any, pos: dict, node: str) -> tuple[int, int]:
    """Where a node's caption goes, as a unit step (dx, dy): the first of below, above, right,
    left that is at least 60 degrees from every edge at the node, else the one farthest from
    them, so that no caption is drawn over an arrow."""
    x, y = pos[node]
    angles = [np.arctan2(pos[v][1] - y, pos[v][0] - x)
              for v in {*graph.successors(node), *graph.predecessors(node)}]
    best, best_gap = (0, -1), -1.0
    for step in ((0, -1), (0, 1), (1, 0), (-1, 0)):
        direction = np.arctan2(step[1], step[0])
        gap = min((abs((direction - a + np.pi) % (2 * np.pi) - np.pi) for a in angles),
                  default=np.pi)
        if gap >= np.pi / 3:
            return step
        if gap > best_gap:
            best, best_gap = step, gap
    return best


def plot_cooccurrence(stats: dict, *, conditional: bool = True, ax: Any = None,
                      min_images: int = 1, mask_diagonal: bool = True) -> Figure:
    """Heat map of P(b | a) (rows a, columns b) or of raw co-occurrence counts.

    With ``mask_diagonal`` the diagonal (P(a | a) = 1, or each class's own count) is drawn grey
    and left out of the colour scale, so that the scale shows the off-diagonal values."""
    classes = [c for c in stats["classes"] if stats["image_counts"][c] >= min_images]
    counts = np.array([[stats["cooccurrence"][a][b] for b in classes] for a in classes], float)
    values = counts / np.maximum(counts.diagonal()[:, None], 1) if conditional else counts
    if mask_diagonal and len(classes) > 1:
        values = values.copy()
        np.fill_diagonal(values, np.nan)
    if ax is None:
        size = 1.2 + 0.38 * len(classes)
        fig, ax = new_subplots(figsize=(size + 1.2, size))
    else:
        fig = ax.figure
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=max(top, 1e-6))
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("b")
    ax.set_ylabel("a")
    ax.set_title("P(b | a)" if conditional else "co-occurrence (images)")
    if len(classes) <= 12:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if np.isnan(values[i, j]):
                    continue
                text = f"{values[i, j]:.2f}" if conditional else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 0.6 * top else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 in the VOC palette."""
    return voc_palette()[np.asarray(labels, dtype=np.uint8)]


def class_legend(fig: Figure, maps: Sequence[np.ndarray], classes: Sequence[str], *,
                 ncol: int = 8, extra: Sequence[Any] = ()) -> None:
    """A legend under ``fig``: one patch in the VOC palette for each label that occurs in the
    label maps ``maps`` (index into ``classes``), plus "void / ignored" for 255; ``extra``:
    more legend handles after them."""
    present = sorted({int(v) for m in maps for v in np.unique(np.asarray(m))})
    palette = voc_palette()
    handles = [Patch(facecolor=palette[v] / 255.0, edgecolor="0.3",
                     label="void / ignored" if v == 255 else
                     (classes[v] if v < len(classes) else str(v)))
               for v in present if v == 255 or v < len(palette)] + list(extra)
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(ncol, len(handles)), fontsize=8, frameon=False)


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (H, W) over an RGB uint8 image (H, W, 3) -> float RGB in [0, 1]."""
    heat = plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3]
    return (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * heat


def plot_imagenet_cams(photos: Sequence[tuple[np.ndarray, dict]], *, size: float = 2.6
                       ) -> Figure:
    """One row per photograph: the photo, then the CAM of each class of its
    :func:`causal_wsss.course.imagenet_cams` result over it, titled with the class and its
    probability; one colour bar for the CAM scale."""
    ncols = 1 + max(len(r["classes"]) for _, r in photos)
    fig, axes = new_subplots(len(photos), ncols, figsize=(size * ncols + 0.6, size * 0.8 * len(photos)),
                             squeeze=False)
    for i, (image, res) in enumerate(photos):
        axes[i, 0].imshow(image)
        axes[i, 0].set_title("photograph", fontsize=9)
        for j, (name, p, cam) in enumerate(zip(res["names"], res["probs"], res["cams"]), 1):
            axes[i, j].imshow(overlay_cam(image, cam))
            axes[i, j].set_title(f"{name} (p = {p:.2f})", fontsize=9)
        for ax in axes[i, 1 + len(res["classes"]):]:
            ax.axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)),
                       ax=list(axes.flat), fraction=0.015, pad=0.01)
    bar.set_label("CAM / its maximum")
    return fig


def plot_cam_grid(images: Sequence[np.ndarray], rows: dict[str, Sequence[np.ndarray]], *,
                  col_titles: Sequence[str] = (), masks: Sequence[np.ndarray] | None = None,
                  figsize_per: float = 2.1, gray_rows: Sequence[str] = (),
                  diff_rows: Sequence[str] = (),
                  classes: Sequence[str] | None = None) -> Figure:
    """Columns = images; first row the image (or its ground truth), then one row per CAM set.

    ``rows`` maps a row title (e.g. "baseline", "CONTA") to one (H, W) CAM per image, drawn over
    the image in the jet colour map, with one colour bar for those rows ("CAM / its maximum");
    the rows named in ``gray_rows`` (e.g. a boundary map) are drawn alone in grey on [0, 1], and
    those in ``diff_rows`` (a difference of two CAMs) alone in a diverging map centred on 0,
    symmetric about the row's largest absolute value; each of those rows gets its own colour
    bar. With ``classes`` the ground truth gets a colour legend.
    """
    n = len(images)
    nrows = 1 + (masks is not None) + len(rows)
    fig, axes = new_subplots(nrows, n, figsize=(figsize_per * n, figsize_per * nrows * 0.85),
                             squeeze=False)
    bars: list[tuple[list[Any], Any, str]] = []  # (the row's axes, mappable, label)
    overlay_axes: list[Any] = []
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        if j < len(col_titles):
            axes[0, j].set_title(col_titles[j], fontsize=9)
    r = 1
    if masks is not None:
        for j in range(n):
            axes[r, j].imshow(colorize_labels(masks[j]))
        axes[r, 0].set_ylabel("ground truth", fontsize=10)
        r += 1
    for title, cams in rows.items():
        if title in gray_rows:
            shown = [axes[r, j].imshow(cams[j], cmap="gray", vmin=0, vmax=1) for j in range(n)]
            bars.append((list(axes[r]), shown[-1], ""))
        elif title in diff_rows:
            top = max([1e-6, *(float(np.abs(np.asarray(c)).max()) for c in cams[:n])])
            shown = [axes[r, j].imshow(cams[j], cmap="RdBu_r", vmin=-top, vmax=top)
                     for j in range(n)]
            bars.append((list(axes[r]), shown[-1], "difference"))
        else:
            for j in range(n):
                axes[r, j].imshow(overlay_cam(images[j], cams[j]))
            overlay_axes.extend(axes[r])
        axes[r, 0].set_ylabel(title, fontsize=10)
        r += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if overlay_axes:
        bars.append((overlay_axes, plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)),
                     "CAM / its maximum"))
    for row_axes, mappable, label in bars:
        side_colorbar(fig, list(axes.flat), row_axes, mappable, label)
    if masks is not None and classes is not None:
        class_legend(fig, masks, classes)
    return fig


def side_colorbar(fig: Figure, grid_axes: Sequence[Any], row_axes: Sequence[Any], mappable: Any,
                  label: str = "") -> Any:
    """A colour bar right of the axes ``grid_axes``, as tall as the axes ``row_axes`` span; it
    takes no room from the grid, so every row keeps its width (call after ``tight_layout``).
    Returns the colour bar."""
    right = max(ax.get_position().x1 for ax in grid_axes)
    boxes = [ax.get_position() for ax in row_axes]
    bottom, top = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    cax = fig.add_axes((right + 0.012, bottom, 0.012, top - bottom))
    bar = fig.colorbar(mappable, cax=cax)
    if label:
        bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def plot_twins(images: Sequence[np.ndarray], contexts: Sequence[str],
               logits: dict[str, np.ndarray], classes: Sequence[str],
               preferred: dict[str, str], *, cams: Sequence[np.ndarray] | None = None,
               cam_class: str = "", title: str = "") -> Figure:
    """do(context) twins: the same objects drawn on every context, with the network's logits.

    Top row: the twin on each context (``images``, one per ``contexts``; with ``cams``, the CAM
    of ``cam_class`` over it, with a colour bar); each title names the classes that prefer that
    context. Below, aligned with the columns: the logit of each class in ``classes`` (one colour
    a class) on each context, one line style per network (``logits`` maps a network's label to
    a ``(len(contexts), len(classes))`` array). A star marks each class on its ``preferred``
    context: a network that reads only the object draws flat lines, a confounded one peaks at
    the star. The dashed line is logit 0 (probability 0.5, where a class is called present).
    """
    n = len(images)
    fig = new_figure(figsize=(2.1 * n + 1.2, 5.4))
    grid = fig.add_gridspec(2, n, height_ratios=[1.0, 1.25])
    top = [fig.add_subplot(grid[0, j]) for j in range(n)]
    ax = fig.add_subplot(grid[1, :])
    for j, (image, context) in enumerate(zip(images, contexts)):
        top[j].imshow(image if cams is None else overlay_cam(image, cams[j]))
        fans = [c for c in classes if preferred.get(c) == context]
        top[j].set_title(context + (f"\n(preferred by {', '.join(fans)})" if fans else "\n"),
                         fontsize=9)
        top[j].set_xticks([])
        top[j].set_yticks([])
    if cams is not None and cam_class:
        top[0].set_ylabel(f"{cam_class} CAM", fontsize=9)
    x = np.arange(n)
    colours = plt.get_cmap("tab10")
    styles = ("o-", "s--", "^:", "d-.")
    for s, (label, values) in enumerate(logits.items()):
        values = np.asarray(values, dtype=float)
        for k, cls in enumerate(classes):
            ax.plot(x, values[:, k], styles[s % len(styles)], color=colours(k % 10),
                    label=f"{cls}" + (f", {label}" if len(logits) > 1 else ""))
            if preferred.get(cls) in contexts:
                p = list(contexts).index(preferred[cls])
                ax.plot([p], [values[p, k]], "*", ms=16, mfc="none", mec=colours(k % 10), mew=1.5)
    ax.plot([], [], "*", ms=12, mfc="none", mec="black", label="the class's preferred context")
    ax.axhline(0.0, color="black", lw=0.8, ls="--", label="logit 0 (probability 0.5)")
    ax.set_xticks(x, list(contexts))
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("context the same objects are drawn on: do(context)")
    ax.set_ylabel("logit" + ("" if len(logits) > 1 else f" ({next(iter(logits), '')})"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if cams is not None:
        side_colorbar(fig, top, top, plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)),
                      "CAM / its maximum")
    return fig


def plot_dictionary(masks: np.ndarray, classes: Sequence[str], prior: np.ndarray | None = None,
                    *, only_valid: bool = True, ncols: int = 6) -> Figure:
    """The confounder dictionary: one average mask per class (row 0 = background skipped)."""
    fg = masks[1:]
    idx = [i for i in range(len(fg)) if not only_valid or fg[i].max() > 0]
    n = max(1, len(idx))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = new_subplots(nrows, ncols, figsize=(1.9 * ncols + 0.8, 2.0 * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    top = max([1e-6, *(float(fg[i].max()) for i in idx)])
    shown = None
    for k, i in enumerate(idx):
        ax = axes.flat[k]
        shown = ax.imshow(fg[i], cmap="magma", vmin=0, vmax=top)
        title = classes[i + 1]
        if prior is not None:
            title += f"\nP(c)={prior[i]:.3f}"
        ax.set_title(title, fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(axes.flat), fraction=0.025, pad=0.02)
        bar.set_label("share of the class's images\nwith the class at the cell", fontsize=8)
    return fig


def plot_attention(alpha: np.ndarray, classes: Sequence[str], prior: np.ndarray | None = None,
                   ax: Any = None, shown: Sequence[int] | None = None) -> Figure:
    """Bar chart of one image's attention weights alpha_i (and alpha_i * P(c_i)); ``shown``:
    the foreground indices i (0-based, ``classes[i + 1]``) to draw, default all. A dashed line
    marks uniform attention, 1 / (number of entries that receive any: the dictionary's valid
    classes, the others being masked out of the softmax)."""
    if ax is None:
        fig, ax = new_subplots(figsize=(6, 2.8))
    else:
        fig = ax.figure
    alpha = np.asarray(alpha, dtype=np.float64)
    shown = list(range(len(classes) - 1)) if shown is None else [int(i) for i in shown]
    names = [classes[i + 1] for i in shown]
    x = np.arange(len(names))
    ax.bar(x - 0.2, alpha[shown], width=0.4, label="alpha")
    if prior is not None:
        weighted = alpha * prior / max(float((alpha * prior).sum()), 1e-12)
        ax.bar(x + 0.2, weighted[shown], width=0.4, label="alpha * P(c), normalised")
    entries = int((alpha > 0).sum())
    if entries:
        ax.axhline(1.0 / entries, color="black", lw=1.0, ls="--",
                   label=f"uniform over the {entries} entries: 1/{entries}")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rounds(reports: dict[str, dict] | dict) -> Figure:
    """Per-round mIoU (CAM, pseudo-mask, segmentation) and CAM leakage of one or more reports."""
    if "rounds" in reports:
        reports = {"": reports}
    fig, (ax1, ax2) = new_subplots(1, 2, figsize=(10, 3.6))
    for label, report in reports.items():
        rounds = [e["round"] for e in report["rounds"]]
        prefix = f"{label} " if label else ""
        for key, name, style in (("cam_miou", "CAM", "o-"), ("cam_miou_best", "CAM (best t)", "o--"),
                                 ("pseudo_miou", "pseudo-mask", "s-"), ("seg_miou", "seg (val)", "^-")):
            ax1.plot(rounds, [e[key] for e in report["rounds"]], style, label=prefix + name)
        ax2.plot(rounds, [e["leakage"] for e in report["rounds"]], "o-", label=prefix + "total")
        ax2.plot(rounds, [e["leakage_background"] for e in report["rounds"]], "s--",
                 label=prefix + "on background/context")
        ax2.plot(rounds, [e["leakage_cooccur"] for e in report["rounds"]], "^:",
                 label=prefix + "on co-occurring objects")
    for ax in (ax1, ax2):
        ax.set_xlabel("round (0 = baseline)")
        ax.set_xticks(sorted({e["round"] for r in reports.values() for e in r["rounds"]}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("mIoU (%)")
    ax2.set_ylabel("share of CAM mass outside the object")
    # shares on their whole scale: autoscaling would blow a 0.001 change up to the full height
    ax2.set_ylim(0.0, 1.0)
    ax1.set_ylim(0.0, max(50.0, 10.0 * np.ceil(max(
        (e[k] for r in reports.values() for e in r["rounds"]
         for k in ("cam_miou", "cam_miou_best", "pseudo_miou", "seg_miou")
         if e.get(k) is not None), default=0.0) / 10.0)))
    fig.tight_layout()
    return fig


def pair_columns(dataset, n: int, pairs: Sequence[tuple[str, str]] | None = None, *,
                 max_pairs: int | None = None) -> list[tuple[str, str]]:
    """Up to ``n`` figure columns ``(image name, class)`` that show co-occurrence: first every
    image holding both classes of a pair (the synthetic benchmark's ``(anchor, partner)`` pairs
    by default: horse and person, boat and person), one column for each of the two classes,
    then the other images with their first class. ``max_pairs`` caps the pair images (so that
    images of the other classes get columns too). ``dataset`` needs ``names``, ``classes``
    (background first) and ``label_matrix()``."""
    if pairs is None:
        from .data.scenes import SPEC  # torch-bound package: on use (see CamCache below)

        pairs = SPEC.pairs
    fg = list(dataset.classes[1:])
    labels = np.asarray(dataset.label_matrix(), dtype=bool)
    usable = [(a, b) for a, b in pairs if a in fg and b in fg]
    columns: list[tuple[str, str]] = []
    rest = []
    for name, row in zip(dataset.names, labels):
        both = next(((a, b) for a, b in usable if row[fg.index(a)] and row[fg.index(b)]), None)
        if both and (max_pairs is None or len(columns) < 2 * max_pairs):
            columns.extend((name, c) for c in both)
        elif row.any():
            rest.append((name, fg[int(np.flatnonzero(row)[0])]))
    return (columns + rest)[:n]


def cam_comparison_arrays(run_dir: str | Path, dataset, names: Sequence[str | tuple[str, str]],
                          rounds: Sequence[int]) -> dict[str, Any]:
    """Images, ground-truth masks and, per round, one CAM of each image.

    ``names``: image names (each shows its first class) or ``(name, class)`` columns
    (:func:`pair_columns`). Reads the round CAM caches of a run directory; used by the demo and
    notebook 07. ``keys`` holds each column's foreground index (class index - 1).
    """
    from .cam import CamCache  # torch-bound: on use, so that figures of tables need no torch

    run_dir = Path(run_dir)
    index = {n: i for i, n in enumerate(dataset.names)}
    images, masks, titles, keys = [], [], [], []
    per_round: dict[int, list[np.ndarray]] = {r: [] for r in rounds}
    for entry in names:
        name, cls = (entry, None) if isinstance(entry, str) else entry
        i = index[name]
        images.append(dataset.load_image(i))
        masks.append(dataset.load_mask(i))
        caches = {r: CamCache(run_dir / f"round_{r}" / "cams").get(name) for r in rounds}
        first = caches[rounds[0]]
        if cls is not None:
            key = list(dataset.classes).index(cls) - 1
        else:
            key = int(first.keys[0]) if len(first.keys) else 0
        keys.append(key)
        titles.append(f"{name}: {dataset.classes[key + 1]}")
        for r, cams in caches.items():
            dense = cams.dense(dataset.num_classes - 1)
            per_round[r].append(dense[key].float().numpy())
    return {"images": images, "masks": masks, "titles": titles, "cams": per_round, "keys": keys}


def save_demo_figures(report: dict, run_dir: str | Path, *, figures_dir: str | Path | None = None,
                      n_images: int = 6, arms: dict[str, tuple[dict, str | Path]] | None = None
                      ) -> list[Path]:
    """The demo's figures: per-round curves (``demo_rounds.png``) and, on the same evaluation
    images, the CAMs of round 0, CONTA's last round and each of ``arms`` (label -> (report, run
    folder) of an intervention's run sharing round 0; ``demo_cams.png``). Pair images come first
    and show both classes of the pair (:func:`pair_columns`)."""
    from .stages.datasets import load_datasets  # torch-bound: on use (see CamCache above)

    run_dir = Path(run_dir)
    targets = [run_dir / "figures"] + ([Path(figures_dir)] if figures_dir else [])
    paths = []
    fig = plot_rounds(report)
    for folder in targets:
        paths.append(save_figure(fig, folder / "demo_rounds.png"))
    plt.close(fig)
    rounds = [e["round"] for e in report["rounds"]]
    if len(rounds) >= 2:
        cfg = ExperimentConfig.load(run_dir / "config.json")
        eval_ds = load_datasets(cfg)["eval"]
        sources = {"round 0 (baseline)": (run_dir, rounds[0]),
                   f"CONTA (round {rounds[-1]})": (run_dir, rounds[-1])}
        for label, (arm_report, arm_dir) in (arms or {}).items():
            last = arm_report["rounds"][-1]["round"]
            sources[f"{label} (round {last})"] = (Path(arm_dir), last)
        # horse and rider, boat and person: the benchmark's pairs, and VOC's classic ones
        arrays = run_cam_arrays(sources, eval_ds, pair_columns(eval_ds, n_images))
        fig = plot_cams_of_runs(arrays, classes=eval_ds.classes)
        for folder in targets:
            paths.append(save_figure(fig, folder / "demo_cams.png"))
        plt.close(fig)
    return paths


def plot_curves(x: Sequence[float], curves: dict[str, Sequence[float]], *,
                marker: float | None = None, xlabel: str = "", ylabel: str = "",
                title: str = "", styles: dict[str, str] | None = None, ax: Any = None) -> Figure:
    """Several curves over one shared x axis (``curves`` maps a legend label to len(x) values);
    ``marker`` draws a vertical line at the current x (the slider position of a widget)."""
    if ax is None:
        fig, ax = new_subplots(figsize=(5.2, 3.4))
    else:
        fig = ax.figure
    styles = styles or {}
    for label, values in curves.items():
        ax.plot(x, values, styles.get(label, "o-"), label=label, markersize=3)
    if marker is not None:
        ax.axvline(marker, color="0.4", linestyle=":", linewidth=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_bars(groups: Sequence[str], series: dict[str, Sequence[float]], *,
              reference: float | None = None, reference_label: str = "", ylabel: str = "",
              title: str = "", ax: Any = None) -> Figure:
    """Grouped bar chart: one group of bars per entry of ``groups``, one bar per series
    (``series`` maps a legend label to len(groups) values), each bar labelled with its value;
    ``reference`` draws a dashed horizontal line (a target such as the true effect or rho)."""
    if ax is None:
        fig, ax = new_subplots(figsize=(max(4.5, 1.0 + 0.5 * len(groups) * max(1, len(series))), 3.4))
    else:
        fig = ax.figure
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width=width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1.2,
                   label=reference_label or None)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set_xticks(x, list(groups), rotation=30 if len(groups) > 4 else 0,
                  ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_image_mask_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
                         titles: Sequence[str] = (), ncols: int = 6,
                         size: float = 2.0, classes: Sequence[str] | None = None) -> Figure:
    """Images (uint8 (H, W, 3)) above their label masks ((H, W), VOC palette, 255 = void),
    ``ncols`` images per block of two rows; with ``classes`` a colour legend of the labels."""
    if len(images) != len(masks) or not images:
        raise ValueError(f"plot_image_mask_grid: expected as many masks as images (at least "
                         f"one), got {len(images)} images and {len(masks)} masks")
    ncols = min(ncols, len(images))
    blocks = int(np.ceil(len(images) / ncols))
    fig, axes = new_subplots(2 * blocks, ncols, figsize=(size * ncols, 2 * size * blocks * 0.9),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, mask) in enumerate(zip(images, masks)):
        row, col = 2 * (k // ncols), k % ncols
        axes[row, col].imshow(image)
        axes[row + 1, col].imshow(colorize_labels(mask))
        if k < len(titles):
            axes[row, col].set_title(titles[k], fontsize=8)
    fig.tight_layout()
    if classes is not None:
        class_legend(fig, masks, classes)
    return fig


# ---------------------------------------------------------------------------------------------
# Notebooks 03-05: training curves, threshold sweeps, leakage, label maps


def epoch_end_steps(epochs: Sequence[dict], steps: Sequence[int] = (),
                    steps_per_epoch: int | None = None) -> list[float]:
    """The global step at which each epoch of ``epochs`` (``fit``'s history) ended: its
    ``step`` entry when recorded; else ``epoch * steps_per_epoch``, with ``steps_per_epoch``
    taken from the last recorded step (``steps``, global steps: the callback of a resumed run
    sees only the last epochs, but their step numbers go on) when not given; else the epoch
    number itself."""
    if steps_per_epoch is None and len(steps) and epochs:
        steps_per_epoch = float(steps[-1]) / float(epochs[-1]["epoch"])
    return [float(e["step"]) if "step" in e else
            float(e["epoch"]) * (steps_per_epoch if steps_per_epoch else 1.0) for e in epochs]


def plot_loss_history(steps: Sequence[int], losses: Sequence[float], *,
                      epochs: Sequence[dict] = (), window: int = 10, title: str = "",
                      steps_per_epoch: int | None = None, ax: Any = None) -> Figure:
    """Training loss per step (thin), its running mean over ``window`` steps, and the mean loss
    of each epoch (``epochs``: ``fit``'s history entries ``{"epoch", "loss"}``, with ``step``
    when recorded) at the epoch's last step (:func:`epoch_end_steps`).

    ``steps`` are global step numbers. Several histories (a run resumed, or callbacks of
    several sessions concatenated) may leave gaps: each contiguous stretch gets its own running
    mean, none is averaged across a gap. Without steps (a finished checkpoint reloaded) only
    the epoch means are drawn, against the epoch."""
    if ax is None:
        fig, ax = new_subplots(figsize=(6.0, 3.4))
    else:
        fig = ax.figure
    steps, losses = np.asarray(steps, float), np.asarray(losses, float)
    if len(losses):
        order = np.argsort(steps, kind="stable")
        steps, losses = steps[order], losses[order]
        ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="loss per step")
        cuts = np.flatnonzero(np.diff(steps) != 1) + 1
        w = max(1, min(int(window), len(losses)))
        label = f"running mean ({w} steps)"
        for part_steps, part in zip(np.split(steps, cuts), np.split(losses, cuts)):
            k = min(w, len(part))
            running = np.convolve(part, np.ones(k) / k, mode="valid")  # (n - k + 1,)
            ax.plot(part_steps[k - 1:], running, color="tab:blue", linewidth=2, label=label)
            label = None
    if epochs:
        x = (epoch_end_steps(epochs, steps, steps_per_epoch) if len(steps) or steps_per_epoch
             else [float(e["epoch"]) for e in epochs])
        ax.plot(x, [e["loss"] for e in epochs], "o", color="tab:orange", label="epoch mean")
    ax.set_xlabel("step" if len(steps) or steps_per_epoch else "epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_threshold_sweep(curves: dict[str, Sequence[tuple[float, float]]], *,
                         fixed: float | None = 0.15, ylabel: str = "mIoU (%)", title: str = "",
                         ax: Any = None) -> Figure:
    """mIoU against the background threshold, one curve per entry of ``curves`` (label ->
    ``[(threshold, miou), ...]``): a star on each curve's best threshold and a dotted line at
    the ``fixed`` one (IRNet's 0.15, method.md section 5), both labelled with their values."""
    if ax is None:
        fig, ax = new_subplots(figsize=(6.0, 3.6))
    else:
        fig = ax.figure
    if fixed is not None:
        ax.axvline(fixed, color="0.4", linestyle=":", linewidth=1.5, label=f"fixed t = {fixed:.2f}")
    at_fixed = []  # (value at the fixed threshold, its threshold, colour) per curve
    for k, (label, curve) in enumerate(curves.items()):
        t, m = (np.asarray(v, float) for v in zip(*curve))
        color = f"C{k}"
        best = int(np.nanargmax(m))
        ax.plot(t, m, "-", color=color, label=f"{label} (best {m[best]:.1f} at {t[best]:.2f})")
        ax.plot(t[best], m[best], "*", color=color, markersize=13)
        if fixed is not None:
            near = int(np.argmin(np.abs(t - fixed)))
            ax.plot(t[near], m[near], "o", color=color)
            at_fixed.append((float(m[near]), float(t[near]), color))
    # the values at the fixed threshold, labelled right of their points, highest first; a label
    # closer than 6% of the curves' range to the one above moves down (values that close would
    # print over each other)
    if at_fixed:
        values = [float(np.nanmax(np.asarray(c, float)[:, 1])) for c in curves.values()] + \
                 [float(np.nanmin(np.asarray(c, float)[:, 1])) for c in curves.values()]
        gap = 0.06 * max(max(values) - min(values), 1e-6)
        y_prev = np.inf
        for value, t_near, color in sorted(at_fixed, key=lambda v: -v[0]):
            y = min(value, y_prev - gap)
            ax.annotate(f"{value:.1f}", (t_near, value), xytext=(t_near + 0.015, y),
                        textcoords="data", fontsize=8, color=color, va="center")
            y_prev = y
    ax.set_xlabel("background threshold t")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the curves' labels
    return fig


def plot_leakage_split(per_class: dict[str, dict], *, title: str = "", ax: Any = None) -> Figure:
    """Stacked bars per class: the share of its CAM mass on co-occurring objects and on the
    background / context (``LeakageMeter.compute()["per_class"]``; classes without pairs are
    left out); the bar's top is the total leakage. Where a class has ``leakage_uniform`` (the
    leakage a map spread evenly over the image would score: one minus the object's share of the
    pixels), a black tick across its bar marks it, the reference a CAM must get below."""
    names = [c for c, v in per_class.items() if v.get("pairs", 0) > 0]
    if ax is None:
        fig, ax = new_subplots(figsize=(max(4.5, 0.75 * len(names) + 2.5), 3.4))
    else:
        fig = ax.figure
    x = np.arange(len(names))
    cooccur = np.array([per_class[c]["leakage_cooccur"] for c in names])
    background = np.array([per_class[c]["leakage_background"] for c in names])
    ax.bar(x, background, color="tab:green", label="on background / context")
    bars = ax.bar(x, cooccur, bottom=background, color="tab:red",
                  label="on co-occurring objects")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in cooccur + background], fontsize=7, padding=2)
    uniform = [(i, per_class[c]["leakage_uniform"]) for i, c in enumerate(names)
               if per_class[c].get("leakage_uniform") is not None
               and per_class[c]["leakage_uniform"] == per_class[c]["leakage_uniform"]]
    if uniform:
        ax.hlines([u for _, u in uniform], [i - 0.45 for i, _ in uniform],
                  [i + 0.45 for i, _ in uniform], colors="black", lw=2.0,
                  label="a uniform map's leakage")
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("share of CAM mass outside the object")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_share_matrix(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], *,
                      title: str = "", xlabel: str = "", ylabel: str = "",
                      ax: Any = None) -> Figure:
    """Annotated heat map of a (len(rows), len(cols)) array of shares in [0, 1] (e.g. where
    each class's CAM mass lands)."""
    values = np.asarray(values, float)
    if ax is None:
        fig, ax = new_subplots(figsize=(1.4 + 0.62 * len(cols), 1.2 + 0.45 * len(rows)))
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), list(cols), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), list(rows))
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] < 0.6 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def plot_label_grid(images: Sequence[np.ndarray], rows: dict[str, Sequence[np.ndarray]], *,
                    col_titles: Sequence[str] = (), figsize_per: float = 2.1,
                    classes: Sequence[str] | None = None) -> Figure:
    """Columns = images; the first row shows the image, then one row per entry of ``rows``
    (a row title -> one (H, W) label map per image, VOC palette, 255 = void/ignore). With
    ``classes`` (the label names) a colour legend of the labels shown goes under the grid."""
    n = len(images)
    fig, axes = new_subplots(1 + len(rows), n, squeeze=False,
                             figsize=(figsize_per * n, figsize_per * (1 + len(rows)) * 0.85))
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        if j < len(col_titles):
            axes[0, j].set_title(col_titles[j], fontsize=9)
        for r, (title, labels) in enumerate(rows.items(), start=1):
            axes[r, j].imshow(colorize_labels(labels[j]))
            if j == 0:  # wrapped: a long title must not run into its neighbours
                axes[r, j].set_ylabel(textwrap.fill(title, 18), fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    if classes is not None:
        class_legend(fig, [m for labels in rows.values() for m in labels], classes)
    return fig


ERROR_COLOURS = {"hit": (40, 180, 60), "outside the object": (220, 40, 40),
                 "missed": (50, 90, 230)}
"""The colours of :func:`error_map` (RGB uint8), by what they mark."""


def error_map(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) comparison of two boolean masks: true positives green, false
    positives red, false negatives blue, the rest black (``valid`` False: grey)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    out = np.zeros((*pred.shape, 3), np.uint8)
    out[pred & truth] = ERROR_COLOURS["hit"]
    out[pred & ~truth] = ERROR_COLOURS["outside the object"]
    out[~pred & truth] = ERROR_COLOURS["missed"]
    if valid is not None:
        out[~np.asarray(valid, bool)] = (128, 128, 128)
    return out


def plot_cam_inspection(image: np.ndarray, cam: np.ndarray, predicted: np.ndarray,
                        labels: np.ndarray | None = None, truth: np.ndarray | None = None, *,
                        titles: Sequence[str] = ("image", "CAM", "mask at t",
                                                 "ground truth"),
                        classes: Sequence[str] | None = None) -> Figure:
    """One image and one class: the image, its CAM overlaid, the class's mask at the threshold
    (``predicted`` bool (H, W); with ``truth`` bool (H, W) drawn as :func:`error_map`) and the
    ground-truth label map ``labels`` (H, W) (panel left blank when None)."""
    fig, axes = new_subplots(1, 4, figsize=(11.0, 3.1))
    axes[0].imshow(image)
    axes[1].imshow(overlay_cam(image, cam))
    if truth is not None:
        axes[1].contour(np.asarray(truth, float), levels=[0.5], colors="white", linewidths=1)
        axes[2].imshow(error_map(predicted, truth, None if labels is None else labels != 255))
    else:
        axes[2].imshow(np.asarray(predicted, bool), cmap="gray", vmin=0, vmax=1)
    if labels is not None:
        axes[3].imshow(colorize_labels(labels))
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if labels is None:
        axes[3].axis("off")
    fig.tight_layout()
    extra = []
    if truth is not None:  # the error map's colours (error_map)
        extra = [Patch(facecolor=np.array(c) / 255.0, edgecolor="0.3", label=f"mask: {name}")
                 for name, c in ERROR_COLOURS.items()]
    if labels is not None and classes is not None:
        class_legend(fig, [labels], classes, extra=extra)
    elif extra:
        fig.legend(handles=extra, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                   fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# Notebooks 06-07: one image's context adjustment, CAMs over rounds, evidence over seeds


def plot_context_panel(image: np.ndarray, query: np.ndarray, alpha: np.ndarray, m: np.ndarray,
                       classes: Sequence[str], prior: np.ndarray | None = None, *,
                       title: str = "", shown: Sequence[int] | None = None) -> Figure:
    """One image through Eq. 3 (method.md section 3): the image (H, W, 3), its query X_m (h, w)
    on the dictionary grid, the attention alpha (n,) over the classes (``plot_attention``) and
    the resulting m = sum_i alpha_i P(c_i) c_i (h, w), on its own colour scale."""
    fig = new_figure(figsize=(13.0, 3.1))
    grid = fig.add_gridspec(1, 4, width_ratios=[1.0, 1.0, 2.3, 1.25])
    ax_img, ax_q, ax_a, ax_m = (fig.add_subplot(grid[0, i]) for i in range(4))
    ax_img.imshow(image)
    ax_img.set_title(title or "image", fontsize=9)
    ax_q.imshow(query, cmap="gray", vmin=0, vmax=1)
    ax_q.set_title(f"X_m: predicted foreground\n({query.shape[0]}x{query.shape[1]} grid)", fontsize=9)
    plot_attention(alpha, classes, prior, ax=ax_a, shown=shown)
    ax_a.set_title("attention alpha over C", fontsize=9)
    shown = ax_m.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12))
    ax_m.set_title(f"m = sum alpha P(c) c\n(max {float(m.max()):.3g})", fontsize=9)
    fig.colorbar(shown, ax=ax_m, fraction=0.046)
    for ax in (ax_img, ax_q, ax_m):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_cam_rounds(image: np.ndarray, mask: np.ndarray | None, cams: dict[str, np.ndarray], *,
                    title: str = "") -> Figure:
    """One image in a row: the image, its ground truth (VOC palette, if given) and one CAM
    overlay (H, W) in [0, 1] per entry of ``cams``, titled by its key (notebook 07)."""
    n = 1 + (mask is not None) + len(cams)
    fig, axes = new_subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title(title or "image", fontsize=9)
    k = 1
    if mask is not None:
        axes[1].imshow(colorize_labels(mask))
        axes[1].set_title("ground truth", fontsize=9)
        k = 2
    for j, (label, cam) in enumerate(cams.items()):
        axes[k + j].imshow(overlay_cam(image, cam))
        axes[k + j].set_title(label, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


EVIDENCE_KEYS = ("cam_miou_best", "pseudo_miou", "seg_miou", "leakage")
"""Metrics drawn by :func:`plot_evidence` (keys of a report's round entries)."""

_METRIC_TITLES = {"cam_miou": "CAM mIoU at 0.15 (%)", "cam_miou_best": "CAM mIoU, best t (%)",
                  "pseudo_miou": "pseudo-mask mIoU (%)", "seg_miou": "seg mIoU, val (%)",
                  "leakage": "CAM leakage", "leakage_background": "leakage on context",
                  "leakage_cooccur": "leakage on co-occurring"}


def plot_evidence(summary: dict, keys: Sequence[str] = EVIDENCE_KEYS) -> Figure:
    """Mean +- std over seeds per round, one line per rho, one panel per metric.

    ``summary``: ``{rho: {round: {key: (mean, std, n_seeds)}}}``, as ``summarise()`` of
    ``scripts/conta_evidence.py`` returns it. Round 0 is the baseline.
    """
    fig, axes = new_subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for rho in sorted(summary):
            rounds = sorted(summary[rho])
            mean = [summary[rho][r][key][0] for r in rounds]
            std = [summary[rho][r][key][1] for r in rounds]
            seeds = summary[rho][rounds[0]][key][2]
            ax.errorbar(rounds, mean, yerr=std, marker="o", capsize=3,
                        label=f"rho={rho} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.set_xticks(sorted({r for per in summary.values() for r in per}))
        ax.set_xlabel("round (0 = baseline)")
        ax.set_title(_METRIC_TITLES.get(key, key), fontsize=10)
        ax.grid(alpha=0.3)
        _share_axis(ax, key)
    _legend_below(fig, axes[0, 0])
    return fig


def _share_axis(ax: Any, key: str) -> None:
    """A leakage (a share in [0, 1]) on its whole range: an axis fitted to the data would
    make differences of a few thousandths look large."""
    if key.startswith("leakage"):
        ax.set_ylim(0.0, 1.0)


def _legend_below(fig: Figure, ax: Any) -> None:
    """One legend for all panels, under them, where it hides no point."""
    fig.tight_layout()
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(labels), 5), fontsize=8, frameon=False)


def plot_rho_sweep(summary: dict, keys: Sequence[str] = EVIDENCE_KEYS, rounds: Sequence[int] = (0, 1)
                   ) -> Figure:
    """Each metric against the confounding strength rho, one line per round (mean +- std over seeds).

    ``summary``: ``{rho: {round: {key: (mean, std, n_seeds)}}}`` (``summarise()`` of
    ``scripts/conta_evidence.py``); rounds a rho lacks are skipped.
    """
    fig, axes = new_subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in rounds:
            rhos = [rho for rho in sorted(summary) if r in summary[rho]]
            mean = [summary[rho][r][key][0] for rho in rhos]
            std = [summary[rho][r][key][1] for rho in rhos]
            ax.errorbar(rhos, mean, yerr=std, marker="o", capsize=3,
                        label="baseline (round 0)" if r == 0 else f"CONTA round {r}")
        ax.set_xlabel("rho (confounding strength)")
        ax.set_title(_METRIC_TITLES.get(key, key), fontsize=10)
        ax.grid(alpha=0.3)
        _share_axis(ax, key)
    _legend_below(fig, axes[0, 0])
    return fig


def plot_paired_deltas(deltas: dict[str, dict], keys: Sequence[str] = EVIDENCE_KEYS) -> Figure:
    """Round t - round 0 per seed, for several variants of the adjustment, one panel per metric.

    ``deltas``: ``{variant: {round: {key: (mean, std, n, per_seed)}}}`` (one rho), each value as
    ``paired_deltas()`` of ``scripts/conta_evidence.py`` returns it for that rho. Dots are seeds,
    the bar is the mean with its standard deviation; the dashed line is "no change".
    """
    columns = [(variant, r) for variant, per in deltas.items() for r in sorted(per)]
    fig, axes = new_subplots(1, len(keys), figsize=(3.4 * len(keys), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variant_color = {v: colors[i % len(colors)] for i, v in enumerate(deltas)}
    for ax, key in zip(axes[0], keys):
        for x, (variant, r) in enumerate(columns):
            mean, std, _, per_seed = deltas[variant][r][key]
            color = variant_color[variant]
            ax.bar(x, mean, yerr=std, color=color, alpha=0.35, capsize=3)
            ax.plot([x] * len(per_seed), per_seed, "o", color=color, ms=4)
        ax.axhline(0, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(columns)), [f"{v}\nround {r}" for v, r in columns], fontsize=7,
                      rotation=30, ha="right")
        ax.set_title("Δ " + _METRIC_TITLES.get(key, key) + " vs round 0", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Notebooks 09-11: full-scale runs, published numbers, the results


def plot_results_table(table: Any, *, title: str = "") -> Figure:
    """Horizontal grouped bars of a :func:`results_table` (one group per method, one bar per
    reported metric, NaN left out); our measured rows are labelled in bold."""
    metrics = [c for c in RESULT_COLUMNS.values() if c in table and table[c].notna().any()]
    methods = list(table.index)
    fig, ax = new_subplots(figsize=(8.0, 1.0 + 0.22 * len(methods) * max(2, len(metrics))))
    y = np.arange(len(methods))
    height = 0.8 / max(1, len(metrics))
    for k, column in enumerate(metrics):
        values = table[column].to_numpy(dtype=float)
        ok = ~np.isnan(values)
        bars = ax.barh(y[ok] + (k - (len(metrics) - 1) / 2) * height, values[ok], height=height,
                       label=column, color=f"C{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    for i, method in enumerate(methods):
        if not any(np.isfinite(float(table.loc[method, c])) for c in metrics):
            ax.text(0.5, i, str(table.loc[method, "source"]) if "source" in table else "no numbers",
                    va="center", fontsize=8, color="0.35", style="italic")
    ax.set_yticks(y, methods)
    for label in ax.get_yticklabels():
        if label.get_text().startswith("ours"):
            label.set_fontweight("bold")
    ax.set_ylim(len(methods) - 0.5, -0.5)  # first method on top, every row shown
    ax.set_xlabel("mIoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.12)
    if metrics:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_conta_scm(title: str = "the CONTA SCM; backdoor path in red") -> Figure:
    """The SCM of ``scm.conta_graph()`` (C -> X, C -> M, X -> M, X -> Y, M -> Y) with short node
    captions and its backdoor path X <- C -> M -> Y in red (notebook 01's figure)."""
    graph = scm.conta_graph()
    drawn = graph.copy()
    nx.set_node_attributes(drawn, {"C": "context prior", "X": "image",
                                   "M": "image-specific context", "Y": "labels"}, "description")
    path = scm.backdoor_paths(graph, "X", "Y")[0]
    edges = [(u, v) if graph.has_edge(u, v) else (v, u) for u, v in zip(path, path[1:])]
    return plot_graph(drawn, scm.conta_layout(), highlight=edges, title=title)


def plot_run_cams(run_dir: str | Path, report: dict, *, n_images: int = 6) -> Figure:
    """Baseline (round 0) and last-round CAMs of ``n_images`` columns of evaluation images of a
    run, images with a co-occurring pair first, each with both its classes (:func:`pair_columns`,
    :func:`cam_comparison_arrays`; reads the run's ``config.json``, its data set and its CAM
    caches). Needs a report with at least two rounds."""
    from .stages.datasets import load_datasets  # torch-bound: on use (see CamCache above)

    run_dir = Path(run_dir)
    rounds = [e["round"] for e in report["rounds"]]
    if len(rounds) < 2:
        raise ValueError(f"plot_run_cams: the report of {run_dir} has rounds {rounds}; expected "
                         "round 0 and at least one CONTA round")
    eval_ds = load_datasets(ExperimentConfig.load(run_dir / "config.json"))["eval"]
    first, last = rounds[0], rounds[-1]
    arrays = cam_comparison_arrays(run_dir, eval_ds, pair_columns(eval_ds, n_images), [first, last])
    return plot_cam_grid(arrays["images"], {f"baseline (round {first})": arrays["cams"][first],
                                            f"CONTA (round {last})": arrays["cams"][last]},
                         col_titles=arrays["titles"], masks=arrays["masks"])


def save_run_figures(report: dict, run_dir: str | Path, figures_dir: str | Path, prefix: str, *,
                     dataset: str | None = None, measured: str = "") -> list[Path]:
    """A run's figures as notebooks 09 and 10 draw them: ``<prefix>_results.png`` (published vs
    measured, :func:`results_table`; only with ``dataset`` voc | coco), ``<prefix>_rounds.png``
    (:func:`plot_rounds`) and, with two rounds or more, ``<prefix>_cams.png``
    (:func:`plot_run_cams`). Figures are closed after saving; returns the paths."""
    figures_dir = Path(figures_dir)
    made: list[tuple[str, Figure]] = []
    if dataset is not None:
        title = {"voc": "PASCAL VOC 2012", "coco": "MS-COCO 2014"}.get(dataset, dataset)
        made.append(("results", plot_results_table(results_table(dataset, report, measured),
                                                   title=f"{title}: published vs measured here "
                                                         "(mIoU %)")))
    made.append(("rounds", plot_rounds(report)))
    if len(report["rounds"]) >= 2:
        made.append(("cams", plot_run_cams(run_dir, report)))
    paths = []
    for name, fig in made:
        paths.append(save_figure(fig, figures_dir / f"{prefix}_{name}.png"))
        plt.close(fig)
    return paths


def plot_thumbnails(paths: Sequence[str | Path], *, ncols: int = 4, size: float = 3.2) -> Figure:
    """PNG files side by side, ``ncols`` a row, each titled with its file name (a contact sheet
    of a figures folder)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("plot_thumbnails: expected at least one image path, got none")
    ncols = min(ncols, len(paths))
    nrows = int(np.ceil(len(paths) / ncols))
    fig, axes = new_subplots(nrows, ncols, figsize=(size * ncols, 0.8 * size * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, path in zip(axes.flat, paths):
        ax.imshow(plt.imread(path))
        ax.set_title(path.name, fontsize=8)
    fig.tight_layout()
    return fig


EVIDENCE_ARM_PANELS = ("pseudo_miou", "context_effect", "cam_miou_out_of_context",
                       "fp_rate_preferred")


def plot_evidence_arms(res: dict[str, Any], keys: Sequence[str] = EVIDENCE_ARM_PANELS,
                       rho: float = 0.9) -> Figure:
    """The protocol's paired differences at ``rho``, one panel per endpoint, one row per arm:
    the mean with its 95% t interval (bar) and every seed (dots); 0 = no change.

    ``res`` is :func:`causal_wsss.evidence.collect`'s output. CONTA and the variants show
    round 1 − round 0; the interventional baseline its round 0 − the confounded round 0 (the
    size of the effect that removing the confounding has).
    """
    rows = []
    for arm in ARMS:
        cell = res["paired"].get(f"{arm.name}@{rho}", {})
        stats = cell.get("0" if arm.name == "interventional" else "1")
        if stats:
            rows.append((arm.label if arm.name != "interventional"
                         else "interventional (upper bound)", stats))
    fig, axes = new_subplots(1, len(keys), figsize=(3.6 * len(keys), 0.55 * max(3, len(rows)) + 1.4),
                             sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for y, (label, stats) in enumerate(rows):
            s = stats.get(key) or {}
            colour = "tab:green" if label.startswith("interventional") else "tab:blue"
            if s.get("values"):
                ax.scatter(s["values"], [y + 0.15] * len(s["values"]), s=12, color="0.55",
                           zorder=2, label="one seed" if y == 0 else None)
            if s.get("mean") is not None:
                if s.get("lo") is not None:
                    ax.plot([s["lo"], s["hi"]], [y, y], color=colour, lw=2.5, zorder=3)
                ax.plot(s["mean"], y, "o", color=colour, ms=7, zorder=4,
                        label="mean, 95% t interval" if y == 0 else None)
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        ax.set_title(LABELS.get(key, key) + ("\n(primary endpoint)" if key == "pseudo_miou" else
                                             "\n(secondary)"), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [r[0] for r in rows])
    axes[0][0].set_ylim(len(rows) - 0.5, -0.6)  # first arm on top, every row's dots beside it
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"Paired differences over training seeds at rho = {rho} (fixed data): round 1 − "
                 "round 0; interventional: its round 0 − confounded round 0", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def plot_evidence_sweep(res: dict[str, Any], key: str = "pseudo_miou") -> Figure:
    """Against rho: left, the levels of ``key`` (the confounded baseline's round 0, CONTA round 1
    and the interventional baseline evaluated on the same images); right, the paired
    differences that the claims rest on (CONTA round 1 − round 0 and interventional − confounded
    round 0, same seed), each seed a dot. Means with 95% t intervals over the training seeds."""
    fig, (ax, bx) = new_subplots(1, 2, figsize=(11.0, 4.0))
    # only the rhos with a confounded round 0: the interventional point is compared with it
    based = {tag.split("@")[1] for tag, rounds in res["rounds"].items()
             if tag.startswith("conta@") and ((rounds.get("0") or {}).get(key) or {}).get("mean")
             is not None}
    # the baseline wide and solid under CONTA's thin dashed line with open markers: where the
    # two agree (CONTA changes nothing) both stay visible
    series = (("conta", "0", "baseline (round 0)", "tab:gray", -0.01,
               {"fmt": "s-", "lw": 3.5, "ms": 7, "alpha": 0.8}),
              ("conta", "1", "CONTA round 1 (dashed, open: on top of the baseline)", "tab:blue",
               0.0, {"fmt": "o--", "lw": 1.5, "mfc": "white", "ms": 6}),
              ("interventional", "0", "interventional baseline", "tab:green", 0.01, {}))

    def draw(axis, points, label, colour, style=None):  # points: [(x, stat)], stat: mean, lo, hi
        if not points:
            return
        rows = sorted((x, st["mean"], st["mean"] if st.get("lo") is None else st["lo"],
                       st["mean"] if st.get("hi") is None else st["hi"]) for x, st in points)
        xs, ms, los, his = (np.asarray(v, dtype=float) for v in zip(*rows))
        axis.errorbar(xs, ms, yerr=np.vstack([ms - los, his - ms]), color=colour, capsize=3,
                      label=label, **({"fmt": "o-"} | (style or {})))

    for arm, r, label, colour, dx, style in series:
        points = []
        for tag, rounds in res["rounds"].items():
            name, rho = tag.split("@")
            s = (rounds.get(r) or {}).get(key) if name == arm and rho in based else None
            if s and s.get("mean") is not None:
                points.append((float(rho) + dx, s))
        draw(ax, points, label, colour, style)
    for arm, label, colour, dx in (("conta", "CONTA round 1 − round 0", "tab:blue", -0.006),
                                   ("interventional", "interventional − confounded round 0",
                                    "tab:green", 0.006)):
        points = []
        for rho, by_key in (res.get("sweep") or {}).items():
            s = (by_key.get(key) or {}).get(arm)
            if not s or s.get("mean") is None:
                continue
            x = float(rho) + dx
            points.append((x, s))
            values = s.get("values") or []
            bx.scatter([x + 0.004] * len(values), values, s=10, color=colour, alpha=0.45,
                       zorder=3)
        draw(bx, points, label, colour)
    bx.axhline(0.0, color="black", lw=0.8)
    label = LABELS.get(key, key)
    for axis, title, ylabel in (
            (ax, "Levels: what confounding costs", f"{label} (mean, 95% interval)"),
            (bx, "Paired differences (dots: seeds): the gap, and CONTA's share of it",
             f"difference in {label}")):
        axis.set_xlabel("rho (confounding strength of the training set)")
        axis.set_xticks((0.5, 0.7, 0.9, 0.97))  # the protocol's rhos, on a fixed axis (one rho
        axis.set_xlim(0.45, 1.0)                # is not a zoom onto the markers' offsets)
        axis.set_ylabel(ylabel)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


ARM_LABELS = {a.name: a.label for a in INTERVENTION_ARMS}
INTERVENTION_COLOURS = {"paste": "tab:orange", "negatives": "tab:purple",
                        "appearance": "tab:brown", "oracle_negatives": "tab:pink",
                        "oracle_appearance": "tab:olive", "control_steps": "tab:gray",
                        "negatives_margin": "tab:red"}


def plot_interventions(res: dict[str, Any], key: str = "pseudo_miou") -> Figure:
    """The interventions against rho (docs/results.md section 7): left, round 1 − round 0 of
    ``key`` per arm beside CONTA's and the interventional gap (means with 95% t intervals, each
    seed a dot); right, the share of the gap each arm closes (ratio of means with its 95%
    bootstrap, per-seed ratios as dots; none where the gap's interval contains 0), with CONTA's
    share and the upper bound (1) as references. ``oracle_*`` arms are dashed: diagnostics."""
    fig, (ax, bx) = new_subplots(1, 2, figsize=(12.0, 4.2))
    rows = res.get("interventions") or {}
    arms = [a for a in INTERVENTION_COLOURS if any(r["arm"] == a for r in rows.values())]
    # rho on an ordinal axis (0.5, 0.9, 0.97 are not evenly spaced and often only one is done),
    # each arm at its own offset within the rho's slot; CONTA and the gap at the slot's centre
    rhos = sorted({r["rho"] for r in rows.values()})
    slot = {rho: float(i) for i, rho in enumerate(rhos)}
    offsets = {a: 0.5 * (i + 1) / (len(arms) + 1) - 0.25 for i, a in enumerate(arms)}

    def errorbar(axis, xs, stats, colour, label, dashed=False):
        pts = sorted((x, st) for x, st in zip(xs, stats) if st.get("mean") is not None)
        if not pts:
            return
        x = np.array([p[0] for p in pts])
        m = np.array([p[1]["mean"] for p in pts])
        lo = np.array([p[1]["lo"] if p[1].get("lo") is not None else p[1]["mean"] for p in pts])
        hi = np.array([p[1]["hi"] if p[1].get("hi") is not None else p[1]["mean"] for p in pts])
        axis.errorbar(x, m, yerr=np.vstack([m - lo, hi - m]), fmt="o--" if dashed else "o-",
                      color=colour, capsize=3, label=label)

    for arm in arms:
        mine = sorted((r for r in rows.values() if r["arm"] == arm), key=lambda r: r["rho"])
        dx, colour, dashed = offsets[arm], INTERVENTION_COLOURS[arm], arm.startswith("oracle_")
        label = ARM_LABELS.get(arm, arm)
        errorbar(ax, [slot[r["rho"]] + dx for r in mine], [r["paired"][key] for r in mine],
                 colour, label, dashed)
        shares = []
        for r in mine:
            c = r["gap"][key]["closed"]
            ax.scatter([slot[r["rho"]] + dx] * len(r["paired"][key].get("values") or []),
                       r["paired"][key].get("values") or [], s=9, color=colour, alpha=0.45)
            vals = [v for v in c.get("per_seed") or [] if v is not None] if c["ratio"] is not None \
                else []
            bx.scatter([slot[r["rho"]] + dx] * len(vals), vals, s=9, color=colour, alpha=0.45)
            shares.append({"mean": c["ratio"], "lo": c["lo"], "hi": c["hi"]})
        errorbar(bx, [slot[r["rho"]] + dx for r in mine], shares, colour, label, dashed)
    sweep = res.get("sweep") or {}
    refs = [(slot[rho], sweep[str(rho)][key]) for rho in rhos
            if str(rho) in sweep and key in sweep[str(rho)]]
    errorbar(ax, [x for x, _ in refs], [row["conta"] for _, row in refs], "tab:blue",
             "CONTA round 1 − round 0")
    errorbar(ax, [x for x, _ in refs], [row["interventional"] for _, row in refs], "tab:green",
             "interventional − confounded round 0 (the gap)")
    errorbar(bx, [x for x, _ in refs], [{"mean": row["gap_closed"]["ratio"],
                                         "lo": row["gap_closed"]["lo"],
                                         "hi": row["gap_closed"]["hi"]} for _, row in refs],
             "tab:blue", "CONTA")
    bx.axhline(1.0, color="tab:green", lw=1.0, ls=":", label="the interventional upper bound")
    for axis in (ax, bx):
        axis.axhline(0.0, color="black", lw=0.8)
        axis.set_xlabel("rho (confounding strength)")
        axis.set_xticks(list(slot.values()), [f"{rho:g}" for rho in rhos])
        axis.set_xlim(-0.5, len(rhos) - 0.5)
        axis.grid(alpha=0.3)
    ax.set_ylabel(f"{LABELS.get(key, key)}: round 1 − round 0\n(mean, 95% t interval; dots: seeds)")
    bx.set_ylabel("share of the interventional gap closed\n(ratio of means, 95% bootstrap)")
    ax.set_title("what each intervention gains")
    bx.set_title("how much of the gap it closes (none where the gap is unresolved)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


# ---------------------------------------------------------------------------------------------
# Notebook 08 and the demo: the same images' CAMs in several runs (round 0, CONTA, interventions)


def run_cam_arrays(sources: dict[str, tuple[str | Path, int]], dataset,
                   columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Images, ground-truth masks, titles ("name: class") and, for each source, the CAM of each
    column's class: ``sources`` maps a row label to (run folder, round), e.g.
    ``{"round 0": (conta_run, 0), "CONTA": (conta_run, 1), "paste": (paste_run, 1)}``;
    ``columns`` are (image name, class name), e.g. from :func:`pair_columns`; ``keys`` holds each
    column's foreground index. A class the image does not hold gets an all-zero map."""
    from .cam import CamCache  # torch-bound: on use, so that figures of tables need no torch

    index = {n: i for i, n in enumerate(dataset.names)}
    fg = list(dataset.classes[1:])
    bad = [c for c in columns if c[0] not in index or c[1] not in fg]
    if bad:
        raise ConfigError(f"run_cam_arrays: columns {bad[:3]} name an image or a class the data "
                          f"set does not have")
    caches = {label: CamCache(Path(run) / f"round_{r}" / "cams") for label, (run, r) in sources.items()}
    k_fg = dataset.num_classes - 1
    out: dict[str, Any] = {"images": [], "masks": [], "titles": [], "keys": [],
                           "cams": {label: [] for label in sources}}
    for name, cls in columns:
        i, key = index[name], fg.index(cls)
        out["images"].append(dataset.load_image(i))
        out["masks"].append(dataset.load_mask(i))
        out["titles"].append(f"{name}: {cls}")
        out["keys"].append(key)
        for label, cache in caches.items():
            out["cams"][label].append(cache.get(name).dense(k_fg)[key].float().numpy())
    return out


def plot_cams_of_runs(arrays: dict[str, Any], *, classes: Sequence[str] | None = None) -> Figure:
    """:func:`run_cam_arrays` as a grid: columns (image, class), rows the image, its ground truth
    and each source's CAM of the column's class (:func:`plot_cam_grid`, one colour bar)."""
    return plot_cam_grid(arrays["images"], arrays["cams"], col_titles=arrays["titles"],
                         masks=arrays["masks"], classes=classes)


def plot_example_rows(rows: dict[str, Sequence[tuple[np.ndarray, str]]], *, size: float = 2.3
                      ) -> Figure:
    """Rows of (image, caption), each row labelled by its key (notebook 08: what each
    intervention feeds the network); an empty row says so."""
    if not rows:
        raise ConfigError("plot_example_rows: no rows to draw")
    ncols = max(1, *(len(v) for v in rows.values()))
    fig, axes = new_subplots(len(rows), ncols, figsize=(size * ncols, size * 0.95 * len(rows)),
                             squeeze=False)
    for i, (label, items) in enumerate(rows.items()):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(items):
                ax.imshow(items[j][0])
                ax.set_title(textwrap.fill(items[j][1], 30), fontsize=8)
            elif j == 0:  # an empty row keeps its label, with the reason
                ax.text(0.5, 0.5, "(none: the bank is empty)", ha="center", va="center")
                for spine in ax.spines.values():
                    spine.set_visible(False)
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig
