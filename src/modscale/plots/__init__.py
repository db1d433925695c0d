"""Figures and the HTML report: pure functions of stored results (``DIR/results.jsonl``).

Each paper figure is a registered function of records (:func:`figure`) that overlays the paper's published
values (:mod:`modscale.paper`) and states its seed count; :func:`render` draws every figure that has records,
:func:`save` writes PNG and PDF, :func:`write_report` one self-contained HTML page; :func:`plot_modules` draws
what each module of a fitted modular estimator learned (from ``est.shape_functions()``). No torch here.
"""

from modscale.plots.figure import Comparison, FigureOutput, FigureSpec, figure, figures, render, save
from modscale.plots.modules import plot_modules
from modscale.plots.report import write_report
from modscale.plots.stats import Curve, curve, curves

__all__ = [
    "Comparison",
    "FigureOutput",
    "FigureSpec",
    "figure",
    "figures",
    "render",
    "save",
    "write_report",
    "plot_modules",
    "Curve",
    "curve",
    "curves",
]
