"""Double descent of a monolithic MLP on the sine task (PAPER.md claim 1; DESIGN sections 1 and 5).

The linear theory (DESIGN section 1) puts a spike of the test loss at the interpolation threshold p ~ n. For
a real network trained by Adam the peak appears when (a) the labels are noisy, (b) training runs until the
network (nearly) interpolates its training set, and (c) nothing regularises it: no early stopping, no weight
decay. Then the narrowest networks that can just fit the noise (p a little above n, where p counts
parameters) fit it with large, wiggly functions, and wider networks fit it more smoothly again.

A job is one width w of a ReLU MLP with ``depth`` hidden layers (one: p = (m + 2) w + 1) at one seed,
trained by full-batch Adam for ``steps`` steps on n noisy samples of SineTask(m, k, noise); the tier sweeps
w, so p / n runs from well below 1 to well above. The seeds of one width train as one stacked model.

Seeds: job seed s initialises its network with seed s and draws its training sample with seed 1000 + s; the
task (``task_seed``) and the test set (seed 999, ``n_test`` points) are shared by every job, so all widths at
one seed see the same sample and are tested on the same points.

Metrics: ``test``, the MSE against the noiseless target on the test set (the excess risk, a fraction of the
unit signal variance; a constant predictor scores 1), ``train``, the MSE on the noisy labels the network was
fitted to (the label noise adds ``noise`` to any test MSE against noisy labels), ``p`` and ``p_over_n``.

Example::

    modscale run double_descent --tier small --out results/   # then: modscale plot results/
    modscale run double_descent --set noise=0 steps=500 --out results/
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from modscale._checks import check_positive_number
from modscale.errors import InvalidValue
from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.sine_common import cpu_threads, probe
from modscale.models import MLP
from modscale.tasks import SineTask
from modscale.training import train

TEST_SEED = 999  # the shared test set
SAMPLE_SEED = 1000  # job seed s draws its training sample with seed SAMPLE_SEED + s
WIDTHS = (
    1,
    2,
    3,
    5,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    15,
    18,
    25,
    40,
    100,
    400,
)  # p / n = 0.11 .. 40 at m = 8, n = 100
SMALL_WIDTHS = (1, 2, 5, 9, 11, 12, 13, 15, 25, 40, 100)  # p / n = 0.11 .. 10: about 40 s on 2 cores


def check(config: dict[str, Any]) -> None:
    """Key combinations a run cannot use, refused before any work."""
    check_positive_number("config key 'lr'", config["lr"])


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    """Train the chunk's seeds of one config (one width) as one stacked MLP; one metrics dict per job."""
    c = jobs[0].config
    if any(job.config_hash != jobs[0].config_hash for job in jobs):
        raise InvalidValue("a double_descent chunk must hold the seeds of one config")
    seeds = [job.seed for job in jobs]
    m, n, w, depth = c["m"], c["n"], c["width"], c["depth"]
    task = SineTask(m, c["k"], noise=c["noise"], generator=c["task_seed"])
    data = [task.sample(n, generator=SAMPLE_SEED + s) for s in seeds]
    X = torch.stack([d[0] for d in data])  # (S, n, m): each replica its own sample
    y = torch.stack([d[1] for d in data])  # (S, n, 1), noisy labels
    X_test, _ = task.sample(c["n_test"], generator=TEST_SEED)
    y_test = task.target(X_test)  # noiseless: test MSE = excess risk
    net = MLP(m, w, depth, n_replicas=len(seeds), generator=seeds)
    t0 = time.perf_counter()
    with cpu_threads(ctx.device):
        hist = train(
            net, (X, y), steps=c["steps"], lr=c["lr"], test=(X_test, y_test), eval_every=c["steps"],
            device=ctx.device,
        )  # fmt: skip
    train_s = (time.perf_counter() - t0) / len(seeds)
    p = MLP.count_parameters(m, w, depth)
    return [
        {
            "test": float(hist.final_test[i]),
            "train": float(hist.final_train[i]),
            "p": int(p),
            "p_over_n": p / n,
            "train_s": train_s,
        }
        for i in range(len(seeds))
    ]


def _cost(config: dict[str, Any]) -> float:
    """Seconds of one run (measured at m = 8, n = 100, 8-seed stacks; refitted to the small tier's runs with
    two workers on a 2-core AMD EPYC, 2026-12-04): ~0.47 ms per step, more for wide networks."""
    return config["steps"] * (4.7e-4 + 3.3e-6 * config["width"] * config["depth"] * config["n"] / 100) / 8


EXPERIMENTS = (
    Experiment(
        name="double_descent",
        description="double descent of a monolithic MLP on the sine task: test loss vs p / n, label noise, "
        "trained to interpolation",
        params=(
            Param("width", int, 12, "hidden units per layer (sets p)", low=1),
            Param("m", int, 8, "input dimension", low=1),
            Param("k", int, 2, "task modules", low=1),
            Param("n", int, 100, "training samples", low=2),
            Param("noise", float, 0.5, "label-noise variance (added after normalisation)", low=0.0),
            Param("depth", int, 1, "hidden layers", low=1),
            Param("steps", int, 10_000, "full-batch Adam steps (no early stopping)", low=1),
            Param("lr", float, 1e-2, "Adam learning rate (> 0)", low=0.0),
            Param("n_test", int, 4000, "test points (noiseless target)", low=1),
            Param("task_seed", int, 0, "seed of the task (projections, phases)", low=0),
        ),
        tiers={
            "smoke": Tier(grid(width=[2, 8], m=3, n=20, steps=30, n_test=100), seeds=2),
            "small": Tier(grid(width=list(SMALL_WIDTHS)), seeds=8),
            "paper": Tier(
                grid(width=list(WIDTHS))  # the main study, then the conditions it depends on
                + grid(width=list(WIDTHS), noise=0.0)
                + grid(width=list(WIDTHS), steps=500)
                + grid(width=[2, 5, 10, 15, 25, 40, 60, 100, 150, 250, 400, 1000], m=2)
                + grid(width=[5, 10, 20, 30, 40, 50, 60, 75, 100, 150, 250, 500, 2000], m=4, n=300),
                seeds=8,
                note="about 10 CPU minutes",
            ),
        },
        run=run,
        check=check,
        paper="(claim 1 for networks: the theory's peak at p = n)",
        probe=probe,
        cost=_cost,
    ),
)

__all__ = ["EXPERIMENTS", "run", "check", "WIDTHS", "SMALL_WIDTHS"]
