"""A figure for any experiment that has no figure of its own: each numeric metric vs the main varying key.

The x axis is the numeric config key with the most distinct values among the records (log scale when it
spans more than a decade of positive values); every other key is averaged within a seed; the line is the
mean over seeds with a +-1 SD band. Up to six scalar metrics, one panel each. It makes sure every experiment
with results has a picture; an experiment that matters gets its own figure module.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from modscale.plots.figure import FigureOutput, new_figure, seeds_phrase
from modscale.plots.stats import curve, draw
from modscale.results import Record

MAX_PANELS = 6


def _x_key(records: Sequence[Record]) -> str | None:
    best, count = None, 1
    for key in records[0].config:
        values = {r.config.get(key) for r in records}
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if numeric and len(values) > count:
            best, count = key, len(values)
    return best


def _metrics(records: Sequence[Record]) -> list[str]:
    names: dict[str, None] = {}
    for r in records:
        for k, v in r.metrics.items():
            if isinstance(v, numbers.Real) and not isinstance(v, bool):
                names.setdefault(k)
    return list(names)[:MAX_PANELS]


def generic_figure(experiment: str, records: Sequence[Record]) -> FigureOutput:
    """Each scalar metric of ``records`` (one experiment) vs its main varying config key."""
    x = _x_key(records)
    metrics = _metrics(records)
    cols = min(3, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = new_figure(rows, cols, width=4.2, height=3.2)
    seeds: list[int] = []
    for ax, metric in zip(axes, metrics, strict=False):
        if x is None:
            values = [r.metrics[metric] for r in records if metric in r.metrics]
            ax.hist(np.asarray(values, dtype=float), bins=20, color="C0")
            ax.set_xlabel(metric)
            seeds.append(len({r.seed for r in records}))
            continue
        c = curve(records, x, metric)
        if c is None:
            continue
        seeds.extend(c.n_seeds.tolist())
        draw(ax, c, color="C0")
        ax.plot(c.x, c.mean, "o", color="C0", markersize=3)
        positive = c.x[c.x > 0]
        if len(positive) == len(c.x) and positive.max() / positive.min() > 10:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    over = f" vs {x}, averaged over the other config keys within a seed" if x else " (histogram over runs)"
    caption = (
        f"{experiment}: each metric{over}; mean over {seeds_phrase(seeds)}"
        f"{' (band: +-1 SD)' if max(seeds, default=1) > 1 else ''}. No paper figure is drawn for this "
        "experiment; this is the generic view."
    )
    return FigureOutput(experiment, fig, caption, [], (experiment,), experiment)


__all__ = ["generic_figure"]
