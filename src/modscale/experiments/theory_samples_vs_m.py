"""Theory of the paper's theoretical_m_vs_n figure: samples needed to reach a test loss vs input dimension.

Each run is one (eps, m) point of :func:`modscale.theory.sample_complexity`: the fewest samples n* whose
expected test loss is <= eps, minimised over p (``p=0``) or at a given p. The default spectrum family here
is ``power`` (a = s/m), for which log n* is linear in m (n* ~ (c/eps)^(m/s)); with the ``exp`` family n* jumps
from O(1) to astronomically large over a narrow band of eps, which makes a poor figure (docs/experiments.md).
``model=modular`` gives the modular network's n* (k modules on lam(b)), which does not depend on m.
The paper gives nine curves without their thresholds; ours are nine thresholds spaced evenly in log.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modscale.experiments._theory_common import MODEL, SPECTRUM_PARAMS, columns, groups
from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.theory import sample_complexity

M_RANGE = list(range(2, 10))
EPS_9 = [round(float(e), 3) for e in np.geomspace(0.2, 0.8, 9)]
EPS_MODULAR = [EPS_9[0], EPS_9[4], EPS_9[8]]


def _params() -> tuple[Param, ...]:
    family, *rest = SPECTRUM_PARAMS
    power = Param(family.name, str, "power", family.help, choices=family.choices)
    return (
        Param("eps", float, 0.5, "test-loss threshold", low=1e-12),
        Param("m", int, 4, "input dimension", low=1),
        MODEL,
        Param("k", int, 4, "number of modules (modular model)", low=1),
        Param("b", int, 1, "module input dimension (modular model)", low=1),
        Param("p", int, 0, "learned features; 0 = the best p for each n", low=0),
        power,
        *rest,
    )


def run(jobs: Sequence[Job], ctx: Context) -> list[dict]:
    out: list[dict] = [{} for _ in jobs]
    for (model, family, fixed_p), idx in groups(jobs, ("model", "family", "p")).items():
        sub = [jobs[i] for i in idx]
        col = columns(sub, ("eps", "m", "k", "b", "c", "omega", "s", "noise"))
        kwargs = {"family": family, "c": col["c"], "omega": col["omega"], "s": col["s"]}
        kwargs.update(noise=col["noise"], p=None if fixed_p == 0 else fixed_p)
        if model == "modular":
            kwargs.update(k=col["k"], b=col["b"])
        n_star = sample_complexity(col["eps"], col["m"], **kwargs)
        for j, i in enumerate(idx):
            out[i] = {"n_star": float(n_star[j])}
    return out


def _grid(eps, eps_modular, ms) -> list[dict]:
    return grid(eps=eps, m=ms) + grid(eps=eps_modular, m=ms, model="modular")


EXPERIMENTS = (
    Experiment(
        name="theory_samples_vs_m",
        description="closed-form samples needed n*(eps) vs input dimension m, monolithic and modular",
        params=_params(),
        tiers={
            "smoke": Tier(_grid([0.3, 0.6], [0.3], [2, 5, 9]), seeds=1),
            "small": Tier(_grid(EPS_9, EPS_MODULAR, M_RANGE), seeds=1),
            "paper": Tier(_grid(EPS_9, EPS_9, M_RANGE), seeds=1),
        },
        run=run,
        stack_key=lambda config: "all",
        max_chunk=100_000,
        accelerated=False,
        paper="theoretical_m_vs_n (Fig.: samples needed vs m, theory)",
        cost=lambda config: 0.026,  # measured per point on a 2-core AMD EPYC (searches over p and n)
    ),
)
