"""When does training find the modules by itself? Module recovery across m, k, b and n on the sine task.

The paper's claim 4: a modular network whose projections start at random does worse than one whose
projections come from the kernel rule, and often worse than a monolith. Whether training alone moves random
projections onto the true ones depends on the input dimension m, the number of modules k, their dimension b
and the samples n; this experiment maps it. Per (m, k, b, n) and seed it trains, on the same planted task
and data, at the same trainable parameter count p (:mod:`modscale.experiments.sine_common`):

- ``monolithic``: an MLP on x (the reference the paper compares with);
- ``modular-random``: ModularNet, K = k modules, projections started at random and trained;
- ``modular-kernel``: the same network, projections started from the kernel rule and trained;
- ``modular-oracle``: the true projections, fixed (what knowing the modules is worth).

Stored per run: ``test`` (fraction of Var y left unexplained), ``recovery_init`` and ``recovery`` (the
Hungarian-matched subspace overlap of the projections with the true ones before and after training,
:func:`modscale.rules.recovery_score`; for ``modular-kernel`` the first is the rule's own recovery),
``kernel_s`` (the rule's wall time), ``flops_train`` / ``flops_kernel`` (analytic training and rule compute).
On the nonlinear variant (``nonlinear=true``) a module's input is not a linear projection of x, so no
recovery is stored and the oracle does not apply.

Modules must fit: k b <= m (k distinct b-dimensional subspaces of R^m; the task draws them at random, so
for k b close to m they overlap, which is part of what is measured). The figure
(:mod:`modscale.plots.sine_phase`) draws where modular-random's recovery after training falls below 0.9
over (m, k) for each b, beside the kernel rule's, and the samples each method needs to get there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modscale.errors import InvalidValue
from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.sine_common import (
    Setup,
    check_common,
    common_params,
    cpu_threads,
    probe,
    run_stack,
    scaled_cost,
    stack_key_all_but_n,
    training_for,
)

METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-oracle")
RECOVERED = 0.9  # the recovery score at which the figure calls the modules found
_RECOVERY = ("recovery_init", "recovery")


def setup_of(config: dict[str, Any]) -> Setup:
    return Setup(
        config["method"], m=config["m"], k=config["k"], p=config["p"], b=config["b"],
        nonlinear=config["nonlinear"],
    )  # fmt: skip


def check(config: dict[str, Any]) -> None:
    check_common(config)
    m, k, b = config["m"], config["k"], config["b"]
    if k * b > m:
        raise InvalidValue(
            f"config keys k * b must be <= m = {m} (k modules of dimension b in m inputs), got k={k}, b={b}"
        )
    if config["nonlinear"] and config["method"] == "modular-oracle":
        raise InvalidValue(
            "config key 'method' cannot be 'modular-oracle' with nonlinear=true (no linear projection gives "
            "a module its input); allowed there: monolithic, modular-random, modular-kernel"
        )
    setup_of(config)


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    config = jobs[0].config  # a chunk: one config at several seeds and n (stack_key_all_but_n)
    setup = setup_of(config)
    with cpu_threads(ctx.device):
        res = run_stack(
            setup, [j.seed for j in jobs], [j.config["n"] for j in jobs], ctx.tier,
            training=training_for(ctx.tier, config), device=ctx.device,
        )  # fmt: skip
    rows = []
    for row in res.metrics:
        if config["nonlinear"]:  # recovery against the U_i of a nonlinear task means nothing
            row = {key: v for key, v in row.items() if key not in _RECOVERY}
        rows.append(row)
    return rows


def _params() -> tuple[Param, ...]:
    return (
        Param("method", str, "modular-random", "network and projection start", choices=METHODS),
        *common_params(m=16, k=4, p=2000),
        Param("n", int, 2000, "training samples", low=2),
        Param("nonlinear", bool, False, "the nonlinear variant of the task (no recovery stored)"),
    )


def _fits(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs of a grid whose k modules of dimension b fit in m inputs."""
    return [c for c in configs if c.get("k", 4) * c.get("b", 1) <= c.get("m", 16)]


# small: about 3 minutes on a 2-core CPU; paper: the full map with 5 seeds (`modscale run sine_phase --tier
# paper --plan` prices it), the nonlinear variant at a few points
SMALL = _fits(grid(method=list(METHODS), m=[4, 8, 16, 32], k=[2, 4], n=[250, 1000, 4000]))
PAPER = _fits(
    grid(
        method=list(METHODS), m=[4, 8, 16, 32, 64], k=[2, 4, 8, 16], b=[1, 2, 3],
        n=[1000, 4000, 16_000, 64_000], p=10_000,
    )
) + grid(
    method=["monolithic", "modular-random", "modular-kernel"], m=[8, 32], k=4, n=[4000, 64_000], p=10_000,
    nonlinear=True,
)  # fmt: skip


def _cost(config: dict[str, Any], tier: str) -> float:
    """Seconds per run: measured at the small tier (p = 2000, 6-job stacks, two workers on a 2-core AMD EPYC,
    2026-12-04: 0.25 s per run of a monolith's training, 0.45 s of a modular network's, 0.2 s of the rule),
    scaled by training FLOPs (:func:`scaled_cost`)."""
    rule = 0.2 if config["method"] == "modular-kernel" else 0.0
    return scaled_cost(0.25 if config["method"] == "monolithic" else 0.45, config, tier) + rule


EXPERIMENTS = (
    Experiment(
        name="sine_phase",
        description="where training finds the modules from random starts: recovery and test loss over "
        "m, k, b, n (monolithic, modular random/kernel/oracle at equal parameter count)",
        params=_params(),
        tiers={
            "smoke": Tier(grid(method=list(METHODS), m=[4, 8], k=2, p=300, n=256), seeds=1),
            "small": Tier(SMALL, seeds=2),
            "paper": Tier(PAPER, seeds=5, note="GPU or Ray cluster"),
        },
        run=run,
        check=check,
        stack_key=stack_key_all_but_n,
        max_chunk=64,
        paper="",
        probe=probe,
        cost=_cost,
    ),
)

__all__ = ["EXPERIMENTS", "METHODS", "RECOVERED", "run", "setup_of", "check"]
