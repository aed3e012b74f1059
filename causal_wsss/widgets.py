"""Interactive views for the notebooks: stock ipywidgets controls over inline matplotlib figures.

Each view has a pure figure function returning ``(figure, line)``, a ``show_*`` update function
that prints the line and displays the figure (the function a widget calls, unit-testable on
its own), and a builder returning the widget. The maths lives in ``simulate``, ``backdoor``,
``data.synthetic`` and ``data.stats``; the drawing in ``viz``. Not imported by ``causal_wsss``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import clear_output, display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from tqdm.auto import tqdm

from .backdoor import backdoor_adjust
from .cam import CamCache
from .config import ExperimentConfig
from .constants import IGNORE_INDEX
from .data.registry import build_dataset
from .data.scenes import SPEC
from .data.stats import conditional_probability, cooccurrence_stats
from .data.synthetic import Cooccurrence, generate_synthetic, measured_cooccurrence
from .errors import ConfigError, DataError
from .metrics import LeakageMeter, ThresholdSweep, cams_to_labels, threshold_grid
from .simulate import default_scm
from .stages.datasets import load_datasets
from .viz import (
    cam_comparison_arrays,
    close_figure,
    new_subplots,
    plot_bars,
    plot_cam_inspection,
    plot_cam_rounds,
    plot_context_panel,
    plot_cooccurrence,
    plot_curves,
    run_cam_arrays,
)

STRENGTH_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2).tolist())
"""Confounding strengths at which notebook 01's sweep is drawn."""

RHO_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())
"""Values of ``rho`` offered by notebook 02's slider (precomputed once)."""


def _interactive_output(f, controls: dict) -> widgets.Output:
    """``ipywidgets.interactive_output(f, controls)`` without its pyplot flushes.

    ipywidgets' version calls matplotlib-inline's ``flush_figures`` before and after ``f``: it
    draws, displays and closes every figure pyplot has open. JupyterLab (4.4 and later) runs a
    widget's callbacks in a kernel subshell's thread while cells run in the main thread, so that
    flush took the running cell's half-made figures (a blank image in the widget, the figure
    missing from the cell). ``f`` here displays its own figure (:func:`_show`), made outside
    pyplot off the main thread (:func:`causal_wsss.viz.new_subplots`).
    """
    out = widgets.Output()

    def observer(_change: dict | None = None) -> None:
        with out:
            clear_output(wait=True)
            f(**{name: control.value for name, control in controls.items()})

    for control in controls.values():
        control.observe(observer, names="value")
    observer()
    return out


def _show(fig: Figure, line: str) -> str:
    """Print ``line`` (the text a browser test waits for), display ``fig`` inline, close it."""
    print(line)
    display(fig)
    close_figure(fig)
    return line


# ---------------------------------------------------------------------------------------------
# Notebook 01: confounding strength of the discrete simulator


@dataclass(frozen=True)
class EffectSummary:
    """Exact quantities of ``simulate.default_scm(strength)``.

    ``p_y_given_x`` and ``p_y_do_x`` (x = 0, 1): P(Y=1 | X=x) and P(Y=1 | do(X=x));
    ``naive`` = P(Y=1 | X=1) - P(Y=1 | X=0); ``adjusted``: the same contrast from the backdoor
    sum sum_c P(Y=1 | x, c) P(c) (paper Eq. 1); ``truth``: ``DiscreteSCM.ate_true``.
    """

    strength: float
    naive: float
    adjusted: float
    truth: float
    p_y_given_x: tuple[float, float]
    p_y_do_x: tuple[float, float]


def effect_summary(strength: float) -> EffectSummary:
    """Naive, backdoor-adjusted and true effects of X on Y at confounding ``strength`` in [0, 1]."""
    scm = default_scm(strength)
    per_c = torch.tensor(scm.p_y_given_x_c()).unsqueeze(-1)  # (n_x, n_c, 1)
    adjusted = backdoor_adjust(per_c, torch.tensor(scm.p_c))[:, 0]  # (n_x,)
    return EffectSummary(strength=float(strength), naive=scm.ate_naive,
                         adjusted=float(adjusted[1] - adjusted[0]), truth=scm.ate_true,
                         p_y_given_x=(scm.p_y_given_x(0), scm.p_y_given_x(1)),
                         p_y_do_x=(scm.p_y_do_x(0), scm.p_y_do_x(1)))


def confounding_figure(strength: float,
                       grid: Sequence[float] = STRENGTH_GRID) -> tuple[Figure, str]:
    """Left: naive vs adjusted vs true effect over ``grid``, a marker at ``strength``; right:
    P(Y=1 | X=x) vs P(Y=1 | do(X=x)) at ``strength``. Returns the figure and the line
    ``strength=S naive=... adjusted=... true=...``."""
    now = effect_summary(strength)
    sweep = [effect_summary(s) for s in grid]
    fig, (left, right) = new_subplots(1, 2, figsize=(10.5, 3.6))
    plot_curves(list(grid), {"naive P(Y|X) contrast": [e.naive for e in sweep],
                             "backdoor sum over C": [e.adjusted for e in sweep],
                             "true P(Y|do(X)) contrast": [e.truth for e in sweep]},
                marker=now.strength, xlabel="confounding strength", ylabel="effect of X on Y",
                styles={"backdoor sum over C": "s", "true P(Y|do(X)) contrast": "k--"},
                title="effect of X=1 vs X=0", ax=left)
    left.axhline(0.0, color="0.5", linewidth=0.8)
    plot_bars(["x = 0", "x = 1"], {"P(Y=1 | X=x)": list(now.p_y_given_x),
                                  "P(Y=1 | do(X=x))": list(now.p_y_do_x)},
              ylabel="probability", title=f"strength {now.strength:.2f}", ax=right)
    right.set_ylim(0.0, 1.0)
    fig.tight_layout()
    line = (f"strength={now.strength:.2f} naive={now.naive:+.3f} "
            f"adjusted={now.adjusted:+.3f} true={now.truth:+.3f}")
    return fig, line


def show_confounding(strength: float) -> str:
    """Update function of :func:`confounding_widget`: print the effects line, draw the figure."""
    return _show(*confounding_figure(strength))


def confounding_widget(value: float = 1.0) -> widgets.VBox:
    """A confounding-strength slider over :func:`show_confounding` (notebook 01)."""
    slider = widgets.FloatSlider(value=value, min=0.0, max=1.0, step=0.05,
                                 description="strength", readout_format=".2f",
                                 continuous_update=False)
    out = _interactive_output(show_confounding, {"strength": slider})
    return widgets.VBox([slider, out])


# ---------------------------------------------------------------------------------------------
# Notebook 02: co-occurrence of the synthetic benchmark as a function of rho


@dataclass(frozen=True)
class RhoSnapshot:
    """A small synthetic training set at one ``rho``: its label co-occurrence ``stats``
    (``data.stats.cooccurrence_stats``), ``conditional`` P(b | a) and the ``measured``
    context and partner confounding (``data.synthetic.measured_cooccurrence``)."""

    rho: float
    stats: dict
    conditional: dict[str, dict[str, float]]
    measured: Cooccurrence

    def p_b_given_a(self, a: str, b: str) -> float:
        """Share of the images holding ``a`` that also hold ``b`` (0 if no image holds ``a``)."""
        return self.conditional[a][b]

    def p_b_given_not_a(self, a: str, b: str) -> float:
        """Share of the images without ``a`` that hold ``b`` (NaN if every image holds ``a``)."""
        counts = self.stats["image_counts"]
        rest = self.stats["num_images"] - counts[a]
        return (counts[b] - self.stats["cooccurrence"][a][b]) / rest if rest else math.nan


def default_pairs() -> list[tuple[str, str]]:
    """Ordered class pairs (a, b) for the dropdown: the benchmark's (anchor, partner) pairs and
    their reverses first, then every other ordered pair of its classes."""
    first = [*SPEC.pairs, *((b, a) for a, b in SPEC.pairs)]
    rest = [p for p in itertools.permutations(SPEC.classes, 2) if p not in first]
    return first + rest


class CooccurrenceExplorer:
    """Small synthetic training sets, one per ``rho``, written under ``cache_dir/rho_X.XX`` on
    first use (``generate_synthetic``, which also skips complete sets on disk) and kept in
    memory, so that moving the slider over precomputed values only redraws (notebook 02).
    """

    def __init__(self, cache_dir: str | os.PathLike, *, n_images: int = 60, size: int = 96,
                 seed: int = 0) -> None:
        if n_images < 1:
            raise ConfigError(f"CooccurrenceExplorer n_images: expected >= 1, got {n_images}")
        self.cache_dir = Path(cache_dir)
        self.n_images = int(n_images)
        self.size = int(size)
        self.seed = int(seed)
        self._snapshots: dict[float, RhoSnapshot] = {}

    @staticmethod
    def _key(rho: float) -> float:
        rho = round(float(rho), 2)  # slider values such as 0.7000000000000001
        if not 0.0 <= rho <= 1.0:
            raise ConfigError(f"rho: expected a value in [0, 1], got {rho}")
        return rho

    def snapshot(self, rho: float) -> RhoSnapshot:
        """The set at ``rho`` (rounded to 2 decimals), generated and measured on first use."""
        rho = self._key(rho)
        if rho not in self._snapshots:
            root = generate_synthetic(self.cache_dir / f"rho_{rho:.2f}", n_train=self.n_images,
                                      n_val=0, rho=rho, seed=self.seed, size=self.size)
            dataset = build_dataset("synthetic", root, "train")
            stats = cooccurrence_stats(dataset)
            self._snapshots[rho] = RhoSnapshot(rho, stats, conditional_probability(stats),
                                               measured_cooccurrence(dataset.meta, "train"))
        return self._snapshots[rho]

    def precompute(self, rhos: Sequence[float] = RHO_GRID, *, progress: bool = False) -> None:
        """Generate and measure every ``rho`` now, so the widget only redraws."""
        for rho in tqdm(rhos, desc="synthetic sets", disable=not progress):
            self.snapshot(rho)

    def cached_rhos(self) -> list[float]:
        """The ``rho`` values held in memory, sorted."""
        return sorted(self._snapshots)

    def figure(self, rho: float, pair: tuple[str, str]) -> tuple[Figure, str]:
        """Left: P(b | a) over the classes at ``rho``, the chosen pair outlined; right: P(b | a),
        P(b | not a) and P(preferred context | a) over the cached rhos. Returns the figure and
        the line ``rho=R P(b|a)=p``."""
        a, b = pair
        snap = self.snapshot(rho)
        rhos = self.cached_rhos()
        snaps = [self._snapshots[r] for r in rhos]
        fig, (left, right) = new_subplots(1, 2, figsize=(11.0, 4.3),
                                          gridspec_kw={"width_ratios": [1.1, 1.0]})
        plot_cooccurrence(snap.stats, conditional=True, ax=left)
        shown = [c for c in snap.stats["classes"] if snap.stats["image_counts"][c] >= 1]
        if a in shown and b in shown:
            left.add_patch(Rectangle((shown.index(b) - 0.5, shown.index(a) - 0.5), 1, 1,
                                     fill=False, edgecolor="red", linewidth=2.5))
        left.set_title(f"P(b | a), {snap.stats['num_images']} images, rho={snap.rho:.2f}",
                       fontsize=10)
        curves = {f"P({b} | {a})": [s.p_b_given_a(a, b) for s in snaps],
                  f"P({b} | no {a})": [s.p_b_given_not_a(a, b) for s in snaps],
                  f"P(preferred context | {a})":
                      [s.measured.preferred_given_present.get(a, math.nan) for s in snaps],
                  "rho": rhos}
        plot_curves(rhos, curves, marker=snap.rho, xlabel="rho", ylabel="probability",
                    styles={"rho": "k:"}, title="measured on the generated images", ax=right)
        right.set_ylim(-0.02, 1.02)
        fig.tight_layout()
        return fig, f"rho={snap.rho:.2f} P({b}|{a})={snap.p_b_given_a(a, b):.2f}"

    def show(self, rho: float, pair: tuple[str, str]) -> str:
        """Update function of :meth:`widget`: print ``rho=R P(b|a)=p`` and draw the figure."""
        return _show(*self.figure(rho, pair))

    def widget(self, rhos: Sequence[float] = RHO_GRID, value: float = 0.9,
               pairs: Sequence[tuple[str, str]] | None = None) -> widgets.VBox:
        """A ``rho`` slider over ``rhos`` (evenly spaced) and a class-pair dropdown over
        :meth:`show`. Call :meth:`precompute` with the same ``rhos`` first."""
        rhos = sorted(self._key(r) for r in rhos)
        if len(rhos) < 2:
            raise ConfigError(f"rhos: expected at least 2 values for a slider, got {rhos}")
        pairs = list(pairs or default_pairs())
        slider = widgets.FloatSlider(value=value, min=rhos[0], max=rhos[-1],
                                     step=round(rhos[1] - rhos[0], 2), description="rho",
                                     readout_format=".2f", continuous_update=False)
        dropdown = widgets.Dropdown(options=[(f"P({b} | {a})", (a, b)) for a, b in pairs],
                                    value=pairs[0], description="pair")
        out = _interactive_output(self.show, {"rho": slider, "pair": dropdown})
        return widgets.VBox([widgets.HBox([slider, dropdown]), out])


# ---------------------------------------------------------------------------------------------
# Notebook 04: the CAMs of one round, image by image and over the data set


@dataclass(frozen=True)
class PairStats:
    """IoU and CAM leakage of one (image, class) pair (:func:`pair_stats`)."""

    iou: float
    leakage: float
    leakage_cooccur: float
    leakage_background: float


def pair_stats(cams: torch.Tensor, mask: np.ndarray, label: int, threshold: float) -> PairStats:
    """IoU of class ``label`` (1..K) and the leakage of its CAM in one image.

    cams: (K, H, W) non-negative normalised CAMs, zero on the classes absent from the image
    label; mask: (H, W) ground truth, 255 = void. The prediction is IRNet's argmax over
    [threshold ; cams] (``metrics.cams_to_labels``); IoU = |P & G| / |P | G| over the non-void
    pixels for P = {pred = label}, G = {mask = label} (NaN when both are empty). Leakage is
    ``metrics.LeakageMeter`` for this single pair: the share of the CAM's mass outside G, split
    into other objects and background (method.md section 5); it does not depend on the threshold.
    """
    num_fg = cams.shape[0]
    if not 1 <= label <= num_fg:
        raise ConfigError(f"pair_stats: class label {label} outside 1..{num_fg}")
    target = torch.from_numpy(np.asarray(mask, dtype=np.int64))  # (H, W)
    valid = target != IGNORE_INDEX
    pred = cams_to_labels(cams, threshold)  # (H, W)
    p, g = (pred == label) & valid, target == label
    union = int((p | g).sum())
    iou = int((p & g).sum()) / union if union else math.nan
    present = torch.zeros(num_fg)
    present[label - 1] = 1
    meter = LeakageMeter(num_fg + 1)
    meter.update(cams, target, present)
    leak = meter.compute()["per_class"][label]
    return PairStats(iou, leak["leakage"], leak["leakage_cooccur"], leak["leakage_background"])


@dataclass(frozen=True)
class CamImage:
    """One image of :class:`CamExplorer`: ``image`` uint8 (H, W, 3); ``mask`` uint8 (H, W),
    255 = void; ``keys`` (P,) and ``high_res`` (P, H, W) its cached CAMs of the positive
    classes (``cam.ImageCams``: 0-based keys, maps divided by their maxima); ``present`` its
    image-level labels 1..K; ``context`` its background's name (synthetic benchmark) or
    "background"."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    keys: torch.Tensor
    high_res: torch.Tensor
    present: tuple[int, ...]
    context: str

    def cam(self, label: int) -> torch.Tensor:
        """(H, W) CAM of class ``label`` (1..K); zeros when the class has no cached map."""
        hit = (self.keys == label - 1).nonzero()
        if hit.numel() == 0:
            return self.high_res.new_zeros(self.high_res.shape[-2:])
        return self.high_res[int(hit[0, 0])]

    def dense(self, num_fg: int) -> torch.Tensor:
        """(K, H, W) CAMs with zeros on the classes without a map."""
        out = self.high_res.new_zeros((num_fg, *self.high_res.shape[-2:]))
        out[self.keys] = self.high_res
        return out


class CamExplorer:
    """The cached CAMs of round ``round_index`` of a run (``run_experiment``), loaded once with
    the images and masks of the run's evaluation split, so that the widget only redraws
    (notebook 04). ``max_images`` > 0 keeps the first images only.

    Data-set-level views over the loaded images: :meth:`sweep` (mIoU against the background
    threshold), :meth:`leakage` (``LeakageMeter``, overall and per class) and
    :meth:`mass_shares` (where each class's CAM mass lands).
    """

    def __init__(self, run_dir: str | os.PathLike, round_index: int = 0, *, max_images: int = 0,
                 progress: bool = False) -> None:
        run_dir = Path(run_dir)
        self.cfg = ExperimentConfig.load(run_dir / "config.json")
        self.dataset = load_datasets(self.cfg)["eval"]
        self.classes: tuple[str, ...] = tuple(self.dataset.classes)
        self.num_fg = len(self.classes) - 1
        cache = CamCache(run_dir / f"round_{round_index}" / "cams")
        contexts = getattr(self.dataset, "context_names", None)
        labels = self.dataset.label_matrix()  # (N, K)
        count = len(self.dataset) if max_images <= 0 else min(max_images, len(self.dataset))
        self.images: dict[str, CamImage] = {}
        for i in tqdm(range(count), desc="load CAMs", disable=not progress):
            name = self.dataset.names[i]
            mask = self.dataset.load_mask(i)
            if mask is None:
                raise DataError(f"CamExplorer: image '{name}' of split "
                                f"'{self.cfg.data.eval_split}' has no ground-truth mask")
            context = contexts[self.dataset.contexts[i]] if contexts else "background"
            cams = cache.get(name)
            self.images[name] = CamImage(
                name, self.dataset.load_image(i), mask, cams.keys, cams.high_res,
                tuple(int(k) + 1 for k in np.flatnonzero(labels[i])), context)

    @property
    def names(self) -> list[str]:
        """The loaded images, in data-set order."""
        return list(self.images)

    def classes_of(self, name: str) -> list[str]:
        """The class names in image ``name``'s label."""
        return [self.classes[k] for k in self._get(name).present]

    def _get(self, name: str) -> CamImage:
        if name not in self.images:
            raise ConfigError(f"image '{name}' is not loaded; expected one of "
                              f"{', '.join(self.names[:5])}, ...")
        return self.images[name]

    def stats(self, name: str, cls: str, threshold: float) -> PairStats:
        """:func:`pair_stats` of class ``cls`` in image ``name``."""
        item = self._get(name)
        return pair_stats(item.dense(self.num_fg), item.mask, self.classes.index(cls),
                          threshold)

    def figure(self, name: str, cls: str, threshold: float,
               show_gt: bool = True) -> tuple[Figure, str]:
        """Image, CAM of ``cls``, its mask at ``threshold`` (against the ground truth when
        ``show_gt``: green hit, red leak, blue miss) and the ground truth. A class not in the
        image's label falls back to its first class. Returns the figure and the line
        ``image=N class=C t=T IoU=I leakage=L (objects O, background 'ctx' B)``.

        Both the IoU and the leakage need the ground truth: without ``show_gt`` the line stops
        after ``t=T`` and no panel title gives them away. An all-zero CAM has no mass to leak:
        its leakage reads ``n/a (empty CAM)``, not ``nan``."""
        item = self._get(name)
        if cls not in self.classes_of(name):
            cls = self.classes_of(name)[0]
        label = self.classes.index(cls)
        s = self.stats(name, cls, threshold)
        predicted = (cams_to_labels(item.dense(self.num_fg), threshold)
                     == label).numpy()  # (H, W)
        truth = item.mask == label if show_gt else None
        fig = plot_cam_inspection(
            item.image, item.cam(label).numpy(), predicted,
            item.mask if show_gt else None, truth,
            titles=(f"{name} ({item.context})", f"CAM: {cls}",
                    f"{cls} at t={threshold:.2f}" + (f": IoU {s.iou:.2f}" if show_gt else ""),
                    "ground truth" if show_gt else "(ground truth hidden)"),
            classes=self.classes)
        line = f"image={name} class={cls} t={threshold:.2f}"
        if show_gt:
            if s.leakage != s.leakage:  # NaN: the CAM has no mass
                leak = "leakage=n/a (empty CAM)"
            else:
                leak = (f"leakage={s.leakage:.2f} (objects {s.leakage_cooccur:.2f}, background "
                        f"'{item.context}' {s.leakage_background:.2f})")
            line += f" IoU={s.iou:.2f} {leak}"
        return fig, line

    def show(self, name: str, cls: str, threshold: float, show_gt: bool = True) -> str:
        """Update function of :meth:`widget`: print the line of :meth:`figure`, draw it."""
        return _show(*self.figure(name, cls, threshold, show_gt))

    def widget(self, name: str | None = None, threshold: float | None = None) -> widgets.VBox:
        """Image dropdown, class dropdown (the image's classes), threshold slider and a
        ground-truth toggle over :meth:`show`."""
        name = name or self.names[0]
        threshold = self.cfg.cam_infer.bg_threshold if threshold is None else threshold
        image = widgets.Dropdown(options=[(f"{n}: {', '.join(self.classes_of(n))}", n)
                                          for n in self.names], value=name, description="image")
        cls = widgets.Dropdown(options=self.classes_of(name), description="class")
        slider = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01,
                                     description="threshold", readout_format=".2f",
                                     continuous_update=False)
        gt = widgets.Checkbox(value=True, description="ground truth")
        out = widgets.Output()
        busy = [False]  # True while a new image resets the class dropdown

        def redraw(_change: dict | None = None) -> None:
            if busy[0]:
                return
            out.clear_output(wait=True)
            with out:
                self.show(image.value, cls.value, slider.value, gt.value)

        def new_image(change: dict) -> None:
            busy[0] = True  # resetting the options changes the class: one redraw, not two
            try:
                cls.options = self.classes_of(change["new"])
            finally:
                busy[0] = False
            redraw()

        image.observe(new_image, names="value")
        for control in (cls, slider, gt):
            control.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([image, cls]), widgets.HBox([slider, gt]), out])

    def pair_table(self, threshold: float) -> list[dict]:
        """One row per (image, class in its label): ``image``, ``class``, ``context`` and the
        :class:`PairStats` fields at ``threshold`` (for a pandas DataFrame)."""
        rows = []
        for name, item in self.images.items():
            for cls in self.classes_of(name):
                s = self.stats(name, cls, threshold)
                rows.append({"image": name, "class": cls, "context": item.context,
                             "iou": s.iou, "leakage": s.leakage,
                             "leakage_cooccur": s.leakage_cooccur,
                             "leakage_background": s.leakage_background})
        return rows

    def sweep(self, thresholds: Sequence[float] | None = None):
        """A ``metrics.ThresholdSweep`` over the loaded images (default grid: the run's
        ``cam_infer.sweep`` plus its fixed ``bg_threshold``)."""
        if thresholds is None:
            c = self.cfg.cam_infer
            thresholds = sorted(set(threshold_grid(*c.sweep)) | {round(c.bg_threshold, 10)})
        sweep = ThresholdSweep(len(self.classes), thresholds)
        for item in self.images.values():
            sweep.update(item.dense(self.num_fg)[None],
                         torch.from_numpy(item.mask.astype(np.int64))[None])
        return sweep

    def leakage(self) -> dict:
        """``metrics.LeakageMeter.compute`` over the loaded images, per class by name."""
        meter = LeakageMeter(len(self.classes))
        for item in self.images.values():
            present = torch.zeros(self.num_fg)
            present[[k - 1 for k in item.present]] = 1
            meter.update(item.dense(self.num_fg),
                         torch.from_numpy(item.mask.astype(np.int64)), present)
        return meter.compute(class_names=list(self.classes))

    def mass_shares(self) -> tuple[np.ndarray, list[str], list[str]]:
        """Where each class's CAM mass lands: ``(shares (R, J), rows, cols)``.

        Rows: the classes present in some loaded image. Columns: every such class's ground-truth
        region, then the background split by the image's context (``bg: grass``; one
        ``bg: background`` column outside the synthetic benchmark). Entry (k, j): the share of
        the non-void CAM mass of class k on region j, averaged over the (image, k present)
        pairs with non-zero mass (as ``LeakageMeter``); each row sums to 1.
        """
        present = sorted({k for item in self.images.values() for k in item.present})
        contexts = sorted({item.context for item in self.images.values()})
        cols = [self.classes[k] for k in present] + [f"bg: {c}" for c in contexts]
        sums, pairs = np.zeros((len(present), len(cols))), np.zeros(len(present))
        for item in self.images.values():
            mask = item.mask.astype(np.int64)
            regions = [mask == k for k in present] + [
                (mask == 0) & (c == item.context) for c in contexts]  # J masks (H, W)
            for k in item.present:
                cam = item.cam(k).double().numpy() * (mask != 255)  # (H, W)
                mass = cam.sum()
                if mass > 0:
                    r = present.index(k)
                    sums[r] += [cam[region].sum() / mass for region in regions]
                    pairs[r] += 1
        shares = sums / np.maximum(pairs, 1)[:, None]
        return shares, [self.classes[k] for k in present], cols


# ---------------------------------------------------------------------------------------------
# Notebook 06: the attention of Eq. 3 over the confounder dictionary, image by image


class AttentionExplorer:
    """Precomputed Eq. 3 quantities of a round's images, one dropdown entry per image (notebook 06).

    Args:
        names: N image ids; images: N uint8 (H, W, 3) images.
        queries: (N, h, w) the query X_m of each image on the dictionary grid.
        alpha: (N, n) attention weights over the n foreground classes (each row sums to 1).
        m: (N, h, w) context maps m = sum_i alpha_i P(c_i) c_i.
        classes: n + 1 label names, background first; prior: (n,) P(c_i) or None.
        present: the classes the attention panel shows (e.g. those of the data set's labels);
            default: those with a dictionary entry (P(c_i) > 0), or with any attention.
    """

    def __init__(self, names: Sequence[str], images: Sequence[np.ndarray], queries: np.ndarray,
                 alpha: np.ndarray, m: np.ndarray, classes: Sequence[str],
                 prior: np.ndarray | None = None, present: Sequence[str] | None = None) -> None:
        self.names = [str(n) for n in names]
        self.images = list(images)
        self.queries = np.asarray(queries, dtype=np.float32)
        self.alpha = np.asarray(alpha, dtype=np.float64)
        self.m = np.asarray(m, dtype=np.float64)
        self.classes = tuple(classes)
        self.prior = None if prior is None else np.asarray(prior, dtype=np.float64)
        n = len(self.classes) - 1
        counts = {len(self.names), len(self.images), len(self.queries), len(self.alpha), len(self.m)}
        if len(counts) != 1 or not self.names:
            raise DataError(f"AttentionExplorer: expected as many (at least one) names, images, "
                            f"queries, alpha rows and m maps, got {len(self.names)}, "
                            f"{len(self.images)}, {len(self.queries)}, {len(self.alpha)}, {len(self.m)}")
        if self.alpha.shape[1:] != (n,) or self.queries.ndim != 3 or self.m.shape != self.queries.shape:
            raise DataError(f"AttentionExplorer: expected alpha (N, {n}) and queries, m (N, h, w) "
                            f"of one shape, got {self.alpha.shape}, {self.queries.shape}, {self.m.shape}")
        if self.prior is not None and self.prior.shape != (n,):
            raise DataError(f"AttentionExplorer: expected prior ({n},), got {self.prior.shape}")
        self._rows = {name: i for i, name in enumerate(self.names)}
        if present is None:  # classes with a dictionary entry (or any attention at all)
            keep = self.prior > 0 if self.prior is not None else self.alpha.max(0) > 0
            self.shown = [i for i in range(n) if keep[i]]
        else:
            unknown = sorted(set(present) - set(self.classes[1:]))
            if unknown:
                raise DataError(f"AttentionExplorer: present classes {unknown} are not among "
                                f"{', '.join(self.classes[1:])}")
            self.shown = [i for i in range(n) if self.classes[i + 1] in set(present)]

    def _row(self, name: str) -> int:
        if name not in self._rows:
            raise ConfigError(f"AttentionExplorer: unknown image {name!r}")
        return self._rows[name]

    def top(self, name: str) -> tuple[str, float]:
        """The class with the largest attention weight for image ``name``, and that weight."""
        a = self.alpha[self._row(name)]
        k = int(np.argmax(a))
        return self.classes[k + 1], float(a[k])

    def figure(self, name: str) -> tuple[Figure, str]:
        """Image, X_m, alpha and m of ``name``; the line ``image=NAME top=CLASS alpha=A``."""
        i = self._row(name)
        cls, a = self.top(name)
        fig = plot_context_panel(self.images[i], self.queries[i], self.alpha[i], self.m[i],
                                 self.classes, self.prior, title=name, shown=self.shown)
        return fig, f"image={name} top={cls} alpha={a:.2f}"

    def show(self, name: str) -> str:
        """Update function of :meth:`widget`: print the line and draw the figure."""
        return _show(*self.figure(name))

    def widget(self, value: str | None = None) -> widgets.VBox:
        """An image dropdown over :meth:`show`."""
        dropdown = widgets.Dropdown(options=self.names, value=value or self.names[0],
                                    description="image")
        out = _interactive_output(self.show, {"name": dropdown})
        return widgets.VBox([dropdown, out])


# ---------------------------------------------------------------------------------------------
# Notebook 07: baseline vs de-confounded CAMs of the same images


def cam_leakage(cams, target: torch.Tensor, present: torch.Tensor, key: int) -> float:
    """The share of class ``key``'s CAM mass outside its object (:class:`LeakageMeter`, 255
    ignored): ``cams`` an image's :class:`causal_wsss.cam.ImageCams`, ``target`` its (H, W)
    ground truth, ``present`` its (K,) label vector, ``key`` a foreground class index."""
    k = int(present.numel())
    meter = LeakageMeter(k + 1)
    meter.update(cams.dense(k).float(), target, present)
    return meter.compute()["per_class"][key + 1]["leakage"]


class CamRoundsExplorer:
    """The CAMs of the same images in several rounds of a run, with their leakage (notebook 07).

    ``arrays`` is :func:`causal_wsss.viz.cam_comparison_arrays` output for ``names`` (one CAM of
    each image, per round: its first class, or the class of a ``(name, class)`` column); ``leakage[r][j]`` is the share of that CAM's mass
    outside its object in round ``r`` (:class:`causal_wsss.metrics.LeakageMeter`, 255 ignored).
    """

    def __init__(self, names: Sequence[str], arrays: dict, leakage: dict[int, Sequence[float]]) -> None:
        self.names = [str(n) for n in names]
        self.arrays = arrays
        self.rounds = sorted(int(r) for r in arrays["cams"])
        self.leakage = {int(r): [float(x) for x in v] for r, v in leakage.items()}
        if not self.names or set(self.leakage) != set(self.rounds) or any(
                len(arrays["cams"][r]) != len(self.names) or len(self.leakage[r]) != len(self.names)
                for r in self.rounds):
            raise DataError(f"CamRoundsExplorer: expected one CAM and one leakage value per image "
                            f"({len(self.names)}) for each round {self.rounds}")
        self._rows = {name: j for j, name in enumerate(self.names)}

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, dataset, names: Sequence[str | tuple[str, str]],
                 rounds: Sequence[int]) -> CamRoundsExplorer:
        """Read the CAM caches ``run_dir/round_r/cams`` of ``names`` (images of ``dataset``, which
        needs masks; or ``(name, class)`` columns, :func:`causal_wsss.viz.pair_columns`, listed
        as "name: class") and measure each shown CAM's leakage; the first round is the
        baseline."""
        arrays = cam_comparison_arrays(run_dir, dataset, names, rounds)
        images = [n if isinstance(n, str) else n[0] for n in names]
        index = {n: i for i, n in enumerate(dataset.names)}
        labels = dataset.label_matrix()
        leakage: dict[int, list[float]] = {int(r): [] for r in rounds}
        for name, mask, key in zip(images, arrays["masks"], arrays["keys"]):
            if mask is None:
                raise DataError(f"CamRoundsExplorer: image {name!r} has no ground-truth mask")
            caches = {r: CamCache(Path(run_dir) / f"round_{r}" / "cams").get(name) for r in rounds}
            target = torch.from_numpy(mask.astype(np.int64))  # (H, W)
            present = torch.from_numpy(labels[index[name]].astype(np.float32))  # (K,)
            for r, cams in caches.items():
                leakage[int(r)].append(cam_leakage(cams, target, present, key))
        return cls([n if isinstance(n, str) else arrays["titles"][j] for j, n in enumerate(names)],
                   arrays, leakage)

    def _row(self, name: str) -> int:
        if name not in self._rows:
            raise ConfigError(f"CamRoundsExplorer: unknown image {name!r}")
        return self._rows[name]

    def figure(self, name: str, r: int) -> tuple[Figure, str]:
        """Image, ground truth, the baseline CAM and the CAM of round ``r``; the line
        ``image=NAME round=R leakage=X``."""
        j = self._row(name)
        if r not in self.leakage:
            raise ConfigError(f"CamRoundsExplorer: round {r} not loaded; have {self.rounds}")
        base = self.rounds[0]
        cams = {f"round {base} (baseline)\nleakage {self.leakage[base][j]:.2f}":
                self.arrays["cams"][base][j]}
        if r != base:
            cams[f"round {r} (CONTA)\nleakage {self.leakage[r][j]:.2f}"] = self.arrays["cams"][r][j]
        fig = plot_cam_rounds(self.arrays["images"][j], self.arrays["masks"][j], cams,
                              title=self.arrays["titles"][j])
        return fig, f"image={name} round={r} leakage={self.leakage[r][j]:.2f}"

    def show(self, name: str, r: int) -> str:
        """Update function of :meth:`widget`: print the line and draw the figure."""
        return _show(*self.figure(name, r))

    def widget(self, name: str | None = None, r: int | None = None) -> widgets.VBox:
        """An image dropdown and a round selector (default: the last round) over :meth:`show`."""
        dropdown = widgets.Dropdown(options=self.names, value=name or self.names[0],
                                    description="image")
        buttons = widgets.ToggleButtons(options=[(f"round {k}", k) for k in self.rounds],
                                        value=self.rounds[-1] if r is None else r,
                                        description="compare")
        out = _interactive_output(self.show, {"name": dropdown, "r": buttons})
        return widgets.VBox([widgets.HBox([dropdown, buttons]), out])


# ---------------------------------------------------------------------------------------------
# Notebook 08: round 0, CONTA and the interventions on the same images


class RunCamsExplorer:
    """The CAM of one (image, class) in several runs side by side, with each CAM's leakage
    (the share of its mass outside its object; :class:`causal_wsss.metrics.LeakageMeter`, 255
    ignored), e.g. round 0, CONTA's round 1 and each intervention's round 1 (notebook 08).

    ``arrays`` is :func:`causal_wsss.viz.run_cam_arrays` output; ``leakage[label][j]`` the
    leakage of source ``label``'s CAM of pick ``j``.
    """

    def __init__(self, arrays: dict, leakage: dict[str, Sequence[float]]) -> None:
        self.arrays = arrays
        self.labels = list(arrays["cams"])
        self.titles = list(arrays["titles"])
        self.leakage = {k: [float(x) for x in v] for k, v in leakage.items()}
        n = len(self.titles)
        if not n or set(self.leakage) != set(self.labels) or any(
                len(arrays["cams"][k]) != n or len(self.leakage[k]) != n for k in self.labels):
            raise DataError(f"RunCamsExplorer: expected one CAM and one leakage value per pick "
                            f"({n}) for each source {self.labels}")

    @classmethod
    def from_runs(cls, sources: dict[str, tuple[str | os.PathLike, int]], dataset,
                  columns: Sequence[tuple[str, str]]) -> RunCamsExplorer:
        """Read ``sources`` (label -> (run folder, round)) for ``columns`` ((image name, class),
        e.g. :func:`causal_wsss.viz.pair_columns`) and measure each CAM's leakage."""
        arrays = run_cam_arrays(sources, dataset, columns)
        index = {n: i for i, n in enumerate(dataset.names)}
        labels = dataset.label_matrix()
        leakage: dict[str, list[float]] = {k: [] for k in sources}
        for (name, _), key, mask in zip(columns, arrays["keys"], arrays["masks"]):
            if mask is None:
                raise DataError(f"RunCamsExplorer: image {name!r} has no ground-truth mask")
            target = torch.from_numpy(mask.astype(np.int64))
            present = torch.from_numpy(labels[index[name]].astype(np.float32))
            for label, (run, r) in sources.items():
                cams = CamCache(Path(run) / f"round_{r}" / "cams").get(name)
                leakage[label].append(cam_leakage(cams, target, present, key))
        return cls(arrays, leakage)

    def figure(self, j: int) -> tuple[Figure, str]:
        """Pick ``j``: the image, its ground truth and every source's CAM; the line
        ``pick=TITLE leakage: LABEL=X, ...``."""
        if not 0 <= j < len(self.titles):
            raise ConfigError(f"RunCamsExplorer: pick {j} out of range 0..{len(self.titles) - 1}")

        def short(x: float) -> str:
            return "n/a" if x != x else f"{x:.2f}"  # NaN: an empty CAM has no leakage

        cams = {f"{k}\nleakage {short(self.leakage[k][j])}": self.arrays["cams"][k][j]
                for k in self.labels}
        fig = plot_cam_rounds(self.arrays["images"][j], self.arrays["masks"][j], cams,
                              title=self.titles[j])
        line = ", ".join(f"{k}={short(self.leakage[k][j])}" for k in self.labels)
        return fig, f"pick={self.titles[j]} leakage: {line}"

    def show(self, j: int) -> str:
        """Update function of :meth:`widget`: print the line and draw the figure."""
        return _show(*self.figure(j))

    def widget(self, j: int = 0) -> widgets.VBox:
        """A dropdown over the columns ("image: class") above :meth:`show`."""
        dropdown = widgets.Dropdown(options=[(t, i) for i, t in enumerate(self.titles)], value=j,
                                    description="image")
        out = _interactive_output(self.show, {"j": dropdown})
        return widgets.VBox([dropdown, out])
