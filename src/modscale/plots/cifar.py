"""Compositional CIFAR-10 figures: accuracy vs k, the OOD + noise table at k = 4, the n-sweep and epochs.

Pure functions of the records of :mod:`modscale.experiments.cifar` (metrics ``accuracy``: per-slot accuracy
on seen class combinations, the paper's number; ``ood_accuracy``: on the held-out combinations;
``noise_accuracy``: seen combinations with Gaussian noise of std ``noise`` added to normalised pixels;
``all_correct``; ``purity_start``/``purity_end``: how slot-like the modular projections are). Lines are means
over seeds, bands +-1 SD over seeds (sample SD), the seed count is in every caption. The paper's published
values (:mod:`modscale.paper`, read off its figure and project page: approximate; one epoch on a training
set whose size the paper does not give) are overlaid as markers.

Runs of one figure can differ in keys other than its x axis (for example when ``--set n_train=...`` added
runs): each figure keeps the runs of the most common setting of the other training keys and says which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.ticker import NullLocator

from modscale import paper
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.plots.stats import curves, draw
from modscale.results import Record

ACCURACY_VS_K = "cifar_accuracy_vs_k"
N_SWEEP = "cifar_n_sweep"
EPOCHS = "cifar_epochs"
METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-true")
LABELS = {
    "monolithic": "monolithic CNN",
    "modular-random": "modular, random init",
    "modular-kernel": "modular, kernel init",
    "modular-true": "modular, true slots (control)",
}
COLORS = {"monolithic": "C0", "modular-random": "C1", "modular-kernel": "C2", "modular-true": "C7"}
TABLE_K = 4  # the paper's robustness table does not state k; we read ours at k = 4
# Keys that describe how a run was trained and evaluated (everything but method, k, n_train, epochs, seed).
_SETTING_KEYS = (
    "batch_size", "lr", "channels", "hidden", "n_test", "holdout", "split_seed", "noise", "kernel_samples",
    "kernel_steps", "kernel_batch", "kernel_pool", "kernel_strategy",
)  # fmt: skip


def _setting(r: Record, keys: Sequence[str]) -> tuple:
    return tuple(r.config.get(k) for k in keys)


def _common(records: Sequence[Record], keys: Sequence[str]) -> list[Record]:
    """The records whose ``keys`` take their most common joint value (ties: the first seen)."""
    if not records:
        return []
    counts = Counter(_setting(r, keys) for r in records)
    best = max(counts, key=counts.get)
    return [r for r in records if _setting(r, keys) == best]


def _describe(records: Sequence[Record], keys: Sequence[str]) -> str:
    if not records:
        return ""
    c = records[0].config
    return ", ".join(f"{k}={c[k]}" for k in keys if k in c)


def _by_method(records: Sequence[Record], x: str, metric: str):
    found = curves(records, x, metric, by=("method",))
    return {key[0]: c for key, c in found.items()}


def _method_order(methods) -> list[str]:
    return [m for m in METHODS if m in methods] + sorted(set(methods) - set(METHODS))


def _x_axis_panel(ax, records, x, metric, *, title, log=False, paper_label=None, seeds=None):
    by = _by_method(records, x, metric)
    for method in _method_order(by):
        c = by[method]
        draw(ax, c, color=COLORS.get(method, "C7"), label=LABELS.get(method, method))
        ax.plot(c.x, c.mean, ".", color=COLORS.get(method, "C7"), ms=7)  # single points stay visible
        if seeds is not None:
            seeds.extend(c.n_seeds.tolist())
    if paper_label is not None:
        for method in _method_order(by):
            found = paper.series("multicifar_result", "accuracy vs k", method)
            if found:
                overlay_paper(ax, found[0], COLORS.get(method, "C7"), marker="o", label=f"paper, {method}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    xs = sorted({float(v) for c in by.values() for v in c.x})
    if xs:
        ax.set_xticks(xs, [f"{v:g}" for v in xs])  # the sampled values, not a crowded grid
    ax.grid(alpha=0.3)
    return by


# -------------------------------------------------------------------------------------------- accuracy vs k


@figure(
    "cifar_accuracy_vs_k",
    experiments=(ACCURACY_VS_K,),
    title="Compositional CIFAR-10: accuracy vs number of images k",
    paper="multicifar_result_edited.png",
)
def accuracy_vs_k(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = _common(list(records[ACCURACY_VS_K]), ("n_train", "epochs", *_SETTING_KEYS))
    fig, axes = new_figure(1, 3, width=4.4, height=3.6)
    seeds: list[int] = []
    by = _x_axis_panel(
        axes[0], rows, "k", "accuracy", title="per-slot accuracy, seen combinations", paper_label=True,
        seeds=seeds,
    )  # fmt: skip
    axes[0].set_ylabel("accuracy")
    axes[0].axhline(0.1, color="0.6", ls=":", lw=1, label="chance")
    axes[0].legend(fontsize=6.5)
    _x_axis_panel(axes[1], [r for r in rows if r.config.get("k", 1) >= 2], "k", "ood_accuracy",
                  title="per-slot accuracy, unseen combinations (OOD)", seeds=seeds)  # fmt: skip
    modular = [r for r in rows if r.config.get("method") != "monolithic"]
    for metric, style, width in (("purity_start", "--", 1.0), ("purity_end", "-", 2.0)):
        for method, c in _by_method(modular, "k", metric).items():
            draw(axes[2], c, color=COLORS.get(method, "C7"), linestyle=style, linewidth=width,
                 label=f"{LABELS.get(method, method)}, {'start' if style == '--' else 'end'}")  # fmt: skip
    axes[2].set_title("projection purity: start (dashed), end of training", fontsize=9)
    axes[2].set_xlabel("k")
    axes[2].set_ylabel("mean_i max_j w_ij^2 / |w_i|^2")
    axes[2].grid(alpha=0.3)
    if modular:  # a legend without lines warns
        axes[2].legend(fontsize=6.5)
    for ax in axes:
        ax.set_xticks(sorted({int(r.config["k"]) for r in rows}))  # the panels share k

    comparisons = []
    for method in _method_order(by):
        s = paper.series("multicifar_result", "accuracy vs k", method)
        c = by[method]
        for xv in c.x:
            got = c.at(xv)
            published = s[0].at(xv) if s else None
            comparisons.append(
                Comparison(f"accuracy, {method}", f"k={xv:g}", got[0], got[1], got[2], published)
            )
    setting = _describe(rows, ("n_train", "epochs", "batch_size", "lr", "channels", "hidden", "n_test"))
    caption = (
        "Per-slot accuracy (mean over slots and test composites; the paper's number) vs the number of images "
        "k: monolithic CNN, image modular network with random and with kernel-initialised slot projections "
        "(K = k modules) and, as a control, with the true slot projections (module i reads slot i), after "
        f"training on {setting} ({seeds_phrase(seeds)}; line: mean over seeds, band: "
        "+-1 SD). Middle: the same on held-out class combinations. Right: how slot-like the modular "
        "projections are (1: each module reads one slot, 1/k: uniform mixture) at initialisation (dashed) "
        "and after training (solid). Circles: the paper's published values (one epoch on a training set of "
        "unstated size; read off its figure)."
    )
    return FigureOutput("cifar_accuracy_vs_k", fig, caption, comparisons)


# ----------------------------------------------------------------------------------------------- the table

TABLE_COLUMNS = (
    ("accuracy", "seen (in distribution)"),
    ("ood_accuracy", "unseen combinations (OOD)"),
    ("noise_accuracy", "under noise"),
    ("all_correct", "all slots correct, seen"),
)


def _stat(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


@figure(
    "cifar_robustness",
    experiments=(ACCURACY_VS_K,),
    title="Compositional CIFAR-10 at k = 4: in distribution, unseen combinations, noise",
    paper="robustness table (project page)",
)
def robustness(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = _common(list(records[ACCURACY_VS_K]), ("n_train", "epochs", *_SETTING_KEYS))
    ks = sorted({int(r.config["k"]) for r in rows})
    k = TABLE_K if TABLE_K in ks else max(ks)
    rows = [r for r in rows if r.config["k"] == k]
    methods = _method_order({r.config["method"] for r in rows})
    stats = {
        (m, metric): _stat([r.metrics.get(metric) for r in rows if r.config["method"] == m])
        for m in methods
        for metric, _ in TABLE_COLUMNS
    }
    noise = rows[0].config.get("noise") if rows else None
    fig, (ax, tab) = new_figure(1, 2, width=5.2, height=3.6)
    width = 0.8 / max(1, len(methods))
    shown = TABLE_COLUMNS[:3]
    for i, m in enumerate(methods):
        xs = np.arange(len(shown)) + (i - (len(methods) - 1) / 2) * width
        means = [stats[(m, metric)][0] for metric, _ in shown]
        sds = [stats[(m, metric)][1] for metric, _ in shown]
        ax.bar(xs, means, width, yerr=sds, capsize=3, color=COLORS.get(m, "C7"), label=LABELS.get(m, m))
        published = paper.series("project page", "robustness table", m)
        pid = paper.series("multicifar_result", "accuracy vs k", m)
        if published and k == TABLE_K:
            py = [pid[0].at(k) if pid else None, published[0].at(0.0), published[0].at(1.0)]
            ax.plot(xs, [np.nan if v is None else v for v in py], "o", mfc="none", mec="k", ms=6,
                    label="paper" if i == 0 else None)  # fmt: skip
    ax.set_xticks(np.arange(len(shown)), ["seen", "unseen (OOD)", f"noise {noise:g}" if noise else "noise"])
    ax.set_ylabel("per-slot accuracy")
    ax.axhline(0.1, color="0.6", ls=":", lw=1)
    ax.legend(fontsize=6, loc="lower center", ncol=2)
    ax.grid(alpha=0.3, axis="y")

    tab.axis("off")
    cells = []
    for m in methods:
        row = []
        for metric, _ in TABLE_COLUMNS:
            mean, sd, n = stats[(m, metric)]
            row.append("-" if n == 0 else f"{100 * mean:.1f} +- {100 * sd:.1f}")
        cells.append(row)
    for m in methods:
        published = paper.series("project page", "robustness table", m)
        pid = paper.series("multicifar_result", "accuracy vs k", m)
        if published:
            cells.append(
                [f"{100 * pid[0].at(TABLE_K):.1f}" if pid else "-", f"{100 * published[0].at(0.0):.2f}",
                 f"{100 * published[0].at(1.0):.2f}", "-"]
            )  # fmt: skip
    row_labels = [LABELS.get(m, m) for m in methods] + [
        f"paper: {LABELS.get(m, m)}" for m in methods if paper.series("project page", "robustness table", m)
    ]
    table = tab.table(
        cellText=cells,
        rowLabels=row_labels,
        colLabels=["seen", "OOD", "noise", "all correct"],
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.3)
    tab.set_title("accuracy in % (mean +- SD over seeds)", fontsize=8)

    comparisons = []
    n_seeds = []
    for m in methods:
        published = paper.series("project page", "robustness table", m)
        pid = paper.series("multicifar_result", "accuracy vs k", m)
        paper_values = {
            "accuracy": pid[0].at(TABLE_K) if pid and k == TABLE_K else None,
            "ood_accuracy": published[0].at(0.0) if published else None,
            "noise_accuracy": published[0].at(1.0) if published else None,
            "all_correct": None,
        }
        for metric, label in TABLE_COLUMNS:
            mean, sd, n = stats[(m, metric)]
            n_seeds.append(n)
            note = (
                "paper: k not stated; noise level not stated"
                if metric in ("ood_accuracy", "noise_accuracy")
                else ""
            )
            comparisons.append(
                Comparison(f"{label}, {m}", f"k={k}", mean if n else None, sd if n else None, n,
                           paper_values[metric], note)
            )  # fmt: skip
    setting = _describe(rows, ("n_train", "epochs", "holdout", "noise", "n_test"))
    caption = (
        f"Per-slot accuracy at k = {k} on seen class combinations, on the held-out (unseen) combinations and "
        f"on seen combinations with Gaussian noise of standard deviation {noise} times the pixel standard "
        f"deviation added to every test pixel ({setting}; {seeds_phrase(n_seeds)}; bars and table: mean "
        "+- 1 SD over seeds). Circles and the 'paper' rows: the paper's accuracy at k = 4 (its figure) and "
        "its robustness table (project page, which states neither k nor the noise level)."
    )
    return FigureOutput("cifar_robustness", fig, caption, comparisons)


# ----------------------------------------------------------------------------------------------- n and epochs


def _sweep_figure(records, experiment, x, *, log, name, title_what, extra_keys):
    rows = _common(list(records[experiment]), ("k", *extra_keys, *_SETTING_KEYS))
    fig, axes = new_figure(1, 2, width=4.6, height=3.6)
    seeds: list[int] = []
    _x_axis_panel(axes[0], rows, x, "accuracy", title="per-slot accuracy, seen combinations", log=log,
                  seeds=seeds)  # fmt: skip
    _x_axis_panel(axes[1], rows, x, "ood_accuracy", title="per-slot accuracy, unseen combinations (OOD)",
                  log=log, seeds=seeds)  # fmt: skip
    for ax in axes:
        ax.axhline(0.1, color="0.6", ls=":", lw=1)
        ax.set_ylabel("accuracy")
    axes[0].legend(fontsize=6.5)
    k = rows[0].config.get("k") if rows else None
    setting = _describe(rows, (*extra_keys, "batch_size", "lr", "channels", "n_test"))
    caption = (
        f"Per-slot accuracy vs {title_what} at k = {k} for the three methods ({setting}; "
        f"{seeds_phrase(seeds)}; line: mean over seeds, band: +-1 SD). The paper reports neither sweep."
    )
    return FigureOutput(name, fig, caption, [])


@figure(
    "cifar_n_sweep", experiments=(N_SWEEP,), title="Compositional CIFAR-10: accuracy vs training set size"
)
def n_sweep(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    return _sweep_figure(records, N_SWEEP, "n_train", log=True, name="cifar_n_sweep",
                         title_what="training composites n (one pass each unless stated)",
                         extra_keys=("epochs",))  # fmt: skip


@figure("cifar_epochs", experiments=(EPOCHS,), title="Compositional CIFAR-10: accuracy vs epochs")
def epochs(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    return _sweep_figure(records, EPOCHS, "epochs", log=False, name="cifar_epochs",
                         title_what="training epochs (the paper: one)", extra_keys=("n_train",))  # fmt: skip
