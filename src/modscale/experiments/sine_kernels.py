"""Kernel choice in the learning rule: which kernel finds the modules, at what cost, and does it matter after
training? (DESIGN section 4; PAPER.md claim 3 leaves the kernel open.)

Each run finds K = k projections with :func:`modscale.rules.kernel_projections` on the job's n training
samples of SineTask(m, k) using one kernel, then trains the ModularNet started from them (the
``modular-kernel`` method of :mod:`modscale.experiments.sine_common`, all settings the tier's). Kernels:

- ``rbf``: exp(-|z - z'|^2 / (2 sigma^2)), sigma = 0.5 (the rule's default, from the feasibility probe);
- ``laplace``: exp(-|z - z'| / sigma), sigma = 0.5;
- ``arccos``: the tangent kernel of an infinitely wide one-hidden-layer ReLU network (closed form);
- ``ntk``: the empirical tangent kernel of a width-64 ReLU network at its random initial weights (the
  reviewer's reading of the paper: the rule's kernel is the module network's tangent kernel);
- ``random``: no rule, random unit projections (the ``modular-random`` method): the reference.

Reported: ``recovery_init`` (the rule's answer against the true projections, Hungarian-matched subspace
overlap in [0, 1], :func:`modscale.rules.recovery_score`), ``recovery`` (after training), ``test`` (MSE, a
fraction of Var y = 1), ``kernel_s`` (the rule's wall time; it runs one job at a time) and the analytic
``flops_kernel``. The rule's strategy and starts are config keys (default: deflation from spectral starts,
the ``modular-kernel`` default; ``independent`` from ``random`` starts is the paper's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.sine_common import (
    KERNEL_RULE,
    Setup,
    check_common,
    common_params,
    cpu_threads,
    probe,
    run_stack,
    scaled_cost,
    training_for,
)

KERNELS = ("rbf", "laplace", "arccos", "ntk", "random")


def setup_of(config: dict[str, Any]) -> Setup:
    method = "modular-random" if config["kernel"] == "random" else "modular-kernel"
    return Setup(method, m=config["m"], k=config["k"], p=config["p"], b=config["b"])


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    config = jobs[0].config  # the seeds of one config share a stack
    if config["kernel"] != "random":
        # torch.optim (the rule's Adam) imports torch._dynamo on first use, ~1 s of CPU once per process;
        # done here so that it is not billed to the first job's kernel_s and the kernels' times compare.
        import torch._dynamo  # noqa: F401
    kernel = config["kernel"] if config["kernel"] != "random" else KERNEL_RULE[ctx.tier].kernel
    rule = dataclasses.replace(
        KERNEL_RULE[ctx.tier], kernel=kernel, strategy=config["strategy"], init=config["init"]
    )
    with cpu_threads(ctx.device):
        res = run_stack(
            setup_of(config), [j.seed for j in jobs], [config["n"]] * len(jobs), ctx.tier,
            training=training_for(ctx.tier, config), rule=rule, device=ctx.device,
        )  # fmt: skip
    return [dict(row, recovery_gain=row["recovery"] - row["recovery_init"]) for row in res.metrics]


def _params() -> tuple[Param, ...]:
    return (
        Param("kernel", str, "rbf", "the rule's kernel, or random projections (no rule)", choices=KERNELS),
        *common_params(m=16, k=4, p=2000),
        Param("n", int, 1000, "training samples", low=2),
        Param("strategy", str, "deflation", "kernel rule strategy (independent = the paper's)",
              choices=("deflation", "independent")),
        Param("init", str, "spectral", "kernel rule starts (random = the paper's)",
              choices=("spectral", "random")),
    )  # fmt: skip


def _cost(config: dict[str, Any], tier: str) -> float:
    """Seconds per run (measured at the small tier, m = 16, n = 1000, two workers on a 2-core AMD EPYC,
    2026-12-04; other tiers scaled by training FLOPs, :func:`scaled_cost`)."""
    rule = {"random": 0.0, "rbf": 0.7, "laplace": 0.53, "arccos": 0.8, "ntk": 0.8}[config["kernel"]]
    return scaled_cost(0.53 + rule, config, tier)


EXPERIMENTS = (
    Experiment(
        name="sine_kernels",
        description="kernel choice in the rule (rbf, laplace, arccos, ntk; or random): recovery, loss, time",
        params=_params(),
        tiers={
            "smoke": Tier(grid(kernel=list(KERNELS), m=6, k=2, p=300, n=200), seeds=1),
            "small": Tier(grid(kernel=list(KERNELS)), seeds=5),
            "paper": Tier(
                grid(
                    kernel=list(KERNELS),
                    m=[8, 16, 32],
                    k=[4, 8],
                    p=10_000,
                    n=[1000, 10_000],
                    strategy=["deflation", "independent"],
                    init=["spectral", "random"],
                ),
                seeds=10,
                note="GPU or Ray cluster",
            ),  # fmt: skip
        },
        run=run,
        check=check_common,
        max_chunk=64,
        paper="(the paper's kernel is not given)",
        probe=probe,
        cost=_cost,
    ),
)

__all__ = ["EXPERIMENTS", "KERNELS", "run", "setup_of"]
