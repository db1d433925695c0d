"""Experiments used by the sweep tests, loaded as a plugin (MODSCALE_EXPERIMENTS=tests/_sweep_experiments.py).

``sweep_probe``: each run draws from a numpy generator seeded by (seed, a) and returns the draws, optionally
after a delay (so a test can kill a sweep mid-way) or failing at a given seed. Its value for a job is a pure
function of the job (:func:`expected`), which is what the kill-and-resume and local-vs-Ray tests check.
"""

from __future__ import annotations

import os
import time

import numpy as np

from modscale.experiments import Experiment, Param, Tier, grid


def expected(config: dict, seed: int) -> dict:
    rng = np.random.default_rng([seed, config["a"]])
    draws = rng.standard_normal(3) * config["scale"]
    return {"mean": float(draws.mean()), "draws": draws.tolist(), "pid_free": config["a"] * 10 + seed}


def run(jobs, ctx):
    out = []
    for job in jobs:
        if job.config["fail_seed"] == job.seed:
            raise RuntimeError(f"sweep_probe asked to fail at seed {job.seed}")
        if job.config["delay"] > 0:
            time.sleep(job.config["delay"])
        metrics = expected(job.config, job.seed)
        metrics["worker_pid"] = os.getpid()
        out.append(metrics)
    return out


EXPERIMENTS = (
    Experiment(
        name="sweep_probe",
        description="seeded random draws per (config, seed); a fixture for the sweep tests",
        params=(
            Param("a", int, 0, "grid axis", low=0),
            Param("scale", float, 1.0, "multiplies the draws", low=0.0),
            Param("delay", float, 0.0, "seconds to sleep per run", low=0.0),
            Param("fail_seed", int, -1, "raise at this seed (-1: never)"),
            Param("mode", str, "plain", "a string key", choices=("plain", "other")),
            Param("flag", bool, False, "a boolean key"),
        ),
        tiers={
            "smoke": Tier(grid(a=[0, 1, 2]), seeds=2),
            "small": Tier(grid(a=list(range(12))), seeds=3),
            "paper": Tier(grid(a=list(range(40))), seeds=5),
        },
        run=run,
        max_chunk=4,
        accelerated=False,
    ),
)
