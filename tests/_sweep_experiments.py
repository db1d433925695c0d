"""Experiments used by the sweep tests, loaded as a plugin (MODSCALE_EXPERIMENTS=tests/_sweep_experiments.py).

``sweep_probe``: each run draws from a numpy generator seeded by (seed, a) and returns the draws, optionally
after a delay (so a test can kill a sweep mid-way) or failing at a given seed. Its value for a job is a pure
function of the job (:func:`expected`), which is what the kill-and-resume and local-vs-Ray tests check.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
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
        marker = job.config["die_marker"]
        if job.config["die_seed"] == job.seed and marker:
            # a worker killed as the out-of-memory killer would; never the test process itself
            if multiprocessing.parent_process() is None:
                raise RuntimeError("sweep_probe dies only in a worker process (jobs > 1)")
            try:  # only the first worker to get here dies: creating the marker is atomic
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
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
            Param("die_seed", int, -1, "SIGKILL the worker at this seed (-1: never)"),
            Param("die_marker", str, "", "die only while this file does not exist (created before dying)"),
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


def run_stacked(jobs, ctx):
    """Every job of the chunk is one replica of one stacked MLP: its own task draw, n, seed and weights."""
    import torch

    from modscale.models import MLP
    from modscale.tasks import SineTask
    from modscale.training import train

    first = jobs[0].config
    m, S = first["m"], len(jobs)
    n_max = max(j.config["n"] for j in jobs)
    X = torch.zeros(S, n_max, m)
    y = torch.zeros(S, n_max, 1)
    Xt, yt = torch.empty(S, 256, m), torch.empty(S, 256, 1)
    for s, job in enumerate(jobs):
        g = torch.Generator().manual_seed(job.seed)
        task = SineTask(m, 2, generator=g)
        n = job.config["n"]
        X[s, :n], y[s, :n] = task.sample(n, generator=g)  # rows beyond n are masked by n_samples
        Xt[s], yt[s] = task.sample(256, generator=g)
    net = MLP(m, first["width"], 1, n_replicas=S, generator=[j.seed for j in jobs])
    hist = train(
        net,
        (X, y),
        steps=first["steps"],
        lr=first["lr"],
        n_samples=[j.config["n"] for j in jobs],
        test=(Xt, yt),
        device=ctx.device,
        generator=[j.seed for j in jobs],
    )
    return [{"test": float(hist.final_test[s]), "train": float(hist.final_train[s])} for s in range(S)]


EXPERIMENTS = (
    *EXPERIMENTS,
    Experiment(
        name="stacked_probe",
        description="a tiny MLP per (n, seed) on the sine task, all jobs of a chunk trained as one stack",
        params=(
            Param("m", int, 4, "input dimension", low=1),
            Param("n", int, 64, "training samples", low=1),
            Param("width", int, 8, "hidden units", low=1),
            Param("steps", int, 30, "Adam steps", low=1),
            Param("lr", float, 1e-2, "learning rate", low=0.0),
        ),
        tiers={t: Tier(grid(n=[16, 64, 128]), seeds=2) for t in ("smoke", "small", "paper")},
        run=run_stacked,
        stack_key=lambda c: (c["m"], c["width"], c["steps"]),
        max_chunk=16,
    ),
)
