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
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from tqdm.auto import tqdm

from .backdoor import backdoor_adjust
from .data.registry import build_dataset
from .data.stats import conditional_probability, cooccurrence_stats
from .data.synthetic import SPEC, Cooccurrence, generate_synthetic, measured_cooccurrence
from .errors import ConfigError
from .simulate import default_scm
from .viz import plot_bars, plot_cooccurrence, plot_curves

STRENGTH_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2).tolist())
"""Confounding strengths at which notebook 01's sweep is drawn."""

RHO_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())
"""Values of ``rho`` offered by notebook 02's slider (precomputed once)."""


def _show(fig: Figure, line: str) -> str:
    """Print ``line`` (the text a browser test waits for), display ``fig`` inline, close it."""
    print(line)
    display(fig)
    plt.close(fig)
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
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.6))
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
    out = widgets.interactive_output(show_confounding, {"strength": slider})
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
        fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.3),
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
        out = widgets.interactive_output(self.show, {"rho": slider, "pair": dropdown})
        return widgets.VBox([widgets.HBox([slider, dropdown]), out])
