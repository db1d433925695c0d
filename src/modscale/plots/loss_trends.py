"""The paper's loss_trends figure: train and test loss vs k, m, p and n; theory dashed, networks solid.

Records: ``theory_loss_trends`` (the closed forms) and, when present, the network runs of
:data:`NETWORK_EXPERIMENTS` (same config keys ``panel``, ``model``, ``k``, ``m``, ``n``, ``p``; metrics
``train`` and ``test``; ``model=modular``: k modules on the true projections, drawn in the m panel beside
the modular theory). Thin lines are single p (k and m panels) or single m (p and n panels); thick lines
average over them within a seed, then over seeds (band: +-1 SD over seeds). The m panel also shows the
modular theory (k modules on the true projections), which does not change with m. The paper's published
values (theory and network) are overlaid as markers; they are on the paper's own loss scale, so each panel's
are multiplied by one factor (:func:`_to_our_scale`, stated in the caption) that meets our theory at the
panel's first point: shapes and ratios compare, levels do not.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from modscale import paper
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.plots.stats import Curve, curve, curves, draw
from modscale.results import Record

THEORY = "theory_loss_trends"
NETWORK_EXPERIMENTS = ("sine_loss_trends",)
COLORS = {"train": "C0", "test": "C1"}
MODULAR_COLOR = "C2"
# panel -> (x key, key of the thin lines, log x axis)
PANELS = {"k": ("k", "p", False), "m": ("m", "p", False), "p": ("p", "m", True), "n": ("n", "m", True)}


# the keys each panel holds fixed; network runs stored at other values (the k study's larger n and longer
# training: :func:`loss_trends_k`) are left out of this figure's curves rather than averaged into them
HELD = {"k": ("n", "steps"), "m": ("n", "steps"), "p": ("n", "steps"), "n": ("p", "steps")}


def _panel(records: Sequence[Record], panel: str, model: str = "monolithic") -> list[Record]:
    return [r for r in records if r.config.get("panel") == panel and r.config.get("model") == model]


def _home(rows: list[Record], panel: str) -> list[Record]:
    """The panel's runs at its most common value of each held key (ties: the first stored)."""
    for key in HELD[panel]:
        values = Counter(r.config.get(key) for r in rows)
        if len(values) > 1:
            home = values.most_common(1)[0][0]
            rows = [r for r in rows if r.config.get(key) == home]
    return rows


def _top(values: list[float], cap: float = 6.0) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return min(cap, 1.2 * max(finite)) if finite else cap


@figure(
    "loss_trends",
    experiments=(THEORY, *NETWORK_EXPERIMENTS),
    title="Loss vs k, m, p and n",
    paper="loss_trends.png",
)
def loss_trends(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    theory = list(records.get(THEORY, ()))
    network = [r for name in NETWORK_EXPERIMENTS for r in records.get(name, ())]
    fig, axes = new_figure(2, 2, width=5.2, height=3.9)
    comparisons: list[Comparison] = []
    seed_counts: list[int] = []
    factors: dict[str, float] = {}
    for ax, (panel, (x, thin, log_x)) in zip(axes, PANELS.items(), strict=True):
        tops: list[float] = []
        mlp = _home(_panel(network, panel), panel)
        sources = (("theory", "--", _panel(theory, panel)), ("network", "-", mlp))
        for source, style, rows in sources:
            for metric, color in COLORS.items():
                for c in curves(rows, x, metric, by=(thin,)).values():
                    ax.plot(c.x, c.mean, linestyle=style, color=color, linewidth=0.7, alpha=0.3)
                avg = curve(rows, x, metric)
                if avg is None:
                    continue
                seed_counts.extend(avg.n_seeds.tolist())
                draw(ax, avg, color=color, linestyle=style, label=f"{metric}, {source}")
                tops.extend(avg.mean.tolist())
                comparisons.extend(_compare(panel, metric, source, avg))
        for source, style, rows in (
            ("theory", ":", _panel(theory, panel, "modular")),
            ("network", "-.", _home(_panel(network, panel, "modular"), panel)),
        ):
            avg = curve(rows, x, "test") if rows else None
            if avg is not None:
                k = sorted({r.config.get("k") for r in rows})
                draw(
                    ax, avg, color=MODULAR_COLOR, linestyle=style, label=f"test, modular {source} (k={k[0]})"
                )
                tops.extend(avg.mean.tolist())
                if source == "network":
                    seed_counts.extend(avg.n_seeds.tolist())
        published = paper.series("loss_trends", f"test loss vs {panel}") + paper.series(
            "loss_trends", f"train loss vs {panel}"
        )
        factor = _to_our_scale(panel, curve(_panel(theory, panel), x, "test"))
        if factor is not None:
            factors[panel] = factor
        for s in published:
            metric = s.panel.split()[0]
            shown = dataclasses.replace(s, y=tuple(v * (factor or 1.0) for v in s.y))
            overlay_paper(ax, shown, COLORS[metric], label=f"paper {metric}, {s.label}")
            tops.extend(shown.y)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel("loss")
        ax.set_ylim(0, _top(tops) if panel in ("k", "m") else 6.0)
        ax.set_title(f"vs {x}: thin lines = single {thin}, thick = averaged")
    # the legend goes in the m panel, or the first panel with anything drawn where the m panel is empty
    for ax in (axes[1], *axes):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
            break
    fixed = _fixed(theory or network)
    caption = (
        "Train (blue) and test (orange) loss; theory dashed (closed form, DESIGN section 1), networks solid. "
        f"Thick lines average the thin ones within a seed; mean over {seeds_phrase(seed_counts)}"
        f"{' (band: +-1 SD)' if max(seed_counts, default=1) > 1 else ''}. {fixed} " + _markers_phrase(factors)
    )
    if not network:
        caption += " No network runs are stored yet: only the theory is shown."
    return FigureOutput("loss_trends", fig, caption, comparisons)


def _to_our_scale(panel: str, ours: Curve | None) -> float | None:
    """The factor that puts the paper's values of a panel on our scale: our theory's test loss over the
    paper's theory test loss at the first x both have. One factor per panel keeps the paper's ratios (network
    over theory, growth along the panel), which are what can be compared; its level is its own."""
    for s in paper.series("loss_trends", f"test loss vs {panel}", "theory"):
        for xv, yv in zip(s.x, s.y, strict=True):
            got = ours.at(xv) if ours is not None else None
            if got is not None and yv > 0 and np.isfinite(got[0]):
                return got[0] / yv
    return None


def _markers_phrase(factors: Mapping[str, float]) -> str:
    if not factors:
        return f"Markers: the paper's values ({paper.OWN_SCALE})."
    each = ", ".join(f"x{f:.2f} (vs {panel})" for panel, f in factors.items())
    return (
        "Markers: the paper's values, each panel's multiplied by one factor so that the paper's theory test "
        f"loss meets ours at the panel's first point ({each}): its values are on the paper's own loss scale, "
        "so one factor per panel makes its shapes and its network/theory ratios comparable with ours, not "
        "its levels (the comparison table lists the unscaled values)."
    )


def _fixed(records: Sequence[Record]) -> str:
    """What was held fixed in each panel, read off the records."""
    parts = []
    for panel, keys in (("k", ("m", "n")), ("m", ("k", "n")), ("p", ("n",)), ("n", ("p",))):
        rows = _panel(records, panel)
        if rows:
            vals = ", ".join(f"{k}={sorted({r.config.get(k) for r in rows})[0]}" for k in keys)
            parts.append(f"vs {panel}: {vals}")
    return ("Fixed: " + "; ".join(parts) + ".") if parts else ""


def _compare(panel: str, metric: str, source: str, avg: Curve) -> list[Comparison]:
    found = paper.series("loss_trends", f"{metric} loss vs {panel}", source)
    rows = []
    for s in found:
        if panel == "k":  # the paper gives one flat level: compare with our mean over k
            mean = float(np.nanmean(avg.mean))
            rows.append(
                Comparison(
                    f"{metric} loss, {source}, mean over k",
                    "k=2..9",
                    mean,
                    float(np.nanmean(avg.sd)),
                    int(avg.n_seeds.min()),
                    s.y[0],
                    s.scale,
                )
            )
            continue
        for xv, yv in zip(s.x, s.y, strict=True):
            got = avg.at(xv)
            if got is not None:
                what = f"{metric} loss, {source}"
                rows.append(Comparison(what, f"{panel}={xv:g}", got[0], got[1], got[2], yv, s.scale))
    return rows
