"""Sample complexity from learning curves: where a loss crosses eps for good, and bisection on a log grid.

:func:`crossing` reads n*(eps) off a curve measured at several n (every eps from one curve): interpolated
between the two trainings that bracket the last crossing, and marked censored where the grid does not
bracket it. :func:`bisect_log_grid` is the older search for one eps per job (fewer trainings, a grid point as
answer).

n*(eps) is the smallest n on a grid whose loss is <= eps. A dense search trains at every grid point;
bisection first trains at the top of the grid (is eps reachable at all?), then halves the bracket of grid
indices: at most 1 + ceil(log2(G + 1)) trainings per job instead of G. All jobs of a chunk step together:
every round calls ``evaluate(jobs, n)`` once with the jobs still searching and the n each needs, so an
experiment trains them as one stacked model (each replica its own seed, its own n). Bisection returns the
dense answer whenever the loss falls with n along the grid; with noisy losses it returns *a* crossing, which
is why the history of every (n, loss) it saw is kept.

Example (the closed-form test loss of the monolithic model at p = 50)::

    grid = log_grid_n(60, 1e5, 33)
    f = lambda jobs, n: monolithic_losses(n, 50, spectrum(4))[1]
    found = bisect_log_grid(f, grid, threshold=1.3, n_jobs=1)
    found.n_star, found.trainings   # (array([191.]), array([6])): 6 trainings instead of 33
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from modscale.errors import InvalidValue

Evaluate = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Search:
    """Result per job: ``n_star`` (inf when even the largest n misses the threshold), trainings used, the
    (n, loss) pairs seen in order, and how many rounds (calls of ``evaluate``) the search took."""

    n_star: np.ndarray
    trainings: np.ndarray
    history: list[list[tuple[int, float]]]
    rounds: int


def log_grid_n(low: float, high: float, count: int) -> np.ndarray:
    """``count`` sample sizes spaced evenly in log from ``low`` to ``high``, rounded, duplicates dropped."""
    if not (1 <= low < high) or count < 2:
        raise InvalidValue(f"log grid needs 1 <= low < high and count >= 2, got {low}, {high}, {count}")
    return np.unique(np.round(np.geomspace(low, high, count)).astype(np.int64))


def _check(grid: np.ndarray, n_jobs: int) -> np.ndarray:
    grid = np.asarray(grid)
    if grid.ndim != 1 or len(grid) < 1 or np.any(np.diff(grid) <= 0):
        raise InvalidValue("grid must be a 1-D increasing array of sample sizes")
    if n_jobs < 1:
        raise InvalidValue(f"n_jobs must be >= 1, got {n_jobs}")
    return grid


def _call(evaluate: Evaluate, jobs: np.ndarray, n: np.ndarray) -> np.ndarray:
    losses = np.asarray(evaluate(jobs, n), dtype=float)
    if losses.shape != jobs.shape:
        raise InvalidValue(f"evaluate must return one loss per job: shape {jobs.shape}, got {losses.shape}")
    return losses


def bisect_log_grid(
    evaluate: Evaluate, grid: np.ndarray, threshold: float | np.ndarray, n_jobs: int
) -> Search:
    """n* for ``n_jobs`` jobs by bisection over ``grid`` (increasing sample sizes).

    ``evaluate(jobs, n)``: losses (J,) of jobs ``jobs`` (J,) trained on ``n`` (J,) samples. ``threshold``:
    one eps, or one per job. A NaN loss counts as above the threshold.
    """
    grid = _check(grid, n_jobs)
    eps = np.broadcast_to(np.asarray(threshold, dtype=float), (n_jobs,))
    history: list[list[tuple[int, float]]] = [[] for _ in range(n_jobs)]
    trainings = np.zeros(n_jobs, dtype=np.int64)
    lo = np.full(n_jobs, -1)  # index known (or assumed, at -1) to miss the threshold
    hi = np.full(n_jobs, len(grid) - 1)  # index known to reach it, once the top is checked
    n_star = np.full(n_jobs, np.inf)
    rounds = 0

    def run(jobs: np.ndarray, idx: np.ndarray) -> np.ndarray:
        nonlocal rounds
        rounds += 1
        losses = _call(evaluate, jobs, grid[idx])
        for j, i, loss in zip(jobs, idx, losses, strict=True):
            history[j].append((int(grid[i]), float(loss)))
        trainings[jobs] += 1
        return losses <= eps[jobs]  # NaN compares False: counts as a miss

    everyone = np.arange(n_jobs)
    reached = run(everyone, hi)
    active = everyone[reached]
    while len(active):
        active = active[hi[active] - lo[active] > 1]
        if not len(active):
            break
        mid = (lo[active] + hi[active]) // 2
        ok = run(active, mid)
        hi[active[ok]] = mid[ok]
        lo[active[~ok]] = mid[~ok]
    n_star[reached] = grid[hi[reached]]
    return Search(n_star, trainings, history, rounds)


def dense_grid(evaluate: Evaluate, grid: np.ndarray, threshold: float | np.ndarray, n_jobs: int) -> Search:
    """n* for ``n_jobs`` jobs by training at every grid point: the reference bisection is compared with.

    n* is the smallest grid n whose loss is <= threshold and stays so at every larger grid n (the last
    crossing), which is what bisection finds when the loss falls with n.
    """
    grid = _check(grid, n_jobs)
    eps = np.broadcast_to(np.asarray(threshold, dtype=float), (n_jobs,))
    jobs = np.arange(n_jobs)
    losses = np.stack([_call(evaluate, jobs, np.full(n_jobs, n)) for n in grid], axis=1)  # (J, G)
    ok = losses <= eps[:, None]
    tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok, axis=1), axis=1), axis=1)
    n_star = np.where(tail_ok.any(axis=1), grid[np.argmax(tail_ok, axis=1)], np.inf)
    history = [[(int(n), float(v)) for n, v in zip(grid, row, strict=True)] for row in losses]
    return Search(n_star.astype(float), np.full(n_jobs, len(grid)), history, len(grid))


CENSORED = ("none", "below", "above")


@dataclasses.dataclass(frozen=True)
class Crossing:
    """Where a loss curve crosses ``eps`` for good.

    - ``censored = "none"``: the loss is above eps at ``bracket[0]`` and at or below it at ``bracket[1]`` and
      every larger size measured; ``n_star`` is interpolated between the two (log loss linear in log n);
    - ``"below"``: every size measured reaches eps: n* <= ``n_star`` = the smallest size (an upper bound),
      ``bracket = (None, smallest size)``;
    - ``"above"``: the largest size measured misses eps: n* > ``n_star`` = the largest size (a lower
      bound), ``bracket = (largest size, None)``.
    """

    n_star: float
    bracket: tuple[int | None, int | None]
    censored: str

    def as_metrics(self) -> dict:
        """The metrics keys ``n_star``, ``n_star_bracket``, ``censored`` of a stored run."""
        return {"n_star": self.n_star, "n_star_bracket": list(self.bracket), "censored": self.censored}


def crossing(n: Sequence[int], loss: Sequence[float], eps: float) -> Crossing:
    """The last crossing of ``eps`` by losses ``loss`` measured at sizes ``n`` (any order; NaN = a miss).

    The last, not the first: n* is the size from which every larger size measured reaches eps, so a
    training that broke at a large n (its loss above eps again) moves n* past it instead of being
    ignored. Between the bracketing sizes (n_lo, L_lo > eps) and (n_hi, L_hi <= eps) the curve is taken as
    a power law, log L linear in log n (learning curves are, locally):

        log n* = log n_lo + (log L_lo - log eps) / (log L_lo - log L_hi) * (log n_hi - log n_lo)

    (n* = n_hi when L_hi = 0 exactly).

    >>> round(crossing([10, 100, 1000], [1.0, 0.1, 0.01], 0.05).n_star, 6)  # 10^(2 + log10 2)
    200.0
    """
    n = np.asarray(n, dtype=float)
    loss = np.asarray(loss, dtype=float)
    if n.ndim != 1 or n.shape != loss.shape or len(n) < 1:
        raise InvalidValue(f"n and loss must be 1-D of one length >= 1, got {n.shape} and {loss.shape}")
    if not np.isfinite(eps) or eps <= 0:
        raise InvalidValue(f"eps must be positive and finite, got {eps}")
    order = np.argsort(n, kind="stable")
    n, loss = n[order], loss[order]
    if np.any(np.diff(n) <= 0) or n[0] < 1:
        raise InvalidValue(f"sizes must be distinct and >= 1, got {n.tolist()}")
    miss = ~(loss <= eps)  # NaN counts as a miss
    if not miss.any():
        return Crossing(float(n[0]), (None, int(n[0])), "below")
    last = int(np.flatnonzero(miss)[-1])
    if last == len(n) - 1:
        return Crossing(float(n[-1]), (int(n[-1]), None), "above")
    n_lo, n_hi, l_lo, l_hi = n[last], n[last + 1], loss[last], loss[last + 1]
    if l_hi <= 0 or not np.isfinite(l_lo):
        return Crossing(float(n_hi), (int(n_lo), int(n_hi)), "none")
    t = (np.log(l_lo) - np.log(eps)) / (np.log(l_lo) - np.log(l_hi))  # in (0, 1]: l_lo > eps >= l_hi
    return Crossing(
        float(np.exp(np.log(n_lo) + t * (np.log(n_hi) - np.log(n_lo)))), (int(n_lo), int(n_hi)), "none"
    )


__all__ = ["Search", "log_grid_n", "bisect_log_grid", "dense_grid", "Crossing", "crossing", "CENSORED"]
