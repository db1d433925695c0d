"""The nonlinear sine task: modules see nonlinear features of x; modular vs monolithic networks (DESIGN
section 2; the paper's nonlinear variant, whose details it does not give).

The task: z_i = M_i U_i tanh(A_i x) (A_i an m x m Gaussian matrix with unit rows, M_i whitening z_i), then
y = normalised (1/sqrt(k)) sum_i g_i(z_i) (:class:`modscale.tasks.SineTask` with ``nonlinear=True``). No
linear projection of x gives a module its input, so the kernel rule (which returns linear U) does not apply.

Methods, all at the same trainable parameter count p (:mod:`modscale.experiments.sine_common`):

- ``monolithic``: an MLP on x;
- ``modular-nonlinear``: ModularNet with K = k modules, each reading V_i tanh(A_i x + c_i), a learnable
  one-hidden-layer projection of width m (``projection="nonlinear"``), random start, all trained;
- ``modular-linear``: the same modules on learnable linear projections U_i x (random start): the control
  that asks whether the nonlinear projection is what matters.

Reported: test MSE (a fraction of Var y = 1) and train MSE at each n, with the tier's training.
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

METHODS = ("monolithic", "modular-nonlinear", "modular-linear")
_SETUP = {  # method -> (sine_common method, projection)
    "monolithic": ("monolithic", None),
    "modular-nonlinear": ("modular-random", "nonlinear"),
    "modular-linear": ("modular-random", "linear"),
}


def setup_of(config: dict[str, Any]) -> Setup:
    method, projection = _SETUP[config["method"]]
    return Setup(
        method,
        m=config["m"],
        k=config["k"],
        p=config["p"],
        b=config["b"],
        nonlinear=True,
        projection=projection,
    )


def check(config: dict[str, Any]) -> None:
    check_common(config)
    setup = setup_of(config)
    if setup.n_params() > 2 * config["p"]:  # the projections alone exceed the budget
        raise InvalidValue(
            f"config key 'p' = {config['p']} is too small for method {config['method']!r} at "
            f"m = {config['m']}: "
            f"its smallest network has {setup.n_params()} parameters"
        )


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    config = jobs[0].config  # one method and shape per chunk; n and the seed vary
    with cpu_threads(ctx.device):
        res = run_stack(
            setup_of(config), [j.seed for j in jobs], [j.config["n"] for j in jobs], ctx.tier,
            training=training_for(ctx.tier, config), device=ctx.device,
        )  # fmt: skip
    return [dict(row) for row in res.metrics]


def _params() -> tuple[Param, ...]:
    return (
        Param("method", str, "modular-nonlinear", "network", choices=METHODS),
        *common_params(m=8, k=4, p=2000),
        Param("n", int, 1000, "training samples", low=2),
    )


EXPERIMENTS = (
    Experiment(
        name="sine_nonlinear",
        description="nonlinear sine task: modular networks with nonlinear projections vs monolithic",
        params=_params(),
        tiers={
            "smoke": Tier(grid(method=list(METHODS), m=4, k=2, p=300, n=[200]), seeds=1),
            "small": Tier(grid(method=list(METHODS), n=[500, 2000]), seeds=5),
            "paper": Tier(
                grid(
                    method=list(METHODS),
                    m=[4, 8, 16],
                    k=[2, 4, 8],
                    p=10_000,
                    n=[300, 1000, 3000, 10_000, 30_000, 100_000],
                ),
                seeds=10,
                note="GPU or Ray cluster",
            ),  # fmt: skip
        },
        run=run,
        check=check,
        stack_key=stack_key_all_but_n,
        max_chunk=64,
        paper="(nonlinear variant; no published numbers)",
        # seconds per run (small tier, 10-job stacks, two workers on a 2-core AMD EPYC), scaled by FLOPs
        probe=probe,
        cost=lambda config, tier: scaled_cost(0.3, config, tier),
    ),
)

__all__ = ["EXPERIMENTS", "METHODS", "run", "setup_of"]
