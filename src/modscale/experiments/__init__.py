"""The paper's experiments as declared, resumable sweeps (DESIGN section 5).

An :class:`Experiment` declares a typed config schema, a grid of configs x seeds per tier (``smoke``,
``small``, ``paper``) and a ``run`` entry that executes a chunk of jobs at once. Experiments are found in this
package's modules (each defines ``EXPERIMENTS``) and in plugins (:mod:`modscale.experiments.registry`).
:func:`run_sweep` runs one on the ``local`` or ``ray`` backend and appends every finished run durably to
``DIR/results.jsonl`` (:mod:`modscale.results`), skipping what is stored.

>>> from modscale import experiments
>>> experiments.names()  # doctest: +SKIP
['theory_check', 'theory_loss_trends', 'theory_samples_vs_m']
>>> experiments.run_sweep("theory_loss_trends", "results", tier="smoke")  # doctest: +SKIP
"""

from modscale.experiments.backends import (
    BACKENDS,
    Backend,
    ChunkResult,
    LocalBackend,
    RayBackend,
    device_and_label,
    execute_chunk,
    make_backend,
)
from modscale.experiments.experiment import TIERS, Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.registry import all_experiments, get, names, register, unregister
from modscale.experiments.runner import Plan, Progress, Summary, current, execute, plan, run_sweep
from modscale.experiments.search import Crossing, Search, bisect_log_grid, crossing, dense_grid, log_grid_n

__all__ = [
    "TIERS",
    "BACKENDS",
    "Param",
    "Tier",
    "grid",
    "Job",
    "Context",
    "Experiment",
    "register",
    "unregister",
    "get",
    "names",
    "all_experiments",
    "Plan",
    "plan",
    "execute",
    "run_sweep",
    "current",
    "Progress",
    "Summary",
    "Backend",
    "LocalBackend",
    "RayBackend",
    "ChunkResult",
    "execute_chunk",
    "make_backend",
    "device_and_label",
    "Search",
    "Crossing",
    "crossing",
    "bisect_log_grid",
    "dense_grid",
    "log_grid_n",
]
