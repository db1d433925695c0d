"""Closed form vs Monte Carlo (``theory_check``): the theory's own second route, per point and seed.

Left: Monte-Carlo test loss (mean over seeds, +-1 SD over seeds) against the closed form, on a log-log
diagonal. Right: the relative error of the Monte-Carlo test loss per (n, p, m) point, with the tolerance
DESIGN section 1 states (1% under-parameterised, 3% over-parameterised). The paper has no such figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.results import Record, group

EXPERIMENT = "theory_check"


@figure("theory_check", experiments=(EXPERIMENT,), title="Closed form vs Monte Carlo")
def theory_check(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (left, right) = new_figure(1, 2, width=5.0, height=4.0)
    points = group(rows, "n", "p", "m", "family", "c", "omega", "s", "noise", "draws")
    comparisons: list[Comparison] = []
    seeds: list[int] = []
    labels = []
    ordered = sorted(points.items(), key=lambda kv: (kv[0][1] > kv[0][0], kv[0]))  # under-parameterised first
    for i, ((n, p, m, *_), runs) in enumerate(ordered):
        theory = runs[0].metrics["test"]
        mc = np.array([r.metrics["test_mc"] for r in runs])
        err = mc / theory - 1.0
        under = p < n
        color = "C0" if under else "C3"
        sd = mc.std(ddof=1) if len(mc) > 1 else 0.0
        left.errorbar(theory, mc.mean(), yerr=sd, fmt="o", color=color, markersize=4)
        e_sd = err.std(ddof=1) if len(err) > 1 else 0.0
        right.errorbar(i, err.mean() * 100, yerr=e_sd * 100, fmt="o", color=color, markersize=4)
        labels.append(f"n={n},p={p},m={m}")
        seeds.append(len(runs))
        note = f"DESIGN: within {'1%' if under else '3%'}"
        what = "MC / closed-form test loss - 1"
        mean_err = float(err.mean())
        comparisons.append(Comparison(what, labels[-1], mean_err, float(e_sd), len(runs), None, note))
    lims = [min(left.get_xlim()[0], left.get_ylim()[0]), max(left.get_xlim()[1], left.get_ylim()[1])]
    left.plot(lims, lims, color="gray", linewidth=0.8)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("closed-form test loss")
    left.set_ylabel("Monte-Carlo test loss")
    left.set_title("blue: p < n, red: p > n")
    n_under = sum(1 for key in points if key[1] < key[0])
    right.axhspan(-1, 1, xmin=0, xmax=1, color="C0", alpha=0.1)
    right.axhspan(-3, 3, color="C3", alpha=0.06)
    right.axhline(0, color="gray", linewidth=0.8)
    right.set_xticks(range(len(labels)), labels, rotation=70, fontsize=6)
    right.set_ylabel("relative error of Monte Carlo (%)")
    right.set_title(f"{n_under} under-, {len(labels) - n_under} over-parameterised points")
    draws = sorted({r.config.get("draws") for r in rows})
    caption = (
        f"Monte Carlo of min-norm least squares ({', '.join(map(str, draws))} draws per run) against the "
        f"closed form, mean +-1 SD over {seeds_phrase(seeds)}. Shaded: the agreement DESIGN section 1 "
        "expects (1% under-parameterised, blue; 3% over-parameterised, red). Not a figure of the paper."
    )
    return FigureOutput("theory_check", fig, caption, comparisons)
