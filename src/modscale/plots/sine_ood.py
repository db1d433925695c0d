"""Combinatorial out-of-distribution split on the sine task: in- vs out-of-distribution loss per method.

Records: ``sine_ood`` (config keys ``method``, ``k``, ``n``; metrics ``test_id``, ``test_ood``,
``ood_over_id``). Left: in-distribution (even region, solid) and out-of-distribution (odd region, dashed) test
MSE vs n per method, in units of Var y = 1 over all x; right: their ratio per seed, geometric mean and
multiplicative +-1 SD band over seeds (ratios of small losses spread widely); one row of panels per number
of modules k. A row with a single n has no n axis to draw along: its methods stand side by side (filled:
in distribution, open: OOD; the seeds as small dots beside each mean +- SD). The paper's OOD numbers are
Compositional CIFAR-10 accuracies (project page), not this task's, so nothing is overlaid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots._sine_methods import fixed_phrase, varying
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import curves, draw
from modscale.results import Record

EXPERIMENT = "sine_ood"
COLORS = {"monolithic": "C3", "modular-random": "C0", "modular-kernel": "C1", "modular-oracle": "C2"}


@figure("sine_ood", experiments=(EXPERIMENT,), title="Sine task: combinatorial out-of-distribution split")
def sine_ood(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    ks = sorted({r.config.get("k") for r in rows}, key=str)
    fig, axes = new_figure(len(ks), 2, width=5.0, height=3.8)
    seeds: list[int] = []
    comparisons: list[Comparison] = []
    for row, k in enumerate(ks):
        ax, ax_ratio = axes[2 * row], axes[2 * row + 1]
        mine = [r for r in rows if r.config.get("k") == k]
        id_, ood, ratio = (
            curves(mine, "n", metric, by=("method",), log=(metric == "ood_over_id"))
            for metric in ("test_id", "test_ood", "ood_over_id")
        )
        order = [m for m in COLORS if (m,) in id_] + sorted(key[0] for key in id_ if key[0] not in COLORS)
        single_n = len({r.config.get("n") for r in mine}) == 1
        if single_n:
            _side_by_side(ax, ax_ratio, mine, order)
        for method in order if not single_n else ():
            color = COLORS.get(method, "C4")
            draw(ax, id_[(method,)], color=color, label=f"{method}, in distribution")
            if (method,) in ood:
                draw(ax, ood[(method,)], color=color, linestyle="--", band=False, label=f"{method}, OOD")
            if (method,) in ratio:
                r = ratio[(method,)]
                draw(ax_ratio, r, color=color, label=method)
                ax_ratio.plot(r.x, r.mean, "o", color=color, markersize=4)
        for method in order:
            seeds.extend(id_[(method,)].n_seeds.tolist())
            for name, found in (
                ("in-distribution MSE", id_),
                ("OOD MSE", ood),
                ("OOD / in-distribution MSE (geometric mean; spread: SD of ln)", ratio),
            ):
                c = found.get((method,))
                for x, mean, sd, n in zip(c.x, c.mean, c.sd, c.n_seeds, strict=True) if c else ():
                    comparisons.append(
                        Comparison(f"{name}, {method}", f"k={k}, n={x:g}", float(mean), float(sd), int(n))
                    )
        for axis in (ax, ax_ratio):
            if single_n:
                axis.set_title(f"k = {k} modules, n = {mine[0].config.get('n')} (even region)", fontsize=9)
                continue
            axis.set_xscale("log")
            axis.set_xlabel("training samples n (even region)")
            axis.set_title(f"k = {k} modules", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylabel("test MSE (Var y = 1 over all x)")
        ax_ratio.set_yscale("log")
        ax_ratio.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
        ax_ratio.set_ylabel("OOD MSE / in-distribution MSE")
        if row == 0 and not single_n:
            ax.legend(fontsize=6.5)
            ax_ratio.legend(fontsize=7)
    others = varying(rows, skip=("method", "n", "k"))
    how = (
        "solid vs dashed"
        if len({r.config.get("n") for r in rows}) > 1
        else "filled vs open markers, seeds as small dots"
    )
    averaged = f" Averaged within a seed over {', '.join(others)}." if others else ""
    fixed = fixed_phrase(rows, ("m", "b", "p"))
    caption = (
        f"Trained on the even region (an even number of modules with a positive first coordinate of U_i x), "
        f"tested on fresh even-region samples and on the odd region, whose module combinations were "
        f"never seen ({how}); {fixed}, equal parameter count; one row per number of modules k. MSE against "
        f"the noiseless target, whose variance over all x is 1 (the regions' own variances differ). Mean "
        f"over {seeds_phrase(seeds)} (band +-1 SD); the ratio is taken per seed, geometric mean and "
        f"multiplicative band.{averaged} The paper's OOD numbers are for Compositional "
        "CIFAR-10, not this task."
    )
    return FigureOutput("sine_ood", fig, caption, comparisons)


def _per_seed(rows: Sequence[Record], method: str, metric: str) -> np.ndarray:
    """One value per seed (averaged within a seed over any other varying key)."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        if r.config.get("method") == method and metric in r.metrics:
            by_seed.setdefault(r.seed, []).append(float(r.metrics[metric]))
    return np.array([np.mean(v) for _, v in sorted(by_seed.items())])


def _side_by_side(ax, ax_ratio, rows: Sequence[Record], order: Sequence[str]) -> None:
    """Methods along x at a single n: mean +- SD of the MSEs (in distribution filled, OOD open) and the
    geometric mean of the per-seed ratio with its multiplicative SD, each seed a small dot beside it."""
    xs = np.arange(len(order), dtype=float)
    for x, method in zip(xs, order, strict=True):
        color = COLORS.get(method, "C4")
        for metric, dx, face in (("test_id", -0.12, color), ("test_ood", 0.12, "white")):
            v = _per_seed(rows, method, metric)
            if v.size:
                ax.errorbar(x + dx, v.mean(), yerr=v.std(ddof=1) if v.size > 1 else 0.0, fmt="o", color=color,
                            markerfacecolor=face, capsize=3, markersize=6)  # fmt: skip
                ax.plot(np.full(v.size, x + 2.2 * dx), v, ".", color=color, markersize=3, alpha=0.6)
        ratio = _per_seed(rows, method, "ood_over_id")
        if ratio.size:
            logs = np.log(ratio)
            sd = logs.std(ddof=1) if ratio.size > 1 else 0.0
            mean = np.exp(logs.mean())
            band = [[mean - mean * np.exp(-sd)], [mean * np.exp(sd) - mean]]
            ax_ratio.errorbar(x, mean, yerr=band, fmt="o", color=color, capsize=3, markersize=6)
            ax_ratio.plot(np.full(ratio.size, x + 0.2), ratio, ".", color=color, markersize=3, alpha=0.6)
    for axis in (ax, ax_ratio):
        axis.set_xticks(xs, order, rotation=15, fontsize=8)
        axis.set_xlim(-0.6, len(order) - 0.4)
    ax.plot([], [], "o", color="0.3", label="in distribution")
    ax.plot([], [], "o", color="0.3", markerfacecolor="white", label="OOD (unseen combinations)")
    ax.legend(fontsize=7)


__all__ = ["sine_ood"]
