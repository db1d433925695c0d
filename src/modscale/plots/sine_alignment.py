"""The paper's sims.png and tsne.png: alignment of learned with true modules over training, and a 2-D picture.

Records: ``sine_alignment`` (metrics ``track_fraction``, ``alignment``, ``track_test`` as lists over the
readings; ``alignment_start``/``_end``; the projections ``U_init``, ``U_final``, ``U_true``).

``sims``: alignment (Hungarian-matched subspace overlap in [0, 1]) against the fraction of the training
budget, kernel-rule start (orange, the paper's "Ours") and random start (blue, "Baseline"), mean over seeds
with a +-1 SD band, and the test loss at the same readings. The paper's start and end values are overlaid at
fractions 0 and 1; its similarity score is not defined in the paper, so levels are not comparable.

``tsne``: for a few seeds, the module projectors Q^T Q (Q an orthonormal basis of a module's row space:
sign-free, any b) of the true modules, of the learned ones at the start and at the end of training, in the
plane of their first two principal components (PCA of those points, one plane per seed). The paper uses
t-SNE of module embeddings; with a handful of points per panel PCA is exact and reproducible, and the
distance between two projectors is sqrt(2 b (1 - overlap)), so a learned module sits on a true one exactly
when it has recovered it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from modscale import paper
from modscale.plots._sine_methods import fixed_phrase, varying
from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, overlay_paper, seeds_phrase
from modscale.results import Record

EXPERIMENT = "sine_alignment"
METHODS = ("modular-kernel", "modular-random")
COLORS = {"modular-kernel": "C1", "modular-random": "C0"}
LABELS = {"modular-kernel": "kernel-rule start", "modular-random": "random start"}
SCORE = (
    "Our score is the Hungarian-matched subspace overlap in [0, 1] (1 = every true module recovered; "
    "about b/m per module at random); the paper's similarity score is not defined in the paper"
)
_SKIP = ("method", "track_every")
_RULE_KEYS = ("strategy", "init")  # options of the kernel rule: they do not apply to a random start


def _groups(rows: Sequence[Record]) -> dict[tuple, list[Record]]:
    """Records by (method, values of the other varying config keys that apply to the method)."""
    keys = list(varying(rows, skip=_SKIP))
    out: dict[tuple, list[Record]] = {}
    for r in rows:
        method = r.config.get("method")
        mine = [k for k in keys if method == "modular-kernel" or k not in _RULE_KEYS]
        out.setdefault((method, tuple((k, r.config.get(k)) for k in mine)), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (METHODS.index(kv[0][0]) if kv[0][0] in METHODS else 9,
                                                     str(kv[0][1]))))  # fmt: skip


def track_curve(rows: Sequence[Record], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, sd, seeds) of a tracked list metric against ``track_fraction``, over seeds.

    Readings are matched by their fraction of the training budget; a seed that stopped early (early
    stopping) contributes only to the readings it has.
    """
    per_x: dict[float, dict[int, list[float]]] = {}
    for r in rows:
        xs, ys = r.metrics.get("track_fraction"), r.metrics.get(metric)
        if not isinstance(xs, list) or not isinstance(ys, list):
            continue
        for x, y in zip(xs, ys, strict=False):
            if isinstance(y, int | float) and np.isfinite(y):
                per_x.setdefault(round(float(x), 9), {}).setdefault(r.seed, []).append(float(y))
    xs = np.array(sorted(per_x))
    mean, sd, n = [], [], []
    for x in xs:
        vals = np.array([np.mean(v) for v in per_x[x].values()])
        mean.append(vals.mean())
        sd.append(vals.std(ddof=1) if vals.size > 1 else 0.0)
        n.append(vals.size)
    return xs, np.array(mean), np.array(sd), np.array(n, dtype=int)


def _label(method: str, variant: tuple) -> str:
    words = {"strategy": "{v}", "init": "{v} starts"}
    extra = ", ".join(words.get(k, "{k}={v}").format(k=k, v=v) for k, v in variant)
    return LABELS.get(method, method) + (f" ({extra})" if extra else "")


def _mean_sd(rows: Sequence[Record], metric: str) -> tuple[float | None, float | None, int]:
    vals = np.array([r.metrics.get(metric, np.nan) for r in rows], dtype=float)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return None, None, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0, int(vals.size)


@figure("sims", experiments=(EXPERIMENT,), title="Module alignment over training", paper="sims.png")
def sims(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = list(records[EXPERIMENT])
    fig, (ax, ax_test) = new_figure(1, 2, width=5.2, height=3.9)
    comparisons: list[Comparison] = []
    seeds: list[int] = []
    styles = ("-", "--", ":", "-.")
    variants: dict[tuple, str] = {}  # (method, variant) -> line style: solid for each method's first
    for (method, variant), group in _groups(rows).items():
        used = sum(1 for m, _ in variants if m == method)
        style = variants.setdefault((method, variant), styles[used % len(styles)])
        color = COLORS.get(method, "C2")
        for axis, metric in ((ax, "alignment"), (ax_test, "track_test")):
            x, mean, sd, n = track_curve(group, metric)
            if not x.size:
                continue
            axis.plot(x, mean, linestyle=style, color=color, linewidth=2, label=_label(method, variant))
            if (n > 1).any():
                lo, hi = mean - sd, mean + sd
                if metric == "alignment":  # the score lives in [0, 1]
                    lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
                else:  # a log axis: the band's lower edge stays positive
                    lo = np.where(lo > 0, lo, mean)
                axis.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
            if metric == "alignment":
                seeds.extend(n.tolist())
        where = ", ".join(f"{k}={v}" for k, v in variant) or fixed_phrase(group, ("m", "k", "n"))
        for which, metric, at in (("start", "alignment_start", 0), ("end", "alignment_end", 1)):
            found = paper.series("sims", "alignment over training", method)
            mean, sd, n = _mean_sd(group, metric)
            comparisons.append(
                Comparison(
                    f"alignment at the {which} of training, {LABELS.get(method, method)}",
                    where,
                    mean,
                    sd,
                    n,
                    found[0].y[at] if found else None,
                    "different scores: compare the ordering and the rise, not the level",
                )
            )
        mean, sd, n = _mean_sd(group, "recovery")
        comparisons.append(
            Comparison(f"recovery of the returned weights, {LABELS.get(method, method)}", where, mean, sd, n)
        )
    for s in paper.series("sims", "alignment over training"):
        overlay_paper(ax, s, COLORS.get(s.label, "0.3"), marker="s", label=f"paper, {LABELS.get(s.label)}")
    ax.set_xlabel("fraction of the training budget")
    ax.set_ylabel("alignment with the true modules")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    ax_test.set_yscale("log")
    ax_test.set_xlabel("fraction of the training budget")
    ax_test.set_ylabel("test MSE (Var y = 1)")
    ax_test.set_title("test loss at the same readings", fontsize=9)
    fixed = fixed_phrase(rows, ("m", "k", "b", "p", "n"))
    caption = (
        f"Alignment of the learned module projections with the true ones during training ({fixed}); "
        f"mean over {seeds_phrase(seeds)}{' (band: +-1 SD)' if max(seeds, default=1) > 1 else ''}. "
        f"Orange: projections started by the kernel rule; blue: random. {SCORE}; squares: the "
        "paper's values at the start and end of its training (0.555 -> 0.63 and 0.536 -> 0.58). Readings "
        "are taken through the trainer's callback during one uninterrupted training run (Adam's moments are "
        "kept)."
    )
    return FigureOutput("sims", fig, caption, comparisons)


# --------------------------------------------------------------------------------------------- the picture


def projectors(U) -> np.ndarray:
    """(K, m*m) flattened projectors onto the row spaces of U (K, b, m) (rank-deficient rows dropped)."""
    U = np.asarray(U, dtype=np.float64)
    _, s, vt = np.linalg.svd(U, full_matrices=False)  # vt (K, b, m)
    tol = s.max(axis=-1, keepdims=True) * max(U.shape[-2:]) * np.finfo(np.float64).eps
    Q = vt * (s > tol)[..., None]
    P = np.einsum("kbi,kbj->kij", Q, Q)
    return P.reshape(P.shape[0], -1)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """Coordinates of ``points`` (N, D) on their first two principal components (N, 2)."""
    centred = points - points.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def _picture_group(rows: Sequence[Record]) -> tuple[str, list[Record]]:
    """The config (all keys but method and seed) with the most records, and its records."""
    groups: dict[str, list[Record]] = {}
    for r in rows:
        key = ", ".join(f"{k}={v}" for k, v in sorted(r.config.items()) if k not in _SKIP)
        groups.setdefault(key, []).append(r)
    key = max(sorted(groups), key=lambda k: len(groups[k]))
    return fixed_phrase(groups[key], ("m", "k", "b", "p", "n", "strategy", "init")), groups[key]


@figure(
    "tsne",
    experiments=(EXPERIMENT,),
    title="Learned vs true modules (PCA of the module projectors)",
    paper="tsne.png",
)
def tsne(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = [r for r in records[EXPERIMENT] if "U_true" in r.metrics and "U_final" in r.metrics]
    fig, axes = new_figure(1, 3, width=4.0, height=3.8)
    if not rows:
        for ax in axes:
            ax.set_visible(False)
        return FigureOutput("tsne", fig, "No stored projections to draw.", [])
    where, group = _picture_group(rows)
    by_seed: dict[int, dict[str, Record]] = {}
    for r in group:
        by_seed.setdefault(r.seed, {})[r.config.get("method")] = r
    shown = sorted(by_seed)[: len(axes)]
    for ax, seed in zip(axes, shown, strict=False):
        runs = by_seed[seed]
        true = np.asarray(next(iter(runs.values())).metrics["U_true"])
        parts = [("true", None, projectors(true))]
        for method in METHODS + tuple(m for m in runs if m not in METHODS):
            if method in runs:
                parts.append(("init", method, projectors(runs[method].metrics["U_init"])))
                parts.append(("final", method, projectors(runs[method].metrics["U_final"])))
        coords = pca_2d(np.concatenate([p for _, _, p in parts]))
        start, at = 0, {}
        for what, method, p in parts:
            at[(what, method)] = coords[start : start + len(p)]
            start += len(p)
        t = at[("true", None)]
        ax.plot(t[:, 0], t[:, 1], "*", color="0.55", markersize=16, label="true modules", zorder=2)
        for method in runs:
            c0, c1 = at[("init", method)], at[("final", method)]
            color = COLORS.get(method, "C2")
            rec = runs[method].metrics.get("recovery", float("nan"))
            ax.plot(c0[:, 0], c0[:, 1], "o", mfc="none", color=color, markersize=6, alpha=0.7)
            size = 7 if method == "modular-kernel" else 4.5  # both can sit on one star: keep both visible
            ax.plot(c1[:, 0], c1[:, 1], "o", color=color, markersize=size, zorder=6,
                    label=f"{LABELS.get(method, method)}: end (recovery {rec:.2f})")  # fmt: skip
            for a, b in zip(c0, c1, strict=True):
                ax.annotate(
                    "", b, a, arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.5, "lw": 0.8}
                )
        ax.set_title(f"seed {seed}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=6.5, loc="best")
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    caption = (
        "Module projectors of the true modules (grey stars) and of the learned ones at the start (open "
        "circles) and the end (filled) of training, arrows from start to end; kernel-rule start orange, "
        "random start blue. Each panel is one seed (its own task), projected on the first two principal "
        f"components of its points; {len(shown)} of {seeds_phrase([len(by_seed)])} shown ({where}). A "
        "learned module on a star has recovered that true module. The paper's tsne.png shows t-SNE of its "
        "module embeddings; this is our PCA counterpart."
    )
    return FigureOutput("tsne", fig, caption, [])


__all__ = ["sims", "tsne", "track_curve", "projectors", "pca_2d"]
