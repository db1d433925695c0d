"""The closed-form theory (DESIGN section 1) checked against independent routes.

Second routes used here: the package's Monte-Carlo simulator, an inline least-squares Monte Carlo that
shares no code with it, brute-force sums and a brute-force root solve for kappa, and the explicitly
pooled modular spectrum fed to the monolithic formulas.
"""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import brentq

from modscale.theory import (
    ArraySpectrum,
    fit,
    modular_losses,
    monolithic_losses,
    sample_complexity,
    simulate,
    spectrum,
    unexplained_variance,
)
from modscale.theory.losses import _g_sums


def _brute_kappa(lam: np.ndarray, n: float) -> float:
    return brentq(lambda k: np.sum(lam / (lam + k)) - n, 1e-300, 1e6, xtol=1e-300, rtol=1e-14)


# --- theory vs Monte Carlo ---
# Draws are chosen so that the Monte-Carlo standard error is <= 1% of the loss (asserted), which leaves
# >= 2 standard errors of room inside the 3% tolerance. The under-parameterised formula is exact, so any
# miss there beyond sampling error is a bug; the over-parameterised one is a deterministic equivalent whose
# finite-n error DESIGN measured at <= 3% for n >= 100.
MC_POINTS = [
    # (m, n, p, draws): under-parameterised, then over-parameterised, away from p = n
    (2, 200, 50, 150),
    (4, 200, 50, 150),
    (3, 150, 20, 150),
    (2, 100, 400, 150),
    (4, 100, 400, 150),
    (3, 150, 600, 100),
]


@pytest.mark.parametrize(("m", "n", "p", "draws"), MC_POINTS)
def test_theory_matches_monte_carlo(m: int, n: int, p: int, draws: int) -> None:
    spec = spectrum(m)
    train, test = monolithic_losses(n, p, spec)
    mc = simulate(n, p, spec, draws=draws, generator=1000 * m + n + p)
    assert mc.test_se <= 0.01 * test, "too few draws for the 3% check to mean anything"
    assert abs(mc.test / test - 1) <= 0.03
    if p < n:
        assert abs(mc.train / train - 1) <= 0.03
    else:
        assert train == 0.0 and mc.train < 1e-12


def test_noise_in_monte_carlo_matches_theory() -> None:
    spec = spectrum(3)
    for n, p in [(200, 40), (100, 400)]:
        _, test = monolithic_losses(n, p, spec, noise=0.3)
        mc = simulate(n, p, spec, draws=150, generator=7, noise=0.3)
        assert abs(mc.test / test - 1) <= 0.03


def test_under_parameterised_formula_vs_direct_least_squares() -> None:
    """p < n - 1 is exact: compare with a plain lstsq Monte Carlo on a finite spectrum (no shared code)."""
    rng = np.random.default_rng(0)
    lam = 1.0 / np.arange(1, 31) ** 1.5  # P = 30 features, all drawn explicitly
    n, p, draws = 40, 6, 4000
    tests, trains = [], []
    for _ in range(draws):
        theta = rng.standard_normal(30)
        X = rng.standard_normal((n, 30)) * np.sqrt(lam)
        y = X @ theta
        w, *_ = np.linalg.lstsq(X[:, :p], y, rcond=None)
        trains.append(np.mean((y - X[:, :p] @ w) ** 2))
        tests.append(np.sum(lam[:p] * (theta[:p] - w) ** 2) + np.sum(lam[p:] * theta[p:] ** 2))
    train, test = monolithic_losses(n, p, lam)
    se_test = np.std(tests) / np.sqrt(draws)
    se_train = np.std(trains) / np.sqrt(draws)
    assert abs(np.mean(tests) - test) <= 4 * se_test
    assert abs(np.mean(trains) - train) <= 4 * se_train


# --- identities and limits ---
def test_infinite_samples_give_unexplained_variance() -> None:
    p = np.array([1, 10, 100, 1000])
    for m in [2, 5, 9]:
        spec = spectrum(m)
        train, test = monolithic_losses(1e13, p, spec, noise=0.1)
        T = unexplained_variance(p, spec, noise=0.1)
        np.testing.assert_allclose(test, T, rtol=1e-9)
        np.testing.assert_allclose(train, T, rtol=1e-9)


def test_tail_telescopes_to_brute_force_sum() -> None:
    spec = spectrum(3, n_features=5000)
    lam = spec.eigenvalues(np.arange(1, 5001))
    for q in [0, 1, 17, 4999, 5000, 7000]:
        np.testing.assert_allclose(spec.tail(q), lam[q:].sum(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(spectrum(2).total(), 1.15)


def test_under_parameterised_closed_form() -> None:
    n, p = 500.0, 120
    spec = spectrum(4)
    T = float(spec.tail(p))
    train, test = monolithic_losses(n, p, spec)
    assert train == pytest.approx(T * (n - p) / n, rel=1e-14)
    assert test == pytest.approx(T * (n - 1) / (n - p - 1), rel=1e-14)


@pytest.mark.parametrize("m", [2, 4, 7])
@pytest.mark.parametrize(("n", "p"), [(100, 300), (1000, 5000), (300, 100000)])
def test_over_parameterised_vs_brute_force(m: int, n: int, p: int) -> None:
    """Deterministic equivalent from the fast summation rule vs a brute-force root solve and sums."""
    spec = spectrum(m)
    lam = spec.eigenvalues(np.arange(1, p + 1))
    T = float(spec.tail(p))
    k = _brute_kappa(lam, n)
    d2 = np.sum(lam**2 / (lam + k) ** 2)
    bias = k**2 * np.sum(lam / (lam + k) ** 2) / (1 - d2 / n)
    variance = T * d2 / (n - d2)
    _, test = monolithic_losses(n, p, spec)
    assert test == pytest.approx(T + bias + variance, rel=1e-8)


def test_summation_rule_matches_brute_force() -> None:
    for a in [0.3, 0.01, 0.002]:
        spec = spectrum(1, "power", s=a)  # a = s/m
        for q in [5, 40, 3000, 200000]:
            j = np.arange(1, q + 1, dtype=float)
            lam = spec.eigenvalues(j)
            rule = spec._broadcast_flat((), np.array(True))._summation_rule(np.array([float(q)]))
            for kappa in [1e-9, 1e-5, 1e-2]:
                s1, c, s3, d2 = (v[0] for v in _g_sums(rule, np.array([kappa]), full=True))
                np.testing.assert_allclose(s1, np.sum(lam / (lam + kappa)), rtol=1e-8)
                np.testing.assert_allclose(c, np.sum(kappa / (lam + kappa)), rtol=1e-8)
                np.testing.assert_allclose(s3, np.sum(lam / (lam + kappa) ** 2), rtol=1e-8)
                np.testing.assert_allclose(d2, np.sum(lam**2 / (lam + kappa) ** 2), rtol=1e-8)


def test_noise_adds_exactly_as_the_formula_says() -> None:
    spec, s2 = spectrum(3), 0.37
    # under-parameterised: noise s2 scales exactly like the unexplained variance
    n, p = 800.0, 200
    tr0, te0 = monolithic_losses(n, p, spec)
    tr1, te1 = monolithic_losses(n, p, spec, noise=s2)
    assert te1 - te0 == pytest.approx(s2 * (n - 1) / (n - p - 1), rel=1e-12)
    assert tr1 - tr0 == pytest.approx(s2 * (n - p) / n, rel=1e-12)
    # over-parameterised: it enters T and the variance V = T D2/(n - D2): + s2 n / (n - D2)
    n, p = 300.0, 3000
    lam = spec.eigenvalues(np.arange(1, p + 1))
    k = _brute_kappa(lam, n)
    d2 = np.sum(lam**2 / (lam + k) ** 2)
    _, te0 = monolithic_losses(n, p, spec)
    _, te1 = monolithic_losses(n, p, spec, noise=s2)
    assert te1 - te0 == pytest.approx(s2 * n / (n - d2), rel=1e-8)


def test_interpolation_threshold_is_infinite() -> None:
    train, test = monolithic_losses([99, 100, 101, 103], 100, spectrum(3))
    assert np.isinf(test[:3]).all() and np.isfinite(test[3])
    assert train[0] == 0.0 and train[1] == 0.0 and train[2] > 0.0  # n = 101 > p: one residual dof


def test_double_descent_shape_in_p_and_n() -> None:
    spec = spectrum(4)
    p = np.array([100, 500, 990, 1010, 3000, 100000])
    _, test_p = monolithic_losses(1000, p, spec)
    assert test_p[2] > test_p[1] > test_p[0] and test_p[3] > test_p[4] > test_p[5]
    n = np.array([100, 500, 990, 1010, 3000, 100000])
    _, test_n = monolithic_losses(n, 1000, spec)
    assert test_n[2] > test_n[1] and test_n[3] > test_n[4] > test_n[5]


def test_n_outputs_multiply_samples() -> None:
    a = monolithic_losses(300, [50, 2000], spectrum(3), n_outputs=4)
    b = monolithic_losses(1200, [50, 2000], spectrum(3))
    np.testing.assert_allclose(a, b, rtol=1e-14)


def test_loss_grows_with_m() -> None:
    ms = np.arange(2, 10)
    train, test = monolithic_losses(1000, 600, spectrum(ms))
    assert np.all(np.diff(test) > 0) and np.all(np.diff(train) > 0)


# --- the modular model ---
def _pooled(k: int, lam_b: np.ndarray) -> np.ndarray:
    return np.sort(np.repeat(lam_b / k, k))[::-1]


@pytest.mark.parametrize(("n", "p", "k"), [(1000, 400, 4), (1000, 402, 4), (300, 2000, 3), (500, 4001, 8)])
def test_modular_equals_monolithic_on_the_pooled_spectrum(n: int, p: int, k: int) -> None:
    module = spectrum(1, n_features=3000)
    lam_b = module.eigenvalues(np.arange(1, 3001))
    got = modular_losses(n, p, k, spectrum=module)
    want = monolithic_losses(n, p, ArraySpectrum(_pooled(k, lam_b)))
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_modular_losses_are_free_of_m_where_monolithic_grow() -> None:
    ms = np.arange(2, 10)
    n_mod = sample_complexity(0.5, ms, k=4, b=1)
    assert np.all(n_mod == n_mod[0]) and np.isfinite(n_mod[0])
    n_mono = sample_complexity(0.5, ms[:3], family="power")
    assert np.all(np.diff(n_mono) > 0)
    _, test = modular_losses(1000, [200, 5000], k=4, b=1)
    _, test_mono = monolithic_losses(1000, [200, 5000], spectrum(ms[:, None]))
    assert np.all(test_mono[-1] > test)


def test_modular_with_one_module_is_monolithic() -> None:
    a = modular_losses([100, 1000], [50, 3000], k=1, b=3)
    b = monolithic_losses([100, 1000], [50, 3000], spectrum(3))
    np.testing.assert_allclose(a, b, rtol=1e-12)


# --- sample complexity ---
def test_sample_complexity_at_p_matches_a_dense_scan() -> None:
    spec = spectrum(4, "power")
    n = np.arange(1, 4000, dtype=float)
    for p, eps in [(10, 0.5), (10, 0.8), (100, 0.5), (1000, 0.5), (200, 0.4)]:
        _, test = monolithic_losses(n, p, spec)
        got = float(sample_complexity(eps, 4, p=p, family="power"))
        if not (test <= eps).any():  # T(p) >= eps: no n reaches it
            assert np.isinf(got) and unexplained_variance(p, spec) >= eps
            continue
        first = n[np.argmax(test <= eps)]  # smallest integer n reaching eps
        assert first - 1 < got <= first + 1e-6


def test_sample_complexity_is_reached_and_minimal_over_p() -> None:
    eps = 0.4
    n_star = float(sample_complexity(eps, 3, family="power"))
    p_grid = np.unique(np.rint(np.geomspace(1, 1e6, 400)))
    _, test_at = monolithic_losses(n_star * 1.01, p_grid, spectrum(3, "power"))
    assert test_at.min() <= eps  # reachable with 1% more samples at some p
    _, test_below = monolithic_losses(n_star * 0.97, p_grid, spectrum(3, "power"))
    assert test_below.min() > eps  # and not with 3% fewer at any p of a dense grid


def test_log_sample_complexity_is_linear_in_m_for_power() -> None:
    ms = np.arange(2, 10, dtype=float)
    for eps in [0.2, 0.3]:
        y = np.log(sample_complexity(eps, ms, family="power", s=1.0))
        slope, icpt = np.polyfit(ms, y, 1)
        r2 = 1 - np.sum((y - (slope * ms + icpt)) ** 2) / np.sum((y - y.mean()) ** 2)
        assert r2 > 0.999
        # n* ~ (c/eps)^(m/s) up to a prefactor that varies slowly with a = s/m
        assert slope == pytest.approx(np.log(1.15 / eps), rel=0.15)
    # the exp family grows faster than exponentially: log n* is convex in m
    y = np.log(sample_complexity(1.0, np.arange(2, 7.0)))
    assert np.all(np.diff(y, 2) > 0)


def test_threshold_at_total_variance_needs_no_samples() -> None:
    assert sample_complexity(1.15, [2, 9]).tolist() == [0.0, 0.0]
    assert sample_complexity(1.3, 3, k=4, noise=0.1) == 0.0
    assert sample_complexity(1.2, 3, noise=0.1) > 0


def test_unreachable_threshold_is_inf() -> None:
    assert np.isinf(sample_complexity(0.05, 3, noise=0.1))
    assert np.isinf(sample_complexity(0.5, 3, p=1))


# --- calibration ---
@pytest.mark.parametrize(
    ("family", "truth"), [("exp", {"c": 1.3, "omega": 1.8}), ("power", {"c": 0.9, "s": 0.7})]
)
def test_fit_recovers_known_constants(family: str, truth: dict) -> None:
    n, p, m = (a.ravel() for a in np.meshgrid([300, 1000, 3000, 10000], [30, 100, 20000], [2, 3, 5]))
    spec = spectrum(m, family, **truth)
    train, test = monolithic_losses(n, p, spec, noise=0.05)
    f = fit(n, p, m, test, train_loss=train, family=family)
    assert f.success and f.rmse_log < 1e-6
    assert f.c == pytest.approx(truth["c"], rel=1e-4)
    assert f.shape_param == pytest.approx(truth["omega" if family == "exp" else "s"], rel=1e-4)
    assert f.noise == pytest.approx(0.05, rel=1e-3)
    np.testing.assert_allclose(f.predict(n, p, m)[1], test, rtol=1e-5)


def test_fit_to_noisy_measurements() -> None:
    rng = np.random.default_rng(3)
    n, p, m = (a.ravel() for a in np.meshgrid([200, 1000, 5000], [20, 100, 10000], [2, 3, 4, 5]))
    _, test = monolithic_losses(n, p, spectrum(m, c=1.0, omega=2.2), noise=0.02)
    measured = test * np.exp(0.05 * rng.standard_normal(test.shape))
    f = fit(n, p, m, measured)
    assert f.rmse_log < 0.07
    assert f.c == pytest.approx(1.0, rel=0.1) and f.shape_param == pytest.approx(2.2, rel=0.1)


# --- shapes and broadcasting (property tests) ---
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


@settings(max_examples=40, deadline=None)
@given(
    st.data(),
    hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3),
)
def test_broadcasting_equals_pointwise(data, bshapes) -> None:
    (sn, sp, sm), out_shape = bshapes.input_shapes, bshapes.result_shape
    n = data.draw(hnp.arrays(np.float64, sn, elements=st.floats(20, 5e4)))
    p = data.draw(hnp.arrays(np.float64, sp, elements=st.floats(1, 1e5)))
    m = data.draw(hnp.arrays(np.float64, sm, elements=st.floats(1, 9)))
    train, test = monolithic_losses(n, p, spectrum(m))
    assert train.shape == out_shape and test.shape == out_shape and train.dtype == np.float64
    nb, pb, mb = np.broadcast_arrays(n, p, m)
    for idx in np.ndindex(out_shape):
        tr, te = monolithic_losses(nb[idx], pb[idx], spectrum(mb[idx]))
        np.testing.assert_allclose([train[idx], test[idx]], [tr, te], rtol=1e-9)
    T = unexplained_variance(pb, spectrum(mb))
    assert np.all(train >= 0) and np.all(train <= T + 1e-12) and np.all(test >= T * (1 - 1e-12))


@settings(max_examples=10, deadline=None)
@given(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=2, max_side=3))
def test_modular_and_complexity_shapes(bshapes) -> None:
    sn, sp, sk = bshapes.input_shapes
    n = np.full(sn, 500.0)
    p = np.full(sp, 2000.0)
    k = np.full(sk, 4.0)
    train, test = modular_losses(n, p, k)
    assert train.shape == test.shape == bshapes.result_shape
    assert sample_complexity(np.full(sn, 0.6), np.full(sp, 3.0), k=k).shape == bshapes.result_shape


# --- bad input ---
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: monolithic_losses(0, 10, spectrum(2)), "n"),
        (lambda: monolithic_losses(-5, 10, spectrum(2)), "n"),
        (lambda: monolithic_losses(100, 0, spectrum(2)), "p"),
        (lambda: monolithic_losses(100, 10, spectrum(2), noise=-1), "noise"),
        (lambda: spectrum(0), "m"),
        (lambda: spectrum(3, "gauss"), "family"),
        (lambda: spectrum(3, omega=0.5), "omega"),
        (lambda: spectrum(3, c=-1.0), "c"),
        (lambda: spectrum(3, n_features=-np.inf), "n_features"),
        (lambda: spectrum(3, n_features=0), "n_features"),
        (lambda: spectrum(3, n_features=2.5), "n_features"),
        (lambda: monolithic_losses(100, 10, [1.0, 2.0, 0.5]), "spectrum"),
        (lambda: monolithic_losses(100, 10, [1.0, -0.5]), "spectrum"),
        (lambda: sample_complexity(0.0, 3), "eps"),
        (lambda: sample_complexity(-1, 3), "eps"),
        (lambda: sample_complexity(0.5, 0.5), "m"),
        (lambda: modular_losses(100, 10, k=0), "k"),
        (lambda: modular_losses(100, 10, k=2, b=0), "b"),
        (lambda: sample_complexity(0.5, 3, k=2, b=0), "b"),
        (lambda: simulate(100, 10, spectrum(2), generator=-1), "generator"),
        (lambda: simulate(100, 10, spectrum(2), generator=None), "generator"),
    ],
)
def test_bad_input_names_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()


def test_n_features_must_be_a_number() -> None:
    with pytest.raises(TypeError, match="^n_features "):
        spectrum(3, n_features="1000")


def test_doctests() -> None:
    for mod in ["losses", "spectra", "complexity", "simulation", "calibration"]:
        result = doctest.testmod(importlib.import_module(f"modscale.theory.{mod}"))
        assert result.failed == 0 and result.attempted > 0, mod
