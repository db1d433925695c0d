"""Networks on the loss_trends axes: train and test loss of MLPs on the sine task vs k, m, p and n.

The paper's loss_trends figure draws a network (solid) and its theory (dashed); reviewers asked for both on
one axis. Each run here is one point (panel, k, m, n, p) of a monolithic MLP with p parameters (the width
whose closed-form count is closest to p; the exact count is stored as ``n_params``), trained on n samples of
SineTask(m, k) and tested against the noiseless target, so the losses are fractions of the target variance
like the closed forms of ``theory_loss_trends`` (DESIGN section 1), which the figure draws beside them.

Choices (ours):

- Training as in :mod:`modscale.experiments.sine_common` (minibatch Adam, the tier's steps), but **without
  early stopping** by default: the theory is the min-norm least-squares fit, with no model selection, and
  early stopping would hide the spike at p ~ n. ``early_stopping=true`` turns it on.
- ``model=modular`` trains a ModularNet with K = k modules on the task's true projections (fixed), the
  network the modular theory (Theorem 2) describes; the figure's m panel compares it with that theory.
- The grid mirrors ``theory_loss_trends``: the k and m panels at n = 1000 for a few p (thin lines), the p
  panel at n = 1000 and the n panel at p = 1000 for several m; the small tier takes fewer values.

All jobs of one network shape (m, p; and k for modular) share a stack: the k panel's tasks and the n panel's
sample sizes are replicas of one stacked training (each job its own task and its own n samples).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.sine_common import (
    Setup,
    check_common,
    common_params,
    cpu_threads,
    probe,
    run_stack,
    scaled_cost,
    training_for,
)

M_RANGE = list(range(2, 10))
K_RANGE = list(range(2, 10))
_METHOD = {"monolithic": "monolithic", "modular": "modular-oracle"}


def _panels(ms, ks, p_lines, p_sweep, n_sweep, ms_sweep, *, modular_m: bool = False) -> list[dict]:
    out = grid(panel="k", k=ks, m=4, n=1000, p=p_lines)
    out += grid(panel="m", m=ms, k=4, n=1000, p=p_lines)
    if modular_m:
        out += grid(panel="m", model="modular", m=ms, k=4, n=1000, p=p_lines)
    out += grid(panel="p", p=p_sweep, m=ms_sweep, n=1000)
    out += grid(panel="n", n=n_sweep, m=ms_sweep, p=1000)
    return out


def setup_of(config: dict[str, Any]) -> Setup:
    return Setup(_METHOD[config["model"]], m=config["m"], k=config["k"], p=config["p"], b=config["b"])


def stack_key(config: dict[str, Any]) -> tuple:
    """Jobs of one network shape and training share a stack (k is a shape only for modular networks)."""
    shape = {key: v for key, v in config.items() if key not in ("panel", "n", "k")}
    k = config["k"] if config["model"] == "modular" else None
    return (k, *sorted(shape.items()))


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    config = jobs[0].config
    training = dataclasses.replace(training_for(ctx.tier, config), early_stopping=config["early_stopping"])
    with cpu_threads(ctx.device):
        res = run_stack(
            setup_of(config), [j.seed for j in jobs], [j.config["n"] for j in jobs], ctx.tier,
            training=training, device=ctx.device,
            ks=[j.config["k"] for j in jobs] if config["model"] == "monolithic" else None,
        )  # fmt: skip
    return res.metrics


def _params() -> tuple[Param, ...]:
    return (
        Param("panel", str, "m", "figure panel of the point", choices=("k", "m", "p", "n")),
        Param("model", str, "monolithic", "monolithic MLP, or k modules on the true projections",
              choices=("monolithic", "modular")),
        *common_params(m=4, k=4, p=1000),
        Param("n", int, 1000, "training samples", low=2),
        Param("early_stopping", bool, False, "early stopping on a validation set (the theory has none)"),
    )  # fmt: skip


EXPERIMENTS = (
    Experiment(
        name="sine_loss_trends",
        description="MLPs on the sine task: train/test loss vs k, m, p and n (the theory's axes)",
        params=_params(),
        tiers={
            "smoke": Tier(_panels([2, 5], [2, 5], [200], [100, 1000], [100, 1000], [3]), seeds=1),
            "small": Tier(
                _panels(
                    M_RANGE,
                    K_RANGE,
                    [300, 3000],
                    [100, 300, 1000, 3000, 10_000],
                    [100, 300, 1000, 3000, 10_000],
                    [2, 5, 8],
                    modular_m=True,
                ),
                seeds=3,
            ),
            "paper": Tier(
                _panels(
                    M_RANGE,
                    K_RANGE,
                    [100, 200, 400, 2000, 5000, 10_000, 50_000],
                    [int(round(v)) for v in (100 * 10 ** (i / 4) for i in range(13))],
                    [int(round(v)) for v in (100 * 10 ** (i / 4) for i in range(13))],
                    M_RANGE,
                    modular_m=True,
                ),
                seeds=5,
                note="GPU or Ray cluster",
            ),
        },  # fmt: skip
        run=run,
        check=check_common,
        stack_key=stack_key,
        max_chunk=64,
        paper="loss_trends (Fig.: loss vs k, m, p, n; solid = network)",
        # seconds per run, two workers on a 2-core AMD EPYC (2026-12-04), other tiers scaled by training FLOPs
        probe=probe,
        cost=lambda config, tier: scaled_cost(0.18 + config["p"] / 22_700, config, tier, config["p"]),
    ),
)
