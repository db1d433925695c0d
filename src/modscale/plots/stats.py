"""Mean and spread over seeds, the one aggregation every figure and table uses.

For each x (and each value of the ``by`` keys), the metric of the runs of one seed is first averaged over
every other config key that varies among the selected records (the paper's "averaged" curves average over p
or m; fix a key with ``where`` to keep it out), then the mean and the sample standard deviation (ddof=1; 0
for one seed) are taken over seeds. ``log=True`` does both in log space (geometric mean; the band is the
mean times/divided by exp(SD)), for quantities such as samples needed that spread over orders of magnitude.
A non-finite value (the closed form's +inf at the threshold, an unreachable n*) makes that point NaN, so it
is drawn as a gap rather than dragging an average.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from modscale.results import Record


@dataclasses.dataclass(frozen=True)
class Curve:
    """Mean and spread of a metric at each x: arrays of equal length, sorted by x."""

    x: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n_seeds: np.ndarray

    def at(self, x: float) -> tuple[float, float, int] | None:
        """(mean, sd, seeds) at ``x``, None when the curve has no such point."""
        hit = np.nonzero(np.isclose(self.x, x))[0]
        if not len(hit):
            return None
        i = hit[0]
        return float(self.mean[i]), float(self.sd[i]), int(self.n_seeds[i])


Where = Mapping[str, Any] | Callable[[Record], bool] | None


def select(records: Sequence[Record], where: Where = None) -> list[Record]:
    """Records whose config matches ``where`` (a {key: value} mapping or a predicate)."""
    if where is None:
        return list(records)
    if callable(where):
        return [r for r in records if where(r)]
    return [r for r in records if all(r.config.get(k) == v for k, v in where.items())]


def _value(record: Record, metric: str) -> float:
    v = record.metrics.get(metric)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return math.nan
    return float(v)


def curves(
    records: Sequence[Record],
    x: str,
    metric: str,
    *,
    where: Where = None,
    by: Sequence[str] = (),
    log: bool = False,
) -> dict[tuple, Curve]:
    """One :class:`Curve` of ``metric`` against config key ``x`` per value of the ``by`` keys."""
    cells: dict[tuple, dict[Any, dict[int, list[float]]]] = {}
    for r in select(records, where):
        if x not in r.config:
            continue
        key = tuple(r.config.get(k) for k in by)
        v = _value(r, metric)
        if log:
            v = math.log(v) if v > 0 and math.isfinite(v) else math.nan
        elif not math.isfinite(v):
            v = math.nan
        cells.setdefault(key, {}).setdefault(r.config[x], {}).setdefault(r.seed, []).append(v)
    out: dict[tuple, Curve] = {}
    for key, per_x in cells.items():
        xs = sorted(per_x)
        rows = []
        for xv in xs:
            per_seed = np.array([np.mean(vals) for vals in per_x[xv].values()])  # mean within each seed
            n = len(per_seed)
            mean = float(per_seed.mean())
            sd = float(per_seed.std(ddof=1)) if n > 1 else 0.0
            rows.append((mean, sd, n))
        mean, sd, n = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
        lo, hi = mean - sd, mean + sd
        if log:
            mean, lo, hi = np.exp(mean), np.exp(lo), np.exp(hi)
        out[key] = Curve(np.array(xs, dtype=float), mean, sd, lo, hi, n.astype(int))
    return out


def curve(records: Sequence[Record], x: str, metric: str, **kwargs: Any) -> Curve | None:
    """The single curve of :func:`curves` with no ``by`` keys (None when there are no records)."""
    found = curves(records, x, metric, **kwargs)
    return found.get(()) if found else None


def draw(
    ax,
    c: Curve,
    *,
    color: str,
    label: str = "",
    linestyle: str = "-",
    linewidth: float = 2.0,
    band: bool = True,
    alpha: float = 1.0,
) -> None:
    """The mean as a line and, when any point has more than one seed, the +-1 SD band.

    A curve of one point (a sweep run at a single x) is a marker with its spread as an error bar instead:
    a line and a band of one point draw nothing. A dashed curve gets an open marker.
    """
    if len(c.x) == 1:
        spread = band and bool((c.n_seeds > 1).any())
        yerr = [c.mean - c.lo, c.hi - c.mean] if spread else None
        face = "none" if linestyle != "-" else color
        ax.errorbar(
            c.x, c.mean, yerr=yerr, fmt="o", color=color, markerfacecolor=face, markersize=5, capsize=3,
            label=label or None, alpha=alpha,
        )  # fmt: skip
        return
    ax.plot(
        c.x, c.mean, linestyle=linestyle, color=color, linewidth=linewidth, label=label or None, alpha=alpha
    )
    if band and (c.n_seeds > 1).any():
        ax.fill_between(c.x, c.lo, c.hi, color=color, alpha=0.18 * alpha, linewidth=0)


__all__ = ["Curve", "select", "curves", "curve", "draw"]
