"""The closed forms against Monte Carlo of the same linear model, per seed: theory checked on this machine.

Each run evaluates :func:`modscale.theory.monolithic_losses` at one (n, p, m) and
:func:`modscale.theory.simulate` (min-norm least squares on Gaussian features, ``draws`` independent draws
from a generator seeded by the run's seed) at the same point, and stores both with the Monte Carlo's
standard errors. DESIGN section 1 states the agreement expected: within ~1% under-parameterised and ~3%
over-parameterised at n >= 100. Points stay away from the threshold p = n, where the test loss is infinite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modscale.experiments._theory_common import SPECTRUM_PARAMS
from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.theory import monolithic_losses, simulate, spectrum

# (n, p): two under-parameterised and two over-parameterised points, none near p = n.
POINTS = [(200, 50), (300, 75), (100, 400), (200, 800)]


def _check(config: dict) -> None:
    if abs(config["p"] - config["n"]) <= 1:
        from modscale.errors import InvalidValue

        raise InvalidValue(
            f"p must differ from n by more than 1 (the interpolation threshold), got "
            f"n={config['n']}, p={config['p']}"
        )


def _cost(config) -> float:
    """Seconds: a least-squares solve per draw, ~n^2 (p + extra features) flops at ~11 GFLOP/s, one thread."""
    n, p = config["n"], config["p"]
    return 0.001 + config["draws"] * 0.9e-10 * min(n, p) * max(n, p) * (min(n, p) + max(n, 100))


def run(jobs: Sequence[Job], ctx: Context) -> list[dict]:
    out = []
    for job in jobs:
        c = job.config
        lam = spectrum(c["m"], c["family"], c=c["c"], omega=c["omega"], s=c["s"])
        train, test = monolithic_losses(c["n"], c["p"], lam, noise=c["noise"])
        # The seed alone fixes the draws: a job gives the same numbers in any chunk, on any backend.
        mc = simulate(
            c["n"], c["p"], lam, draws=c["draws"], generator=np.random.default_rng(job.seed), noise=c["noise"]
        )
        out.append(
            {
                "train": float(train),
                "test": float(test),
                "train_mc": float(mc.train),
                "test_mc": float(mc.test),
                "train_se": float(mc.train_se),
                "test_se": float(mc.test_se),
                "test_rel_err": float(mc.test / test - 1.0),
            }
        )
    return out


def _grid(points, ms) -> list[dict]:
    return [cfg for n, p in points for cfg in grid(n=n, p=p, m=ms)]


EXPERIMENTS = (
    Experiment(
        name="theory_check",
        description="closed-form losses vs Monte Carlo of the same linear model (min-norm least squares)",
        params=(
            Param("n", int, 200, "training samples", low=2),
            Param("p", int, 50, "learned features", low=1),
            Param("m", int, 2, "input dimension (sets the spectrum)", low=1),
            Param("draws", int, 20, "Monte-Carlo draws per run", low=2),
            *SPECTRUM_PARAMS,
        ),
        tiers={
            "smoke": Tier(_grid(POINTS[:1] + POINTS[2:3], [2]), seeds=2),
            "small": Tier(_grid(POINTS, [2, 6]), seeds=3),
            "paper": Tier(_grid(POINTS + [(1000, 300), (500, 2000)], [2, 3, 4, 5, 6, 7, 8, 9]), seeds=10),
        },
        run=run,
        check=_check,
        accelerated=False,
        paper="",
        cost=_cost,
    ),
)
