"""The paper's theoretical_m_vs_n figure: samples needed n*(eps) vs input dimension m, one curve per eps.

Records: ``theory_samples_vs_m`` (metric ``n_star``). Monolithic curves solid, coloured from the largest eps
(lowest curve) to the smallest; modular curves (k modules on the true projections) dashed, flat in m. The
paper gives its lowest and highest curves' end points (m = 2 and 9), overlaid as markers; its thresholds and
loss scale are not ours, so the comparison is of growth with m, which the report tabulates as the factor
n*(9) / n*(2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps

from modscale import paper
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.plots.stats import Curve, curves, draw
from modscale.results import Record

THEORY = "theory_samples_vs_m"


def _growth(c: Curve) -> float | None:
    lo, hi = c.at(2.0), c.at(9.0)
    if lo is None or hi is None or not (np.isfinite(lo[0]) and np.isfinite(hi[0])) or lo[0] <= 0:
        return None
    return hi[0] / lo[0]


@figure(
    "theoretical_m_vs_n",
    experiments=(THEORY,),
    title="Samples needed vs m (theory)",
    paper="theoretical_m_vs_n.png",
)
def samples_vs_m(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[THEORY])
    fig, (ax,) = new_figure(1, 1, width=6.4, height=4.6)
    mono, modular = (
        curves([r for r in rows if r.config.get("model") == model], "m", "n_star", by=("eps",), log=True)
        for model in ("monolithic", "modular")
    )
    cmap = colormaps["viridis"]
    eps_sorted = sorted({key[0] for key in mono} | {key[0] for key in modular}, reverse=True)
    color = {e: cmap(i / max(1, len(eps_sorted) - 1)) for i, e in enumerate(eps_sorted)}
    seeds: list[int] = []
    for (eps,), c in sorted(mono.items(), reverse=True):
        draw(ax, c, color=color[eps], label=f"monolithic, eps={eps:g}")
        seeds.extend(c.n_seeds.tolist())
    for (eps,), c in sorted(modular.items(), reverse=True):
        draw(ax, c, color=color[eps], linestyle="--", label=f"modular, eps={eps:g}")
        seeds.extend(c.n_seeds.tolist())
    for s in paper.series("theoretical_m_vs_n"):
        overlay_paper(
            ax,
            s,
            "black",
            marker="x" if s.label.startswith("lowest") else "+",
            label=f"paper, {s.label} (ends)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("input dimension m")
    ax.set_ylabel("samples needed n*")
    ax.legend(fontsize=7, ncol=2)

    comparisons: list[Comparison] = []
    if mono:
        eps_lo, eps_hi = max(k[0] for k in mono), min(k[0] for k in mono)
        for label, eps in (("lowest curve", eps_lo), ("highest curve", eps_hi)):
            s = paper.get("theoretical_m_vs_n", "samples needed vs m", label)
            c = mono[(eps,)]
            for xv, yv in zip(s.x, s.y, strict=True):
                got = c.at(xv)
                if got is not None:
                    what = f"n*, {label} (ours: eps={eps:g})"
                    comparisons.append(Comparison(what, f"m={xv:g}", got[0], None, got[2], yv, s.scale))
            g = _growth(c)
            comparisons.append(
                Comparison(
                    f"growth n*(m=9)/n*(m=2), {label}",
                    f"eps={eps:g}",
                    g,
                    None,
                    int(c.n_seeds.min()),
                    s.y[1] / s.y[0],
                    "shape comparison",
                )
            )
    families = sorted({r.config.get("family") for r in rows})
    caption = (
        "Samples needed to reach expected test loss eps, minimised over p, vs input dimension m; monolithic "
        "solid, modular dashed (flat: independent of m). "
        f"Spectrum family: {', '.join(families)}. Closed form "
        f"({seeds_phrase(seeds)}; deterministic). Markers: the end points of the paper's lowest and highest "
        f"curves (its thresholds are not given; {paper.OWN_SCALE})."
    )
    return FigureOutput("theoretical_m_vs_n", fig, caption, comparisons)
