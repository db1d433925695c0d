"""K != k: test loss and module recovery of modular networks with K modules on a task with k modules.

Records: ``sine_mismatch`` (config ``method``, ``K``, ``k``, ``n``; metrics ``test``, ``recovery_init``,
``recovery``). Left: test loss vs K, one line per method and n (mean over seeds, +-1 SD band), the true k
marked. Right: recovery of the true projections (Hungarian-matched subspace overlap in [0, 1]) by the
projections the network starts from (the kernel rule's, or random) and by the trained ones, at the largest
n; with K < k at most K of the k modules can be matched, so K/k is drawn as the ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import curves, draw
from modscale.results import Record

EXPERIMENT = "sine_mismatch"
COLORS = {"modular-kernel": "C2", "modular-random": "C1"}
STYLES = ("-", "--", ":", "-.")


@figure("sine_mismatch", experiments=(EXPERIMENT,), title="K != k: modules in the network vs in the task")
def sine_mismatch(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (ax, ax_r) = new_figure(1, 2, width=5.2, height=4.0)
    ns = sorted({r.config["n"] for r in rows})
    ks = sorted({r.config["k"] for r in rows})
    test = curves(rows, "K", "test", by=("method", "n"))
    seeds: list[int] = []
    comparisons: list[Comparison] = []
    for (method, n), c in sorted(test.items()):
        style = STYLES[ns.index(n) % len(STYLES)]
        draw(ax, c, color=COLORS.get(method, "C0"), linestyle=style, label=f"{method}, n={n}")
        ax.plot(c.x, c.mean, "o", color=COLORS.get(method, "C0"), ms=3)
        seeds.extend(c.n_seeds.tolist())
        for i, K in enumerate(c.x):
            comparisons.append(
                Comparison(f"test loss, {method}, n={n}", f"K={K:g}", float(c.mean[i]), float(c.sd[i]),
                           int(c.n_seeds[i]))
            )  # fmt: skip
    for k in ks:
        ax.axvline(k, color="0.6", lw=1, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network modules K (dotted: the task's k)")
    ax.set_ylabel("test loss (fraction of Var y)")
    ax.legend(fontsize=6.5)

    at = [r for r in rows if r.config["n"] == ns[-1]]
    for metric, style, what in (("recovery_init", "--", "initial"), ("recovery", "-", "trained")):
        for (method,), c in sorted(curves(at, "K", metric, by=("method",)).items()):
            draw(ax_r, c, color=COLORS.get(method, "C0"), linestyle=style, label=f"{method}, {what}")
            for i, K in enumerate(c.x):
                comparisons.append(
                    Comparison(f"recovery ({what} U), {method}, n={ns[-1]}", f"K={K:g}", float(c.mean[i]),
                               float(c.sd[i]), int(c.n_seeds[i]))
                )  # fmt: skip
    Ks = np.array(sorted({r.config["K"] for r in rows}), dtype=float)
    if len(ks) == 1:
        ax_r.plot(Ks, np.minimum(1.0, Ks / ks[0]), color="0.5", lw=1, ls=":", label="ceiling min(1, K/k)")
    ax_r.set_xscale("log", base=2)
    for a in (ax, ax_r):  # the K values themselves, not powers of two
        a.set_xticks(Ks, [f"{K:g}" for K in Ks])
        a.minorticks_off()
    ax_r.set_ylim(0, 1.05)
    ax_r.set_xlabel("network modules K")
    ax_r.set_ylabel("recovery of the true projections")
    ax_r.set_title(f"n = {ns[-1]}")
    ax_r.legend(fontsize=6.5)
    ms = sorted({r.config["m"] for r in rows})
    ps = sorted({r.config["p"] for r in rows})
    caption = (
        f"Modular networks with K modules on SineTask(m={', '.join(map(str, ms))}, "
        f"k={', '.join(map(str, ks))}), "
        f"every K at p = {', '.join(map(str, ps))} trainable parameters; projections from the kernel rule or "
        f"random, then everything trained. Mean over {seeds_phrase(seeds)} (band: +-1 SD). Recovery: "
        "Hungarian-matched subspace overlap (1 = the true modules; about b/m for random directions)."
    )
    return FigureOutput("sine_mismatch", fig, caption, comparisons)
