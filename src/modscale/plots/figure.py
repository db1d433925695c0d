"""Paper figures as pure functions of stored results, and the registry that finds them.

A figure function takes the records of the experiments it draws (``{experiment: [Record, ...]}``) and
returns a :class:`FigureOutput`: a matplotlib figure, a caption that states the seed count and what the band
shows, and :class:`Comparison` rows (our number beside the paper's) for the report. It reads nothing else:
no files, no global state; the same records give the same figure.

Adding a figure is adding one file ``modscale/plots/<name>.py`` with::

    @figure("my_figure", experiments=("my_experiment",), paper="my_figure.png")
    def my_figure(records):
        ...
        return FigureOutput(fig, caption, comparisons)

Experiments with records but no figure get a generic one (:mod:`modscale.plots.generic`), so every
experiment that has results has a picture.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from modscale.errors import InvalidValue
from modscale.paper import Series
from modscale.results import Record

_FRAMEWORK = {"figure", "stats", "generic", "report", "theory"}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One number of ours beside the paper's: ``ours`` (mean over seeds) +- ``spread`` (1 SD), ``n_seeds``."""

    quantity: str
    at: str
    ours: float | None
    spread: float | None
    n_seeds: int
    paper: float | None = None
    note: str = ""


@dataclasses.dataclass
class FigureOutput:
    """A drawn figure: ``name`` is its file stem; ``experiments`` the experiments whose records it shows."""

    name: str
    figure: Figure
    caption: str
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    experiments: tuple[str, ...] = ()
    title: str = ""


FigureFn = Callable[[Mapping[str, Sequence[Record]]], FigureOutput]


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A registered figure: drawn when any of ``experiments`` has records."""

    name: str
    experiments: tuple[str, ...]
    function: FigureFn
    title: str = ""
    paper: str = ""


_figures: dict[str, FigureSpec] = {}
_loaded = False


def figure(name: str, *, experiments: Sequence[str], title: str = "", paper: str = ""):
    """Register the decorated function as the figure ``name`` of ``experiments``."""

    def register(function: FigureFn) -> FigureFn:
        if name in _figures and _figures[name].function.__qualname__ != function.__qualname__:
            raise InvalidValue(f"a figure named {name!r} is already registered")
        _figures[name] = FigureSpec(name, tuple(experiments), function, title or name, paper)
        return function

    return register


def load() -> None:
    """Import every figure module of this package (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = Path(__file__).resolve().parent
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name not in _FRAMEWORK:
            importlib.import_module(f"modscale.plots.{info.name}")


def figures() -> list[FigureSpec]:
    """Every registered figure, sorted by name."""
    load()
    return [_figures[n] for n in sorted(_figures)]


def render(records: Sequence[Record]) -> list[FigureOutput]:
    """Every figure that has records, then a generic figure for each experiment no figure covers."""
    from modscale.plots.generic import generic_figure

    by_experiment: dict[str, list[Record]] = {}
    for r in records:
        by_experiment.setdefault(r.experiment, []).append(r)
    out: list[FigureOutput] = []
    covered: set[str] = set()
    for spec in figures():
        mine = {e: by_experiment[e] for e in spec.experiments if e in by_experiment}
        if not mine:
            continue
        result = spec.function(mine)
        if result is None:  # the figure has nothing to draw from these records (it says why in its docstring)
            continue
        result.name = result.name or spec.name
        result.title = result.title or spec.title
        result.experiments = tuple(mine)
        out.append(result)
        covered.update(mine)
    for name in sorted(set(by_experiment) - covered):
        out.append(generic_figure(name, by_experiment[name]))
    return out


def save(
    output: FigureOutput, directory: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150
) -> list[Path]:
    """Write ``output`` as ``directory/<name>.<format>`` for each format; returns the paths. Each file is
    written under a temporary name and renamed, so a run killed while drawing leaves the previous complete
    figure (or none), never a truncated one."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, no permission...
        raise InvalidValue(f"cannot create the figures folder {directory}: {err.strerror}") from None
    paths = []
    for fmt in formats:
        path = directory / f"{output.name}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            output.figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
            os.replace(tmp, path)
        except OSError as err:  # a full disk, a file size limit, no permission
            raise InvalidValue(f"cannot write the figure {path}: {err.strerror or err}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ drawing helpers

PAPER_MARKERS = {"theory": "x", "network": "o"}


def overlay_paper(
    ax: Axes, series: Series, color: str, *, marker: str | None = None, label: str = ""
) -> None:
    """Draw a published series as markers (no line: they are points read off a figure) and label it."""
    marker = marker or PAPER_MARKERS.get(series.label, "s")
    filled = marker in ("x", "+")
    ax.plot(
        series.x,
        series.y,
        linestyle="none",
        marker=marker,
        markersize=6,
        color=color,
        markerfacecolor=color if filled else "none",
        markeredgewidth=1.3,
        label=label or f"paper, {series.label}",
        zorder=5,
    )


def seeds_phrase(counts: Sequence[int]) -> str:
    """'3 seeds', '2-5 seeds per point' or 'one seed'."""
    counts = sorted(set(int(c) for c in counts if c > 0))
    if not counts:
        return "no seeds"
    if counts == [1]:
        return "one seed"
    if len(counts) == 1:
        return f"{counts[0]} seeds"
    return f"{counts[0]}-{counts[-1]} seeds per point"


def new_figure(
    rows: int = 1, cols: int = 1, *, width: float = 5.0, height: float = 3.8
) -> tuple[Figure, list]:
    """A figure (no pyplot state) and its axes as a flat list."""
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


__all__ = [
    "Comparison",
    "FigureOutput",
    "FigureSpec",
    "figure",
    "figures",
    "render",
    "save",
    "overlay_paper",
    "seeds_phrase",
    "new_figure",
]
