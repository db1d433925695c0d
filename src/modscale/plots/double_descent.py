"""Double descent of a monolithic MLP: test and train loss vs parameters per training sample p / n.

Records: ``double_descent`` (config key ``width`` and the study's settings; metrics ``test``, ``train``,
``p_over_n``). One panel per combination of the settings that vary among the records other than the width
(the small tier has one; the paper tier adds the conditions: no label noise, short training, m = 2, m = 4 at
n = 300). In each panel, per width: the mean over seeds of the test MSE against the noiseless target (solid)
and of the training MSE on the noisy labels (dotted), each with a +-1 SD band, at x = p / n; the threshold
p = n dashed, the label-noise variance dotted grey. Both axes are logarithmic; losses below ``FLOOR`` (the
training loss of interpolating networks) are drawn at ``FLOOR``.

The comparison rows give, per panel, the peak (the width of the largest mean test loss) beside the smallest
and the largest p / n. The paper has no network double-descent figure; its claim is the closed form's spike
at p = n (docs/theory.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots._sine_methods import fixed_phrase, varying
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import Curve, curves, draw
from modscale.results import Record

EXPERIMENT = "double_descent"
FLOOR = 1e-5
SETTINGS = ("m", "k", "n", "noise", "depth", "steps", "lr")


def _on_ratio(c: Curve, ratio: dict[float, float]) -> Curve:
    """The curve against p / n instead of the width, its values clipped onto the log axis at FLOOR."""
    x = np.array([ratio[w] for w in c.x])
    clip = lambda a: np.maximum(a, FLOOR)  # noqa: E731
    return dataclasses.replace(c, x=x, mean=clip(c.mean), lo=clip(c.lo), hi=clip(c.hi))


def _label(group: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in group.items())


@figure("double_descent", experiments=(EXPERIMENT,), title="Double descent of a monolithic MLP")
def double_descent(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    split = list(varying(rows, skip=("width",)))
    groups: dict[tuple, list[Record]] = {}  # one panel each, in the order the records were stored
    for r in rows:
        groups.setdefault(tuple(r.config.get(k) for k in split), []).append(r)
    keys = list(groups)
    cols = min(3, len(keys))
    fig, axes = new_figure(-(-len(keys) // cols), cols, width=5.2, height=4.0)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    seeds: list[int] = []
    comparisons: list[Comparison] = []
    for ax, key in zip(axes, keys, strict=False):
        group = groups[key]
        where = dict(zip(split, key, strict=True))
        ratio = {
            float(r.config["width"]): float(r.metrics["p_over_n"]) for r in group if "p_over_n" in r.metrics
        }
        test = curves(group, "width", "test")[()]
        train = curves(group, "width", "train")[()]
        t, tr = _on_ratio(test, ratio), _on_ratio(train, ratio)
        draw(ax, t, color="C3", label="test (noiseless target)")
        ax.plot(t.x, t.mean, "o", color="C3", markersize=3.5)
        draw(ax, tr, color="C0", linestyle=":", label="train (noisy labels)")
        ax.axvline(1.0, color="0.4", linestyle="--", linewidth=1, label="p = n")
        noise = {r.config["noise"] for r in group}
        if len(noise) == 1 and (v := noise.pop()) > 0:
            ax.axhline(v, color="0.6", linestyle=":", linewidth=1, label=f"label-noise variance {v:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters / training samples (p / n)")
        ax.set_ylabel("MSE (signal variance 1)")
        ax.set_title(fixed_phrase(group, SETTINGS), fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        seeds.extend(test.n_seeds.tolist())

        where_text = _label(where)
        peak = int(np.nanargmax(test.mean))
        for name, i in (("p << n", 0), ("peak", peak), ("p >> n", len(test.x) - 1)):
            at = f"p/n={t.x[i]:.2g}" + (f", {where_text}" if where_text else "")
            comparisons.append(
                Comparison(
                    f"test MSE, {name}", at, float(test.mean[i]), float(test.sd[i]), int(test.n_seeds[i])
                )
            )
            comparisons.append(
                Comparison(
                    f"train MSE, {name}", at, float(train.mean[i]), float(train.sd[i]), int(train.n_seeds[i])
                )
            )
    panels = "; ".join(fixed_phrase(groups[k], SETTINGS) for k in keys)
    caption = (
        "Double descent of a ReLU MLP (depth = hidden layers) on the sine task with noisy labels, trained "
        "by full-batch Adam without regularisation: test MSE against the noiseless target (solid) and "
        f"training MSE on the noisy labels (dotted) vs p / n; mean over {seeds_phrase(seeds)}, band +-1 SD "
        f"over seeds; losses below {FLOOR:g} drawn at {FLOOR:g}. Panels: {panels}. The peak sits where the "
        "networks first interpolate the noisy labels; the paper gives no network figure (its claim is the "
        "closed form's spike at p = n)."
    )
    return FigureOutput("double_descent", fig, caption, comparisons)


__all__ = ["double_descent", "FLOOR"]
