"""Kernel choice in the learning rule: recovery of the true modules, test loss and the rule's time per kernel.

Records: ``sine_kernels`` (config key ``kernel``; metrics ``recovery_init``, ``recovery``, ``test``,
``kernel_s``). Three panels, one bar per kernel (and the random-projection reference): the recovery of the
rule's projections (hatched) and after training (solid); the test MSE after training; the wall time of the
rule. Bars are the mean over seeds of values first averaged over any other varying config key within a
seed, error bars +-1 SD over seeds, dots the seeds. The paper does not say which kernel it uses and gives no
numbers, so nothing is overlaid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modscale.plots._sine_methods import bars, by_category, fixed_phrase, ordered, varying
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.results import Record

EXPERIMENT = "sine_kernels"
ORDER = ("rbf", "laplace", "arccos", "ntk", "random")


@figure("sine_kernels", experiments=(EXPERIMENT,), title="Kernel choice in the learning rule")
def sine_kernels(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (ax_rec, ax_test, ax_time) = new_figure(1, 3, width=4.2, height=3.6)
    init = by_category(rows, "kernel", "recovery_init")
    final = by_category(rows, "kernel", "recovery")
    test = by_category(rows, "kernel", "test")
    time_s = by_category(rows, "kernel", "kernel_s")
    cats = ordered(test, ORDER)
    bars(ax_rec, cats, init, offset=-0.2, width=0.4, color="C0", hatch="//", fill=False,
         label="the rule's projections")  # fmt: skip
    bars(ax_rec, cats, final, offset=0.2, width=0.4, color="C0", label="after training")
    ax_rec.set_ylim(0, 1.05)
    ax_rec.set_ylabel("recovery of the true modules")
    ax_rec.legend(fontsize=7, loc="lower left")
    bars(ax_test, cats, test, color="C1")
    ax_test.set_ylim(bottom=0)
    ax_test.set_ylabel("test MSE (Var y = 1)")
    timed = [c for c in cats if c != "random"]
    bars(ax_time, timed, time_s, color="C2")
    ax_time.set_ylabel("kernel rule wall time per run (s)")
    for ax, names in ((ax_rec, cats), (ax_test, cats), (ax_time, timed)):
        ax.set_xticks(range(len(names)), [str(c) for c in names])
    seeds = [c.n_seeds for c in test.values()]
    others = varying(rows, skip=("kernel",))
    averaged = f" Averaged within a seed over {', '.join(others)}." if others else ""
    fixed = fixed_phrase(rows, ("m", "k", "b", "p", "n", "strategy", "init"))
    caption = (
        f"The learning rule with each kernel, then training ({fixed}); 'random' = random projections, no "
        f"rule. Recovery: Hungarian-matched subspace overlap with the true projections in [0, 1]. Mean over "
        f"{seeds_phrase(seeds)}, error bars +-1 SD, dots = seeds.{averaged} Times are wall seconds on the "
        "machine that ran them (one job at a time). The paper does not name its kernel: no published values."
    )
    comparisons = []
    for cat in cats:
        for quantity, cells in (
            ("recovery, the rule's projections", init),
            ("recovery after training", final),
            ("test MSE", test),
            ("kernel rule wall time (s)", time_s),
        ):
            if cat in cells and not (cat == "random" and "kernel rule" in quantity):
                c = cells[cat]
                comparisons.append(Comparison(quantity, f"kernel={cat}", c.mean, c.sd, c.n_seeds))
    return FigureOutput("sine_kernels", fig, caption, comparisons)


__all__ = ["sine_kernels"]
