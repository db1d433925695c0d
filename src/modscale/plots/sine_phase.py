"""Where training finds the modules from random starts, and what the kernel rule saves (``sine_phase``).

Records: ``sine_phase`` (config m, k, b, n, method, nonlinear; metrics test, recovery_init, recovery).

``sine_phase``: one column per module dimension b, the (m, k) plane. Top: modular-random's recovery after
training (mean over seeds, at the largest n stored for the cell); bottom: the kernel rule's recovery before
any training (modular-kernel's ``recovery_init``). Cells at or above 0.9 are outlined (the boundary); a
triangle marks cells where modular-random's test loss is above the monolith's (the paper's ordering).

``sine_phase_samples``: the samples each method needs, per b: top, the smallest n of the grid at which the
mean recovery reaches 0.9 (modular-random after training, solid; the kernel rule alone, dashed), against m,
one colour per k; bottom, the smallest n at which the mean test loss reaches ``EPS``, one colour per method
and one line style per k.
Points never reached on the grid are drawn as open markers above it.

:func:`boundary_fit` fits log2 n90 = c + alpha log2 m + beta log2 k over the cells where modular-random
reached 0.9, and compares it with a simple prediction: n90 proportional to k b m, the number of projection
weights (a single-index model whose link has a linear Hermite component is learned by SGD from n ~ m
samples; Ben Arous, Gheissari and Jagannath 2021). The caption states both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots._sine_methods import Cell, by_category
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.results import Record

EXPERIMENT = "sine_phase"
RECOVERED = 0.9  # the recovery at which a cell counts as "modules found" (sine_phase.RECOVERED)
EPS = 0.3  # test-loss threshold (fraction of Var y) of the sample-cost panels
METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-oracle")
COLORS = {"monolithic": "C3", "modular-random": "C0", "modular-kernel": "C1", "modular-oracle": "0.4"}
K_STYLES = ("-", "--", ":", "-.")


def _linear(rows: Sequence[Record]) -> list[Record]:
    return [r for r in rows if not r.config.get("nonlinear")]


def cell_stats(rows: Sequence[Record], method: str, metric: str) -> dict[tuple[int, int, int, int], Cell]:
    """{(m, k, b, n): Cell of ``metric`` over seeds} for one method (linear task)."""
    out: dict[tuple[int, int, int, int], Cell] = {}
    mine = [r for r in _linear(rows) if r.config.get("method") == method]
    for key, cell in by_category(
        [dataclasses.replace(r, config={**r.config, "_cell": _key(r)}) for r in mine], "_cell", metric
    ).items():
        out[key] = cell
    return out


def _key(r: Record) -> tuple[int, int, int, int]:
    c = r.config
    return (int(c.get("m", 0)), int(c.get("k", 0)), int(c.get("b", 1)), int(c.get("n", 0)))


def n_needed(
    stats: Mapping[tuple[int, int, int, int], Cell], reach: float, *, below: bool = False
) -> dict[tuple[int, int, int], float]:
    """{(m, k, b): the smallest n whose mean reaches ``reach``} (>= reach, or <= with ``below``); inf when
    no n of the grid does."""
    by_cell: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    for (m, k, b, n), cell in stats.items():
        by_cell.setdefault((m, k, b), []).append((n, cell.mean))
    out = {}
    for key, points in by_cell.items():
        ok = [n for n, v in sorted(points) if (v <= reach if below else v >= reach)]
        out[key] = float(ok[0]) if ok else math.inf
    return out


@dataclasses.dataclass(frozen=True)
class BoundaryFit:
    """log2 n90 = const + alpha log2 m + beta log2 k (+ gamma log2 b when b varies) over reached cells;
    ``spread`` is the residual SD in log2 units (a factor 2**spread); ``ratio``: the fitted n90 / (k b m)
    of the prediction n90 = ratio * k b m, with its SD in log2 units ``ratio_spread``."""

    alpha: float
    beta: float
    gamma: float
    const: float
    spread: float
    cells: int
    censored: int
    ratio: float
    ratio_spread: float


def boundary_fit(needed: Mapping[tuple[int, int, int], float]) -> BoundaryFit | None:
    """Least squares on the cells where the threshold was reached; None with fewer than 4 such cells or a
    single m (the slope in m is what the fit is for)."""
    pts = [(m, k, b, n) for (m, k, b), n in needed.items() if math.isfinite(n)]
    if len(pts) < 4 or len({p[0] for p in pts}) < 2:
        return None
    A = np.array([[1.0, math.log2(m), math.log2(k), math.log2(b)] for m, k, b, _ in pts])
    y = np.array([math.log2(n) for *_, n in pts])
    if len({p[2] for p in pts}) < 2:
        A = A[:, :3]
    if len({p[1] for p in pts}) < 2:
        A = np.delete(A, 2, axis=1) if A.shape[1] > 2 else A
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = max(1, len(y) - A.shape[1])
    names = ["const", "alpha"] + (["beta"] if len({p[1] for p in pts}) >= 2 else [])
    names += ["gamma"] if len({p[2] for p in pts}) >= 2 else []
    fit = dict(zip(names, coef.tolist(), strict=True))
    log_ratio = np.array([math.log2(n / (k * b * m)) for m, k, b, n in pts])
    return BoundaryFit(
        alpha=fit["alpha"], beta=fit.get("beta", math.nan), gamma=fit.get("gamma", math.nan),
        const=fit["const"], spread=float(np.sqrt((resid**2).sum() / dof)), cells=len(pts),
        censored=sum(1 for n in needed.values() if not math.isfinite(n)),
        ratio=float(2 ** log_ratio.mean()), ratio_spread=float(log_ratio.std(ddof=1) if len(pts) > 1 else 0),
    )  # fmt: skip


def _at_largest_n(stats: Mapping[tuple[int, int, int, int], Cell]) -> dict[tuple[int, int, int], tuple]:
    """{(m, k, b): (n, Cell)} at the largest n stored for each cell."""
    out: dict[tuple[int, int, int], tuple] = {}
    for (m, k, b, n), cell in stats.items():
        if (m, k, b) not in out or n > out[(m, k, b)][0]:
            out[(m, k, b)] = (n, cell)
    return out


def _seeds(*stats: Mapping) -> list[int]:
    return [c.n_seeds for s in stats for c in s.values()]


@figure("sine_phase", experiments=(EXPERIMENT,), title="Where training finds the modules from random starts")
def sine_phase(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    random = cell_stats(rows, "modular-random", "recovery")
    rule = cell_stats(rows, "modular-kernel", "recovery_init")
    test_random = cell_stats(rows, "modular-random", "test")
    test_mono = cell_stats(rows, "monolithic", "test")
    keys = set(random) | set(rule)
    bs = sorted({b for _, _, b, _ in keys}) or [1]
    ms = sorted({m for m, _, _, _ in keys})
    ks = sorted({k for _, k, _, _ in keys})
    fig, axes = new_figure(2, len(bs), width=max(3.6, 0.9 * len(ms) + 1.4), height=0.6 * len(ks) + 2.0)
    worse: list[str] = []
    comparisons: list[Comparison] = []
    image = None
    for col, b in enumerate(bs):
        for row, (stats, what) in enumerate(
            ((random, "modular-random after training"), (rule, "kernel rule, before training"))
        ):
            ax = axes[row * len(bs) + col]
            grid = np.full((len(ks), len(ms)), np.nan)
            at = {key: v for key, v in _at_largest_n(stats).items() if key[2] == b}
            for (m, k, _), (n, cell) in at.items():
                i, j = ks.index(k), ms.index(m)
                grid[i, j] = cell.mean
                ax.text(j, i, f"{cell.mean:.2f}", ha="center", va="center", fontsize=8,
                        color="k" if cell.mean > 0.55 else "w")  # fmt: skip
                if cell.mean >= RECOVERED:
                    ax.add_patch(_outline(j, i))
                if row == 0:
                    tr, tm = test_random.get((m, k, b, n)), test_mono.get((m, k, b, n))
                    if tr is not None and tm is not None and tr.mean > tm.mean:
                        ax.plot(j + 0.33, i - 0.3, marker="v", color="C3", markersize=6)
                        worse.append(f"m={m}, k={k}, b={b}, n={n}")
            image = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(ms)), [str(m) for m in ms])
            ax.set_yticks(range(len(ks)), [str(k) for k in ks])
            ax.set_xlabel("input dimension m")
            ax.set_ylabel("modules k")
            ax.set_title(f"{what}, b={b}", fontsize=9)
            if at:
                found = [c.mean >= RECOVERED for _, c in at.values()]
                comparisons.append(
                    Comparison(
                        f"share of (m, k) cells where the {what.split(',')[0]} recovers >= {RECOVERED}",
                        f"b={b}, largest n stored",
                        float(np.mean(found)),
                        None,
                        min(c.n_seeds for _, c in at.values()),
                    )  # fmt: skip
                )
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="recovery (1 = every module found)")
    _marks_key(fig)
    n_used = sorted({n for (_, _, _, n) in random})
    caption = (
        f"Module recovery (Hungarian-matched subspace overlap, 1 = every true module found, about b/m at "
        f"random) at the largest n stored per cell (n in {n_used}); mean over "
        f"{seeds_phrase(_seeds(random, rule))}. Outlined: mean >= {RECOVERED}. Red triangles: "
        f"modular-random's test loss above the monolith's at the same n (the paper's ordering): "
        + (", ".join(worse) if worse else "nowhere on this grid")
        + "."
    )
    return FigureOutput("sine_phase", fig, caption, comparisons)


def _marks_key(fig) -> None:
    """A key for the marks the cells carry (outline, triangle), under the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="#b5de2b", edgecolor="w", linewidth=2.5,
              label=f"white outline: mean recovery >= {RECOVERED}"),
        Line2D([], [], marker="v", color="C3", linestyle="none", markersize=6,
               label="triangle: modular-random's test loss above the monolith's (the paper's ordering)"),
    ]  # fmt: skip
    # "outside": the constrained layout makes room for it below the panels
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False,
               handleheight=1.6)  # fmt: skip


def _outline(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, edgecolor="w", linewidth=2.5)


@figure("sine_phase_samples", experiments=(EXPERIMENT,), title="Samples to find the modules, per method")
def sine_phase_samples(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    random = cell_stats(rows, "modular-random", "recovery")
    rule = cell_stats(rows, "modular-kernel", "recovery_init")
    tests = {method: cell_stats(rows, method, "test") for method in METHODS}
    keys = set(random) | set(rule) | {key for s in tests.values() for key in s}
    bs = sorted({b for _, _, b, _ in keys}) or [1]
    ks = sorted({k for _, k, _, _ in keys})
    n_all = sorted({n for *_, n in keys})
    top = 2 * n_all[-1] if n_all else 1.0
    fig, axes = new_figure(2, len(bs), width=4.4, height=3.4)
    need_random, need_rule = n_needed(random, RECOVERED), n_needed(rule, RECOVERED)
    need_test = {method: n_needed(s, EPS, below=True) for method, s in tests.items()}
    for col, b in enumerate(bs):
        ax, ax_test = axes[col], axes[len(bs) + col]
        for ci, k in enumerate(ks):
            color = f"C{ci % 10}"
            for need, style, label in (
                (need_random, "-", "random, trained"),
                (need_rule, "--", "kernel rule"),
            ):
                _samples_line(ax, need, k, b, top, color, style, f"k={k}, {label}")
            for method in METHODS:  # colour = method here, line style = k
                _samples_line(ax_test, need_test[method], k, b, top, COLORS[method], K_STYLES[ci % 4],
                              f"{method}, k={k}")  # fmt: skip
        ax.set_title(f"n to recovery >= {RECOVERED}, b={b}", fontsize=9)
        ax_test.set_title(f"n to test loss <= {EPS}, b={b}", fontsize=9)
        for a in (ax, ax_test):
            a.set_xscale("log", base=2)
            a.set_yscale("log")
            a.set_xlabel("input dimension m")
            a.set_ylabel("training samples n")
            if n_all:
                a.axhline(top, color="0.7", linewidth=0.8)
        ax.legend(fontsize=6)
        ax_test.legend(fontsize=6)
    fit_random, fit_rule = boundary_fit(need_random), boundary_fit(need_rule)
    comparisons = []
    parts = []
    for name, fit in (("modular-random after training", fit_random), ("kernel rule", fit_rule)):
        if fit is None:
            parts.append(f"{name}: too few cells reach {RECOVERED} for a fit")
            continue
        parts.append(
            f"{name}: n90 ~ m^{fit.alpha:.2f}"
            + (f" k^{fit.beta:.2f}" if math.isfinite(fit.beta) else "")
            + (f" b^{fit.gamma:.2f}" if math.isfinite(fit.gamma) else "")
            + f" (residual factor {2**fit.spread:.1f}, {fit.cells} cells reached, {fit.censored} not);"
            f" as n90 = c k b m, c = {fit.ratio:.2g} (factor {2**fit.ratio_spread:.1f})"
        )
        comparisons.append(
            Comparison(
                f"exponent of m in the samples to recovery {RECOVERED}, {name}",
                "fit over reached cells",
                fit.alpha,
                None,
                min(_seeds(random, rule), default=0),
                None,
                "prediction of n ~ k b m: 1",
            )  # fmt: skip
        )
    caption = (
        f"Smallest n of the grid ({n_all}) at which the mean over "
        f"{seeds_phrase(_seeds(random, rule))} reaches recovery {RECOVERED} (top) or test loss {EPS} "
        f"(bottom); open markers at {top:g}: not reached on the grid. Fits: " + "; ".join(parts) + "."
    )
    return FigureOutput("sine_phase_samples", fig, caption, comparisons)


def _samples_line(ax, need, k: int, b: int, top: float, color: str, style: str, label: str) -> None:
    pts = sorted((m, n) for (m, kk, bb), n in need.items() if kk == k and bb == b)
    if not pts:
        return
    ms = np.array([m for m, _ in pts], dtype=float)
    ns = np.array([n for _, n in pts], dtype=float)
    reached = np.isfinite(ns)
    ax.plot(ms, np.where(reached, ns, top), linestyle=style, color=color, label=label or None, linewidth=1.4)
    ax.plot(ms[reached], ns[reached], "o", color=color, markersize=4)
    ax.plot(ms[~reached], np.full((~reached).sum(), top), "o", mfc="none", color=color, markersize=5)


__all__ = ["sine_phase", "sine_phase_samples", "boundary_fit", "n_needed", "cell_stats", "BoundaryFit"]
