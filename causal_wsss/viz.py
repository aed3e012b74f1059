"""Figures (matplotlib): the causal graph, co-occurrence, CAM overlays, the dictionary, per-round curves.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``;
notebooks display the figure, scripts save it (:func:`save_figure`, atomic).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .constants import voc_palette
from .io import atomic_path


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
    import networkx as nx

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
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
            ax.text(x, y - 0.22, desc.split(":")[0][:38], ha="center", va="top", fontsize=8,
                    color="0.25")
    ax.set_title(title)
    ax.axis("off")
    ax.margins(0.25)
    return fig


def plot_cooccurrence(stats: dict, *, conditional: bool = True, ax: Any = None,
                      min_images: int = 1) -> Figure:
    """Heat map of P(b | a) (rows a, columns b) or of raw co-occurrence counts."""
    classes = [c for c in stats["classes"] if stats["image_counts"][c] >= min_images]
    counts = np.array([[stats["cooccurrence"][a][b] for b in classes] for a in classes], float)
    values = counts / np.maximum(counts.diagonal()[:, None], 1) if conditional else counts
    if ax is None:
        size = 1.2 + 0.38 * len(classes)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
    else:
        fig = ax.figure
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1 if conditional else None)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("b")
    ax.set_ylabel("a")
    ax.set_title("P(b | a)" if conditional else "co-occurrence (images)")
    if len(classes) <= 12:
        for i in range(len(classes)):
            for j in range(len(classes)):
                text = f"{values[i, j]:.2f}" if conditional else f"{int(values[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 0.6 * values.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 in the VOC palette."""
    return voc_palette()[np.asarray(labels, dtype=np.uint8)]


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [0, 1] heat map (H, W) over an RGB uint8 image (H, W, 3) -> float RGB in [0, 1]."""
    heat = plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3]
    return (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * heat


def plot_cam_grid(images: Sequence[np.ndarray], rows: dict[str, Sequence[np.ndarray]], *,
                  col_titles: Sequence[str] = (), masks: Sequence[np.ndarray] | None = None,
                  figsize_per: float = 2.1) -> Figure:
    """Columns = images; first row the image (or its ground truth), then one row per CAM set.

    ``rows`` maps a row title (e.g. "baseline", "CONTA") to one (H, W) CAM per image.
    """
    n = len(images)
    nrows = 1 + (masks is not None) + len(rows)
    fig, axes = plt.subplots(nrows, n, figsize=(figsize_per * n, figsize_per * nrows * 0.85),
                             squeeze=False)
    for j, image in enumerate(images):
        axes[0, j].imshow(image)
        if j < len(col_titles):
            axes[0, j].set_title(col_titles[j], fontsize=9)
        r = 1
        if masks is not None:
            axes[r, j].imshow(colorize_labels(masks[j]))
            r += 1
        for title, cams in rows.items():
            axes[r, j].imshow(overlay_cam(image, cams[j]))
            if j == 0:
                axes[r, j].set_ylabel(title, fontsize=10)
            r += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if masks is not None:
        axes[1, 0].set_ylabel("ground truth", fontsize=10)
    fig.tight_layout()
    return fig


def plot_dictionary(masks: np.ndarray, classes: Sequence[str], prior: np.ndarray | None = None,
                    *, only_valid: bool = True, ncols: int = 6) -> Figure:
    """The confounder dictionary: one average mask per class (row 0 = background skipped)."""
    fg = masks[1:]
    idx = [i for i in range(len(fg)) if not only_valid or fg[i].max() > 0]
    n = max(1, len(idx))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.0 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(idx):
        ax = axes.flat[k]
        ax.imshow(fg[i], cmap="magma", vmin=0, vmax=max(1e-6, float(fg[i].max())))
        title = classes[i + 1]
        if prior is not None:
            title += f"\nP(c)={prior[i]:.3f}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention(alpha: np.ndarray, classes: Sequence[str], prior: np.ndarray | None = None,
                   ax: Any = None) -> Figure:
    """Bar chart of one image's attention weights alpha_i (and alpha_i * P(c_i))."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 2.8))
    else:
        fig = ax.figure
    names = list(classes[1:])
    x = np.arange(len(names))
    ax.bar(x - 0.2, alpha, width=0.4, label="alpha")
    if prior is not None:
        ax.bar(x + 0.2, alpha * prior / max(float((alpha * prior).sum()), 1e-12), width=0.4,
               label="alpha * P(c), normalised")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rounds(reports: dict[str, dict] | dict) -> Figure:
    """Per-round mIoU (CAM, pseudo-mask, segmentation) and CAM leakage of one or more reports."""
    if "rounds" in reports:
        reports = {"": reports}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
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
    fig.tight_layout()
    return fig


def cam_comparison_arrays(run_dir: str | Path, dataset, names: Sequence[str],
                          rounds: Sequence[int]) -> dict[str, Any]:
    """Images, ground-truth masks and, per round, the CAM of each image's first class.

    Reads the round CAM caches of a run directory; used by the demo and notebook 07.
    """
    from .cam import CamCache

    run_dir = Path(run_dir)
    index = {n: i for i, n in enumerate(dataset.names)}
    images, masks, titles = [], [], []
    per_round: dict[int, list[np.ndarray]] = {r: [] for r in rounds}
    for name in names:
        i = index[name]
        images.append(dataset.load_image(i))
        masks.append(dataset.load_mask(i))
        caches = {r: CamCache(run_dir / f"round_{r}" / "cams").get(name) for r in rounds}
        first = caches[rounds[0]]
        key = int(first.keys[0]) if len(first.keys) else 0
        titles.append(f"{name}: {dataset.classes[key + 1]}")
        for r, cams in caches.items():
            dense = cams.dense(dataset.num_classes - 1)
            per_round[r].append(dense[key].float().numpy())
    return {"images": images, "masks": masks, "titles": titles, "cams": per_round}


def save_demo_figures(report: dict, run_dir: str | Path, *, figures_dir: str | Path | None = None,
                      n_images: int = 6) -> list[Path]:
    """The demo's figures: per-round curves and baseline vs last-round CAMs on the same images."""
    from .config import ExperimentConfig
    from .pipeline import load_datasets

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
        names = list(eval_ds.names[:n_images])
        arrays = cam_comparison_arrays(run_dir, eval_ds, names, [rounds[0], rounds[-1]])
        fig = plot_cam_grid(arrays["images"], {"baseline (round 0)": arrays["cams"][rounds[0]],
                                               f"CONTA (round {rounds[-1]})":
                                                   arrays["cams"][rounds[-1]]},
                            col_titles=arrays["titles"], masks=arrays["masks"])
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
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
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
        fig, ax = plt.subplots(figsize=(max(4.5, 1.0 + 0.5 * len(groups) * max(1, len(series))), 3.4))
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
                         size: float = 2.0) -> Figure:
    """Images (uint8 (H, W, 3)) above their label masks ((H, W), VOC palette, 255 = void),
    ``ncols`` images per block of two rows."""
    if len(images) != len(masks) or not images:
        raise ValueError(f"plot_image_mask_grid: expected as many masks as images (at least "
                         f"one), got {len(images)} images and {len(masks)} masks")
    ncols = min(ncols, len(images))
    blocks = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(2 * blocks, ncols, figsize=(size * ncols, 2 * size * blocks * 0.9),
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
    return fig
