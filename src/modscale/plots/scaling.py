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


def _negloglik(theta: np.ndarray, x, y, kind, w=None) -> tuple[float, np.ndarray]:
    """Minus the Tobit log-likelihood of (intercept a, slope g, log sigma) and its gradient: values enter
    through the normal density of z = (y - a - g x) / sigma, "above" through log P(Z > z) and "below"
    through log P(Z <= z); ``w`` weighs each point (a bootstrap's count of its seed). The gradient is
    analytic (the fits run thousands of times per figure)."""
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
    if w is None:
        w = np.ones_like(z)
    wdz = w * dz
    grad = np.array([-wdz.sum() / s, -(wdz * x).sum() / s, -(wdz * z).sum() - (w * value).sum()])
    return -float((w * ll).sum()), -grad


_SIGMA = (0.02, 20.0)  # bounds on sigma: seeds that agree exactly (or only bounds) must not drive the
# likelihood to infinity
_NEWTON_STEPS = 60


def _tobit_terms(z: np.ndarray, kind: np.ndarray):
    """Per point: the Tobit log-likelihood at z (values less their log tau), its first and second
    derivative in z. Each is concave in z: -z^2/2, log P(Z > z) and log P(Z <= z)."""
    value, above = kind == 0, kind == 1
    log_pdf = -0.5 * z * z - _LOG_SQRT_2PI
    log_sf, log_cdf = special.log_ndtr(-z), special.log_ndtr(z)
    r = np.exp(log_pdf - log_sf)  # hazard phi / (1 - Phi): the "above" points' inverse Mills ratio
    q = np.exp(log_pdf - log_cdf)  # phi / Phi: the "below" points'
    ll = np.where(value, log_pdf, np.where(above, log_sf, log_cdf))
    d1 = np.where(value, -z, np.where(above, -r, q))
    d2 = np.where(value, -1.0, np.where(above, -r * (r - z), -q * (q + z)))
    return ll, d1, d2


def _mle_batch(x, y, kind, W: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (a, g, log sigma) for B weightings of one point set at once: W (B, P) weights,
    start (B, 3). Newton's method in Olsen's parameters (alpha, beta, tau) = (a, g, 1) / sigma, where
    z = tau y - alpha - beta x is linear and the Tobit log-likelihood is concave (Olsen 1978), with a
    backtracking line search and tau kept inside the bounds on sigma. Rows whose Newton decrement does not
    fall below tolerance are fitted again by L-BFGS-B. Returns theta (B, 3) and the log-likelihoods (B,)."""
    B = W.shape[0]
    V = np.stack([-np.ones_like(x), -x, y])  # (3, P): dz / d(alpha, beta, tau)
    nv = W @ (kind == 0).astype(float)  # (B,) weight of the values, each adding log tau
    lo, hi = 1.0 / _SIGMA[1], 1.0 / _SIGMA[0]
    tau = np.clip(np.exp(-start[:, 2]), lo, hi)
    th = np.stack([start[:, 0] * tau, start[:, 1] * tau, tau], axis=1)  # (B, 3)

    def evaluate(th):
        z = th[:, 2:3] * y - th[:, 0:1] - th[:, 1:2] * x  # (B, P)
        ll, d1, d2 = _tobit_terms(z, kind)
        return (W * ll).sum(1) + nv * np.log(th[:, 2]), d1, d2

    f, d1, d2 = evaluate(th)
    converged = np.zeros(B, bool)
    active = np.ones(B, bool)  # neither converged nor stuck in the line search
    for _ in range(_NEWTON_STEPS):
        g = (W * d1) @ V.T  # (B, 3)
        g[:, 2] += nv / th[:, 2]
        H = np.einsum("bp,kp,lp->bkl", W * d2, V, V)  # (B, 3, 3), negative definite
        H[:, 2, 2] -= nv / th[:, 2] ** 2
        # tau held where it sits on a bound and the ascent points outward
        hold = ((th[:, 2] <= lo) & (g[:, 2] < 0)) | ((th[:, 2] >= hi) & (g[:, 2] > 0))
        g[hold, 2] = 0.0
        H[hold, 2, :] = H[hold, :, 2] = 0.0
        H[hold, 2, 2] = -1.0
        H -= 1e-12 * (1.0 + np.abs(H).max(axis=(1, 2)))[:, None, None] * np.eye(3)
        step = np.linalg.solve(H, -g[..., None])[..., 0]  # (B, 3), ascent
        decrement = (g * step).sum(1)  # Newton decrement squared: the predicted gain is half of it
        converged |= active & (decrement <= 1e-18 * (1.0 + np.abs(f)))
        active &= ~converged
        if not active.any():
            break
        t = np.where(active, 1.0, 0.0)
        for _ in range(40):  # halve each row's step until its likelihood does not fall
            cand = th + t[:, None] * step
            cand[:, 2] = np.clip(cand[:, 2], lo, hi)
            fc, c1, c2 = evaluate(cand)
            ok = (fc >= f - 1e-12 * np.abs(f)) | ~active
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        take = active & ok
        th[take], f[take], d1[take], d2[take] = cand[take], fc[take], c1[take], c2[take]
        active &= ok  # a row whose step found no better likelihood in 40 halvings is stuck
    theta = np.stack([th[:, 0] / th[:, 2], th[:, 1] / th[:, 2], -np.log(th[:, 2])], axis=1)
    for i in np.flatnonzero(~converged):  # stuck, or still moving after the last step
        theta[i], f[i] = _mle_lbfgs(x, y, kind, W[i], theta[i])
    return theta, f


def _arrays(points: Sequence[Point]):
    m = np.array([p.m for p in points], dtype=float)
    y = np.log(np.array([p.n_star for p in points], dtype=float))
    kind = np.array([{"none": 0, "above": 1, "below": -1}[p.censored] for p in points])
    return m, y, kind


def _start(x, y) -> np.ndarray:
    """(a, g, log sigma) of least squares on the points' values and bounds alike: where Newton starts."""
    slope, intercept = np.polyfit(x, y, 1) if len(set(x)) > 1 else (0.0, float(y.mean()))
    resid = y - intercept - slope * x
    return np.array([intercept, slope, math.log(max(float(resid.std()), 0.05))])


def _mle_lbfgs(x, y, kind, w, start) -> tuple[np.ndarray, float]:
    bounds = [(None, None), (None, None), (math.log(_SIGMA[0]), math.log(_SIGMA[1]))]
    res = optimize.minimize(
        _negloglik, start, args=(x, y, kind, w), method="L-BFGS-B", jac=True, bounds=bounds
    )
    return res.x, -float(res.fun)


def _mle(m, y, kind, law: str) -> tuple[np.ndarray, float]:
    """The maximum-likelihood (a, g, log sigma) of the points (m, log n*, kind) and its log-likelihood."""
    x = _x(m, law)
    theta, ll = _mle_batch(x, y, kind, np.ones((1, len(x))), _start(x, y)[None])
    return theta[0], float(ll[0])


def fit_law(points: Sequence[Point], law: str = "exp", *, bootstrap: int = 200, seed: int = 0) -> Fit:
    """Fit log n* against m ("exp") or log m ("power") to ``points`` (several seeds per m), censored points
    as bounds; bootstrap resamples seeds (each seed's whole curve over m), ``bootstrap`` times. The same
    arguments give the same Fit (kept: a report asks for each fit twice, for its figure and its verdicts)."""
    if law not in LAWS:
        raise ValueError(f"law must be one of {LAWS}, got {law!r}")
    if len({p.m for p in points}) < 2:
        raise ValueError("a law needs points at two or more m")
    # one BLAS thread: the fits are many small problems, and a thread pool's wake-ups cost more than the
    # arithmetic (a report over docs/paper-scale: 7.5 s per which_law with the default pool, 0.33 s with
    # one thread, on a 2-core machine running another job)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_law(tuple(sorted(points, key=_order)), law, bootstrap, seed)


def _order(p: Point) -> tuple:
    """Points in a fixed order, so the cache (and the bootstrap's draws) do not depend on the caller's."""
    return (p.m, p.seed, p.n_star, p.censored)


@functools.lru_cache(maxsize=512)
def _fit_law(points: tuple[Point, ...], law: str, bootstrap: int, seed: int) -> Fit:
    m, y, kind = _arrays(points)
    theta, ll = _mle(m, y, kind, law)
    censored = int((kind != 0).sum())
    interval = None
    seeds = sorted({p.seed for p in points})
    if bootstrap and len(seeds) > 1:
        # a resample of seeds is a count per seed, hence a weight per point: the same likelihood as the
        # resampled points listed out; all draws are fitted together, started at the full fit's optimum
        where = {s: i for i, s in enumerate(seeds)}
        of_seed = np.array([where[p.seed] for p in points])  # (P,) seed index of each point
        rng = np.random.default_rng(seed)
        counts = np.stack(
            [
                np.bincount(rng.choice(len(seeds), size=len(seeds)), minlength=len(seeds))
                for _ in range(bootstrap)
            ]
        )  # (bootstrap, seeds)
        W = counts[:, of_seed].astype(float)  # (bootstrap, P)
        W = W[[len(np.unique(m[w > 0])) >= 2 for w in W]]  # a law needs two m
        slopes = _mle_batch(_x(m, law), y, kind, W, np.broadcast_to(theta, (len(W), 3)))[0][:, 1]
        lo, hi = np.percentile(slopes, [5, 95])
        interval = (math.exp(lo), math.exp(hi)) if law == "exp" else (float(lo), float(hi))
    heldout = None
    top = m.max()
    rest = m != top
    if len(np.unique(m[rest])) >= 2:
        (a, g, log_s), _ = _mle(m[rest], y[rest], kind[rest], law)
        heldout = -_negloglik(np.array([a, g, log_s]), _x(m[~rest], law), y[~rest], kind[~rest])[0] / int(
            (~rest).sum()
        )
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
