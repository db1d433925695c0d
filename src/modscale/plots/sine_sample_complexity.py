"""Samples needed vs m on the sine task, per training regime, threshold and method (the paper's
compare_method1_sample_complexity figure, and which law n*(m) follows).

Records: ``sine_sample_complexity`` (metrics ``n_star``, ``censored``; config ``regime``, ``method``, ``m``,
``eps``). One panel per (regime, eps): every seed's n* as a marker (filled: a value; open with an arrow: a
bound, n* above the largest n or below the smallest n of its curve), the median over seeds as a line (dashed
where the median itself is only a bound: :func:`~modscale.plots.scaling.censored_median`), and the
exponential fit log n* = a + g m with bounds as bounds (:func:`~modscale.plots.scaling.fit_law`) as a thin
dotted line where values, not bounds, carry it. The paper's means (its threshold 1.5 on its own loss scale)
are overlaid in the rich regime's panels as open squares: compare ordering and growth, not levels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection

from modscale import paper
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.plots.scaling import Point, censored_median, fit_law, which_law
from modscale.results import Record

EXPERIMENT = "sine_sample_complexity"
PAPER_FIGURE = "compare_method1_sample_complexity1.5"
ORDER = ("monolithic", "modular-random", "modular-kernel", "modular-none", "ensemble", "modular-oracle")
REGIME_ORDER = ("rich", "random-features", "lazy")
COLORS = {
    "monolithic": "C0",
    "modular-random": "C1",
    "modular-kernel": "C2",
    "modular-none": "C4",
    "ensemble": "C5",
    "modular-oracle": "0.45",
}
LABELS = {"modular-none": "modular-none (MoE-like)", "modular-oracle": "modular-oracle (true U)"}


def points(rows: Sequence[Record]) -> dict[tuple, list[Point]]:
    """n* as :class:`~modscale.plots.scaling.Point` per (regime, method, eps); records stored before n* had
    a censoring flag count an infinite n* as a bound above their grid's top."""
    out: dict[tuple, list[Point]] = {}
    for r in rows:
        c, mt = r.config, r.metrics
        n_star, censored = float(mt.get("n_star", math.nan)), mt.get("censored")
        if censored is None:  # an old record: inf meant "never reached"
            censored = "above" if not math.isfinite(n_star) else "none"
            if censored == "above":
                n_star = float(c.get("n_max", math.nan))
        if not math.isfinite(n_star) or n_star <= 0:
            continue
        key = (c.get("regime", "rich"), c["method"], float(c["eps"]))
        out.setdefault(key, []).append(Point(float(c["m"]), n_star, censored, r.seed))
    return out


def _draw_points(ax, pts: list[Point], color: str, dx: float) -> None:
    """Every seed's n*: values as dots; bounds as open triangles with a shaft toward where n* lies (x1.9).
    One artist per kind of mark, not one per point (a store of 10^5 runs has tens of thousands); the
    axes take in the arrow heads, so a bound at the top of the grid shows where n* lies."""
    x = np.array([p.m + dx for p in pts])
    y = np.array([p.n_star for p in pts])
    kind = np.array([p.censored for p in pts])
    value = kind == "none"
    ax.plot(x[value], y[value], "o", color=color, ms=3.5, alpha=0.75, linestyle="none")
    for side, marker, head, factor in (("above", "^", 6, 1.9), ("below", "v", 7, 1 / 1.9)):
        at = kind == side
        if not at.any():
            continue
        ax.plot(x[at], y[at], marker, color=color, ms=5, markerfacecolor="none", alpha=0.9, linestyle="none")
        tips = y[at] * factor
        shafts = np.stack([np.stack([x[at], y[at]], 1), np.stack([x[at], tips], 1)], 1)  # (points, 2, 2)
        ax.add_collection(LineCollection(shafts, colors=color, linewidths=0.8), autolim=True)
        ax.plot(x[at], tips, marker=head, color=color, ms=5, linestyle="none")


@figure(
    "sine_sample_complexity",
    experiments=(EXPERIMENT,),
    title="Samples needed vs m, sine task (networks, per training regime)",
    paper="compare_method1_sample_complexity1.5_edited.png",
)
def sine_sample_complexity(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    pts = points(rows)
    regimes = [g for g in REGIME_ORDER if any(key[0] == g for key in pts)]
    all_eps = sorted({key[2] for key in pts}, reverse=True)
    fig, axes = new_figure(len(regimes), len(all_eps), width=3.3, height=3.0)
    methods = [m for m in ORDER if any(key[1] == m for key in pts)]
    seeds: list[int] = []
    for i, regime in enumerate(regimes):
        for j, eps in enumerate(all_eps):
            ax = axes[i * len(all_eps) + j]
            for k, method in enumerate(methods):
                ps = pts.get((regime, method, eps))
                if not ps:
                    continue
                color = COLORS[method]
                dx = (k - (len(methods) - 1) / 2) * 0.08
                _draw_points(ax, ps, color, dx)
                ms = sorted({p.m for p in ps})
                med = [censored_median([p for p in ps if p.m == m]) for m in ms]
                ax.plot([], [], "-", color=color, lw=1.6, label=LABELS.get(method, method))
                if len(ms) == 1:
                    ax.plot(ms, [med[0].value], "_", color=color, ms=10)
                for a, b, ma, mb in zip(ms[:-1], ms[1:], med[:-1], med[1:], strict=True):
                    bound = ma.kind != "value" or mb.kind != "value"  # a segment that ends on a bound
                    ax.plot([a, b], [ma.value, mb.value], "--" if bound else "-", color=color, lw=1.6)
                seeds.extend(len({p.seed for p in ps if p.m == m}) for m in ms)
                if len(ms) >= 2:
                    fit = fit_law(ps, "exp", bootstrap=0)
                    if fit.determined:
                        xs = np.linspace(ms[0], ms[-1], 20)
                        ax.plot(xs, np.exp(fit.intercept + fit.slope * xs), ":", color=color, lw=1.0)
            if regime == "rich":
                for series in paper.series(PAPER_FIGURE, "samples needed vs m"):
                    if series.label in methods:
                        overlay_paper(
                            ax, series, COLORS[series.label], marker="s", label=f"paper, {series.label}"
                        )
            ax.set_yscale("log")
            ax.set_title(f"{regime}, eps = {eps:g}", fontsize=9)
            if i == len(regimes) - 1:
                ax.set_xlabel("input dimension m")
            if j == 0:
                ax.set_ylabel("samples needed n*")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=7)
    comparisons = _comparisons(pts)
    grids = sorted({(r.config.get("n_min"), r.config.get("n_max")) for r in rows})
    ks = sorted({(r.config.get("k"), r.config.get("p")) for r in rows})
    eps_text = ", ".join(f"{e:g}" for e in all_eps)
    k_text = ", ".join(sorted({str(k) for k, _ in ks}))
    p_text = ", ".join(sorted({str(p) for _, p in ks}))
    caption = (
        f"Samples needed n* to reach test loss <= eps of Var y (eps = {eps_text}; "
        f"the paper's threshold is 1.5 on {paper.OWN_SCALE}), read off one learning curve per seed (n on a "
        f"log grid from {min(g[0] for g in grids)} to {max(g[1] for g in grids)}; validation data counted in "
        "n), interpolated between the trainings that bracket the crossing. Tasks with k = "
        f"{k_text} modules, p = {p_text} "
        f"trained parameters (random features: p features). Markers: seeds ({seeds_phrase(seeds)}); open "
        "triangles with arrows: bounds (n* beyond the grid); line: median over seeds (dashed where it "
        "is only a bound); dotted: the exponential fit with bounds as bounds, where at most half the points "
        "are bounds. Open squares (rich): the paper's means at its own threshold."
    )
    return FigureOutput("sine_sample_complexity", fig, caption, comparisons)


def _comparisons(pts: dict[tuple, list[Point]]) -> list[Comparison]:
    out: list[Comparison] = []
    order = sorted(pts, key=lambda k: (REGIME_ORDER.index(k[0]), ORDER.index(k[1]), -k[2]))
    for regime, method, eps in order:
        ps = pts[(regime, method, eps)]
        published = paper.series(PAPER_FIGURE, "samples needed vs m", method) if regime == "rich" else []
        s = published[0] if published else None
        for m in sorted({p.m for p in ps}):
            cell = [p for p in ps if p.m == m]
            med = censored_median(cell)
            bounds = sum(p.censored != "none" for p in cell)
            note = {"value": "", "above": "median only known to exceed this", "below": "median at most this"}
            theirs = s.at(m) if s is not None else None
            said = [
                note[med.kind],
                f"{bounds} of {len(cell)} seeds are bounds" if bounds else "",
                "paper at threshold 1.5 on its own scale" if theirs is not None else "",
            ]
            out.append(
                Comparison(
                    f"n*, {regime}, {method} (eps={eps:g}; median over seeds)",
                    f"m={m:g}",
                    med.value,
                    None,
                    len(cell),
                    theirs,
                    "; ".join(x for x in said if x),
                )
            )
        if len({p.m for p in ps}) >= 2:
            exp_fit, _, said = which_law(ps, bootstrap=200)  # as the verdicts: one fit serves both
            out.append(
                Comparison(
                    f"growth of n* per unit m, {regime}, {method} (exponential fit, bounds as bounds)",
                    f"eps={eps:g}",
                    exp_fit.growth if exp_fit.determined else None,
                    None,
                    len({p.seed for p in ps}),
                    None,
                    said,
                )
            )
    return out
