"""The backdoor adjustment as tensor functions: exact sum over a finite confounder set, its sample estimate, the NWGM approximation and the attention form of paper Eq. 3."""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError
from .scm import conta_graph
from .tensors import as_tensor

if TYPE_CHECKING:
    import pandas as pd

    from .simulate import DiscreteSCM

# max |sigmoid''| = 1 / (6 sqrt 3), reached at logit ±log(2 + sqrt 3); half of it bounds the NWGM gap
_HALF_MAX_SIGMOID_CURVATURE = 1.0 / (12.0 * math.sqrt(3.0))

MAX_STRATA = 1_000_000
"""The most (x, c) strata ``empirical_backdoor`` builds (num_x * num_c): codes of small discrete
variables, not identifiers."""




def _check_prior(prior: Tensor, n_c: int, what: str) -> None:
    if prior.ndim != 1 or prior.shape[0] != n_c:
        raise DataError(f"{what}: prior must have shape ({n_c},) to match the confounder axis, "
                        f"got {tuple(prior.shape)}")
    if bool((prior < 0).any()) or not math.isclose(float(prior.sum()), 1.0, abs_tol=1e-4):
        raise DataError(f"{what}: prior must be non-negative and sum to 1, "
                        f"got sum {float(prior.sum()):.6f}")


def _check_per_c(values: Any, prior: Any, what: str, name: str) -> tuple[Tensor, Tensor]:
    """``(values, prior)`` as tensors, ``values`` (..., n_c, K) floating, ``prior`` (n_c,) a
    distribution moved to ``values``' device and dtype; DataError naming ``what`` otherwise."""
    values, prior = as_tensor(what, name, values), as_tensor(what, "prior", prior)
    if values.ndim < 2:
        raise DataError(f"{what}: expected {name} of shape (..., n_c, K), got "
                        f"{tuple(values.shape)}")
    if not values.is_floating_point():
        raise DataError(f"{what}: {name} must be a floating tensor, got dtype {values.dtype} "
                        f"(an integer one would truncate the weighted sum)")
    _check_prior(prior, values.shape[-2], what)
    return values, prior.to(device=values.device, dtype=values.dtype)


def backdoor_adjust(p_y_given_x_c: Tensor, prior: Tensor) -> Tensor:
    """Exact backdoor sum over a finite confounder set (paper Eq. 1, method.md §1):

        P(Y | do(X)) = sum_c P(Y | X, c) P(c).

    ``p_y_given_x_c`` (..., n_c, K): P(Y = k | X, C = c) for any leading batch of X values
    (or images), K outcome entries (outcome values, or classes of a multi-label vector);
    ``prior`` (n_c,): P(c). Returns (..., K). numpy arrays are accepted (the same result as
    their tensors); ``DataError`` on other shapes, an integer table, or a prior that is not a
    distribution (negative, NaN, or not summing to 1).
    """
    p_y_given_x_c, prior = _check_per_c(p_y_given_x_c, prior, "backdoor_adjust", "p_y_given_x_c")
    return torch.einsum("...ck,c->...k", p_y_given_x_c, prior)


@dataclass(frozen=True, eq=False)
class BackdoorEstimate:
    """Sample backdoor estimate: ``p_y_do_x`` (n_x,) = E[Y | do(X = x)] (P(Y = 1 | do(x)) for
    binary Y) with standard errors ``se`` (n_x,), and the contrast x = 1 vs x = 0 ``ate``
    with its standard error ``ate_se``."""

    p_y_do_x: Tensor
    se: Tensor
    ate: float
    ate_se: float


def empirical_backdoor(x: Tensor, y: Tensor, c: Tensor, *, num_x: int | None = None,
                       num_c: int | None = None, prior: Tensor | None = None) -> BackdoorEstimate:
    """Estimate P(Y | do(X)) from samples by stratifying on the confounder (paper Eq. 1):

        P̂(Y | do(x)) = sum_c w_c · mean(y | X = x, C = c),   w_c = prior[c] or the frequency of c.

    ``x``, ``c`` (N,) integer codes, ``y`` (N,) outcomes. Standard errors by the delta
    method: sum_c w_c² Var(ȳ_xc) plus, when w is estimated, the multinomial variance of w.
    Every stratum (x, c) with w_c > 0 must hold samples (positivity), else ``DataError``.

    Codes must be integers (bool and integer dtypes; integer-valued floats such as 1.0, e.g.
    from a pandas column, are accepted as those integers); ``DataError`` on a fractional or
    non-finite code, a non-finite outcome, a non-integer ``num_x`` / ``num_c``, or more than
    :data:`MAX_STRATA` strata ``num_x * num_c``. numpy arrays are accepted.
    """
    what = "empirical_backdoor"
    x, y, c = as_tensor(what, "x", x), as_tensor(what, "y", y), as_tensor(what, "c", c)
    if not (x.ndim == y.ndim == c.ndim == 1 and x.shape == y.shape == c.shape) or x.numel() == 0:
        raise DataError(f"empirical_backdoor: x, y, c must be non-empty 1-D tensors of equal "
                        f"length, got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(c.shape)}")
    x, c = _integer_codes(what, "x", x), _integer_codes(what, "c", c)
    if y.is_complex():
        raise DataError(f"empirical_backdoor: y must hold real outcomes, got dtype {y.dtype}")
    y = y.double()
    if not bool(torch.isfinite(y).all()):
        raise DataError("empirical_backdoor: y holds NaN or infinite outcomes; expected finite "
                        "values (drop or impute the missing ones first)")
    num_x = int(x.max()) + 1 if num_x is None else _count(what, "num_x", num_x)
    num_c = int(c.max()) + 1 if num_c is None else _count(what, "num_c", num_c)
    if num_x < 2:
        raise DataError(f"empirical_backdoor: the treatment needs at least 2 values, got {num_x}")
    if int(x.min()) < 0 or int(x.max()) >= num_x or int(c.min()) < 0 or int(c.max()) >= num_c:
        raise DataError(f"empirical_backdoor: codes must lie in x 0..{num_x - 1}, c 0..{num_c - 1}")
    if num_x * num_c > MAX_STRATA:
        raise DataError(f"empirical_backdoor: num_x * num_c = {num_x} * {num_c} strata, more than "
                        f"the {MAX_STRATA:,} allowed; expected codes 0..n-1 of small discrete "
                        f"variables (recode them, e.g. with torch.unique(return_inverse=True))")
    n = x.numel()
    cell = x * num_c + c  # (N,)
    count = torch.bincount(cell, minlength=num_x * num_c).double().view(num_x, num_c)
    total = torch.bincount(cell, weights=y, minlength=num_x * num_c).view(num_x, num_c)
    total_sq = torch.bincount(cell, weights=y * y, minlength=num_x * num_c).view(num_x, num_c)
    if prior is None:
        weights = torch.bincount(c, minlength=num_c).double() / n  # (n_c,)
    else:
        prior = as_tensor(what, "prior", prior)
        _check_prior(prior, num_c, "empirical_backdoor")
        weights = prior.double().to(x.device)
    empty = (count == 0) & (weights > 0)
    if bool(empty.any()):
        where = empty.nonzero()
        cells = [tuple(v) for v in where[:10].tolist()]
        more = f" and {len(where) - 10} more" if len(where) > 10 else ""
        raise DataError(f"empirical_backdoor: no samples in strata (x, c) {cells}{more}; "
                        "positivity fails, the backdoor estimate is undefined there")
    safe = count.clamp(min=1)
    mean = total / safe  # (n_x, n_c)
    var_mean = (total_sq / safe - mean**2).clamp(min=0) / safe  # (n_x, n_c)
    estimate = mean @ weights  # (n_x,)
    var = var_mean @ weights**2
    contrast = mean[1] - mean[0]  # (n_c,)
    ate = float(contrast @ weights)
    ate_var = float((var_mean[1] + var_mean[0]) @ weights**2)
    if prior is None:
        var = var + ((mean**2) @ weights - estimate**2) / n
        ate_var += float((contrast**2) @ weights - ate**2) / n
    return BackdoorEstimate(p_y_do_x=estimate, se=var.clamp(min=0).sqrt(), ate=ate,
                            ate_se=math.sqrt(max(ate_var, 0.0)))


def _autocast_on(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4 takes no device type
        return bool(torch.is_autocast_enabled())


def _integer_codes(what: str, name: str, codes: Tensor) -> Tensor:
    """``codes`` as int64; integer-valued floats are accepted, other floats refused (one
    reduction), complex refused."""
    if codes.is_complex():
        raise DataError(f"{what}: {name} must hold integer codes, got dtype {codes.dtype}")
    if codes.is_floating_point():
        integral = torch.isfinite(codes) & (codes == codes.round())
        if not bool(integral.all()):
            bad = float(codes[~integral][0])
            raise DataError(f"{what}: {name} must hold integer codes 0, 1, ..., got the value "
                            f"{bad:g}; expected integers (integer-valued floats such as 1.0 are "
                            f"accepted)")
    return codes.long()


def _count(what: str, name: str, value: Any) -> int:
    """``value`` as a Python int (ints, numpy integers, integer 0-d tensors); DataError otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise DataError(f"{what}: {name} must be an integer, got {value!r} "
                        f"({type(value).__name__})") from None


def expected_sigmoid(logits_per_c: Tensor, prior: Tensor) -> Tensor:
    """Exact expectation E_c[sigmoid(s(x, c))] = sum_c P(c) sigmoid(s(x, c)).

    ``logits_per_c`` (..., n_c, K), ``prior`` (n_c,) -> (..., K). This is what the backdoor
    sum asks for, at the cost of one forward pass per stratum. ``DataError`` on the inputs
    :func:`backdoor_adjust` refuses (integer logits included).
    """
    logits_per_c, prior = _check_per_c(logits_per_c, prior, "expected_sigmoid", "logits_per_c")
    return torch.einsum("...ck,c->...k", torch.sigmoid(logits_per_c), prior)


def nwgm_sigmoid(logits_per_c: Tensor, prior: Tensor) -> Tensor:
    """The NWGM approximation used by CONTA (method.md §1): sigmoid(sum_c P(c) s(x, c)).

    It is exactly the normalised weighted geometric mean of the per-stratum sigmoids,
    prod_c σ_c^P(c) / (prod_c σ_c^P(c) + prod_c (1 - σ_c)^P(c)), and replaces the
    expectation of ``expected_sigmoid``. When s is linear in the context, sum_c P(c) s(x, c)
    = s(x, E_c[c]), so one forward pass with the expected context suffices.
    ``logits_per_c`` (..., n_c, K), ``prior`` (n_c,) -> (..., K). ``DataError`` as
    :func:`expected_sigmoid`.
    """
    logits_per_c, prior = _check_per_c(logits_per_c, prior, "nwgm_sigmoid", "logits_per_c")
    return torch.sigmoid(torch.einsum("...ck,c->...k", logits_per_c, prior))


def nwgm_error_bound(logits_per_c: Tensor, prior: Tensor) -> Tensor:
    """Upper bound on |expected_sigmoid - nwgm_sigmoid|: max|σ''| / 2 · Var_c[s(x, c)].

    From Taylor's theorem around the mean logit (the linear term averages out);
    max|σ''| = 1 / (6 √3), so the bound is Var_c[s] / (12 √3) ≈ 0.048 Var_c[s]. The gap
    therefore vanishes quadratically as the logits' spread over strata shrinks.
    ``logits_per_c`` (..., n_c, K), ``prior`` (n_c,) -> (..., K). ``DataError`` as
    :func:`expected_sigmoid`.
    """
    logits_per_c, p = _check_per_c(logits_per_c, prior, "nwgm_error_bound", "logits_per_c")
    mean = torch.einsum("...ck,c->...k", logits_per_c, p)
    var = torch.einsum("...ck,c->...k", (logits_per_c - mean.unsqueeze(-2)) ** 2, p)
    return _HALF_MAX_SIGMOID_CURVATURE * var


def context_attention(query: Tensor, dictionary: Tensor, prior: Tensor, w1: Tensor, w2: Tensor,
                      scale: float | None = None, mask: Tensor | None = None, *,
                      b1: Tensor | None = None, b2: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Attention form of E_c[f(X, c)] (paper Eq. 3, method.md §3):

        α = softmax_i( (W1 q + b1) · (W2 c_i + b2) · scale ),   m = sum_i α_i P(c_i) c_i.

    ``query`` (B, Dq): the per-image mask X_m, flattened; ``dictionary`` (n, D): the
    confounder entries c_i; ``prior`` (n,): P(c_i); ``w1`` (e, Dq), ``w2`` (e, D) and
    optional biases ``b1``, ``b2`` (e,): the projections; ``scale`` multiplies the scores
    (default 1/√e); ``mask`` (n,) or (B, n) bool: False entries (empty classes) get α = 0.
    Returns ``m`` (B, D) and ``alpha`` (B, n). Differentiable in every tensor argument.

    Refused with ``DataError``: shapes that do not fit (an empty dictionary, e = 0 included),
    a non-floating query, dictionary, projection or bias, a prior with a negative, NaN or
    infinite entry, a non-finite ``scale``, tensors on different devices, a mask that keeps no
    entry for some image. The values are checked with one synchronisation.
    """
    what = "context_attention"
    query, dictionary = as_tensor(what, "query", query), as_tensor(what, "dictionary", dictionary)
    prior, w1, w2 = (as_tensor(what, "prior", prior), as_tensor(what, "w1", w1),
                     as_tensor(what, "w2", w2))
    b1 = None if b1 is None else as_tensor(what, "b1", b1)
    b2 = None if b2 is None else as_tensor(what, "b2", b2)
    mask = None if mask is None else as_tensor(what, "mask", mask)
    if query.ndim != 2 or dictionary.ndim != 2:
        raise DataError(f"context_attention: expected query (B, Dq) and dictionary (n, D), "
                        f"got {tuple(query.shape)} and {tuple(dictionary.shape)}")
    n = dictionary.shape[0]
    if n == 0:
        raise DataError(f"context_attention: the dictionary of shape {tuple(dictionary.shape)} is "
                        f"empty; expected at least one confounder entry")
    if prior.shape != (n,):
        raise DataError(f"context_attention: prior must have shape ({n},), got {tuple(prior.shape)}")
    if w1.ndim != 2 or w2.ndim != 2 or w1.shape[1] != query.shape[1] \
            or w2.shape[1] != dictionary.shape[1] or w1.shape[0] != w2.shape[0]:
        raise DataError(f"context_attention: expected w1 (e, {query.shape[1]}) and "
                        f"w2 (e, {dictionary.shape[1]}), got {tuple(w1.shape)} and {tuple(w2.shape)}")
    e = w1.shape[0]
    if e == 0:
        raise DataError(f"context_attention: w1 {tuple(w1.shape)} and w2 {tuple(w2.shape)} give "
                        f"an embedding size e = 0; expected e >= 1")
    for name, bias in (("b1", b1), ("b2", b2)):
        if bias is not None and bias.shape != (e,):
            raise DataError(f"context_attention: {name} must have shape ({e},) (the embedding "
                            f"size of w1, w2), got {tuple(bias.shape)}")
    floats = {"query": query, "dictionary": dictionary, "w1": w1, "w2": w2, "b1": b1, "b2": b2}
    for name, t in floats.items():
        if t is not None and not t.is_floating_point():
            raise DataError(f"context_attention: {name} must be a floating tensor, got dtype "
                            f"{t.dtype}")
    dtypes = {t.dtype for t in floats.values() if t is not None}
    if len(dtypes) > 1 and not _autocast_on(query.device.type):
        found = ", ".join(f"{k} {t.dtype}" for k, t in floats.items() if t is not None)
        raise DataError(f"context_attention: expected query, dictionary, w1, w2 (and biases) of "
                        f"one dtype outside autocast, got {found}")
    tensors = {**floats, "prior": prior, "mask": mask}
    devices = {t.device for t in tensors.values() if t is not None}
    if len(devices) > 1:
        found = ", ".join(f"{k} {t.device}" for k, t in tensors.items() if t is not None)
        raise DataError(f"context_attention: expected every tensor on one device, got {found}")
    if scale is not None and isinstance(scale, (int, float)) and not math.isfinite(scale):
        raise DataError(f"context_attention: scale must be finite, got {scale}")
    if prior.is_complex() or prior.dtype == torch.bool:
        raise DataError(f"context_attention: prior must hold real probabilities P(c_i), got "
                        f"dtype {prior.dtype}")
    if mask is not None and (mask.dtype != torch.bool
                             or mask.shape not in ((n,), (query.shape[0], n))):
        raise DataError(f"context_attention: mask must be bool of shape ({n},) or "
                        f"({query.shape[0]}, {n}), got {mask.dtype} {tuple(mask.shape)}")
    lo, hi = torch.aminmax(prior.detach())  # NaN propagates into both
    ok = (lo >= 0) & (hi < math.inf)
    kept = mask.any(dim=-1).all() if mask is not None else True
    if not bool(ok & kept):  # one synchronisation for both checks
        if not bool(ok):
            raise DataError(f"context_attention: prior must hold finite probabilities P(c_i) "
                            f">= 0, got values in [{float(lo):g}, {float(hi):g}]")
        raise DataError("context_attention: mask excludes every dictionary entry for some image")
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    q = F.linear(query, w1, b1)  # (B, e)
    keys = F.linear(dictionary, w2, b2)  # (n, e)
    scores = (q @ keys.T) * scale  # (B, n)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    alpha = torch.softmax(scores, dim=-1)  # (B, n)
    m = (alpha * prior.to(alpha.dtype)) @ dictionary  # (B, D)
    return m, alpha


@dataclass(frozen=True)
class EstimateTable:
    """Estimates of the effect P(Y=1 | do(X=1)) - P(Y=1 | do(X=0)) on one simulated sample.

    ``naive`` and ``naive_exact``: the confounded contrast from the sample and from the
    tables; ``backdoor_exact``: ``backdoor_adjust`` on the tables; ``backdoor_empirical``
    (± ``backdoor_empirical_se``): ``empirical_backdoor`` on the sample; ``dowhy``: DoWhy's
    ``backdoor.linear_regression`` with treatment x context interactions; ``placebo_effect``
    and ``placebo_p_value``: DoWhy's placebo-treatment refuter (the effect should vanish);
    ``truth``: ``DiscreteSCM.ate_true``.
    """

    n: int
    seed: int
    naive: float
    naive_exact: float
    backdoor_exact: float
    backdoor_empirical: float
    backdoor_empirical_se: float
    dowhy: float
    placebo_effect: float
    placebo_p_value: float
    truth: float

    def to_frame(self) -> pd.DataFrame:
        """One row per effect estimate: ``estimate``, ``value`` and ``error`` (value - truth);
        the placebo effect is left out (its target is 0, not the truth)."""
        import pandas as pd  # about 0.5 s: imported on use

        names = ["naive", "naive_exact", "backdoor_exact", "backdoor_empirical", "dowhy",
                 "truth"]
        values = [getattr(self, name) for name in names]
        return pd.DataFrame({"estimate": names, "value": values,
                             "error": [v - self.truth for v in values]})


def dowhy_effect(frame: pd.DataFrame, *, refuter_simulations: int = 5,
                 seed: int = 0) -> tuple[float, float, float]:
    """DoWhy on a simulated CONTA frame (columns C, X, M, Y; X bool, C categorical):
    identify with the CONTA graph, estimate with ``backdoor.linear_regression`` and refute
    with ``placebo_treatment_refuter`` (permuted treatment).

    C is passed as an effect modifier so the regression has X x C interactions: an additive
    Y ~ X + C fit averages the per-context effects with variance weights, not P(c), and
    misses the ATE whenever the effect differs between contexts. Returns
    (effect, placebo effect, placebo p-value). DoWhy is imported here, its warnings silenced.
    """
    from dowhy import CausalModel  # heavy (about 3 s): imported on use

    missing = {"C", "X", "M", "Y"} - set(frame.columns)
    if missing:
        raise DataError(f"dowhy_effect: frame lacks columns {sorted(missing)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        model = CausalModel(data=frame, treatment="X", outcome="Y",
                            graph=nx.DiGraph(conta_graph().edges))
        estimand = model.identify_effect(proceed_when_unidentifiable=True)
        estimate = model.estimate_effect(estimand, method_name="backdoor.linear_regression",
                                         effect_modifiers=["C"], target_units="ate")
        refutation = model.refute_estimate(estimand, estimate,
                                           method_name="placebo_treatment_refuter",
                                           placebo_type="permute",
                                           num_simulations=refuter_simulations, random_seed=seed)
    p_value = refutation.refutation_result["p_value"]
    return float(estimate.value), float(refutation.new_effect), float(p_value)


def compare_estimates(scm: DiscreteSCM, n: int, seed: int, *,
                      refuter_simulations: int = 5) -> EstimateTable:
    """Draw ``n`` units from ``scm`` with ``seed`` and compare every estimate of the causal
    contrast with the exact truth (notebook 01)."""
    sample = scm.sample(n, seed)
    x, y, c = (torch.from_numpy(a) for a in (sample.x, sample.y, sample.c))
    naive = float(y[x == 1].double().mean() - y[x == 0].double().mean())
    table = torch.tensor(scm.p_y_given_x_c()).unsqueeze(-1)  # (n_x, n_c, 1)
    exact = backdoor_adjust(table, torch.tensor(scm.p_c))[:, 0]  # (n_x,)
    empirical = empirical_backdoor(x, y, c, num_x=scm.n_x, num_c=scm.n_c)
    effect, placebo, p_value = dowhy_effect(sample.to_frame(),
                                            refuter_simulations=refuter_simulations, seed=seed)
    return EstimateTable(n=int(n), seed=int(seed), naive=naive, naive_exact=scm.ate_naive,
                         backdoor_exact=float(exact[1] - exact[0]),
                         backdoor_empirical=empirical.ate,
                         backdoor_empirical_se=empirical.ate_se, dowhy=effect,
                         placebo_effect=placebo, placebo_p_value=p_value, truth=scm.ate_true)
