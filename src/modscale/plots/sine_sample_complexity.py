"""Samples needed vs m on the sine task, per method (the paper's compare_method1_sample_complexity figure).

Records: ``sine_sample_complexity`` (metrics ``n_star``, ``flops``; config ``method``, ``m``, ``eps``). Left:
n* vs m, geometric mean over seeds with a multiplicative +-1 SD band (n* spreads over orders of magnitude);
the paper's means for its three methods are overlaid as open markers of the same colour. Its threshold is
1.5 on its own loss scale, ours eps of the target variance, so levels differ: compare the ordering of the
methods and their growth with m. Right (equal compute): the FLOPs of the training that first reaches eps
(at n*, the kernel stage included), the compute each method needs for the same test loss.

A seed that never reaches eps on the grid has n* = inf: it is counted in the caption, and a point where any
seed failed is left out (a gap), never averaged as a finite number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from modscale import paper
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.plots.stats import Curve, curves, draw
from modscale.results import Record

EXPERIMENT = "sine_sample_complexity"
PAPER_FIGURE = "compare_method1_sample_complexity1.5"
ORDER = ("monolithic", "modular-random", "modular-kernel", "modular-none", "ensemble", "modular-oracle")
COLORS = {
    "monolithic": "C0",
    "modular-random": "C1",
    "modular-kernel": "C2",
    "modular-none": "C4",
    "ensemble": "C5",
    "modular-oracle": "0.45",
}
STYLES = ("-", "--", ":", "-.")  # one per threshold eps, largest first
LABELS = {"modular-none": "modular-none (MoE-like)", "modular-oracle": "modular-oracle (true U)"}


def _growth(c: Curve) -> tuple[float, float, float] | None:
    """(first m, last m, n*(last) / n*(first)) over the finite points of a curve."""
    ok = np.isfinite(c.mean) & (c.mean > 0)
    if ok.sum() < 2:
        return None
    xs, ys = c.x[ok], c.mean[ok]
    return float(xs[0]), float(xs[-1]), float(ys[-1] / ys[0])


@figure(
    "sine_sample_complexity",
    experiments=(EXPERIMENT,),
    title="Samples needed vs m, sine task (networks)",
    paper="compare_method1_sample_complexity1.5_edited.png",
)
def sine_sample_complexity(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (ax, ax_c) = new_figure(1, 2, width=5.6, height=5.2)
    by = ("method", "eps")
    n_star = curves(rows, "m", "n_star", by=by, log=True)
    flops = curves(rows, "m", "flops", by=by, log=True, where=lambda r: bool(r.metrics.get("reached")))
    methods = [m for m in ORDER if any(key[0] == m for key in n_star)]
    all_eps = sorted({key[1] for key in n_star}, reverse=True)
    seeds: list[int] = []
    for (method, eps), c in sorted(n_star.items(), key=lambda kv: (ORDER.index(kv[0][0]), -kv[0][1])):
        label = f"{LABELS.get(method, method)}" + (f", eps={eps:g}" if len(all_eps) > 1 else "")
        style = STYLES[all_eps.index(eps) % len(STYLES)]
        draw(ax, c, color=COLORS[method], linestyle=style, label=label)
        ax.plot(c.x, c.mean, "o", color=COLORS[method], ms=3.5)
        seeds.extend(c.n_seeds.tolist())
        fc = flops.get((method, eps))
        if fc is not None:
            draw(ax_c, fc, color=COLORS[method], linestyle=style, label=label)
            ax_c.plot(fc.x, fc.mean, "o", color=COLORS[method], ms=3.5)
    for s in paper.series(PAPER_FIGURE, "samples needed vs m"):
        if s.label in methods:
            overlay_paper(ax, s, COLORS[s.label], marker="s", label=f"paper, {s.label} (threshold 1.5)")
    for a in (ax, ax_c):
        a.set_yscale("log")
        a.set_xlabel("input dimension m")
    ax.set_ylabel("samples needed n* (test loss <= eps)")
    ax_c.set_ylabel("FLOPs of the training that reaches eps")
    ax.set_title("samples needed")
    ax_c.set_title("equal-compute view: compute to reach eps")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7)

    failed = {}
    for r in rows:
        if not r.metrics.get("reached", math.isfinite(float(r.metrics.get("n_star", math.inf)))):
            failed[r.config["method"]] = failed.get(r.config["method"], 0) + 1
    eps_values = sorted({r.config.get("eps") for r in rows})
    grids = sorted({(r.config.get("n_min"), r.config.get("n_max")) for r in rows})
    ks = sorted({(r.config.get("k"), r.config.get("p")) for r in rows})
    caption = (
        f"Samples needed n* to reach test loss <= eps = {', '.join(f'{e:g}' for e in eps_values)} of Var y "
        f"(bisection on a log grid of n from {grids[0][0]} to {grids[-1][1]}), vs m; tasks with k = "
        f"{', '.join(str(k) for k, _ in ks)} modules, every method with p = "
        f"{', '.join(str(p) for _, p in ks)} trainable parameters. Geometric mean over "
        f"{seeds_phrase(seeds)} (band: x/ exp(SD of ln n*)). Open squares: the paper's means at ITS "
        f"threshold 1.5 on {paper.OWN_SCALE}. Right: FLOPs (analytic) of the training at n*, kernel stage "
        "included, over the seeds that reached eps."
    )
    if failed:
        caption += (
            " Runs that never reached eps (n* = inf; a point with any such seed is not drawn): "
            + ", ".join(f"{m} {c}" for m, c in failed.items())
        )
        caption += "."
    return FigureOutput("sine_sample_complexity", fig, caption, _comparisons(n_star))


def _comparisons(n_star: dict[tuple, Curve]) -> list[Comparison]:
    out: list[Comparison] = []
    for (method, eps), c in sorted(n_star.items(), key=lambda kv: (ORDER.index(kv[0][0]), -kv[0][1])):
        published = paper.series(PAPER_FIGURE, "samples needed vs m", method)
        s = published[0] if published else None
        for i, xv in enumerate(c.x):
            theirs = s.at(float(xv)) if s is not None else None
            out.append(
                Comparison(
                    f"n*, {method} (eps={eps:g}; geometric mean, spread = SD of ln n*)",
                    f"m={xv:g}",
                    float(c.mean[i]) if np.isfinite(c.mean[i]) else None,
                    float(c.sd[i]),
                    int(c.n_seeds[i]),
                    theirs,
                    "paper at threshold 1.5 on its own scale" if theirs is not None else "",
                )
            )
        g = _growth(c)
        if g is not None:
            lo, hi, ratio = g
            theirs = None
            if s is not None and s.at(lo) is not None and s.at(hi) is not None:
                theirs = s.at(hi) / s.at(lo)
            out.append(
                Comparison(
                    f"growth n*(m={hi:g}) / n*(m={lo:g}), {method}",
                    f"eps={eps:g}",
                    ratio,
                    None,
                    int(c.n_seeds.min()),
                    theirs,
                    "shape comparison",
                )
            )
    return out
