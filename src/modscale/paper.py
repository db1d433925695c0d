"""The paper's published numbers, as data: every value, the figure or table it comes from, and its caveats.

Boopathy, Jiang, Yue, Hwang, Iyer, Fiete, "Breaking Neural Network Scaling Laws with Modularity", ICLR 2025
(arXiv 2409.05780). No code or data were released with the paper: every number here was read off the
authors' figures (or, for the robustness table, their project page) and is approximate; where a figure shows
only a trend, only the values that can be read are given. The sine-task losses are on the paper's own loss
scale, which is not ours (our sine task is normalised to unit target variance, DESIGN section 2), so
comparisons with them are of shape, not of level; every figure that overlays them says so.

Example::

    >>> from modscale import paper
    >>> s = paper.get("loss_trends", "test loss vs m", "network")
    >>> s.x[:3], s.y[:3]
    ((2.0, 3.0, 4.0), (0.8, 1.35, 1.9))
"""

from __future__ import annotations

import dataclasses

from modscale.errors import InvalidValue

CITATION = (
    "Boopathy, Jiang, Yue, Hwang, Iyer, Fiete. Breaking Neural Network Scaling Laws with Modularity. "
    "ICLR 2025 (arXiv 2409.05780)"
)
OWN_SCALE = "the paper's own loss scale (ours has unit target variance): compare shapes, not levels"


@dataclasses.dataclass(frozen=True)
class Series:
    """One published curve (or row of a table): y at each x, as read off the paper.

    ``figure`` is the figure's file name in the paper's sources (or ``"project page"``), ``panel`` which part
    of it, ``label`` which line or row. ``scale`` names the loss scale when it is not ours (see
    :data:`OWN_SCALE`); ``note`` adds what else a reader must know.
    """

    figure: str
    panel: str
    label: str
    x_name: str
    x: tuple[float, ...]
    y_name: str
    y: tuple[float, ...]
    source: str = "read off the figure; approximate"
    scale: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            name = f"{self.figure}/{self.panel}/{self.label}"
            raise InvalidValue(f"paper series {name}: x and y lengths differ")

    def at(self, x: float) -> float | None:
        """The published y at ``x`` (None when the paper gives none there)."""
        for xi, yi in zip(self.x, self.y, strict=True):
            if abs(xi - x) <= 1e-9 * max(1.0, abs(x)):
                return yi
        return None


M = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
K_CIFAR = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
_AVG_P = "averaged over p"
_SPREAD = "mean over the paper's seeds; single runs spread over an order of magnitude"
_ROBUST = "x: 0 = combinatorial OOD, 1 = under noise; k not stated"
_SIMS = "the paper's similarity score, whose definition is not given"

# fmt: off
SERIES: tuple[Series, ...] = (
    # loss_trends.png: a monolithic network (solid) and Theorem 1 (dashed) on the sine task.
    Series("loss_trends", "test loss vs m", "network", "m", M, "test loss",
           (0.8, 1.35, 1.9, 2.25, 2.35, 2.5, 2.65, 2.7), scale=OWN_SCALE, note=_AVG_P),
    Series("loss_trends", "test loss vs m", "theory", "m", M, "test loss",
           (0.6, 0.95, 1.4, 1.8, 2.1, 2.45, 2.7, 2.85), scale=OWN_SCALE, note=_AVG_P),
    Series("loss_trends", "train loss vs m", "network", "m", M, "train loss",
           (0.33, 0.45, 0.52, 0.57, 0.6, 0.62, 0.65, 0.66), scale=OWN_SCALE, note=_AVG_P),
    Series("loss_trends", "train loss vs m", "theory", "m", M, "train loss",
           (0.05, 0.1, 0.18, 0.25, 0.3, 0.37, 0.42, 0.45), scale=OWN_SCALE, note=_AVG_P),
    Series("loss_trends", "test loss vs k", "theory", "k", M, "test loss", (1.9,) * 8, scale=OWN_SCALE,
           note="flat in k; the network's averaged test loss ranges over 1.7-2.75"),
    Series("loss_trends", "train loss vs k", "theory", "k", M, "train loss", (0.27,) * 8, scale=OWN_SCALE,
           note="flat in k"),
    Series("loss_trends", "test loss vs n", "network", "n", (1e2,), "test loss", (4.4,), scale=OWN_SCALE,
           note="smallest n shown; the gap to theory the reviewers criticised"),
    Series("loss_trends", "test loss vs n", "theory", "n", (1e2,), "test loss", (1.2,), scale=OWN_SCALE,
           note="smallest n shown"),
    # theoretical_m_vs_n.png: samples needed vs m for nine loss thresholds; only the extreme curves' ends.
    Series("theoretical_m_vs_n", "samples needed vs m", "lowest curve", "m", (2.0, 9.0), "n", (1e2, 7.3e2),
           scale=OWN_SCALE, note="lowest of nine thresholds (the threshold values are not given)"),
    Series("theoretical_m_vs_n", "samples needed vs m", "highest curve", "m", (2.0, 9.0), "n", (7e4, 3.4e5),
           scale=OWN_SCALE, note="highest of nine thresholds (the threshold values are not given)"),
    # compare_method1_sample_complexity1.5_edited.png: mean n* on the sine task at test-loss threshold 1.5.
    Series("compare_method1_sample_complexity1.5", "samples needed vs m", "modular-kernel", "m", M, "n*",
           (4.6e2, 3.0e2, 1.7e3, 5.5e2, 2.9e3, 4.9e3, 4.3e3, 1.4e4), scale=OWN_SCALE, note=_SPREAD),
    Series("compare_method1_sample_complexity1.5", "samples needed vs m", "monolithic", "m", M, "n*",
           (2.2e3, 5.0e2, 5.0e3, 6.5e3, 1.65e4, 8.3e3, 2.8e4, 1.15e4), scale=OWN_SCALE, note=_SPREAD),
    Series("compare_method1_sample_complexity1.5", "samples needed vs m", "modular-random", "m", M, "n*",
           (7.4e3, 2.1e3, 1.3e4, 4.7e4, 3.7e4, 1.55e4, 2.9e4, 8.2e4), scale=OWN_SCALE, note=_SPREAD),
    # multicifar_result_edited.png: per-image accuracy averaged over slots, one epoch.
    Series("multicifar_result", "accuracy vs k", "modular-kernel", "k", K_CIFAR, "accuracy",
           (0.552, 0.542, 0.538, 0.525, 0.516, 0.505, 0.493, 0.482)),
    Series("multicifar_result", "accuracy vs k", "modular-random", "k", K_CIFAR, "accuracy",
           (0.535, 0.535, 0.512, 0.488, 0.472, 0.456, 0.443, 0.433)),
    Series("multicifar_result", "accuracy vs k", "monolithic", "k", K_CIFAR, "accuracy",
           (0.529, 0.536, 0.505, 0.476, 0.451, 0.430, 0.409, 0.390)),
    # The project page's robustness table (k not stated), accuracies as fractions.
    Series("project page", "robustness table", "monolithic", "condition", (0.0, 1.0), "accuracy",
           (0.4256, 0.3947), source="project page table", note=_ROBUST),
    Series("project page", "robustness table", "modular-random", "condition", (0.0, 1.0), "accuracy",
           (0.4526, 0.4307), source="project page table", note=_ROBUST),
    Series("project page", "robustness table", "modular-kernel", "condition", (0.0, 1.0), "accuracy",
           (0.4990, 0.4695), source="project page table", note=_ROBUST),
    # sims.png: similarity of learned to true modules at the start and the end of training.
    Series("sims", "alignment over training", "modular-kernel", "training fraction", (0.0, 1.0),
           "similarity", (0.555, 0.63), note=_SIMS),
    Series("sims", "alignment over training", "modular-random", "training fraction", (0.0, 1.0),
           "similarity", (0.536, 0.58), note=_SIMS),
)
# fmt: on

FIGURES = tuple(dict.fromkeys(s.figure for s in SERIES))


def series(figure: str | None = None, panel: str | None = None, label: str | None = None) -> list[Series]:
    """Every published series matching the given figure, panel and label (None matches all)."""
    return [
        s
        for s in SERIES
        if (figure is None or s.figure == figure)
        and (panel is None or s.panel == panel)
        and (label is None or s.label == label)
    ]


def get(figure: str, panel: str, label: str) -> Series:
    """The one published series of ``figure``/``panel``/``label``; ``InvalidValue`` listing the choices."""
    found = series(figure, panel, label)
    if len(found) != 1:
        known = sorted({(s.figure, s.panel, s.label) for s in SERIES})
        raise InvalidValue(f"no published series {figure!r}/{panel!r}/{label!r}; known: {known}")
    return found[0]


__all__ = ["CITATION", "OWN_SCALE", "Series", "SERIES", "FIGURES", "series", "get"]
