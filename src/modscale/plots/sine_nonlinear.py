"""The nonlinear sine task: test loss vs training samples n for monolithic and modular networks.

Records: ``sine_nonlinear`` (config keys ``method``, ``n``; metrics ``test``, ``train``). One line per
method: the mean over seeds of the test MSE (values first averaged over any other varying config key within
a seed), a +-1 SD band, the training MSE dotted. The paper reports no numbers for its nonlinear variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modscale.plots._sine_methods import fixed_phrase, varying
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import curves, draw
from modscale.results import Record

EXPERIMENT = "sine_nonlinear"
COLORS = {"monolithic": "C3", "modular-nonlinear": "C1", "modular-linear": "C0"}
LABELS = {
    "monolithic": "monolithic MLP",
    "modular-nonlinear": "modular, nonlinear projections",
    "modular-linear": "modular, linear projections",
}


@figure("sine_nonlinear", experiments=(EXPERIMENT,), title="Nonlinear sine task: modular vs monolithic")
def sine_nonlinear(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (ax,) = new_figure(1, 1, width=6.0, height=4.2)
    test = curves(rows, "n", "test", by=("method",))
    train = curves(rows, "n", "train", by=("method",))
    order = [m for m in COLORS if (m,) in test] + sorted(k[0] for k in test if k[0] not in COLORS)
    seeds: list[int] = []
    comparisons: list[Comparison] = []
    for method in order:
        color = COLORS.get(method, "C2")
        c = test[(method,)]
        draw(ax, c, color=color, label=f"{LABELS.get(method, method)}, test")
        ax.plot(c.x, c.mean, "o", color=color, markersize=4)
        if (method,) in train:
            t = train[(method,)]
            ax.plot(
                t.x, t.mean, ":", color=color, linewidth=1.2, label=f"{LABELS.get(method, method)}, train"
            )
        seeds.extend(c.n_seeds.tolist())
        for x, mean, sd, n in zip(c.x, c.mean, c.sd, c.n_seeds, strict=True):
            comparisons.append(Comparison(f"test MSE, {method}", f"n={x:g}", float(mean), float(sd), int(n)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training samples n")
    ax.set_ylabel("MSE (Var y = 1)")
    ax.legend(fontsize=7)
    others = varying(rows, skip=("method", "n"))
    averaged = f" Averaged within a seed over {', '.join(others)}." if others else ""
    fixed = fixed_phrase(rows, ("m", "k", "b", "p"))
    caption = (
        f"Nonlinear sine task (module inputs M_i U_i tanh(A_i x); {fixed}, equal parameter count): test MSE "
        f"(solid, band +-1 SD) and train MSE (dotted) vs n; mean over {seeds_phrase(seeds)}.{averaged} "
        "Modular networks have K = k modules, each on a learnable one-hidden-layer tanh projection "
        "(nonlinear) or a linear one. The paper gives no numbers for this variant."
    )
    return FigureOutput("sine_nonlinear", fig, caption, comparisons)


__all__ = ["sine_nonlinear"]
