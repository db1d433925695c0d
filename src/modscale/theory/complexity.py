"""Sample complexity n*(eps): the fewest samples whose expected test loss reaches eps (DESIGN section 1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from modscale._checks import check_at_least, check_positive
from modscale.errors import InvalidValue
from modscale.theory.losses import _modular_split, modular_losses, monolithic_losses
from modscale.theory.spectra import DEFAULT_C, DEFAULT_OMEGA, DEFAULT_S, Spectrum, as_spectrum
from modscale.theory.spectra import spectrum as make_spectrum

_P_MAX = 1e15  # largest p searched when minimising over p (a finite spectrum stops at its P)
_P_GRID = 64  # coarse log grid over p, then a fine grid of _P_FINE points around the best
_P_FINE = 32
_N_GRID = 24  # log grid over n in the over-parameterised branch, then bisection
_BISECT = 60


def sample_complexity(
    eps: Any,
    m: Any = None,
    *,
    p: Any = None,
    k: Any = None,
    b: Any = 1,
    spectrum: Spectrum | Any | None = None,
    family: str = "exp",
    c: Any = DEFAULT_C,
    omega: Any = DEFAULT_OMEGA,
    s: Any = DEFAULT_S,
    n_features: float = np.inf,
    noise: Any = 0.0,
    n_outputs: Any = 1,
) -> np.ndarray:
    r"""Smallest n with expected test loss <= eps, at a given p or minimised over p.

    .. math:: n^*(\varepsilon, p) = \min\{n : \mathrm{test}(n, p) \le \varepsilon\},\qquad
              n^*(\varepsilon) = \min_p n^*(\varepsilon, p)

    Both branches of the test loss count. Under-parameterised (n > p + 1) the test loss
    T (n-1)/(n-p-1) falls monotonically to T(p), so eps is reached at n = (eps (p+1) - T)/(eps - T) when
    eps > T(p). Over-parameterised (n < p - 1) the loss is scanned on a log grid of n and the first
    crossing refined by bisection. Over p, a log grid up to 1e15 (or P) is refined around its best point
    (the result is within ~1% of the exact minimum over integer p, where n* is flat in p).

    ``k`` given: the modular model (:func:`modular_losses`, per-module dimension b; m only sets the
    output shape and is otherwise unused). Else the monolithic model on ``spectrum`` or
    ``spectrum(m, family, ...)``. Returns +inf where eps is unreachable (eps <= noise, or no p up to
    the search limit gets T(p) below eps) and 0 where eps >= total variance + noise (the zero predictor
    meets it). With ``n_outputs`` = d the result counts inputs (n_eff / d).

    For ``family="power"`` n* ~ (c/eps)^(m/s): log n* is linear in m. For ``exp`` it grows faster.

    Example:
        >>> from modscale.theory import sample_complexity
        >>> n2, n8 = sample_complexity(0.5, [2, 8], family="power")
        >>> bool(n8 > 10 * n2)
        True
    """
    eps = check_positive("eps", eps)
    noise = check_at_least("noise", noise, 0.0, what="a label-noise variance")
    d = check_at_least("n_outputs", n_outputs, 1.0)
    modular = k is not None
    if modular:
        k = np.rint(check_at_least("k", k, 1.0, what="the number of modules"))
        if spectrum is not None:
            spec = as_spectrum(spectrum)
        else:
            b = check_at_least("b", b, 1.0, what="the module input dimension")
            spec = make_spectrum(b, family, n_features=n_features, c=c, omega=omega, s=s)
        m_shape = np.shape(check_at_least("m", m, 1.0)) if m is not None else ()
    else:
        if spectrum is not None:
            spec = as_spectrum(spectrum)
        else:
            if m is None:
                raise InvalidValue("m is required for the monolithic model (or pass spectrum=)")
            spec = make_spectrum(m, family, n_features=n_features, c=c, omega=omega, s=s)
        m_shape = ()
        k = np.ones(())
    if p is not None:
        p = np.rint(check_at_least("p", p, 1.0, what="the number of learned features"))
    shape = np.broadcast_shapes(
        eps.shape, noise.shape, d.shape, k.shape, spec.shape, m_shape, () if p is None else p.shape
    )
    N = int(np.prod(shape))
    flat = {
        name: np.broadcast_to(v, shape).reshape(N, 1)
        for name, v in (("eps", eps), ("noise", noise), ("d", d), ("k", k))
    }
    spec_col = spec._flat_column(shape)  # batch (N, 1)

    def test_loss(rows: np.ndarray, n_eff: np.ndarray, pp: np.ndarray) -> np.ndarray:
        """Test loss of flat points ``rows`` (M,) at n_eff (M, G) and p (M, G); n_eff counts the outputs."""
        sub = spec_col._rows(rows)
        if modular:
            return modular_losses(n_eff, pp, flat["k"][rows], spectrum=sub, noise=flat["noise"][rows])[1]
        return monolithic_losses(n_eff, pp, sub, noise=flat["noise"][rows])[1]

    def n_star_at(pp: np.ndarray) -> np.ndarray:
        """n_eff* at p for every point (N, G)."""
        grid_shape = np.broadcast_shapes(pp.shape, (N, 1))
        pp = np.broadcast_to(pp, grid_shape)
        e = flat["eps"]
        if modular:
            *_, T, p_eff = _modular_split(spec_col, pp, flat["k"], flat["noise"], grid_shape)
        else:
            p_eff = np.minimum(pp, spec_col.n_features)
            T = spec_col.tail(pp) + flat["noise"]
        with np.errstate(divide="ignore", invalid="ignore"):
            under = np.where(e > T, (e * (p_eff + 1) - T) / (e - T), np.inf)
        under = np.maximum(under, p_eff + 1 + 1e-9)
        return np.minimum(under, _overparameterised_crossing(test_loss, e, pp, p_eff, grid_shape))

    if p is not None:
        n_eff = n_star_at(np.broadcast_to(p, shape).reshape(N, 1))[:, 0]
    else:
        p_hi = min(_P_MAX, spec.n_features)
        coarse = np.geomspace(1.0, p_hi, _P_GRID)[None, :]
        n_coarse = n_star_at(np.rint(coarse))
        best = np.argmin(n_coarse, axis=1)
        lo = coarse[0, np.maximum(best - 1, 0)][:, None]
        hi = coarse[0, np.minimum(best + 1, _P_GRID - 1)][:, None]
        fine = np.rint(lo * (hi / lo) ** np.linspace(0.0, 1.0, _P_FINE)[None, :])
        n_eff = np.minimum(n_coarse.min(axis=1), n_star_at(fine).min(axis=1))
    # eps at or above the target's whole variance is met by predicting zero: no samples needed
    trivial = np.broadcast_to(spec.total(), shape).reshape(N) + flat["noise"][:, 0] <= flat["eps"][:, 0]
    n_eff = np.where(trivial, 0.0, n_eff)
    return (n_eff / flat["d"][:, 0]).reshape(shape)


def _overparameterised_crossing(test_loss, eps, p, p_eff, shape) -> np.ndarray:
    """Smallest n_eff < p - 1 with test <= eps: first crossing on a log grid of n, refined by bisection.

    ``shape`` is (N, G): N points, G values of p each; the search runs on every (point, p) pair at once.
    """
    out = np.full(shape, np.inf)
    ok = p_eff > 4  # needs room for n in [1, p - 2]
    if not ok.any():
        return out
    rows = np.nonzero(ok)[0]  # the point each selected pair belongs to
    pe = p_eff[ok]
    e = np.broadcast_to(eps, shape)[ok]
    pp = np.broadcast_to(p, shape)[ok][:, None]
    n_grid = (pe - 2.0)[:, None] ** np.linspace(0.0, 1.0, _N_GRID)[None, :]  # (M, Gn) from 1 to p - 2
    hit = test_loss(rows, n_grid, np.broadcast_to(pp, n_grid.shape)) <= e[:, None]
    found = hit.any(axis=1)
    if not found.any():
        return out
    rows, e, pp, hit, n_grid = rows[found], e[found], pp[found], hit[found], n_grid[found]
    first = np.argmax(hit, axis=1)
    idx = np.arange(len(first))
    lo = np.where(first > 0, n_grid[idx, np.maximum(first - 1, 0)], 0.5)
    hi = n_grid[idx, first]

    def log_excess(n: np.ndarray) -> np.ndarray:
        return np.log(test_loss(rows, n[:, None], pp)[:, 0] / e)

    hi = _illinois(log_excess, np.log(lo), np.log(hi), first > 0)
    sub = out[ok]
    sub[found] = np.exp(hi)
    out[ok] = sub
    return out


def _illinois(f, lo: np.ndarray, hi: np.ndarray, bracketed: np.ndarray) -> np.ndarray:
    """Smallest x in (lo, hi] with f(x) <= 0, where f(lo) > 0 >= f(hi) (false position, Illinois rule).

    ``f`` maps ln n to ln(test / eps), smooth and decreasing near the crossing, so this converges in a
    handful of evaluations where bisection needs ~40. Points not ``bracketed`` (eps already reached at the
    grid's first point) keep ``hi``.
    """
    f_lo = np.where(bracketed, f(np.exp(lo)), 1.0)
    f_hi = np.minimum(f(np.exp(hi)), 0.0)
    f_hi_true = f_hi.copy()
    side = np.zeros(lo.shape, dtype=np.int8)
    for _ in range(_BISECT):
        active = bracketed & (hi - lo > 1e-10) & (f_hi_true < -1e-12)
        if not active.any():
            break
        denom = np.where(f_lo - f_hi > 0, f_lo - f_hi, 1.0)
        x = np.clip(np.where(active, hi + f_hi * (hi - lo) / denom, hi), lo, hi)  # secant through both ends
        fx = f(np.exp(x))
        above = active & (fx > 0)
        below = active & ~above
        # Illinois: halve the stale end's value when the same end moves twice in a row
        f_hi = np.where(above & (side == 1), 0.5 * f_hi, f_hi)
        f_lo = np.where(below & (side == -1), 0.5 * f_lo, f_lo)
        lo, f_lo = np.where(above, x, lo), np.where(above, fx, f_lo)
        hi = np.where(below, x, hi)
        f_hi = np.where(below, np.minimum(fx, 0.0), f_hi)
        f_hi_true = np.where(below, np.minimum(fx, 0.0), f_hi_true)
        side = np.where(above, 1, np.where(below, -1, side)).astype(np.int8)
    return hi


__all__ = ["sample_complexity"]
