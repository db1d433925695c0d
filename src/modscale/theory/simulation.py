"""Monte Carlo of the linear model behind the closed forms: the independent route the tests compare against.

Draw theta ~ N(0, I), features phi_j ~ N(0, lam_j), labels y = sum_j theta_j phi_j + noise; fit the top p
features by minimum-norm least squares on n samples; measure the training loss and the exact expected
test loss of the fitted weights,
    test = sum_{j<=p} lam_j (theta_j - w_j)^2 + sum_{j>p} lam_j theta_j^2 + s2,
then average over draws. Features beyond the explicit ones act as label noise of their expected variance
(exact in expectation, because the expected loss is affine in the noise variance given the design).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modscale._checks import check_at_least, check_int, check_positive
from modscale.errors import InvalidType, InvalidValue
from modscale.theory.spectra import Spectrum, as_spectrum

_MAX_ELEMENTS = 2**24  # design-matrix entries per chunk of draws (~128 MB of float64)


@dataclass(frozen=True)
class SimulationResult:
    """Mean train/test loss over draws and their standard errors (std / sqrt(draws))."""

    train: np.ndarray
    test: np.ndarray
    train_se: np.ndarray
    test_se: np.ndarray
    draws: int


def simulate(
    n: Any,
    p: Any,
    spectrum: Spectrum | Any,
    draws: int = 100,
    generator: np.random.Generator | int | None = None,
    *,
    noise: float = 0.0,
    n_outputs: int = 1,
    n_explicit: int | None = None,
) -> SimulationResult:
    """Monte-Carlo train/test loss of min-norm least squares on p of the spectrum's Gaussian features.

    Args:
        n: the sample count(s), broadcast with p; one Monte Carlo per point.
        p: the learned feature count(s).
        spectrum: one spectrum (batch shape ()), e.g. ``spectrum(4)`` or an array of eigenvalues.
        draws: independent draws of (theta, data) per point.
        generator: a ``numpy.random.Generator`` or an int seed (required: randomness is passed in).
        noise: label-noise variance s2.
        n_outputs: d outputs sharing theta act as d*n samples.
        n_explicit: features beyond the p learned ones drawn explicitly (default max(n*d, 100)); the rest
            of the tail is Gaussian label noise of its expected variance.

    Example:
        >>> from modscale.theory import simulate, spectrum
        >>> r = simulate(200, 50, spectrum(3), draws=20, generator=0)
        >>> r.test.shape, bool(r.train < r.test)
        ((), True)
    """
    spec = as_spectrum(spectrum)
    if spec.shape != ():
        raise InvalidValue(
            f"spectrum must be a single spectrum (batch shape ()), got batch shape {spec.shape}"
        )
    draws = check_int("draws", draws, low=2)
    if generator is None:
        raise InvalidValue(
            "generator must be given (a numpy Generator or an int seed): randomness is passed in"
        )
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        generator = np.random.default_rng(check_int("generator", generator, low=0))
    if not isinstance(generator, np.random.Generator):
        raise InvalidType(
            f"generator must be a numpy.random.Generator or an int, got {type(generator).__name__}"
        )
    noise = float(check_at_least("noise", noise, 0.0))
    d = check_int("n_outputs", n_outputs, low=1)
    n = check_positive("n", n)
    p = check_at_least("p", p, 1.0)
    shape = np.broadcast_shapes(n.shape, p.shape)
    out = np.empty((4,) + shape)
    for idx in np.ndindex(shape):
        n_eff = int(round(float(np.broadcast_to(n, shape)[idx]) * d))
        q = int(min(round(float(np.broadcast_to(p, shape)[idx])), spec.n_features))
        extra = n_explicit if n_explicit is not None else max(n_eff, 100)
        t = int(min(spec.n_features - q, check_int("n_explicit", extra, low=0)))
        out[(slice(None),) + idx] = _one_point(spec, n_eff, q, t, noise, draws, generator)
    train, test, train_se, test_se = out
    return SimulationResult(train, test, train_se, test_se, draws)


def _one_point(spec, n, q, t, noise, draws, rng) -> np.ndarray:
    lam = spec.eigenvalues(np.arange(1, q + t + 1))  # (q + t,)
    rest = float(spec.tail(q + t)) + noise  # unexplained variance not drawn explicitly
    chunk = max(1, _MAX_ELEMENTS // max(1, n * (q + t)))
    trains, tests = [], []
    for start in range(0, draws, chunk):
        c = min(chunk, draws - start)
        phi = rng.standard_normal((c, n, q + t)) * np.sqrt(lam)  # (c, n, q+t)
        theta = rng.standard_normal((c, q + t))
        y = (phi @ theta[..., None])[..., 0] + np.sqrt(rest) * rng.standard_normal((c, n))
        head = phi[:, :, :q]  # (c, n, q)
        if q <= n:  # under-parameterised: normal equations (q x q)
            gram = head.transpose(0, 2, 1) @ head
            w = np.linalg.solve(gram, head.transpose(0, 2, 1) @ y[..., None])[..., 0]
        else:  # over-parameterised: minimum-norm solution through the n x n kernel
            kern = head @ head.transpose(0, 2, 1)
            alpha = np.linalg.solve(kern, y[..., None])
            w = (head.transpose(0, 2, 1) @ alpha)[..., 0]
        resid = y - (head @ w[..., None])[..., 0]
        trains.append((resid**2).mean(axis=1))
        tests.append(((theta[:, :q] - w) ** 2 * lam[:q]).sum(1) + (theta[:, q:] ** 2 * lam[q:]).sum(1) + rest)
    train, test = np.concatenate(trains), np.concatenate(tests)
    se = np.sqrt(draws)
    return np.array([train.mean(), test.mean(), train.std(ddof=1) / se, test.std(ddof=1) / se])


__all__ = ["simulate", "SimulationResult"]
