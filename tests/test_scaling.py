"""Censored medians and the exponential-vs-power-law fits of n*(m): second routes by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modscale.plots.scaling import Median, Point, censored_median, fit_law, which_law


def _simulate(law, g, *, seeds=20, ms=range(2, 11), sigma=0.3, cap=None, seed=0):
    """log n* = 2 + g x + N(0, sigma^2), x = m or log m; values above ``cap`` stored as the bound ``cap``."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(seeds):
        for m in ms:
            x = m if law == "exp" else math.log(m)
            n = math.exp(2 + g * x + sigma * rng.standard_normal())
            if cap is not None and n > cap:
                out.append(Point(m, cap, "above", s))
            else:
                out.append(Point(m, n, "none", s))
    return out


def test_exact_laws_are_recovered():
    exp_pts = [Point(m, 5 * 1.7**m, "none", s) for m in (2, 4, 6, 8) for s in range(2)]
    assert fit_law(exp_pts, "exp", bootstrap=0).growth == pytest.approx(1.7, rel=1e-4)
    pow_pts = [Point(m, 5 * m**2.5, "none", s) for m in (2, 4, 6, 8) for s in range(2)]
    assert fit_law(pow_pts, "power", bootstrap=0).slope == pytest.approx(2.5, rel=1e-4)


def test_censored_points_are_bounds_not_values():
    """Second route: the slope that generated the data. Treating the cap as a value flattens the curve; the
    likelihood with bounds recovers it."""
    pts = _simulate("exp", 0.5, cap=math.exp(5.5))
    assert sum(p.censored == "above" for p in pts) > 40  # a third of the points are bounds
    fit = fit_law(pts, "exp", bootstrap=50)
    naive = fit_law([Point(p.m, p.n_star, "none", p.seed) for p in pts], "exp", bootstrap=0)
    assert fit.slope == pytest.approx(0.5, abs=0.05) and naive.slope < 0.4
    assert fit.interval[0] < math.exp(0.5) < fit.interval[1]


@pytest.mark.parametrize(("law", "other"), [("exp", "power"), ("power", "exp")])
def test_the_law_that_made_the_data_predicts_the_largest_m_better(law, other):
    pts = _simulate(law, 0.45 if law == "exp" else 2.5, ms=range(2, 13), sigma=0.2)
    assert fit_law(pts, law, bootstrap=0).heldout > fit_law(pts, other, bootstrap=0).heldout


def test_censored_median():
    assert censored_median([Point(2, 10, "none"), Point(2, 1000, "none"), Point(2, 40, "none")]) == Median(
        40.0, "value"
    )
    two = censored_median([Point(2, 10, "none"), Point(2, 40, "none")])
    assert two.kind == "value" and two.value == pytest.approx(20.0)  # geometric midpoint of the middle pair
    assert censored_median(
        [Point(2, 10, "none"), Point(2, 4096, "above"), Point(2, 4096, "above")]
    ) == Median(4096.0, "above")
    assert censored_median([Point(2, 8, "below"), Point(2, 8, "below"), Point(2, 30, "none")]) == Median(
        8.0, "below"
    )
    with pytest.raises(ValueError):
        censored_median([])


def test_a_mostly_censored_law_is_undetermined():
    pts = [Point(m, 4096, "above", s) for m in (6, 9) for s in range(3)] + [
        Point(3, 500 * (s + 1), "none", s) for s in range(3)
    ]
    _, _, said = which_law(pts, bootstrap=10)
    assert said.startswith("undetermined: 6 of 9 points are bounds (n* > 4.1e+03 at m = 6, 9)")
    with pytest.raises(ValueError, match="two or more m"):
        fit_law([Point(3, 10, "none")], "exp")


def test_the_likelihood_gradient_matches_finite_differences():
    # the fits use the analytic gradient of the Tobit likelihood; a central difference is the second route
    from modscale.plots.scaling import _negloglik

    rng = np.random.default_rng(0)
    x = rng.uniform(2, 12, size=30)
    y = 1.0 + 0.4 * x + rng.normal(0, 0.5, size=30)
    kind = rng.choice([0, 1, -1], size=30)
    for theta in (np.array([0.5, 0.3, np.log(0.7)]), np.array([2.0, -0.1, np.log(3.0)])):
        _, grad = _negloglik(theta, x, y, kind)
        h = 1e-6
        numeric = [
            (_negloglik(theta + h * e, x, y, kind)[0] - _negloglik(theta - h * e, x, y, kind)[0]) / (2 * h)
            for e in np.eye(3)
        ]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_a_bootstrap_weight_is_the_point_listed_that_many_times():
    # the bootstrap weighs each point by its seed's count in the draw; listing the drawn points out (what a
    # resample is) must give the same likelihood and gradient
    from modscale.plots.scaling import _negloglik

    rng = np.random.default_rng(1)
    x = rng.uniform(2, 12, size=24)
    y = 1.0 + 0.4 * x + rng.normal(0, 0.5, size=24)
    kind = rng.choice([0, 1, -1], size=24)
    w = rng.integers(0, 4, size=24)
    theta = np.array([0.8, 0.35, np.log(0.6)])
    rep = np.repeat(np.arange(24), w)
    weighted = _negloglik(theta, x, y, kind, w.astype(float))
    listed = _negloglik(theta, x[rep], y[rep], kind[rep])
    assert weighted[0] == pytest.approx(listed[0], rel=1e-12)
    np.testing.assert_allclose(weighted[1], listed[1], rtol=1e-12)


def test_the_fit_does_not_depend_on_the_order_of_its_points():
    rng = np.random.default_rng(2)
    pts = [Point(m, 5 * 1.6**m * rng.lognormal(0, 0.3), "none", s) for m in (2, 4, 6, 8) for s in range(5)]
    a = fit_law(pts, "exp", bootstrap=30)
    b = fit_law(pts[::-1], "exp", bootstrap=30)
    assert a == b


def test_newton_reaches_the_likelihood_maximum_that_lbfgs_finds():
    # second route for the fits: scipy's L-BFGS-B on the (a, g, log sigma) likelihood from the same start;
    # Newton in Olsen's parameters must reach at least its log-likelihood, at the same optimum, weighted or
    # not, with sigma inside its bounds (the last case: points on a line, sigma at its floor)
    from modscale.plots.scaling import _mle_batch, _mle_lbfgs, _start

    rng = np.random.default_rng(3)
    for case in range(12):
        P = int(rng.integers(6, 60))
        x = rng.choice([2.0, 4.0, 6.0, 8.0, 10.0], size=P)
        noise = 0.0 if case == 11 else rng.uniform(0.05, 1.5)
        y = 1.0 + rng.uniform(-0.5, 0.8) * x + rng.normal(0, noise, size=P)
        kind = rng.choice([0, 0, 0, 1, -1], size=P) if case < 11 else np.zeros(P, int)
        W = rng.integers(0, 3, size=(3, P)).astype(float)
        W[0] = 1.0
        start = np.broadcast_to(_start(x, y), (3, 3))
        theta, ll = _mle_batch(x, y, kind, W, start)
        for i in range(3):
            ref, ref_ll = _mle_lbfgs(x, y, kind, W[i], start[i])
            assert ll[i] >= ref_ll - 1e-6 * (1 + abs(ref_ll))
            np.testing.assert_allclose(theta[i], ref, atol=2e-3)
            assert np.log(0.02) - 1e-12 <= theta[i, 2] <= np.log(20.0) + 1e-12


def test_rows_newton_does_not_finish_go_to_lbfgs(monkeypatch):
    # with no Newton steps allowed no row converges, so every row must come back from the L-BFGS-B fallback
    # at the same optimum as Newton's
    import modscale.plots.scaling as scaling

    rng = np.random.default_rng(4)
    x = rng.choice([2.0, 4.0, 6.0, 8.0], size=40)
    y = 0.5 + 0.3 * x + rng.normal(0, 0.4, size=40)
    kind = rng.choice([0, 0, 0, 1, -1], size=40)
    W = rng.integers(0, 3, size=(4, 40)).astype(float)
    start = np.broadcast_to(scaling._start(x, y), (4, 3))
    newton, ll = scaling._mle_batch(x, y, kind, W, start)
    monkeypatch.setattr(scaling, "_NEWTON_STEPS", 0)
    fallback, ll_fallback = scaling._mle_batch(x, y, kind, W, start)
    np.testing.assert_allclose(fallback, newton, atol=2e-3)
    np.testing.assert_allclose(ll_fallback, ll, rtol=1e-6)
    assert not np.array_equal(fallback, newton)  # the fallback ran: L-BFGS-B stops short of Newton's digits
