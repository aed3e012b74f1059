"""Tests for causal_wsss.widgets: the update functions of notebooks 01 and 02, called directly."""

from __future__ import annotations

import re

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from causal_wsss import widgets as W
from causal_wsss.data.scenes import SPEC
from causal_wsss.data.synthetic import load_meta
from causal_wsss.errors import ConfigError
from causal_wsss.simulate import default_scm


def _enumerate(strength: float) -> dict[str, np.ndarray]:
    """P(Y=1 | X=x) and P(Y=1 | do(X=x)) by summing the joint over (c, m) with explicit loops,
    independently of DiscreteSCM's methods and of backdoor_adjust."""
    scm = default_scm(strength)
    obs_num, obs_den, do = np.zeros(2), np.zeros(2), np.zeros(2)
    for x in range(2):
        for c in range(scm.n_c):
            for m in range(scm.n_m):
                py = scm.p_m_given_xc[x, c, m] * scm.p_y_given_xm[x, m]
                obs_num[x] += scm.p_c[c] * scm.p_x_given_c[c, x] * py
                do[x] += scm.p_c[c] * py
            obs_den[x] += scm.p_c[c] * scm.p_x_given_c[c, x]
    return {"obs": obs_num / obs_den, "do": do}


@pytest.mark.parametrize("strength", [0.0, 0.35, 1.0])
def test_effect_summary_matches_enumeration(strength):
    ref = _enumerate(strength)
    e = W.effect_summary(strength)
    np.testing.assert_allclose(e.p_y_given_x, ref["obs"], atol=1e-12)
    np.testing.assert_allclose(e.p_y_do_x, ref["do"], atol=1e-12)
    assert e.naive == pytest.approx(ref["obs"][1] - ref["obs"][0], abs=1e-12)
    assert e.adjusted == pytest.approx(ref["do"][1] - ref["do"][0], abs=1e-12)
    assert e.truth == pytest.approx(e.adjusted, abs=1e-12)


def test_effect_summary_confounding_vanishes_at_zero_and_reverses_at_one():
    zero = W.effect_summary(0.0)
    assert zero.naive == pytest.approx(zero.truth, abs=1e-12)
    one = W.effect_summary(1.0)
    assert one.naive < 0 < one.truth  # Simpson's reversal, documented in default_scm


def test_confounding_figure_and_line():
    fig, line = W.confounding_figure(0.35, grid=(0.0, 0.5, 1.0))
    e = W.effect_summary(0.35)
    assert line == (f"strength=0.35 naive={e.naive:+.3f} adjusted={e.adjusted:+.3f} "
                    f"true={e.truth:+.3f}")
    left, right = fig.axes[:2]
    naive_curve = left.get_lines()[0]
    np.testing.assert_allclose(naive_curve.get_ydata(),
                               [W.effect_summary(s).naive for s in (0.0, 0.5, 1.0)])
    assert any(list(ln.get_xdata()) == [0.35, 0.35] for ln in left.get_lines())  # the marker
    heights = sorted(p.get_height() for p in right.patches if isinstance(p, Rectangle))
    np.testing.assert_allclose(heights, sorted([*e.p_y_given_x, *e.p_y_do_x]))
    plt.close(fig)


def test_show_confounding_prints_and_closes(capsys):
    open_before = plt.get_fignums()
    line = W.show_confounding(0.5)
    assert line.startswith("strength=0.50 naive=")
    assert line in capsys.readouterr().out
    assert plt.get_fignums() == open_before


def test_confounding_widget_calls_update_on_change(capsys):
    box = W.confounding_widget(value=1.0)
    slider = box.children[0]
    assert isinstance(slider, widgets.FloatSlider) and slider.value == 1.0
    assert "strength=1.00" in capsys.readouterr().out  # drawn once when built
    slider.value = 0.25
    assert "strength=0.25" in capsys.readouterr().out


def test_default_pairs():
    pairs = W.default_pairs()
    assert pairs[0] == ("horse", "person") and pairs[2] == ("person", "horse")
    assert len(pairs) == len(set(pairs)) == len(SPEC.classes) * (len(SPEC.classes) - 1)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return W.CooccurrenceExplorer(tmp_path_factory.mktemp("explorer"), n_images=40, size=64,
                                  seed=0)


def _counts_from_sidecar(explorer, rho: float, a: str, b: str) -> tuple[float, float]:
    """P(b | a) and P(b | not a) counted from the generator's sidecar, not from the labels."""
    meta = load_meta(explorer.cache_dir / f"rho_{rho:.2f}")
    present = [{o["class"] for o in img["objects"]} for img in meta["images"]]
    with_a = [b in p for p in present if a in p]
    without_a = [b in p for p in present if a not in p]
    assert with_a and without_a, f"the test set needs images with and without {a}"
    return float(np.mean(with_a)), float(np.mean(without_a))


def test_snapshot_probabilities_match_sidecar(explorer):
    snap = explorer.snapshot(0.9)
    assert snap.stats["num_images"] == 40
    for a, b in [("horse", "person"), ("person", "horse"), ("car", "bird")]:
        given_a, given_not_a = _counts_from_sidecar(explorer, 0.9, a, b)
        assert snap.p_b_given_a(a, b) == pytest.approx(given_a)
        assert snap.p_b_given_not_a(a, b) == pytest.approx(given_not_a)


def test_snapshot_cache_rounds_rho_and_rejects_bad_values(explorer):
    first = explorer.snapshot(0.7)
    assert explorer.snapshot(0.7000000000000001) is first
    assert (explorer.cache_dir / "rho_0.70" / "VOCdevkit" / "VOC2012").is_dir()
    assert 0.7 in explorer.cached_rhos()
    with pytest.raises(ConfigError, match="rho"):
        explorer.snapshot(1.5)


def test_rho_drives_the_partner_rate(explorer):
    explorer.precompute([0.0, 1.0])
    never, always = explorer.snapshot(0.0).measured, explorer.snapshot(1.0).measured
    for anchor in ("horse", "boat"):
        if never.n_anchor[anchor]:
            assert never.partner_given_anchor[anchor] == 0.0
        if always.n_anchor[anchor]:
            assert always.partner_given_anchor[anchor] == 1.0


def test_explorer_figure_line_and_highlight(explorer):
    fig, line = explorer.figure(0.9, ("horse", "person"))
    p, _ = _counts_from_sidecar(explorer, 0.9, "horse", "person")
    assert re.fullmatch(r"rho=0\.90 P\(person\|horse\)=\d\.\d\d", line)
    assert line.endswith(f"={p:.2f}")
    stats = explorer.snapshot(0.9).stats
    shown = [c for c in stats["classes"] if stats["image_counts"][c] >= 1]
    outlined = [r for r in fig.axes[0].patches if isinstance(r, Rectangle)]
    assert len(outlined) == 1
    assert outlined[0].get_xy() == (shown.index("person") - 0.5, shown.index("horse") - 0.5)
    plt.close(fig)


def test_explorer_widget_updates_on_slider_and_dropdown(explorer, capsys):
    box = explorer.widget(rhos=(0.5, 0.7, 0.9), value=0.9)
    slider, dropdown = box.children[0].children
    assert (slider.min, slider.max, slider.step) == (0.5, 0.9, 0.2)
    assert "rho=0.90 P(person|horse)=" in capsys.readouterr().out
    slider.value = 0.5  # not cached yet: generated on demand
    assert "rho=0.50 P(person|horse)=" in capsys.readouterr().out
    dropdown.value = ("boat", "person")
    assert "rho=0.50 P(person|boat)=" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="at least 2"):
        explorer.widget(rhos=(0.5,))
