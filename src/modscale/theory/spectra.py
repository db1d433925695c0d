"""Feature spectra: the variances lam_j of the independent features a linear model learns (DESIGN section 1).

A spectrum answers three questions the loss formulas ask: the eigenvalues lam_1..lam_q of the q learned
features, the unexplained variance T = sum_{j>q} lam_j, and a summation rule for sums sum_{j<=q} g(lam_j)
over very many features (q up to 1e12 for the ``exp`` family at large m) in O(1) work per point.

Two kinds:

- :class:`PowerSpectrum`: lam_j = c [j^-a - (j+1)^-a], j = 1..P (P may be infinite). The tail telescopes,
  sum_{j>q} lam_j = c [(q+1)^-a - (P+1)^-a]. Built by :func:`spectrum` from the input dimension m,
  with a = Omega^-m (family ``exp``) or a = s/m (family ``power``).
- :class:`ArraySpectrum`: any positive, non-increasing array of eigenvalues (finite P), summed exactly.

Both are immutable, carry a batch shape (so one object can hold the spectra of many m at once) and
broadcast against the n and p arrays of :func:`modscale.theory.monolithic_losses`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from modscale._checks import as_float_array, check_at_least, check_choice, check_positive
from modscale.errors import InvalidType, InvalidValue

FAMILIES = ("exp", "power")
DEFAULT_C = 1.15  # DESIGN section 1: with Omega = 2 this comes within 10-25% of the paper's dashed curves
DEFAULT_OMEGA = 2.0
DEFAULT_S = 1.0  # our choice for ``power``: a = 1/m, the rate of a once-smooth target (docs/theory.md)

# Summation rule of PowerSpectrum: the first _J_EXACT terms are summed exactly; the rest by the midpoint
# Euler-Maclaurin formula sum_{j=A}^{q} f(j) = int_{A-1/2}^{q+1/2} f dx - [f']_{A-1/2}^{q+1/2} / 24 + O(f'''),
# the integral by composite Gauss-Legendre in t = ln x (the summands are smooth sigmoids in ln x).
# With these settings sums agree with brute force to ~1e-9 relative up to q = 2e5 (tests/test_theory.py)
# and with a 40-panel rule to ~2e-8 at q = 1e12; the cost is 88 terms per point whatever q is.
_J_EXACT = 24
_GL_PANELS = 8
_GL_ORDER = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_ORDER)


class Spectrum:
    """Common interface of the feature spectra (see the module docstring)."""

    shape: tuple[int, ...]
    n_features: float

    def eigenvalues(self, j: Any) -> np.ndarray:
        """lam_j for integer j >= 1 (0 beyond P), broadcast against the batch shape."""
        raise NotImplementedError

    def tail(self, q: Any) -> np.ndarray:
        """sum_{j>q} lam_j for integer q >= 0, broadcast against the batch shape."""
        raise NotImplementedError

    def total(self) -> np.ndarray:
        """sum_j lam_j, the variance of the target before noise."""
        return self.tail(0)

    def scaled(self, factor: float) -> Spectrum:
        """The spectrum factor * lam_j (the per-module spectrum lam_j(b)/k of DESIGN section 1)."""
        raise NotImplementedError

    def _broadcast_flat(self, shape: tuple[int, ...], mask: np.ndarray) -> Spectrum:
        """This spectrum broadcast to ``shape``, flattened, restricted to the points where ``mask``."""
        raise NotImplementedError

    def _summation_rule(self, q: np.ndarray) -> _Rule:
        """Nodes and weights with sum_{j<=q} g(lam_j) ~= rule.apply(g) for a flat batch and q (N,)."""
        raise NotImplementedError

    def _flat_column(self, shape: tuple[int, ...]) -> Spectrum:
        """Broadcast to ``shape``, flattened to N points, with batch shape (N, 1) (a grid axis follows)."""
        raise NotImplementedError

    def _rows(self, rows: np.ndarray) -> Spectrum:
        """The spectra of the given indices along the first batch axis."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Rule:
    """sum_{j<=q} g(lam_j) = sum_t w_t g(lam_t) + sum_e d_e g'(lam_e) dlam_e, per point (rows).

    The second sum is the Euler-Maclaurin endpoint correction; ``dlam`` is d lam / d j at the endpoint.
    """

    lam: np.ndarray  # (N, T) eigenvalues at the nodes
    w: np.ndarray  # (N, T) weights
    lam_e: np.ndarray  # (N, E) eigenvalues at the endpoints
    dlam_e: np.ndarray  # (N, E) their derivatives along j
    d_e: np.ndarray  # (N, E) correction coefficients

    def append(self, lam: np.ndarray, w: np.ndarray) -> _Rule:
        """Add one extra node column (the remainder features of an uneven modular split)."""
        return _Rule(
            np.concatenate([self.lam, lam[:, None]], axis=1),
            np.concatenate([self.w, w[:, None]], axis=1),
            self.lam_e,
            self.dlam_e,
            self.d_e,
        )

    def scale_weights(self, factor: np.ndarray) -> _Rule:
        """Every term counted ``factor`` times (k identical modules)."""
        f = factor[:, None]
        return _Rule(self.lam, self.w * f, self.lam_e, self.dlam_e, self.d_e * f)


def _power_lam(c: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """c [x^-a - (x+1)^-a] without cancellation: c x^-a (1 - (1+1/x)^-a) = -c x^-a expm1(-a log1p(1/x))."""
    return -c * np.exp(-a * np.log(x)) * np.expm1(-a * np.log1p(1.0 / x))


def _power_dlam(c: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """d lam / dx = -a c [x^-(a+1) - (x+1)^-(a+1)] (negative: the spectrum decreases)."""
    return a * c * np.exp(-(a + 1) * np.log(x)) * np.expm1(-(a + 1) * np.log1p(1.0 / x))


@dataclass(frozen=True)
class PowerSpectrum(Spectrum):
    """lam_j = c [j^-a - (j+1)^-a], j = 1..P; ``c`` and ``a`` are arrays of a common batch shape."""

    c: np.ndarray
    a: np.ndarray
    n_features: float = np.inf

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return np.broadcast_shapes(np.shape(self.c), np.shape(self.a))

    def eigenvalues(self, j: Any) -> np.ndarray:
        j = np.asarray(j, dtype=np.float64)
        lam = _power_lam(self.c, self.a, np.maximum(j, 1.0))
        return np.where(j <= self.n_features, lam, 0.0)

    def tail(self, q: Any) -> np.ndarray:
        q = np.minimum(np.asarray(q, dtype=np.float64), self.n_features)
        end = 0.0 if np.isinf(self.n_features) else np.exp(-self.a * np.log1p(self.n_features))
        return self.c * (np.exp(-self.a * np.log1p(q)) - end)

    def scaled(self, factor: float) -> PowerSpectrum:
        return PowerSpectrum(self.c * factor, self.a, self.n_features)

    def _broadcast_flat(self, shape: tuple[int, ...], mask: np.ndarray) -> PowerSpectrum:
        c = np.broadcast_to(self.c, shape)[mask]
        a = np.broadcast_to(self.a, shape)[mask]
        return PowerSpectrum(c, a, self.n_features)

    def _flat_column(self, shape: tuple[int, ...]) -> PowerSpectrum:
        c = np.broadcast_to(self.c, shape).reshape(-1, 1)
        a = np.broadcast_to(self.a, shape).reshape(-1, 1)
        return PowerSpectrum(c, a, self.n_features)

    def _rows(self, rows: np.ndarray) -> PowerSpectrum:
        return PowerSpectrum(self.c[rows], self.a[rows], self.n_features)

    def _summation_rule(self, q: np.ndarray) -> _Rule:
        c, a = self.c[:, None], self.a[:, None]  # (N, 1)
        q = np.minimum(q, self.n_features)[:, None]
        j = np.arange(1, _J_EXACT + 1, dtype=np.float64)[None, :]  # (1, J)
        lam_exact = np.broadcast_to(_power_lam(c, a, j), (q.shape[0], _J_EXACT))
        w_exact = (j <= q).astype(np.float64)  # (N, J)

        # Terms j = J+1..q by the midpoint Euler-Maclaurin rule; zero weight where q <= J.
        far = q > _J_EXACT  # (N, 1)
        lo = np.log(_J_EXACT + 0.5)
        hi = np.log(np.where(far, q, _J_EXACT + 1.0) + 0.5)
        width = (hi - lo) / _GL_PANELS  # (N, 1)
        panel = np.arange(_GL_PANELS)[:, None] + 0.5 * (_GL_X[None, :] + 1.0)  # (G, r) in panel units
        t = lo + width[:, :, None] * panel[None]  # (N, G, r)
        x = np.exp(t).reshape(q.shape[0], -1)  # (N, G*r)
        # dx = x dt and dt = width/2 per unit of the Gauss-Legendre variable
        w_far = (np.broadcast_to(_GL_W, (_GL_PANELS, _GL_ORDER)).ravel()[None, :] * 0.5 * width * x) * far
        lam_far = _power_lam(c, a, x)

        x_e = np.concatenate([np.full_like(q, _J_EXACT + 0.5), q + 0.5], axis=1)  # (N, 2)
        d_e = np.concatenate([np.full_like(q, 1.0 / 24), np.full_like(q, -1.0 / 24)], axis=1) * far
        return _Rule(
            lam=np.concatenate([lam_exact, lam_far], axis=1),
            w=np.concatenate([w_exact, w_far], axis=1),
            lam_e=_power_lam(c, a, x_e),
            dlam_e=_power_dlam(c, a, x_e),
            d_e=d_e,
        )


@dataclass(frozen=True)
class ArraySpectrum(Spectrum):
    """A finite spectrum given by its eigenvalues ``lam`` of shape (..., P), sorted decreasing."""

    lam: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.lam.shape[:-1]

    @property
    def n_features(self) -> float:  # type: ignore[override]
        return float(self.lam.shape[-1])

    @property
    def _cumulative(self) -> np.ndarray:
        """(..., P+1) with entry q = sum_{j>q} lam_j (suffix sums; entry P is 0)."""
        suffix = np.cumsum(self.lam[..., ::-1], axis=-1)[..., ::-1]
        return np.concatenate([suffix, np.zeros(self.shape + (1,))], axis=-1)

    def eigenvalues(self, j: Any) -> np.ndarray:
        j = np.asarray(j)
        padded = np.concatenate([self.lam, np.zeros(self.shape + (1,))], axis=-1)
        idx = np.clip(j.astype(np.int64) - 1, 0, self.lam.shape[-1])
        idx = np.where(j >= 1, idx, self.lam.shape[-1])
        out_shape = np.broadcast_shapes(self.shape, idx.shape)
        padded = np.broadcast_to(padded, out_shape + padded.shape[-1:])
        return np.take_along_axis(padded, np.broadcast_to(idx, out_shape)[..., None], axis=-1)[..., 0]

    def tail(self, q: Any) -> np.ndarray:
        q = np.asarray(q)
        idx = np.clip(q.astype(np.int64), 0, self.lam.shape[-1])
        out_shape = np.broadcast_shapes(self.shape, idx.shape)
        cum = np.broadcast_to(self._cumulative, out_shape + (self.lam.shape[-1] + 1,))
        return np.take_along_axis(cum, np.broadcast_to(idx, out_shape)[..., None], axis=-1)[..., 0]

    def scaled(self, factor: float) -> ArraySpectrum:
        return ArraySpectrum(self.lam * factor)

    def _broadcast_flat(self, shape: tuple[int, ...], mask: np.ndarray) -> ArraySpectrum:
        lam = np.broadcast_to(self.lam, shape + self.lam.shape[-1:])
        return ArraySpectrum(lam[mask])

    def _flat_column(self, shape: tuple[int, ...]) -> ArraySpectrum:
        P = self.lam.shape[-1]
        return ArraySpectrum(np.broadcast_to(self.lam, shape + (P,)).reshape(-1, 1, P))

    def _rows(self, rows: np.ndarray) -> ArraySpectrum:
        return ArraySpectrum(self.lam[rows])

    def _summation_rule(self, q: np.ndarray) -> _Rule:
        P = self.lam.shape[-1]
        j = np.arange(1, P + 1, dtype=np.float64)
        empty = np.zeros((q.shape[0], 0))
        return _Rule(self.lam, (j[None, :] <= q[:, None]).astype(np.float64), empty, empty, empty)


def spectrum(
    m: Any,
    family: str = "exp",
    *,
    n_features: float = np.inf,
    c: Any = DEFAULT_C,
    omega: Any = DEFAULT_OMEGA,
    s: Any = DEFAULT_S,
) -> PowerSpectrum:
    r"""The feature spectrum of a task with input dimension m: lam_j(m) = c [j^-a - (j+1)^-a], j = 1..P.

    .. math:: \lambda_j(m) = c\,\big[j^{-a} - (j+1)^{-a}\big],\quad j = 1, \dots, P;\qquad
              a = \Omega^{-m}\ (\texttt{exp}) \quad\text{or}\quad a = s/m\ (\texttt{power})

    ``exp``: a = Omega^-m (default; Omega = 2, c = 1.15 resemble the paper's theory curves).
    ``power``: a = s/m (the scaling-law form; sample complexity n* ~ (c/eps)^(m/s)).

    Higher m lowers a and so spreads the variance c over more features; that is the whole of the
    dimension's effect in this model. The total variance is c [1 - (P+1)^-a] (c when P is infinite).

    Args:
        m: input dimension(s), >= 1 (any real; an array gives a batch of spectra).
        family: ``"exp"`` or ``"power"``.
        n_features: P, the number of features (``inf`` by default; a finite P cuts the spectrum).
        c: the total variance for infinite P (an array broadcasts with m).
        omega: Omega, the ``exp`` family's base.
        s: the ``power`` family's slope.

    Example:
        >>> lam = spectrum([2, 4], "power", s=3.0)
        >>> lam.shape, lam.tail(0)
        ((2,), array([1.15, 1.15]))
    """
    check_choice("family", family, FAMILIES)
    m = check_at_least("m", m, 1.0, what="the input dimension")
    c = check_positive("c", c)
    if isinstance(n_features, bool) or not isinstance(n_features, numbers.Real):
        raise InvalidType(f"n_features must be a positive integer or inf, got {type(n_features).__name__}")
    if not (n_features == np.inf or (float(n_features).is_integer() and n_features >= 1)):
        raise InvalidValue(f"n_features must be a positive integer or inf, got {n_features!r}")
    if family == "exp":
        omega = as_float_array("omega", omega)
        if not np.all(np.isfinite(omega) & (omega > 1)):
            raise InvalidValue(f"omega must be > 1 (so that a = omega^-m falls with m), got {omega}")
        a = omega**-m
    else:
        a = check_positive("s", s) / m
    shape = np.broadcast_shapes(np.shape(m), np.shape(c), np.shape(a))
    return PowerSpectrum(
        np.broadcast_to(c, shape).copy(), np.broadcast_to(a, shape).copy(), float(n_features)
    )


def as_spectrum(value: Any, name: str = "spectrum") -> Spectrum:
    """A :class:`Spectrum` as is; an array of eigenvalues (..., P) checked and wrapped in ArraySpectrum."""
    if isinstance(value, Spectrum):
        return value
    lam = as_float_array(name, value)
    if lam.ndim == 0 or lam.shape[-1] == 0:
        raise InvalidValue(f"{name} must be a non-empty array of eigenvalues (last axis = features)")
    if not np.all(np.isfinite(lam) & (lam > 0)):
        raise InvalidValue(f"{name} must be positive and finite, got min {np.min(lam):g}")
    if np.any(np.diff(lam, axis=-1) > 0):
        raise InvalidValue(f"{name} must be sorted in decreasing order along its last axis")
    return ArraySpectrum(lam)


__all__ = ["Spectrum", "PowerSpectrum", "ArraySpectrum", "spectrum", "as_spectrum", "FAMILIES"]
