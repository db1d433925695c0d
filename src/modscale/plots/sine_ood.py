"""Combinatorial out-of-distribution split on the sine task: in- vs out-of-distribution loss per method.

Records: ``sine_ood`` (config keys ``method``, ``k``, ``n``; metrics ``test_id``, ``test_ood``,
``ood_over_id``). Left: in-distribution (even region, solid) and out-of-distribution (odd region, dashed) test
MSE vs n per method, in units of Var y = 1 over all x; right: their ratio per seed, geometric mean and
multiplicative +-1 SD band over seeds (ratios of small losses spread widely); one row of panels per number
of modules k. The paper's OOD numbers are Compositional CIFAR-10 accuracies (project page), not this task's,
so nothing is overlaid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        for method in order:
            color = COLORS.get(method, "C4")
            draw(ax, id_[(method,)], color=color, label=f"{method}, in distribution")
            if (method,) in ood:
                draw(ax, ood[(method,)], color=color, linestyle="--", band=False, label=f"{method}, OOD")
            if (method,) in ratio:
                r = ratio[(method,)]
                draw(ax_ratio, r, color=color, label=method)
                ax_ratio.plot(r.x, r.mean, "o", color=color, markersize=4)
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
            axis.set_xscale("log")
            axis.set_xlabel("training samples n (even region)")
            axis.set_title(f"k = {k} modules", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylabel("test MSE (Var y = 1 over all x)")
        ax_ratio.set_yscale("log")
        ax_ratio.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
        ax_ratio.set_ylabel("OOD MSE / in-distribution MSE")
        if row == 0:
            ax.legend(fontsize=6.5)
            ax_ratio.legend(fontsize=7)
    others = varying(rows, skip=("method", "n", "k"))
    averaged = f" Averaged within a seed over {', '.join(others)}." if others else ""
    fixed = fixed_phrase(rows, ("m", "b", "p"))
    caption = (
        f"Trained on the even region (an even number of modules with a positive first coordinate of U_i x), "
        f"tested on fresh even-region samples (solid) and on the odd region, whose module combinations were "
        f"never seen (dashed); {fixed}, equal parameter count; one row per number of modules k. MSE against "
        f"the noiseless target, whose variance over all x is 1 (the regions' own variances differ). Mean "
        f"over {seeds_phrase(seeds)} (band +-1 SD); the ratio is taken per seed, geometric mean and "
        f"multiplicative band.{averaged} The paper's OOD numbers are for Compositional "
        "CIFAR-10, not this task."
    )
    return FigureOutput("sine_ood", fig, caption, comparisons)


__all__ = ["sine_ood"]
