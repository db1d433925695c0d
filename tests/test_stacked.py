"""Stacked training (DESIGN section 3): S networks trained as one stack equal the same S trained one by one.

Same seeds (initialisation and minibatch order per replica), same data, a different learning rate and sample
count per replica. The stack sums per-replica losses, so every replica gets exactly its own gradient; the
only differences are float32 rounding (masked means over padded rows instead of plain means), which Adam's
normalised steps keep at the 1e-6 level over these short runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modscale.models import MLP, ModularNet
from modscale.tasks import SineTask
from modscale.training import train

SEEDS = [10, 11, 12]
LRS = [1e-3, 4e-3, 1e-2]
N_S = [40, 70, 100]
STEPS = 60
TOL = dict(rtol=2e-4, atol=2e-5)


def _task_data():
    task = SineTask(4, 2, generator=0)
    X, y = task.sample(100, generator=1)
    Xt, yt = task.sample(300, generator=2)
    return X, y, Xt, yt


def _make(kind, S, generator):
    if kind == "mlp":
        return MLP(4, 16, 2, n_replicas=S, generator=generator)
    net = ModularNet(4, 2, 1, 8, 2, projection=kind, n_replicas=S, generator=generator)
    return net


def _assert_same(stacked, singles, h_stack, h_singles):
    for s, (single, h) in enumerate(zip(singles, h_singles, strict=True)):
        for p_stack, p_one in zip(stacked.parameters(), single.parameters(), strict=True):
            torch.testing.assert_close(p_stack[s], p_one[0], **TOL)
        np.testing.assert_allclose(h_stack.train[:, s], h.train[:, 0], rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(h_stack.test[:, s], h.test[:, 0], rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(h_stack.final_train[s], h.final_train[0], rtol=2e-4)
        assert h_stack.stopped_step[s] == h.stopped_step[0] and h_stack.best_step[s] == h.best_step[0]


@pytest.mark.parametrize("kind", ["mlp", "linear", "nonlinear"])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_stack_equals_one_by_one_shared_data(kind, batch_size):
    X, y, Xt, yt = _task_data()
    stacked = _make(kind, 3, SEEDS)
    h_stack = train(
        stacked,
        (X, y),
        steps=STEPS,
        lr=LRS,
        batch_size=batch_size,
        n_samples=N_S,
        test=(Xt, yt),
        generator=SEEDS,
        eval_every=20,
    )
    singles, h_singles = [], []
    for seed, lr, n in zip(SEEDS, LRS, N_S, strict=True):
        single = _make(kind, 1, seed)
        h_singles.append(
            train(
                single,
                (X[:n], y[:n]),
                steps=STEPS,
                lr=lr,
                batch_size=batch_size,
                test=(Xt, yt),
                generator=seed,
                eval_every=20,
            )
        )
        singles.append(single)
    _assert_same(stacked, singles, h_stack, h_singles)
    # the replicas really differ (different seeds, learning rates and data)
    assert not np.allclose(h_stack.final_train[0], h_stack.final_train[2])


def test_stack_equals_one_by_one_per_replica_data_epochs_and_early_stopping():
    """Own data per replica (per-replica X and y), epochs over each replica's own n_s (different step counts),
    and early stopping with each replica's own best weights."""
    task = SineTask(4, 2, generator=3)
    X = torch.stack([task.sample(100, generator=10 + s)[0] for s in range(3)])  # (S, n, m)
    y = torch.stack(
        [
            task.target(X[s]) + 0.3 * torch.randn(100, 1, generator=torch.Generator().manual_seed(s))
            for s in range(3)
        ]
    )  # (S, n, 1): its own label noise per replica
    Xv, yv = task.sample(200, generator=20)
    Xt, yt = task.sample(300, generator=21)
    common = dict(
        epochs=12, batch_size=8, eval_every=5, val=(Xv, yv), test=(Xt, yt), early_stopping=True, patience=4
    )
    stacked = MLP(4, 32, 2, n_replicas=3, generator=SEEDS)
    h_stack = train(stacked, (X, y), lr=[1e-2, 2e-2, 3e-2], n_samples=[24, 40, 60], generator=SEEDS, **common)
    singles, h_singles = [], []
    for s in range(3):
        single = MLP(4, 32, 2, generator=SEEDS[s])
        n = [24, 40, 60][s]
        h = train(single, (X[s, :n], y[s, :n]), lr=[1e-2, 2e-2, 3e-2][s], generator=SEEDS[s], **common)
        singles.append(single)
        h_singles.append(h)
    for s, (single, h) in enumerate(zip(singles, h_singles, strict=True)):
        # the stack keeps recording rows after a replica stops; compare the rows the single run has
        rows = len(h.steps)
        np.testing.assert_array_equal(h_stack.steps[:rows], h.steps)
        np.testing.assert_allclose(h_stack.val[:rows, s], h.val[:, 0], rtol=2e-4, atol=1e-6)
        assert h_stack.stopped_step[s] == h.stopped_step[0] and h_stack.best_step[s] == h.best_step[0]
        np.testing.assert_allclose(h_stack.final_test[s], h.final_test[0], rtol=2e-4)
        for p_stack, p_one in zip(stacked.parameters(), single.parameters(), strict=True):
            torch.testing.assert_close(p_stack[s], p_one[0], **TOL)
