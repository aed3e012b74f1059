"""A discrete simulator of the CONTA SCM (C -> X, C -> M, X -> M, X -> Y, M -> Y) whose P(Y | do(X)) is known exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from causal_wsss.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

_ATOL = 1e-6


def _table(name: str, value, ndim: int) -> np.ndarray:
    array = np.array(value, dtype=np.float64)
    if array.ndim != ndim:
        raise DataError(f"DiscreteSCM.{name}: expected {ndim} dimensions, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.min() < 0:
        raise DataError(f"DiscreteSCM.{name}: expected finite non-negative probabilities")
    array.flags.writeable = False
    return array


def _check_rows(name: str, array: np.ndarray) -> None:
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=_ATOL):
        raise DataError(f"DiscreteSCM.{name}: each distribution over the last axis must sum to 1, "
                        f"got sums in [{sums.min():.6f}, {sums.max():.6f}]")


@dataclass(frozen=True, eq=False)
class SampleTable:
    """``n`` joint draws of the SCM: integer arrays ``c``, ``x``, ``m``, ``y``, each (n,)."""

    c: np.ndarray
    x: np.ndarray
    m: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.c.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """Columns C (pandas categorical, so DoWhy one-hot encodes it), X (bool when binary,
        else int), M (int) and Y (int)."""
        import pandas as pd

        x = self.x.astype(bool) if self.x.max(initial=0) <= 1 else self.x
        return pd.DataFrame({"C": pd.Categorical(self.c), "X": x, "M": self.m, "Y": self.y})


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (n, k) by inverse-CDF sampling -> (n,) int64."""
    cdf = np.cumsum(probs, axis=1)  # (n, k)
    u = rng.random(probs.shape[0])[:, None]  # (n, 1)
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DiscreteSCM:
    """Conditional probability tables of the discrete CONTA SCM (method.md §1).

    - ``p_c`` (n_c,): prior P(C = c);
    - ``p_x_given_c`` (n_c, n_x): P(X = x | C = c);
    - ``p_m_given_xc`` (n_x, n_c, n_m): P(M = m | X = x, C = c);
    - ``p_y_given_xm`` (n_x, n_m): P(Y = 1 | X = x, M = m), Y binary.
    """

    p_c: np.ndarray
    p_x_given_c: np.ndarray
    p_m_given_xc: np.ndarray
    p_y_given_xm: np.ndarray

    def __post_init__(self) -> None:
        for name, ndim in (("p_c", 1), ("p_x_given_c", 2), ("p_m_given_xc", 3),
                           ("p_y_given_xm", 2)):
            object.__setattr__(self, name, _table(name, getattr(self, name), ndim))
        for name in ("p_c", "p_x_given_c", "p_m_given_xc"):
            _check_rows(name, getattr(self, name))
        n_c, n_x, n_m = self.n_c, self.n_x, self.n_m
        if n_x < 2:
            raise DataError(f"DiscreteSCM.p_x_given_c: X needs at least 2 values, got {n_x}")
        if self.p_x_given_c.shape[0] != n_c or self.p_m_given_xc.shape[:2] != (n_x, n_c):
            raise DataError(f"DiscreteSCM: shapes disagree: p_c {self.p_c.shape}, p_x_given_c "
                            f"{self.p_x_given_c.shape}, p_m_given_xc {self.p_m_given_xc.shape}; "
                            "expected (n_c,), (n_c, n_x), (n_x, n_c, n_m)")
        if self.p_y_given_xm.shape != (n_x, n_m) or self.p_y_given_xm.max() > 1:
            raise DataError(f"DiscreteSCM.p_y_given_xm: expected probabilities of shape "
                            f"{(n_x, n_m)}, got shape {self.p_y_given_xm.shape}")

    @property
    def n_c(self) -> int:
        return int(self.p_c.shape[0])

    @property
    def n_x(self) -> int:
        return int(self.p_x_given_c.shape[1])

    @property
    def n_m(self) -> int:
        return int(self.p_m_given_xc.shape[2])

    def _check_x(self, x: int) -> int:
        if not 0 <= int(x) < self.n_x:
            raise ConfigError(f"x: expected a treatment value in 0..{self.n_x - 1}, got {x}")
        return int(x)

    def p_y_given_x_c(self) -> np.ndarray:
        """P(Y = 1 | X = x, C = c) = sum_m P(m | x, c) P(Y = 1 | x, m), shape (n_x, n_c)."""
        return np.einsum("xcm,xm->xc", self.p_m_given_xc, self.p_y_given_xm)

    def p_c_given_x(self) -> np.ndarray:
        """Posterior P(C = c | X = x) ∝ P(c) P(x | c), shape (n_x, n_c); NaN rows for values
        of X that have probability 0."""
        joint = (self.p_c[:, None] * self.p_x_given_c).T  # (n_x, n_c)
        with np.errstate(invalid="ignore", divide="ignore"):
            return joint / joint.sum(axis=1, keepdims=True)

    def p_y_given_x(self, x: int) -> float:
        """Observational P(Y = 1 | X = x) = sum_c P(c | x) P(Y = 1 | x, c): the naive,
        confounded quantity a plain classifier learns. Undefined (``DataError``) if
        P(X = x) = 0."""
        x = self._check_x(x)
        if float(self.p_c @ self.p_x_given_c[:, x]) == 0.0:
            raise DataError(f"p_y_given_x: P(X = {x}) is 0, so P(Y | X = {x}) is undefined")
        return float(self.p_c_given_x()[x] @ self.p_y_given_x_c()[x])

    def p_y_do_x(self, x: int) -> float:
        """Interventional P(Y = 1 | do(X = x)) = sum_c P(c) sum_m P(m | x, c) P(Y = 1 | x, m)
        (paper Eq. 1, method.md §1): the truth."""
        x = self._check_x(x)
        return float(self.p_c @ self.p_y_given_x_c()[x])

    @property
    def ate_naive(self) -> float:
        """P(Y = 1 | X = 1) - P(Y = 1 | X = 0), the confounded contrast."""
        return self.p_y_given_x(1) - self.p_y_given_x(0)

    @property
    def ate_true(self) -> float:
        """P(Y = 1 | do(X = 1)) - P(Y = 1 | do(X = 0)), the causal effect."""
        return self.p_y_do_x(1) - self.p_y_do_x(0)

    def sample(self, n: int, seed: int) -> SampleTable:
        """Draw ``n`` independent units in causal order C, X, M, Y with
        ``numpy.random.default_rng(seed)``."""
        if int(n) < 1:
            raise ConfigError(f"n: expected a positive sample size, got {n}")
        rng = np.random.default_rng(seed)
        n = int(n)
        c = _draw(rng, np.broadcast_to(self.p_c, (n, self.n_c)))
        x = _draw(rng, self.p_x_given_c[c])  # (n, n_x) rows
        m = _draw(rng, self.p_m_given_xc[x, c])  # (n, n_m) rows
        y = (rng.random(n) < self.p_y_given_xm[x, m]).astype(np.int64)
        return SampleTable(c=c, x=x, m=m, y=y)


def default_scm(strength: float = 1.0) -> DiscreteSCM:
    """A strongly confounded instance: 3 contexts, binary X, 3 context readings M, binary Y.

    ``strength`` in [0, 1] scales both arms of the backdoor path X <- C -> M -> Y. Context 0
    (half the data) nearly always shows the object (X = 1) and gives a low-Y reading M = 0,
    contexts 1 and 2 mostly lack it and give high-Y readings, so at strength 1 the naive
    contrast is negative (about -0.12) although X raises P(Y = 1) by about +0.21 (Simpson's
    reversal). At strength 0, C is disconnected and the naive contrast equals the truth.
    """
    if not 0.0 <= float(strength) <= 1.0:
        raise ConfigError(f"strength: expected a value in [0, 1], got {strength}")
    s = float(strength)
    p_c = np.array([0.5, 0.3, 0.2])
    p_x1 = 0.5 + s * np.array([0.4, -0.35, -0.4])  # P(X = 1 | c)
    p_x_given_c = np.stack([1.0 - p_x1, p_x1], axis=1)  # (n_c, n_x)
    x_val = np.arange(2)[:, None, None]
    c_val = np.arange(3)[None, :, None]
    m_val = np.arange(3)[None, None, :]
    logits = 2.5 * s * (m_val == c_val) + 1.0 * x_val * (m_val == 2)  # (n_x, n_c, n_m)
    p_m = np.exp(logits)
    p_m /= p_m.sum(axis=-1, keepdims=True)
    p_y = 1.0 / (1.0 + np.exp(-(-2.0 + 1.0 * np.arange(2)[:, None] + 2.0 * np.arange(3)[None])))
    return DiscreteSCM(p_c=p_c, p_x_given_c=p_x_given_c, p_m_given_xc=p_m, p_y_given_xm=p_y)
