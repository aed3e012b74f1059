"""Tests for causal_wsss.simulate and causal_wsss.backdoor: exact truth of a discrete CONTA SCM, sample estimates, DoWhy, NWGM and Eq. 3 attention."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from causal_wsss.backdoor import (
    backdoor_adjust,
    compare_estimates,
    context_attention,
    empirical_backdoor,
    expected_sigmoid,
    nwgm_error_bound,
    nwgm_sigmoid,
)
from causal_wsss.errors import ConfigError, DataError
from causal_wsss.simulate import DiscreteSCM, SampleTable, default_scm

torch.set_num_threads(1)


# --- the simulator -------------------------------------------------------------------------

def test_default_scm_is_strongly_confounded():
    scm = default_scm(1.0)
    assert scm.ate_true > 0.15 and scm.ate_naive < -0.05  # Simpson's reversal
    unconfounded = default_scm(0.0)
    assert unconfounded.ate_naive == pytest.approx(unconfounded.ate_true, abs=1e-12)
    assert abs(default_scm(0.5).ate_naive - default_scm(0.5).ate_true) > 0.02


def test_exact_quantities_match_explicit_sums():
    scm = default_scm(0.8)
    for x in range(scm.n_x):
        do = sum(scm.p_c[c] * sum(scm.p_m_given_xc[x, c, m] * scm.p_y_given_xm[x, m]
                                  for m in range(scm.n_m)) for c in range(scm.n_c))
        joint_y = sum(scm.p_c[c] * scm.p_x_given_c[c, x] * scm.p_m_given_xc[x, c, m]
                      * scm.p_y_given_xm[x, m] for c in range(scm.n_c) for m in range(scm.n_m))
        p_x = sum(scm.p_c[c] * scm.p_x_given_c[c, x] for c in range(scm.n_c))
        assert scm.p_y_do_x(x) == pytest.approx(do, abs=1e-12)
        assert scm.p_y_given_x(x) == pytest.approx(joint_y / p_x, abs=1e-12)


def test_hand_built_scm():
    """Two contexts, M copies C: do(X=1) = (0.3 + 0.7) / 2, do(X=0) = (0.1 + 0.5) / 2;
    P(c = 0 | x = 1) = 0.1 and P(c = 0 | x = 0) = 0.9 give the naive 0.66 - 0.14."""
    copy_c = np.stack([np.eye(2), np.eye(2)])  # (n_x, n_c, n_m): M = C
    scm = DiscreteSCM(p_c=[0.5, 0.5], p_x_given_c=[[0.9, 0.1], [0.1, 0.9]],
                      p_m_given_xc=copy_c, p_y_given_xm=[[0.1, 0.5], [0.3, 0.7]])
    assert scm.p_y_do_x(1) == pytest.approx(0.5) and scm.p_y_do_x(0) == pytest.approx(0.3)
    assert scm.ate_true == pytest.approx(0.2)
    assert scm.ate_naive == pytest.approx(0.66 - 0.14)


def test_graph_surgery_gives_the_interventional_truth():
    """Cutting C -> X (X forced to x) makes the observational P(Y | X = x) equal P(Y | do(x))."""
    scm = default_scm(1.0)
    for x in range(scm.n_x):
        forced = np.zeros_like(scm.p_x_given_c)
        forced[:, x] = 1.0
        cut = dataclasses.replace(scm, p_x_given_c=forced)
        assert cut.p_y_given_x(x) == pytest.approx(scm.p_y_do_x(x), abs=1e-12)
        with pytest.raises(DataError, match="undefined"):
            cut.p_y_given_x(1 - x)


def test_sample_is_seeded_and_follows_the_tables():
    scm = default_scm(1.0)
    a, b, other = scm.sample(40_000, seed=3), scm.sample(40_000, seed=3), scm.sample(40_000, 4)
    assert isinstance(a, SampleTable) and len(a) == 40_000
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in "cxmy")
    assert not np.array_equal(a.y, other.y)
    freq_c = np.bincount(a.c, minlength=3) / len(a)
    assert np.abs(freq_c - scm.p_c).max() < 0.01
    for c in range(scm.n_c):
        assert a.x[a.c == c].mean() == pytest.approx(scm.p_x_given_c[c, 1], abs=0.02)
    for x in range(2):
        assert a.y[a.x == x].mean() == pytest.approx(scm.p_y_given_x(x), abs=0.015)
    frame = a.to_frame()
    assert list(frame.columns) == ["C", "X", "M", "Y"]
    assert frame["X"].dtype == bool and str(frame["C"].dtype) == "category"


def test_scm_validation():
    scm = default_scm()
    with pytest.raises(DataError, match="sum to 1"):
        dataclasses.replace(scm, p_c=np.array([0.5, 0.3, 0.3]))
    with pytest.raises(DataError, match="shapes disagree"):
        dataclasses.replace(scm, p_c=np.array([0.5, 0.5]))
    with pytest.raises(ConfigError, match="strength"):
        default_scm(1.5)
    with pytest.raises(ConfigError, match="treatment value"):
        scm.p_y_do_x(2)
    with pytest.raises(ValueError):  # tables are read-only
        scm.p_c[0] = 1.0


# --- exact and sample backdoor adjustment -------------------------------------------------

def test_backdoor_adjust_equals_simulator_truth():
    scm = default_scm(1.0)
    table = torch.tensor(scm.p_y_given_x_c())  # (n_x, n_c)
    table = torch.stack([1 - table, table], dim=-1)  # (n_x, n_c, 2): P(Y = y | x, c)
    adjusted = backdoor_adjust(table, torch.tensor(scm.p_c))  # (n_x, 2)
    truth = torch.tensor([scm.p_y_do_x(x) for x in range(scm.n_x)], dtype=torch.float64)
    torch.testing.assert_close(adjusted[:, 1], truth, rtol=0, atol=1e-12)
    torch.testing.assert_close(adjusted.sum(-1), torch.ones(2, dtype=torch.float64))


def test_backdoor_adjust_batched_against_loop():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(4, 3, 5, 7, generator=gen)  # (B1, B2, n_c, K)
    prior = torch.softmax(torch.randn(5, generator=gen), 0)
    expected = torch.zeros(4, 3, 7)
    for c in range(5):
        expected += probs[:, :, c, :] * prior[c]
    torch.testing.assert_close(backdoor_adjust(probs, prior), expected)
    with pytest.raises(DataError, match="shape"):
        backdoor_adjust(probs, prior[:4] / prior[:4].sum())
    with pytest.raises(DataError, match="sum to 1"):
        backdoor_adjust(probs, prior * 2)


def test_empirical_backdoor_recovers_truth_and_naive_does_not():
    scm = default_scm(1.0)
    sample = scm.sample(50_000, seed=1)
    x, y, c = (torch.from_numpy(v) for v in (sample.x, sample.y, sample.c))
    est = empirical_backdoor(x, y, c)
    truth = torch.tensor([scm.p_y_do_x(0), scm.p_y_do_x(1)], dtype=torch.float64)
    assert bool(((est.p_y_do_x - truth).abs() < 4 * est.se).all())
    assert abs(est.ate - scm.ate_true) < 4 * est.ate_se
    assert 0.003 < est.ate_se < 0.02
    naive = float(y[x == 1].double().mean() - y[x == 0].double().mean())
    assert abs(naive - scm.ate_true) > 25 * est.ate_se
    with_prior = empirical_backdoor(x, y, c, prior=torch.tensor(scm.p_c))
    assert abs(with_prior.ate - scm.ate_true) < 4 * with_prior.ate_se
    assert with_prior.ate_se < est.ate_se  # a known prior removes the variance of the weights


def test_empirical_backdoor_standard_error_is_calibrated():
    scm = default_scm(1.0)
    ates, ses = [], []
    for seed in range(40):
        s = scm.sample(3000, seed=100 + seed)
        est = empirical_backdoor(*(torch.from_numpy(v) for v in (s.x, s.y, s.c)))
        ates.append(est.ate)
        ses.append(est.ate_se)
    ratio = np.std(ates, ddof=1) / np.mean(ses)
    assert 0.7 < ratio < 1.4, ratio


def test_empirical_backdoor_positivity_and_shapes():
    x = torch.tensor([0, 0, 1, 1])
    c = torch.tensor([0, 1, 0, 0])
    y = torch.tensor([0, 1, 1, 0])
    with pytest.raises(DataError, match=r"\(1, 1\)"):
        empirical_backdoor(x, y, c)
    with pytest.raises(DataError, match="equal"):
        empirical_backdoor(x, y[:3], c)


def test_compare_estimates_with_dowhy():
    scm = default_scm(1.0)
    table = compare_estimates(scm, 20_000, seed=0, refuter_simulations=3)
    se = table.backdoor_empirical_se
    assert table.truth == scm.ate_true
    assert table.backdoor_exact == pytest.approx(table.truth, abs=1e-12)
    assert abs(table.backdoor_empirical - table.truth) < 4 * se
    assert abs(table.dowhy - table.truth) < 4 * se
    # a regression saturated in (X, C), averaged over the sample, is the stratified estimator
    assert table.dowhy == pytest.approx(table.backdoor_empirical, abs=1e-9)
    assert abs(table.naive - table.truth) > 25 * se
    assert table.naive_exact == scm.ate_naive
    assert abs(table.placebo_effect) < 4 * se and 0.0 <= table.placebo_p_value <= 1.0
    frame = table.to_frame()
    assert frame.loc[frame.estimate == "truth", "error"].item() == 0.0


# --- NWGM ----------------------------------------------------------------------------------

def test_nwgm_is_the_normalised_weighted_geometric_mean():
    gen = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)  # (B, n_c, K)
    prior = torch.softmax(torch.randn(4, generator=gen, dtype=torch.float64), 0)
    p = torch.sigmoid(logits)
    w = prior[:, None]
    geo_pos = torch.exp((w * torch.log(p)).sum(-2))
    geo_neg = torch.exp((w * torch.log1p(-p)).sum(-2))
    torch.testing.assert_close(nwgm_sigmoid(logits, prior), geo_pos / (geo_pos + geo_neg))
    torch.testing.assert_close(expected_sigmoid(logits, prior), (w * p).sum(-2))


def test_nwgm_equals_forward_pass_with_expected_context_for_linear_model():
    """s(x, c) = a·x + B c + b is linear in c, so sum_c P(c) s(x, c) = s(x, E_c[c])."""
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(8, 10, generator=gen, dtype=torch.float64)  # (B, Dx)
    contexts = torch.rand(6, 12, generator=gen, dtype=torch.float64)  # (n_c, D)
    prior = torch.softmax(torch.randn(6, generator=gen, dtype=torch.float64), 0)
    a = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    b_ctx = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    logits_per_c = (feats @ a)[:, None, :] + (contexts @ b_ctx)[None] + bias  # (B, n_c, K)
    expected_context = prior @ contexts  # (D,)
    one_pass = torch.sigmoid(feats @ a + expected_context @ b_ctx + bias)  # (B, K)
    torch.testing.assert_close(nwgm_sigmoid(logits_per_c, prior), one_pass)


def test_nwgm_error_is_bounded_and_vanishes_for_small_logits():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(64, 5, 4, generator=gen, dtype=torch.float64)  # (B, n_c, K)
    prior = torch.softmax(torch.randn(5, generator=gen, dtype=torch.float64), 0)
    report = []
    for eps in (4.0, 1.0, 0.1, 0.01):
        logits = eps * base + 0.5  # spread eps around an offset logit
        gap = (expected_sigmoid(logits, prior) - nwgm_sigmoid(logits, prior)).abs()
        bound = nwgm_error_bound(logits, prior)
        assert bool((gap <= bound + 1e-15).all()), eps
        report.append((eps, float(gap.max()), float(bound.max())))
    print("NWGM gap (eps, max |gap|, max bound):", report)
    gaps = [g for _, g, _ in report]
    assert gaps[0] > 0.01  # the approximation is visibly off for widely spread logits
    assert gaps[-1] < 1e-4
    assert gaps[-1] / gaps[-2] < 0.02  # quadratic decay: x0.1 in spread, x0.01 in gap


# --- Eq. 3 attention -----------------------------------------------------------------------

def _attention_loop(query, dictionary, prior, w1, w2, mask):
    e = w1.shape[0]
    ms, alphas = [], []
    for q in query:
        scores = []
        for i, c_i in enumerate(dictionary):
            s = (w1 @ q) @ (w2 @ c_i) / math.sqrt(e)
            scores.append(s if mask[i] else torch.tensor(-math.inf, dtype=q.dtype))
        alpha = torch.softmax(torch.stack(scores), 0)
        ms.append(sum(alpha[i] * prior[i] * dictionary[i] for i in range(len(dictionary))))
        alphas.append(alpha)
    return torch.stack(ms), torch.stack(alphas)


def test_context_attention_matches_loop_and_masks():
    gen = torch.Generator().manual_seed(4)
    batch, dq, d, n, e = 3, 16, 20, 6, 7
    query = torch.rand(batch, dq, generator=gen, dtype=torch.float64)
    dictionary = torch.rand(n, d, generator=gen, dtype=torch.float64)
    prior = torch.softmax(torch.randn(n, generator=gen, dtype=torch.float64), 0)
    w1 = torch.randn(e, dq, generator=gen, dtype=torch.float64)
    w2 = torch.randn(e, d, generator=gen, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True, False, True])
    m, alpha = context_attention(query, dictionary, prior, w1, w2, mask=mask)
    m_ref, alpha_ref = _attention_loop(query, dictionary, prior, w1, w2, mask)
    assert m.shape == (batch, d) and alpha.shape == (batch, n)
    torch.testing.assert_close(m, m_ref)
    torch.testing.assert_close(alpha, alpha_ref)
    assert bool((alpha[:, ~mask] == 0).all())
    torch.testing.assert_close(alpha.sum(-1), torch.ones(batch, dtype=torch.float64))
    unmasked, _ = context_attention(query, dictionary, prior, w1, w2)
    torch.testing.assert_close(unmasked, _attention_loop(query, dictionary, prior, w1, w2,
                                                         torch.ones(n, dtype=torch.bool))[0])
    # scale=0 gives uniform attention over the kept entries
    _, flat = context_attention(query, dictionary, prior, w1, w2, scale=0.0, mask=mask)
    torch.testing.assert_close(flat[:, mask], torch.full((batch, 4), 0.25, dtype=torch.float64))


def test_context_attention_gradients_and_errors():
    gen = torch.Generator().manual_seed(5)
    query = torch.rand(2, 9, generator=gen)
    dictionary = torch.rand(4, 9, generator=gen)
    prior = torch.full((4,), 0.25)
    w1 = (0.5 * torch.randn(5, 9, generator=gen)).requires_grad_()
    w2 = (0.5 * torch.randn(5, 9, generator=gen)).requires_grad_()
    mask = torch.tensor([[True, True, False, True], [True, False, False, True]])
    m, _ = context_attention(query, dictionary, prior, w1, w2, mask=mask)
    (m * torch.arange(9.0)).sum().backward()
    for w in (w1, w2):
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    with pytest.raises(DataError, match="every dictionary entry"):
        context_attention(query, dictionary, prior, w1, w2, mask=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(DataError, match="w1"):
        context_attention(query, dictionary, prior, w1[:, :8], w2)
    with pytest.raises(DataError, match="prior"):
        context_attention(query, dictionary, prior[:3], w1, w2)
