"""Which law does n*(m) follow? Censored medians and maximum-likelihood fits of log n* against m and log m.

A sample complexity read off a learning curve is a value or a bound (``censored`` = "above": n* > the value;
"below": n* <= it; :func:`modscale.experiments.crossing`). Nothing here drops a bound or treats it as a value:

- :func:`censored_median`: the median over seeds where it is determined (the middle order statistic is a
  value), else the bound it is known to exceed or stay under;
- :func:`fit_law`: log n* = a + g x with x = m (**exponential**: n* grows by a factor e^g per unit m) or
  x = log m (**power law**: n* ~ m^g), by maximum likelihood with Gaussian residuals of scale sigma, every
  censored point entering through its probability of lying beyond its bound (a Tobit model: Tobin 1958);
  a bootstrap over seeds gives the interval of the growth, and holding the largest m out says which law
  predicts it better (the held-out log-likelihood of its points under each law fitted to the others).

>>> pts = [Point(m, 10 * 2.0**m, "none", s) for m in (2, 4, 6) for s in range(3)]
>>> round(fit_law(pts, "exp").growth, 3)   # exactly 2x per unit m
2.0
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special
from threadpoolctl import threadpool_limits

LAWS = ("exp", "power")


@dataclasses.dataclass(frozen=True)
class Point:
    """One seed's n* at input dimension m: a value, or a bound (``censored`` "above" / "below")."""

    m: float
    n_star: float
    censored: str
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Median:
    """The median over seeds: ``value`` with ``kind`` "value", or a bound ("above": the median exceeds it,
    "below": it is at most that)."""

    value: float
    kind: str


def censored_median(points: Sequence[Point]) -> Median:
    """The median of n* over the given seeds, with bounds as bounds: "above" counts as +inf and "below" as
    0 for the ordering; the median is a value where its order statistic(s) are values, else the bound."""
    if not points:
        raise ValueError("no points")

    def rank(p: Point) -> float:
        return {"below": -math.inf, "above": math.inf}.get(p.censored, math.log(p.n_star))

    ranked = sorted(points, key=rank)
    k = len(ranked)
    middle = ranked[(k - 1) // 2 : k // 2 + 1]
    if all(p.censored == "none" for p in middle):
        return Median(float(math.exp(np.mean([math.log(p.n_star) for p in middle]))), "value")
    if any(p.censored == "above" for p in middle):
        return Median(float(max(p.n_star for p in middle if p.censored == "above")), "above")
    return Median(float(min(p.n_star for p in middle if p.censored == "below")), "below")


@dataclasses.dataclass(frozen=True)
class Fit:
    """log n* = intercept + slope x (x = m or log m), residual scale sigma; ``growth`` = e^slope (per unit m
    for "exp"; for "power" it is e^slope too, but read ``slope`` as the exponent); ``interval`` the 5-95%
    bootstrap interval of the growth (of the slope for "power"), ``loglik`` per point, ``heldout`` the mean
    log-likelihood of the largest m's points under the law fitted without them (None when too few)."""

    law: str
    intercept: float
    slope: float
    sigma: float
    loglik: float
    n_points: int
    n_censored: int
    interval: tuple[float, float] | None = None
    heldout: float | None = None

    @property
    def growth(self) -> float:
        return math.exp(self.slope)

    @property
    def determined(self) -> bool:
        """Whether values (not bounds) carry the fit: at most half the points censored."""
        return self.n_censored <= self.n_points / 2


def _x(m: np.ndarray, law: str) -> np.ndarray:
    return m if law == "exp" else np.log(m)


_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _negloglik(theta: np.ndarray, x, y, kind) -> tuple[float, np.ndarray]:
    """Minus the Tobit log-likelihood of (intercept a, slope g, log sigma) and its gradient: values enter
    through the normal density of z = (y - a - g x) / sigma, "above" through log P(Z > z) and "below"
    through log P(Z <= z). The gradient is analytic (the fits run thousands of times per figure)."""
    a, g, log_s = theta
    s = math.exp(log_s)
    z = (y - a - g * x) / s
    value, above, below = kind == 0, kind == 1, kind == -1
    log_pdf = -0.5 * z * z - _LOG_SQRT_2PI
    ll = np.where(value, log_pdf - log_s, 0.0)
    ll = ll + np.where(above, special.log_ndtr(-z), 0.0)  # above: log n* > y
    ll = ll + np.where(below, special.log_ndtr(z), 0.0)  # below: log n* <= y
    # d ll / d z per point: -z for values, -pdf/sf above (inverse Mills ratios), pdf/cdf below
    dz = np.where(value, -z, 0.0)
    dz = dz - np.where(above, np.exp(log_pdf - special.log_ndtr(-z)), 0.0)
    dz = dz + np.where(below, np.exp(log_pdf - special.log_ndtr(z)), 0.0)
    grad = np.array([-dz.sum() / s, -(dz * x).sum() / s, -(dz * z).sum() - value.sum()])
    return -float(ll.sum()), -grad


def _arrays(points: Sequence[Point]):
    m = np.array([p.m for p in points], dtype=float)
    y = np.log(np.array([p.n_star for p in points], dtype=float))
    kind = np.array([{"none": 0, "above": 1, "below": -1}[p.censored] for p in points])
    return m, y, kind


def _mle(points: Sequence[Point], law: str, start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    m, y, kind = _arrays(points)
    x = _x(m, law)
    if start is None:
        slope, intercept = np.polyfit(x, y, 1) if len(set(x)) > 1 else (0.0, float(y.mean()))
        resid = y - intercept - slope * x
        start = np.array([intercept, slope, math.log(max(float(resid.std()), 0.05))])
    # a floor on sigma: seeds that agree exactly (or only bounds) must not drive the likelihood to infinity
    bounds = [(None, None), (None, None), (math.log(0.02), math.log(20.0))]
    res = optimize.minimize(_negloglik, start, args=(x, y, kind), method="L-BFGS-B", jac=True, bounds=bounds)
    return res.x, -float(res.fun)


def fit_law(points: Sequence[Point], law: str = "exp", *, bootstrap: int = 200, seed: int = 0) -> Fit:
    """Fit log n* against m ("exp") or log m ("power") to ``points`` (several seeds per m), censored points
    as bounds; bootstrap resamples seeds (each seed's whole curve over m), ``bootstrap`` times. The same
    arguments give the same Fit (kept: a report asks for each fit twice, for its figure and its verdicts)."""
    if law not in LAWS:
        raise ValueError(f"law must be one of {LAWS}, got {law!r}")
    if len({p.m for p in points}) < 2:
        raise ValueError("a law needs points at two or more m")
    # one BLAS thread: scipy's L-BFGS-B calls BLAS on 3 parameters, and a thread pool's wake-ups cost 20x
    # the arithmetic (a report over docs/paper-scale: 7.5 s per which_law with the default pool, 0.33 s
    # with one thread, on a 2-core machine running another job)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_law(tuple(points), law, bootstrap, seed)


@functools.lru_cache(maxsize=512)
def _fit_law(points: tuple[Point, ...], law: str, bootstrap: int, seed: int) -> Fit:
    theta, ll = _mle(points, law)
    censored = sum(p.censored != "none" for p in points)
    interval = None
    seeds = sorted({p.seed for p in points})
    if bootstrap and len(seeds) > 1:
        rng = np.random.default_rng(seed)
        slopes = []
        for _ in range(bootstrap):
            pick = rng.choice(seeds, size=len(seeds), replace=True)
            sample = [p for s in pick for p in points if p.seed == s]
            if len({p.m for p in sample}) < 2:
                continue
            slopes.append(_mle(sample, law)[0][1])
        lo, hi = np.percentile(slopes, [5, 95])
        interval = (math.exp(lo), math.exp(hi)) if law == "exp" else (float(lo), float(hi))
    heldout = None
    top = max(p.m for p in points)
    rest = [p for p in points if p.m != top]
    if len({p.m for p in rest}) >= 2:
        (a, g, log_s), _ = _mle(rest, law)
        m, y, kind = _arrays([p for p in points if p.m == top])
        heldout = -_negloglik(np.array([a, g, log_s]), _x(m, law), y, kind)[0] / len(m)
    return Fit(
        law,
        float(theta[0]),
        float(theta[1]),
        math.exp(theta[2]),
        ll,
        len(points),
        censored,
        interval,
        heldout,
    )


def which_law(points: Sequence[Point], *, bootstrap: int = 200) -> tuple[Fit, Fit, str]:
    """Both fits and a sentence: the growth per unit m (exponential fit, with its interval) and which law
    predicts the largest m better from the others; where more than half the points are bounds, only what
    the bounds say."""
    exp_fit = fit_law(points, "exp", bootstrap=bootstrap)
    pow_fit = fit_law(points, "power", bootstrap=bootstrap)
    if not exp_fit.determined:
        above = [p for p in points if p.censored == "above"]
        said = f"undetermined: {exp_fit.n_censored} of {exp_fit.n_points} points are bounds"
        if above:
            where = ", ".join(f"{m:g}" for m in sorted({p.m for p in above}))
            said += f" (n* > {min(p.n_star for p in above):.3g} at m = {where})"
        return exp_fit, pow_fit, said
    growth = f"x{exp_fit.growth:.2f} per unit m"
    if exp_fit.interval:
        growth += f" (90%: {exp_fit.interval[0]:.2f}-{exp_fit.interval[1]:.2f})"
    law = f"n* ~ m^{pow_fit.slope:.2f}"
    if exp_fit.heldout is None or pow_fit.heldout is None:
        better = "too few m to tell the laws apart out of sample"
    elif exp_fit.heldout > pow_fit.heldout:
        better = (
            f"the exponential predicts the largest m better ({exp_fit.heldout:.2f} vs {pow_fit.heldout:.2f})"
        )
    else:
        better = (
            f"the power law predicts the largest m better ({pow_fit.heldout:.2f} vs {exp_fit.heldout:.2f})"
        )
    censored = f"{exp_fit.n_censored} of {exp_fit.n_points} points censored"
    return exp_fit, pow_fit, f"{growth}; power law {law}; {better}; {censored}"


__all__ = ["LAWS", "Point", "Median", "Fit", "censored_median", "fit_law", "which_law"]
