"""modscale.training: vectorised Adam against torch.optim.Adam, the trainer's protocol, history, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modscale.errors import InvalidType, InvalidValue, NonFiniteLossError
from modscale.models import MLP, ModularNet
from modscale.training import History, StackedAdam, TrainConfig, train


def _data(n=64, d=3, seed=0, q=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = torch.sin(X.sum(1, keepdim=True)).repeat(1, q) + 0.1 * torch.randn(n, q, generator=g)
    return X, y


def test_stacked_adam_equals_torch_adam_per_replica():
    """Second route: S independent torch.optim.Adam optimisers, each with its replica's learning rate."""
    S = 3
    lrs = [1e-3, 1e-2, 5e-2]
    stacked = MLP(3, 8, 2, n_replicas=S, generator=[1, 2, 3])
    singles = [MLP(3, 8, 2, generator=s) for s in (1, 2, 3)]
    opt = StackedAdam(stacked.parameters(), torch.tensor(lrs), S)
    refs = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(singles, lrs, strict=True)]
    X, y = _data()
    for _ in range(25):
        losses = (stacked(X) - y).pow(2).mean((1, 2))  # (S,)
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        for m, ref in zip(singles, refs, strict=True):
            ref.zero_grad()
            (m(X) - y).pow(2).mean().backward()
            ref.step()
    for s, m in enumerate(singles):
        for p_stack, p_one in zip(stacked.parameters(), m.parameters(), strict=True):
            torch.testing.assert_close(p_stack[s], p_one[0], rtol=1e-5, atol=1e-6)


def test_stacked_adam_inactive_replicas_are_frozen():
    net = MLP(3, 4, 1, n_replicas=2, generator=[0, 1])
    opt = StackedAdam(net.parameters(), torch.tensor([1e-2, 1e-2]), 2)
    before = [p.detach().clone() for p in net.parameters()]
    X, y = _data()
    (net(X) - y).pow(2).mean((1, 2)).sum().backward()
    opt.step(torch.tensor([True, False]))
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p[1], b[1]) and not torch.equal(p[0], b[0])
    assert all(float(m[1].abs().max()) == 0 for m in opt.exp_avg)


def test_train_plain_module_equals_torch_adam():
    """A plain nn.Module is one replica; full-batch training equals a hand-written torch.optim.Adam loop."""
    X, y = _data(50)
    torch.manual_seed(0)  # only to build the two identical plain modules below
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    ref = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    ref.load_state_dict(net.state_dict())
    hist = train(net, (X, y), steps=40, lr=3e-3, device="cpu")
    opt = torch.optim.Adam(ref.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.mse_loss(ref(X), y).backward()
        opt.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    final = nn.functional.mse_loss(ref(X), y).item()
    assert hist.final_train[0] == pytest.approx(final, rel=1e-5)
    assert hist.n_replicas == 1 and hist.device == "cpu"


def test_history_shapes_losses_and_training_reduces_loss():
    X, y = _data(128)
    Xt, yt = _data(256, seed=1)
    net = ModularNet(3, 2, 1, 16, 1, n_replicas=2, generator=[0, 1])
    hist = train(net, (X, y), steps=200, lr=1e-2, eval_every=50, val=(Xt, yt), test=(Xt, yt))
    assert isinstance(hist, History)
    assert hist.steps.tolist() == [50, 100, 150, 200]
    assert hist.train.shape == hist.val.shape == hist.test.shape == (4, 2)
    np.testing.assert_allclose(hist.val, hist.test)
    assert (hist.final_train < hist.train[0]).all()
    # final losses are the losses of the returned weights: recompute them directly
    with torch.no_grad():
        direct = (net(Xt) - yt).pow(2).mean((1, 2)).double().numpy()
    np.testing.assert_allclose(hist.final_test, direct, rtol=1e-5)
    assert hist.stopped_step.tolist() == [200, 200] and hist.best_step.tolist() == [200, 200]
    d = hist.as_dict()
    assert d["steps"] == [50, 100, 150, 200] and len(d["final_test"]) == 2


def test_early_stopping_keeps_each_replicas_best_weights():
    """Replica 1 has a learning rate that makes it overfit/oscillate; each replica keeps its own best."""
    X, y = _data(24, seed=3)
    Xv, yv = _data(200, seed=4)
    net = MLP(3, 64, 2, n_replicas=2, generator=[0, 1])
    hist = train(
        net, (X, y), steps=600, lr=[3e-3, 3e-2], eval_every=10, val=(Xv, yv), early_stopping=True, patience=5
    )
    for s in range(2):
        best_row = int(np.argmin(hist.val[:, s]))
        assert hist.best_step[s] == hist.steps[best_row]
        assert hist.final_val[s] == pytest.approx(hist.val[best_row, s], rel=1e-5)
        assert hist.stopped_step[s] <= hist.best_step[s] + 5 * 10
    assert hist.stopped_step.min() < 600  # at least one replica stopped early


def test_epochs_count_each_replicas_own_samples():
    X, y = _data(100)
    net = MLP(3, 8, 1, n_replicas=2, generator=[0, 1])
    hist = train(net, (X, y), epochs=3, batch_size=16, n_samples=[32, 100], lr=1e-3)
    assert hist.stopped_step.tolist() == [3 * 2, 3 * 7]  # ceil(32/16) = 2, ceil(100/16) = 7 per epoch


def test_batch_source_protocol():
    calls = []

    def batch(step, generator):
        calls.append(step)
        X = torch.randn(32, 3, generator=generator)
        return X, torch.sin(X[:, :1])

    net = MLP(3, 16, 1, n_replicas=2, generator=[0, 1])
    X_val, _ = _data(64)
    hist = train(net, batch, steps=30, lr=1e-2, test=(X_val, torch.sin(X_val[:, :1])), generator=5)
    assert calls == list(range(30))
    assert hist.final_train is None and hist.final_test.shape == (2,)
    with pytest.raises(InvalidValue, match="epochs"):
        train(net, batch, epochs=2)


def test_custom_per_sample_loss_and_integer_targets():
    """A sum of k cross-entropies, as Compositional CIFAR needs: y holds k class ids per sample."""
    k, C = 2, 3
    g = torch.Generator().manual_seed(0)
    X = torch.randn(90, 4, generator=g)
    y = torch.stack([(X[:, 0] > 0).long() + (X[:, 1] > 1).long(), (X[:, 2] > 0).long()], dim=1)  # (n, k)

    def sum_ce(pred, target):  # pred (S, B, k*C), target (S, B, k) -> (S, B)
        logits = pred.reshape(*pred.shape[:2], k, C)
        return (
            nn.functional.cross_entropy(logits.flatten(0, 2), target.flatten(), reduction="none")
            .view(target.shape)
            .sum(-1)
        )

    net = MLP(4, 32, 1, out_dim=k * C, n_replicas=2, generator=[0, 1])
    hist = train(net, (X, y), steps=150, lr=1e-2, loss=sum_ce)
    assert (hist.final_train < 0.6 * 2 * math.log(C)).all()
    assert hist.config["loss"] == "sum_ce"


def test_nonfinite_loss_raises_naming_replica_and_step():
    X, y = _data(32)
    net = MLP(3, 8, 1, n_replicas=3, generator=[0, 1, 2])
    with torch.no_grad():
        net.weights[0][1] = float("inf")
    with pytest.raises(NonFiniteLossError) as info:
        train(net, (X, y), steps=20, eval_every=5)
    assert info.value.replicas == [1] and info.value.step == 0
    assert "replica(s) [1]" in str(info.value)


def test_nonfinite_freeze_keeps_training_the_others():
    X, y = _data(32)
    net = MLP(3, 8, 1, n_replicas=3, generator=[0, 1, 2])
    with torch.no_grad():
        net.weights[0][2] = float("nan")
    hist = train(net, (X, y), steps=30, lr=1e-2, on_nonfinite="freeze")
    assert hist.diverged.tolist() == [False, False, True]
    assert np.isnan(hist.final_train[2]) and np.isfinite(hist.final_train[:2]).all()
    assert hist.stopped_step.tolist() == [30, 30, 0]


def test_device_auto_and_config_object():
    X, y = _data(16)
    cfg = TrainConfig(steps=5, lr=1e-3)
    hist = train(MLP(3, 4, 1), (X, y), cfg, device="auto")
    assert hist.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hist.config["steps"] == 5


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(steps=None), InvalidValue, "exactly one of steps and epochs"),
        (dict(steps=5, epochs=2), InvalidValue, "exactly one"),
        (dict(steps=0), InvalidValue, "steps"),
        (dict(steps=5, lr=-1.0), InvalidValue, "lr"),
        (dict(steps=5, lr=[1e-3, 1e-3, 1e-3]), InvalidValue, "lr"),
        (dict(steps=5, batch_size=0), InvalidValue, "batch_size"),
        (dict(steps=5, loss="mae"), InvalidValue, "loss"),
        (dict(steps=5, early_stopping=True), InvalidValue, "val"),
        (dict(steps=5, on_nonfinite="ignore"), InvalidValue, "on_nonfinite"),
        (dict(steps=5, device="tpu"), InvalidValue, "device"),
        (dict(steps=5, betas=(0.9, 1.0)), InvalidValue, "betas"),
        (dict(steps=5, betas=0.9), InvalidType, "betas must be two numbers"),
        (dict(steps=5, betas=(0.9, "x")), InvalidType, "betas must be two numbers"),
        (dict(steps=5, eps="1e-8"), InvalidType, "eps must be a number"),
        (dict(steps=5, compile="yes"), InvalidType, "compile must be True or False"),
        (dict(steps=5, early_stopping=1), InvalidType, "early_stopping must be True or False"),
        (dict(steps=5, learning_rate=1e-3), InvalidValue, "unknown training option"),
        (dict(steps=5, n_samples=[10, 0]), InvalidValue, "n_samples"),
        (dict(steps=5, n_samples=[10, 99]), InvalidValue, "n_samples"),
        (dict(steps=5, generator=[1, 2, 3]), InvalidValue, "generator"),
    ],
)
def test_bad_options(kwargs, exc, match):
    X, y = _data(20)
    net = MLP(3, 4, 1, n_replicas=2)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(exc, match=match):
        train(net, (X, y), **kwargs)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))  # nothing ran


def test_bad_data_is_rejected_before_training():
    X, y = _data(20)
    net = MLP(3, 4, 1, n_replicas=2)
    bad_X = X.clone()
    bad_X[3, 1] = float("nan")
    bad_y = y.clone()
    bad_y[0, 0] = float("inf")
    cases = [
        ((bad_X, y), InvalidValue, "X contains NaN or inf"),
        ((X, bad_y), InvalidValue, "y contains NaN or inf"),
        ((X[:, :2], y), InvalidValue, "in_dim=3"),
        ((X, y[:10]), InvalidValue, "same number of samples"),
        ((X, y[:, 0]), InvalidValue, "y must have shape"),
        ((X.long(), y), InvalidType, "floating"),
        ((X, y.expand(3, 20, 1)), InvalidValue, "y must have shape"),
        ([X], InvalidType, "pair"),
    ]
    for data, exc, match in cases:
        with pytest.raises(exc, match=match):
            train(net, data, steps=3)
    with pytest.raises(InvalidValue, match="val X contains NaN"):
        train(net, (X, y), steps=3, val=(bad_X, y))

    class Broken(nn.Module):
        n_replicas = 2

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3, 1))

    with pytest.raises(InvalidValue, match="leading dimension"):
        train(Broken(), (X, y), steps=3)
    Broken.n_replicas = 0
    with pytest.raises(InvalidValue, match="n_replicas"):
        train(Broken(), (X, y), steps=3)
    with pytest.raises(InvalidType, match="model"):
        train("mlp", (X, y), steps=3)


def test_callback_reads_weights_without_changing_training():
    """The callback sees step 0 and every history row, and training with it equals training without it."""
    X, y = _data()
    cfg = TrainConfig(steps=30, eval_every=10, lr=1e-2)
    plain = MLP(3, 8, 2, n_replicas=2, generator=[4, 5])
    observed = MLP(3, 8, 2, n_replicas=2, generator=[4, 5])
    seen: list[tuple[int, torch.Tensor, bool, bool]] = []

    def callback(model, step):
        w = next(model.parameters()).detach().clone()
        seen.append((step, w, model.training, torch.is_grad_enabled()))

    h0 = train(plain, (X, y), cfg, generator=[0, 1])
    h1 = train(observed, (X, y), cfg, generator=[0, 1], callback=callback)
    assert [s for s, *_ in seen] == [0, 10, 20, 30]
    assert not any(training or grad for _, _, training, grad in seen)
    assert not torch.equal(seen[0][1], seen[-1][1])  # the weights moved between readings
    torch.testing.assert_close(seen[-1][1], next(observed.parameters()).detach())
    np.testing.assert_array_equal(h0.train, h1.train)
    for a, b in zip(plain.parameters(), observed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(InvalidType, match="callback must be callable"):
        train(plain, (X, y), cfg, callback=3)


def test_stacked_adam_foreach_step_equals_the_masked_step_with_every_replica_active():
    """The unmasked step (foreach calls over all parameters) and the masked step (per parameter, with
    torch.where) are the same update: 30 steps of each from the same start agree to float32 rounding."""
    X, y = _data()
    nets = [MLP(3, 8, 2, n_replicas=3, generator=[4, 5, 6]) for _ in range(2)]
    opts = [StackedAdam(net.parameters(), torch.tensor([1e-3, 1e-2, 3e-2]), 3) for net in nets]
    every = torch.ones(3, dtype=torch.bool)
    for _ in range(30):
        for net, opt, active in zip(nets, opts, (None, every), strict=True):
            opt.zero_grad()
            (net(X) - y).pow(2).mean((1, 2)).sum().backward()
            opt.step(active)
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_stacked_adam_weight_decay_matches_torch_adam():
    """weight_decay adds wd * theta to the gradient, as torch.optim.Adam(weight_decay=wd) (second route)."""
    from modscale.training.adam import StackedAdam

    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3, 5, generator=g))
    q = torch.nn.Parameter(p.detach().clone())
    ours = StackedAdam([p], torch.tensor(0.01), 1, replica_dim=False, weight_decay=0.1)
    ref = torch.optim.Adam([q], lr=0.01, weight_decay=0.1)
    for _ in range(20):
        grad = torch.randn(3, 5, generator=g)
        p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_compile_without_a_compiler_warns_and_trains_as_eager(monkeypatch):
    """torch.compile needs a C++ compiler at run time: without one, training falls back to eager, the same
    numbers as compile=False, with one warning that says why."""
    import shutil

    from modscale import _torch

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no C++ compiler" in _torch.compile_unavailable()
    X, y = _data()
    eager = train(MLP(3, 8, 1, generator=0), (X, y), steps=20, lr=1e-2, eval_every=20)
    with pytest.warns(RuntimeWarning, match="compile=True: no C.. compiler was found.*without torch.compile"):
        fallback = train(MLP(3, 8, 1, generator=0), (X, y), steps=20, lr=1e-2, eval_every=20, compile=True)
    np.testing.assert_array_equal(eager.final_train, fallback.final_train)


def test_val_samples_validate_each_replica_on_its_own_leading_rows():
    """Second route: each replica trained alone with its validation rows cut to val_samples[s] (early
    stopping on) ends with the same weights and validation loss as the stack whose rows beyond it are junk."""
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(3, 64, 3, generator=g), torch.randn(3, 64, 1, generator=g)
    Xv, yv = torch.randn(3, 20, 3, generator=g), torch.randn(3, 20, 1, generator=g)
    counts = [5, 12, 20]
    junk = yv.clone()
    for s, v in enumerate(counts):
        junk[s, v:] = 1e3  # never to be seen
    cfg = dict(steps=60, lr=1e-2, eval_every=5, early_stopping=True, patience=3)
    stacked = train(
        MLP(3, 8, 1, n_replicas=3, generator=[0, 1, 2]), (X, y), val=(Xv, junk), val_samples=counts, **cfg
    )
    for s, v in enumerate(counts):
        alone = train(MLP(3, 8, 1, generator=s), (X[s], y[s]), val=(Xv[s, :v], yv[s, :v]), **cfg)
        assert stacked.best_step[s] == alone.best_step[0]
        assert stacked.final_val[s] == pytest.approx(alone.final_val[0], rel=1e-5)
    with pytest.raises(InvalidValue, match="val_samples must lie in"):
        train(MLP(3, 8, 1, n_replicas=3), (X, y), val=(Xv, yv), val_samples=[5, 21, 3], steps=1)
    with pytest.raises(InvalidValue, match="val_samples needs val"):
        train(MLP(3, 8, 1, n_replicas=3), (X, y), val_samples=[5, 5, 3], steps=1)
