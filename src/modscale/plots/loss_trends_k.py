"""Why a network's test loss rises with the number of modules k at fixed n: samples, capacity or steps?

Records: ``sine_loss_trends`` runs of the k panel (config keys ``panel`` = "k", ``model``, ``k``, ``m``,
``n``, ``p``, ``steps``; metrics ``train`` and ``test``). Drawn only where the k panel was run at more than
one n, model or step budget for one p (the p with the most such settings). Left: test loss vs k, one line
per (model, n): the MLP solid, the modular network on the true projections dash-dotted, colour by n; an MLP
at a longer step budget dotted with open markers. Right: the same runs' train loss. Mean over seeds, band
+-1 SD.

Reading it: if the rise with k shrinks as n grows, the extra modules cost samples; if train loss stays near
zero at every k, the network has the capacity to fit them; if twice the steps change nothing, it is not
the step budget; if the modular network on the true projections stays flat, the cost is finding the
structure, which the monolith has to learn from the samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import curve, draw
from modscale.results import Record

EXPERIMENT = "sine_loss_trends"
STYLES = {"monolithic": "-", "modular": "-."}


def _setting(r: Record) -> tuple:
    c = r.config
    return (c.get("model"), c.get("n"), c.get("steps") or 0)


@figure(
    "loss_trends_k",
    experiments=(EXPERIMENT,),
    title="Loss vs k at several n, models and step budgets",
)
def loss_trends_k(records: Mapping[str, Sequence[Record]]) -> FigureOutput | None:
    rows = [r for r in records.get(EXPERIMENT, ()) if r.config.get("panel") == "k"]
    by_p = Counter()
    for p in {r.config.get("p") for r in rows}:
        by_p[p] = len({_setting(r) for r in rows if r.config.get("p") == p})
    if not by_p or by_p.most_common(1)[0][1] < 2:
        return None  # one setting per p: the loss_trends figure's k panel already shows it
    p = by_p.most_common(1)[0][0]
    rows = [r for r in rows if r.config.get("p") == p]
    settings = sorted({_setting(r) for r in rows}, key=lambda s: (s[0] != "monolithic", s[2], s[1]))
    base_steps = Counter(s[2] for s in settings).most_common(1)[0][0]
    ns = sorted({s[1] for s in settings})
    colors = {n: f"C{i}" for i, n in enumerate(ns)}
    fig, (ax_test, ax_train) = new_figure(1, 2, width=5.0, height=3.6)
    comparisons: list[Comparison] = []
    seeds: list[int] = []
    for model, n, steps in settings:
        mine = [r for r in rows if _setting(r) == (model, n, steps)]
        longer = steps != base_steps
        style = ":" if longer else STYLES.get(model, "--")
        label = f"{model}, n={n}" + (f", {steps} steps" if longer else "")
        for ax, metric in ((ax_test, "test"), (ax_train, "train")):
            c = curve(mine, "k", metric)
            if c is None:
                continue
            # bands only for the MLP at the tier's budget: on a log axis the others' would cover them
            draw(
                ax,
                c,
                color=colors[n],
                linestyle=style,
                label=label,
                band=model == "monolithic" and not longer,
            )
            face = "white" if longer else colors[n]
            ax.plot(c.x, c.mean, "o", color=colors[n], markerfacecolor=face, markersize=4)
            if metric == "test":
                seeds.extend(c.n_seeds.tolist())
            for x, mean, sd, k in zip(c.x, c.mean, c.sd, c.n_seeds, strict=True):
                what = f"{metric} loss, {label}"
                comparisons.append(Comparison(what, f"k={x:g}", float(mean), float(sd), int(k)))
    for ax, metric in ((ax_test, "test"), (ax_train, "train")):
        ax.set_yscale("log")
        ax.set_xlabel("modules k")
        ax.set_ylabel(f"{metric} loss (Var y = 1)")
        ax.set_title(f"{metric} loss vs k, p = {p}", fontsize=9)
    ax_test.legend(fontsize=6.5)
    ms = sorted({r.config.get("m") for r in rows})
    budget = f"{base_steps} steps" if base_steps else "the tier's step budget"
    longer = ", an MLP trained longer dotted with open markers (the others: " + budget + ")"
    caption = (
        f"The k panel's network runs at p = {p} parameters, m = {', '.join(map(str, ms))}: test (left) and "
        "train (right) loss vs the number of modules k, as fractions of the target variance; MLP solid, the "
        "modular network on the true projections dash-dotted, colour by training samples n"
        + (longer if any(s[2] != base_steps for s in settings) else "")
        + f". Mean over {seeds_phrase(seeds)} (band: +-1 SD of the MLP's; the comparison table has every SD)."
    )
    return FigureOutput("loss_trends_k", fig, caption, comparisons)


__all__ = ["loss_trends_k"]
