"""Config keys and helpers shared by the closed-form theory experiments (DESIGN section 1).

Every theory experiment evaluates :mod:`modscale.theory` on a whole chunk of configs at once: the jobs are
turned into columns (one array per config key) and the vectorised functions take them in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modscale.experiments.experiment import Job, Param
from modscale.theory.spectra import DEFAULT_C, DEFAULT_OMEGA, DEFAULT_S

SPECTRUM_PARAMS = (
    Param(
        "family",
        str,
        "exp",
        "feature spectrum: exp (a = omega^-m) or power (a = s/m)",
        choices=("exp", "power"),
    ),
    Param("c", float, DEFAULT_C, "total feature variance c", low=1e-12),
    Param("omega", float, DEFAULT_OMEGA, "exp family: a = omega^-m", low=1.0 + 1e-12),
    Param("s", float, DEFAULT_S, "power family: a = s/m", low=1e-12),
    Param("noise", float, 0.0, "label-noise variance s2", low=0.0),
)
MODEL = Param(
    "model",
    str,
    "monolithic",
    "monolithic network on lam(m), or k modules on lam(b)",
    choices=("monolithic", "modular"),
)


def log_grid(low: float, high: float, count: int, *, avoid: float | None = None) -> list[int]:
    """``count`` integers spaced evenly in log between ``low`` and ``high`` (duplicates dropped), sorted.

    ``avoid``: the interpolation threshold p = n, where the test loss is +inf: values within 1 of it are
    left out, and points at 1%, 3%, 10% and 20% either side are added so the peak is drawn.
    """
    values = {int(round(v)) for v in np.geomspace(low, high, count)}
    if avoid is not None:
        values |= {int(round(avoid * (1 + sign * f))) for f in (0.01, 0.03, 0.1, 0.2) for sign in (-1, 1)}
        values = {v for v in values if abs(v - avoid) > 1 and low <= v <= high}
    return sorted(values)


def columns(jobs: Sequence[Job], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """One float64 array per config key, over ``jobs`` in order."""
    return {key: np.array([float(job.config[key]) for job in jobs]) for key in keys}


def groups(jobs: Sequence[Job], keys: Sequence[str]) -> dict[tuple, list[int]]:
    """Indices of ``jobs`` grouped by the values of the (string) config ``keys``."""
    out: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        out.setdefault(tuple(job.config[k] for k in keys), []).append(i)
    return out
