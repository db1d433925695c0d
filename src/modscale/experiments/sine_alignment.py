"""Module alignment over training: do the learned projections line up with the true ones? (PAPER.md sims.png
and tsne.png; DESIGN section 4.)

Each run trains a ModularNet with K = k modules on n samples of SineTask(m, k), its projections started from
the kernel rule (``modular-kernel``; ours: deflation from spectral starts, or the paper's: independent
restarts from random starts) or at random (``modular-random``), and records every ``track_every``
steps the alignment of its projections with the task's true ones,

    alignment(t) = (1/k) sum over Hungarian-matched pairs (i, j) of |Q_i(t) P_j^T|_F^2 / b   in [0, 1],

(:func:`modscale.rules.recovery_score`; Q_i, P_j orthonormal bases of the learned and true row spaces: 1 when
every true module has its own learned module on exactly its subspace, about b/m per module for random
directions), together with the test loss at the same steps. The paper plots a "similarity score" whose
definition it does not give (0.555 -> 0.63 with the kernel rule, 0.536 -> 0.58 at random over 1000
iterations); ours is the overlap above, so its levels are not the paper's: compare the ordering and the rise.

The run also stores the initial, final and true projections (small: K b m numbers each), from which the
figure draws the 2-D picture of learned vs true modules (the paper's tsne.png): a PCA of the module
projectors Q_i^T Q_i (sign-free, any b), one panel per seed.

Training is the tier's (:data:`modscale.experiments.sine_common.TRAINING`), one uninterrupted run like the
other sine experiments': the projections are read through the trainer's callback
(``run_stack(callback=...)``) before the first step and every ``track_every`` steps, so Adam's moment
estimates are kept. The tracked values are those of the current weights; ``recovery`` and ``test`` are
those of the returned weights (the best validation loss).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.experiments.sine_common import (
    KERNEL_RULE,
    Setup,
    check_common,
    common_params,
    cpu_threads,
    draw,
    mse,
    predict,
    probe,
    run_stack,
    scaled_cost,
    task_of,
    training_for,
)

METHODS = ("modular-kernel", "modular-random")
_DIGITS = 5  # stored projections: rounded, they only feed the picture


def setup_of(config: dict[str, Any]) -> Setup:
    return Setup(config["method"], m=config["m"], k=config["k"], p=config["p"], b=config["b"])


def _rounded(U: torch.Tensor) -> list:
    return np.round(U.detach().cpu().double().numpy(), _DIGITS).tolist()


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    from modscale.rules import recovery_score

    config = jobs[0].config  # the seeds of one config share a stack
    setup = setup_of(config)
    training = training_for(ctx.tier, config)
    if config["track_every"]:
        training = dataclasses.replace(training, eval_every=config["track_every"])
    rule = dataclasses.replace(KERNEL_RULE[ctx.tier], strategy=config["strategy"], init=config["init"])
    seeds = [j.seed for j in jobs]
    tasks = [task_of(setup, s) for s in seeds]
    X_test, y_test = draw(tasks, training.n_test, "test", seeds)  # run_stack's own test set
    track: dict[str, list] = {"steps": [], "alignment": [], "test": []}

    def observe(model: torch.nn.Module, step: int) -> None:
        U = model.projections.cpu()  # (S, K, b, m)
        track["steps"].append(step)
        track["alignment"].append([float(recovery_score(U[s], t.projections)) for s, t in enumerate(tasks)])
        track["test"].append(mse(predict(model, X_test), y_test).tolist())

    with cpu_threads(ctx.device):
        res = run_stack(
            setup, seeds, [config["n"]] * len(jobs), ctx.tier, training=training, rule=rule,
            device=ctx.device, callback=observe,
        )  # fmt: skip
    U_final = res.model.projections.cpu()
    align = np.asarray(track["alignment"])  # (T, S)
    tests = np.asarray(track["test"])  # (T, S)
    out = []
    for s, (row, task) in enumerate(zip(res.metrics, tasks, strict=True)):
        out.append(
            dict(
                row,
                track_steps=list(track["steps"]),
                track_fraction=[v / training.steps for v in track["steps"]],
                alignment=align[:, s].tolist(),
                track_test=tests[:, s].tolist(),
                alignment_start=float(align[0, s]),
                alignment_end=float(align[-1, s]),
                alignment_gain=float(align[-1, s] - align[0, s]),
                U_init=_rounded(res.initial_projections[s]),
                U_final=_rounded(U_final[s]),
                U_true=_rounded(task.projections),
            )
        )
    return out


def _params() -> tuple[Param, ...]:
    return (
        Param("method", str, "modular-kernel", "projections at the start: kernel rule or random",
              choices=METHODS),
        *common_params(m=16, k=4, p=2000),
        Param("n", int, 1000, "training samples", low=2),
        Param("strategy", str, "deflation", "kernel rule strategy (independent = the paper's)",
              choices=("deflation", "independent")),
        Param("init", str, "spectral", "kernel rule starts (random = the paper's)",
              choices=("spectral", "random")),
        Param("track_every", int, 0, "steps between alignment readings (0 = the tier's eval_every)", low=0),
    )  # fmt: skip


# ours (deflation from spectral starts), the paper's rule (independent restarts from random starts), random U
SMALL = (
    grid(method="modular-kernel", strategy="deflation", init="spectral")
    + grid(method="modular-kernel", strategy="independent", init="random")
    + grid(method="modular-random")
)
_LARGE = {"m": [8, 16, 32], "k": [4, 8], "p": 10_000, "n": [1000, 10_000]}
PAPER = grid(
    method="modular-kernel", strategy=["deflation", "independent"], init=["spectral", "random"], **_LARGE
) + grid(method="modular-random", **_LARGE)


def _cost(config: dict[str, Any], tier: str) -> float:
    """Seconds per run (measured at the small tier: m = 16, n = 1000, 5-seed stacks, two workers on a 2-core
    AMD EPYC, 2026-12-04; other tiers scaled by training FLOPs, :func:`scaled_cost`)."""
    return scaled_cost(0.4 + (0.4 if config["method"] == "modular-kernel" else 0.0), config, tier)


EXPERIMENTS = (
    Experiment(
        name="sine_alignment",
        description="alignment of learned with true module projections over training (kernel vs random)",
        params=_params(),
        tiers={
            "smoke": Tier(grid(method=list(METHODS), m=6, k=2, p=300, n=200), seeds=2),
            "small": Tier(SMALL, seeds=5),
            "paper": Tier(
                PAPER,
                seeds=10,
                note="GPU or Ray cluster",
            ),  # fmt: skip
        },
        run=run,
        check=check_common,
        max_chunk=64,
        paper="sims, tsne",
        probe=probe,
        cost=_cost,
    ),
)

__all__ = ["EXPERIMENTS", "METHODS", "run", "setup_of"]
