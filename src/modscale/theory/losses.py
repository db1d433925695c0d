"""Closed-form expected train and test loss of a linear-in-parameters model (DESIGN section 1).

The model: target y = sum_j theta_j phi_j(x) + noise, features phi_j independent N(0, lam_j), theta_j iid
N(0, 1), label noise of variance s2. The network learns the top p features by minimum-norm least squares
on n samples (the point gradient descent from zero reaches). T(p) = sum_{j>p} lam_j + s2 is the variance
no p-feature model can explain.

- Under-parameterised, p < n - 1 (exact, Gaussian design):
  train = T (n - p) / n,  test = T (n - 1) / (n - p - 1).
- Over-parameterised, p > n + 1 (deterministic equivalent; exact as n, p -> inf, within ~3% at n >= 100):
  kappa solves sum_{j<=p} lam_j / (lam_j + kappa) = n; D2 = sum lam_j^2 / (lam_j + kappa)^2;
  B = kappa^2 sum lam_j / (lam_j + kappa)^2 / (1 - D2/n); V = T D2 / (n - D2);
  train = 0, test = T + B + V.
- |p - n| <= 1: the interpolation threshold, test = +inf.

The modular model (our version of the paper's Theorem 2) applies the same formulas to the pooled spectrum
of k modules that each learn the top p/k features of their own spectrum lam_j(b)/k; it never sees m.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modscale._checks import check_at_least, check_positive
from modscale.theory.spectra import (
    DEFAULT_C,
    DEFAULT_OMEGA,
    DEFAULT_S,
    Spectrum,
    _Rule,
    as_spectrum,
)
from modscale.theory.spectra import spectrum as make_spectrum

_CHUNK = 4096  # points solved together: keeps the (chunk, nodes) work arrays inside the CPU cache
_NEWTON_STEPS = 60
_RTOL = 1e-12


def _g_sums(rule: _Rule, kappa: np.ndarray, *, full: bool) -> tuple[np.ndarray, ...]:
    """Sums over a rule at kappa: S1 = sum lam/(lam+k), C = sum k/(lam+k), S3 = sum lam/(lam+k)^2 and, if
    ``full``, D2 = sum lam^2/(lam+k)^2. C is summed directly (not as count - S1) to keep its precision
    when S1 is close to the count."""
    k = kappa[:, None]
    inv = 1.0 / (rule.lam + k)
    g1 = rule.lam * inv
    g3 = g1 * inv
    # Euler-Maclaurin endpoint corrections need d g / d lam at the endpoints.
    inv_e = 1.0 / (rule.lam_e + k)
    corr = rule.d_e * rule.dlam_e
    dg1 = (corr * k * inv_e**2).sum(1)
    s1 = (rule.w * g1).sum(1) + dg1
    c = (rule.w * k * inv).sum(1) - dg1
    s3 = (rule.w * g3).sum(1) + (corr * (k - rule.lam_e) * inv_e**3).sum(1)
    if not full:
        return s1, c, s3
    d2 = (rule.w * g1 * g1).sum(1) + (corr * 2 * rule.lam_e * k * inv_e**3).sum(1)
    return s1, c, s3, d2


def _solve_kappa(
    rule: _Rule, n: np.ndarray, p_eff: np.ndarray, mass: np.ndarray, guess: np.ndarray
) -> np.ndarray:
    """kappa > 0 solving S1(kappa) = sum_{j<=p} lam_j/(lam_j + kappa) = n: safeguarded Newton in ln kappa.

    Newton runs on ln S1 = ln n where n <= p/2 and on the complement ln C = ln(p - n), C = sum
    kappa/(lam_j + kappa), where n > p/2: each is close to linear in ln kappa on its side (power-law and
    small-kappa asymptotics), so all points converge in ~6 steps. Bracket: S1 <= mass/kappa, so S1 <= n at
    kappa = mass/n; every term is >= lam_min/(lam_min + kappa), so S1 >= n at kappa = lam_min (p - n)/n
    (p > n + 1 here). Steps that leave the bracket fall back to bisection. ``guess`` starts it at
    e * lam_n (about n features have lam_j > kappa; kappa / lam_n lay in [1.2, 7] for the spectra here).
    """
    lam_min = np.where(rule.w > 0, rule.lam, np.inf).min(axis=1)
    hi = np.log(mass / n)
    lo = np.log(lam_min * (p_eff - n) / n)
    x = np.clip(np.log(np.maximum(guess, 1e-300)) + 1.0, lo, hi)
    complement = n > 0.5 * p_eff
    # S1 + C equals the rule's own count, which matches p to ~1e-10 relative (the quadrature error of a
    # constant): p - n is the exact target, and it stays positive where count - n would round to zero.
    target = np.log(np.where(complement, p_eff - n, n))
    for _ in range(_NEWTON_STEPS):
        kappa = np.exp(x)
        s1, c, s3 = _g_sums(rule, kappa, full=False)
        f = np.log(np.where(complement, c, s1)) - target
        converged = np.abs(f) <= _RTOL
        too_small = np.where(complement, f < 0, f > 0)  # S1 > n <=> C < count - n <=> kappa too small
        lo = np.where(too_small, x, lo)
        hi = np.where(too_small, hi, x)
        slope = kappa * s3 / np.where(complement, c, -s1)  # d f / d ln kappa
        newton = x - f / slope
        inside = (newton > lo) & (newton < hi)
        x_new = np.where(converged, x, np.where(inside, newton, 0.5 * (lo + hi)))
        if np.all(converged | (np.abs(x_new - x) < 1e-13)):
            return np.exp(x_new)
        x = x_new
    return np.exp(x)


def _overparameterised(rule: _Rule, n, p_eff, T, mass, guess) -> np.ndarray:
    """test = T + B + V of the deterministic equivalent, for flat arrays of points."""
    out = np.empty_like(n)
    for start in range(0, n.shape[0], _CHUNK):
        sl = slice(start, start + _CHUNK)
        sub = _Rule(rule.lam[sl], rule.w[sl], rule.lam_e[sl], rule.dlam_e[sl], rule.d_e[sl])
        kappa = _solve_kappa(sub, n[sl], p_eff[sl], mass[sl], guess[sl])
        _, _, s3, d2 = _g_sums(sub, kappa, full=True)
        bias = kappa**2 * s3 / (1.0 - d2 / n[sl])
        variance = T[sl] * d2 / (n[sl] - d2)
        out[sl] = T[sl] + bias + variance
    return out


def _losses(n, T, p_eff, rule_fn, mass_fn, guess_fn, shape):
    """Shared regime logic on arrays of ``shape``; rule_fn(mask) builds the summation rule of the points,
    mass_fn(mask) their learned variance and guess_fn(mask) a starting kappa."""
    train = np.empty(shape)
    test = np.empty(shape)
    under = p_eff < n - 1
    over = p_eff > n + 1
    edge = ~(under | over)
    train[under] = T[under] * (n[under] - p_eff[under]) / n[under]
    test[under] = T[under] * (n[under] - 1) / (n[under] - p_eff[under] - 1)
    train[edge] = T[edge] * np.maximum(n[edge] - p_eff[edge], 0.0) / n[edge]
    test[edge] = np.inf
    train[over] = 0.0
    if over.any():
        test[over] = _overparameterised(
            rule_fn(over), n[over], p_eff[over], T[over], mass_fn(over), guess_fn(over)
        )
    return train, test


def _check_np(n: Any, p: Any, noise: Any, n_outputs: Any) -> tuple[np.ndarray, ...]:
    n = check_positive("n", n)
    p = check_at_least("p", p, 1.0, what="the number of learned features; it is rounded to an integer")
    noise = check_at_least("noise", noise, 0.0, what="a label-noise variance")
    d = check_at_least("n_outputs", n_outputs, 1.0)
    return n, np.rint(p), noise, d


def _modular_split(spec: Spectrum, p: np.ndarray, k: np.ndarray, noise: np.ndarray, shape: tuple[int, ...]):
    """p features over k modules: q each, r modules one more (feature q+1); pooled T and effective p."""
    P = spec.n_features
    q = np.minimum(np.floor(p / k), P)  # features per module
    r = np.minimum(np.where(q < P, p - k * q, 0.0), k)  # modules that also learn feature q + 1
    lam_next = np.broadcast_to(spec.eigenvalues(q + 1), shape)
    T = np.broadcast_to(spec.tail(q), shape) - r * lam_next / k + noise
    return q, r, lam_next, T, k * q + r


def monolithic_losses(
    n: Any, p: Any, spectrum: Spectrum | Any, noise: Any = 0.0, n_outputs: Any = 1
) -> tuple[np.ndarray, np.ndarray]:
    r"""Expected (train, test) loss of a p-feature min-norm least-squares model on n samples.

    .. math::
        p < n-1:\ \mathrm{train} = T\frac{n-p}{n},\ \mathrm{test} = T\frac{n-1}{n-p-1};\qquad
        p > n+1:\ \mathrm{train} = 0,\ \mathrm{test} = T + B + V

    with T = sum_{j>p} lam_j + noise and B, V the deterministic-equivalent bias and variance:

    .. math::
        \sum_{j\le p} \frac{\lambda_j}{\lambda_j+\kappa} = n,\quad
        D_2 = \sum_{j\le p} \frac{\lambda_j^2}{(\lambda_j+\kappa)^2},\quad
        B = \frac{\kappa^2 \sum_{j\le p} \lambda_j/(\lambda_j+\kappa)^2}{1 - D_2/n},\quad
        V = \frac{T D_2}{n - D_2}

    Exact for p < n - 1; asymptotically exact for p > n + 1 (within ~3% at n >= 100); test is
    +inf at the interpolation threshold |p - n| <= 1. With ``n_outputs`` = d outputs sharing theta, n
    becomes d n. p is rounded to an integer; features beyond a finite spectrum's P count as absent.
    n, p, noise and n_outputs are arrays that broadcast together.

    Args:
        n: the number of training samples, > 0.
        p: the number of learned features, >= 1.
        spectrum: a :class:`Spectrum` (e.g. ``spectrum(m)``) or an array of eigenvalues (..., P),
            positive and decreasing; its batch shape broadcasts with the others.
        noise: the label-noise variance, >= 0.
        n_outputs: d >= 1 outputs that share theta.

    Returns:
        (train, test): float64 arrays of the broadcast shape.

    Example:
        >>> from modscale.theory import spectrum, monolithic_losses
        >>> train, test = monolithic_losses(1000, 500, spectrum(4))
        >>> bool(train < test)
        True
    """
    n, q, noise, d = _check_np(n, p, noise, n_outputs)
    spec = as_spectrum(spectrum)
    n_eff = n * d
    shape = np.broadcast_shapes(n_eff.shape, q.shape, noise.shape, spec.shape)
    n_eff, q, noise = (np.broadcast_to(v, shape) for v in (n_eff, q, noise))
    p_eff = np.minimum(q, spec.n_features)
    T = np.broadcast_to(spec.tail(q) + noise, shape)

    def rule_fn(mask):
        return spec._broadcast_flat(shape, mask)._summation_rule(p_eff[mask])

    def mass_fn(mask):
        return np.broadcast_to(spec.total() - spec.tail(q), shape)[mask]

    def guess_fn(mask):
        return np.broadcast_to(spec.eigenvalues(np.rint(n_eff)), shape)[mask]

    return _losses(n_eff, T, p_eff, rule_fn, mass_fn, guess_fn, shape)


def modular_losses(
    n: Any,
    p: Any,
    k: Any,
    b: Any = 1,
    *,
    spectrum: Spectrum | Any | None = None,
    family: str = "exp",
    c: Any = DEFAULT_C,
    omega: Any = DEFAULT_OMEGA,
    s: Any = DEFAULT_S,
    n_features: float = np.inf,
    noise: Any = 0.0,
    n_outputs: Any = 1,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Expected (train, test) loss of a modular network with K = k modules on the true projections.

    Each module has its own independent features with spectrum lam_j(b)/k and learns its top p/k of them
    (p = k q + r: r modules learn one feature more). The pooled spectrum {lam_j(b)/k : j <= q} (k copies)
    plus r copies of lam_{q+1}(b)/k goes through the formulas of :func:`monolithic_losses` with unexplained
    variance

    .. math:: T = \sum_{j>q} \lambda_j(b) - \frac{r\,\lambda_{q+1}(b)}{k} + \sigma^2_{\mathrm{noise}}.

    The input dimension m appears nowhere: the losses are the same for every m (DESIGN section 1; the
    paper's claim 2). n, p, k and b are arrays that broadcast together.

    Args:
        n: the number of training samples, > 0.
        p: the number of learned features of the whole network, >= 1.
        k: the number of modules, >= 1.
        b: the module input dimension, >= 1.
        spectrum: the per-module spectrum lam(b) if given (then b, family, c, omega, s, n_features are
            not used); else ``spectrum(b, family, ...)``.
        family: ``"exp"`` or ``"power"``, as in :func:`~modscale.theory.spectrum`.
        c: the spectrum's scale, as in :func:`~modscale.theory.spectrum`.
        omega: the ``exp`` family's base.
        s: the ``power`` family's slope.
        n_features: P, the number of features of each module's spectrum.
        noise: as in :func:`monolithic_losses`.
        n_outputs: as in :func:`monolithic_losses`.

    Example:
        >>> from modscale.theory import modular_losses
        >>> train, test = modular_losses(1000, 400, k=4, b=1)
        >>> bool(test < 1.0)
        True
    """
    n, q_total, noise, d = _check_np(n, p, noise, n_outputs)
    k = np.rint(check_at_least("k", k, 1.0, what="the number of modules"))
    if spectrum is None:
        b = check_at_least("b", b, 1.0, what="the module input dimension")
        spec = make_spectrum(b, family, n_features=n_features, c=c, omega=omega, s=s)
    else:
        spec = as_spectrum(spectrum)
    n_eff = n * d
    shape = np.broadcast_shapes(n_eff.shape, q_total.shape, k.shape, noise.shape, spec.shape)
    n_eff, q_total, k, noise = (np.broadcast_to(v, shape) for v in (n_eff, q_total, k, noise))
    q, r, lam_next, T, p_eff = _modular_split(spec, q_total, k, noise, shape)

    def rule_fn(mask):
        flat = spec._broadcast_flat(shape, mask)
        kk = k[mask]
        rule = flat._summation_rule(q[mask])
        # per-module spectrum lam/k: scale eigenvalues, then count each module's terms k times
        rule = _Rule(
            rule.lam / kk[:, None], rule.w, rule.lam_e / kk[:, None], rule.dlam_e / kk[:, None], rule.d_e
        )
        rule = rule.scale_weights(kk)
        return rule.append(lam_next[mask] / kk, r[mask])

    def mass_fn(mask):
        return np.broadcast_to(spec.total() - spec.tail(q), shape)[mask] + r[mask] * lam_next[mask] / k[mask]

    def guess_fn(mask):  # the pooled spectrum's n-th eigenvalue: lam_{n/k} / k
        return np.broadcast_to(spec.eigenvalues(np.maximum(np.rint(n_eff / k), 1)) / k, shape)[mask]

    return _losses(n_eff, T, p_eff, rule_fn, mass_fn, guess_fn, shape)


def unexplained_variance(p: Any, spectrum: Spectrum | Any, noise: Any = 0.0) -> np.ndarray:
    r"""T(p) = sum_{j>p} lam_j + noise: the test loss of a p-feature model as n -> inf.

    .. math:: T(p) = \sum_{j>p} \lambda_j + \sigma^2_{\mathrm{noise}} = \lim_{n\to\infty} \mathrm{test}(n, p)
    """
    p = np.rint(check_at_least("p", p, 0.0))
    noise = check_at_least("noise", noise, 0.0)
    return as_spectrum(spectrum).tail(p) + noise


__all__ = ["monolithic_losses", "modular_losses", "unexplained_variance"]
