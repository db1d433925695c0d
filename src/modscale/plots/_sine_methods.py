"""Helpers for the figures that compare methods (or kernels) on the sine task: categories on the x axis.

A category's value is aggregated the way :mod:`modscale.plots.stats` aggregates curves: the metric of one
seed's runs is first averaged over every other config key that varies (fix one with ``where``), then the
mean and the sample standard deviation (ddof=1) are taken over seeds; non-finite values are dropped.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from modscale.results import Record


@dataclasses.dataclass(frozen=True)
class Cell:
    """Mean, SD (ddof=1; 0 for one seed) and the per-seed values of one metric in one category."""

    mean: float
    sd: float
    values: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.values.size)


def metric_value(record: Record, metric: str) -> float:
    v = record.metrics.get(metric)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        return math.nan
    return float(v)


def by_category(
    records: Sequence[Record],
    key: str,
    metric: str,
    *,
    where: Callable[[Record], bool] | None = None,
) -> dict[object, Cell]:
    """{value of config ``key``: :class:`Cell` of ``metric``}, in first-seen order of the values."""
    per: dict[object, dict[int, list[float]]] = {}
    for r in records:
        if where is not None and not where(r):
            continue
        v = metric_value(r, metric)
        per.setdefault(r.config.get(key), {}).setdefault(r.seed, []).append(v)
    out: dict[object, Cell] = {}
    for cat, seeds in per.items():
        vals = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in seeds.values()])
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        sd = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        out[cat] = Cell(float(vals.mean()), sd, vals)
    return out


def ordered(cells: dict[object, Cell], order: Sequence[object]) -> list[object]:
    """The categories of ``cells`` in ``order`` first, then any others in their own order."""
    return [c for c in order if c in cells] + [c for c in cells if c not in order]


def bars(ax, cats: Sequence[object], cells: dict[object, Cell], *, offset: float = 0.0, width: float = 0.8,
         color="C0", label: str = "", hatch: str | None = None, fill: bool = True) -> None:  # fmt: skip
    """Bars at x = index + offset: the mean over seeds, +-1 SD error bars, every seed as a dot."""
    xs = np.arange(len(cats)) + offset
    means = [cells[c].mean if c in cells else np.nan for c in cats]
    sds = [cells[c].sd if c in cells else 0.0 for c in cats]
    ax.bar(
        xs, means, width, yerr=sds, color=color if fill else "none", edgecolor=color, hatch=hatch,
        capsize=3, label=label or None, linewidth=1.2, error_kw={"elinewidth": 1, "ecolor": "0.25"},
    )  # fmt: skip
    for x, c in zip(xs, cats, strict=True):
        if c in cells:
            vals = cells[c].values
            jitter = np.linspace(-width / 4, width / 4, vals.size) if vals.size > 1 else np.zeros(1)
            ax.plot(x + jitter, vals, "o", color="0.15", markersize=2.5, zorder=4)


def varying(records: Sequence[Record], skip: Sequence[str] = ()) -> dict[str, list]:
    """Config keys (other than ``skip``) that take more than one value among ``records``, with the values."""
    out: dict[str, list] = {}
    for key in records[0].config if records else ():
        if key in skip:
            continue
        values = sorted({r.config.get(key) for r in records}, key=str)
        if len(values) > 1:
            out[key] = values
    return out


def fixed_phrase(records: Sequence[Record], keys: Sequence[str]) -> str:
    """'m=16, k=4, p=2000' for the keys that take one value, 'n in {500, 2000}' for those that vary."""
    parts = []
    for key in keys:
        values = sorted({r.config.get(key) for r in records}, key=str)
        if len(values) == 1:
            parts.append(f"{key}={values[0]}")
        elif values:
            parts.append(f"{key} in {{{', '.join(str(v) for v in values)}}}")
    return ", ".join(parts)


__all__ = ["Cell", "metric_value", "by_category", "ordered", "bars", "varying", "fixed_phrase"]
