"""Random-features and lazy regimes in closed form: features against autograd, the fit against lstsq, GD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modscale.errors import InvalidValue
from modscale.models import MLP, ModularNet
from modscale.training.linearized import features, fit_min_norm


def _problem(S=2, N=60, P=25, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(generator=g, dtype=torch.float64)
    return torch.randn(S, N, P, **kw), torch.randn(S, N, **kw), torch.randn(S, T, P, **kw)


def test_min_norm_fit_equals_lstsq_on_both_sides_of_the_threshold():
    """Second route: numpy's lstsq (SVD, the minimum-norm solution) for every size, below, at and above P."""
    Phi, y, Phi_test = _problem()
    sizes = [5, 20, 25, 40, 60]
    out, residual = fit_min_norm(Phi, y, sizes, Phi_test, train=True)
    for s in range(2):
        for i, n in enumerate(sizes):
            theta = np.linalg.lstsq(Phi[s, :n].numpy(), y[s, :n].numpy(), rcond=None)[0]
            own = np.mean((Phi[s, :n].numpy() @ theta - y[s, :n].numpy()) ** 2)
            assert residual[s, i] == pytest.approx(own, abs=1e-9)  # 0 where n <= P: it interpolates
            # at n = P the system is as ill-conditioned as it gets: there the relative ridge shows at 1e-6
            rtol = 1e-5 if n == 25 else 1e-7
            np.testing.assert_allclose(out[s, i].numpy(), Phi_test[s].numpy() @ theta, rtol=rtol, atol=1e-8)


def test_gradient_descent_from_zero_converges_to_the_min_norm_fit():
    """The lazy regime's claim: GD on the linear model from zero displacement ends at the min-norm fit."""
    Phi, y, Phi_test = _problem(S=1, N=12, P=30)
    theta = torch.zeros(30, dtype=torch.float64)
    A, b = Phi[0], y[0]
    lr = 1.0 / float(torch.linalg.matrix_norm(A, 2) ** 2)
    for _ in range(20_000):
        theta -= lr * A.T @ (A @ theta - b)
    np.testing.assert_allclose(
        fit_min_norm(Phi, y, [12], Phi_test)[0, 0].numpy(), (Phi_test[0] @ theta).numpy(), atol=1e-8
    )


@pytest.mark.parametrize(
    "model",
    [
        MLP(4, 16, 2, n_replicas=3, generator=[0, 1, 2]),
        ModularNet(6, 3, 1, 8, 2, n_replicas=3, generator=[0, 1, 2]),
        ModularNet(6, 3, 2, 8, 1, projection="fixed", n_replicas=3, generator=[0, 1, 2]),
    ],
)
def test_lazy_features_are_the_per_sample_gradients(model):
    """Second route: backward of one output at a time, row by row of the Jacobian."""
    X = torch.randn(3, 9, model.in_dim, generator=torch.Generator().manual_seed(1))
    Phi, f0 = features(model, X, "lazy", chunk=4)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert Phi.shape == (3, 9, sum(p[0].numel() for p in trainable))
    np.testing.assert_allclose(f0.numpy(), model(X)[..., 0].detach().double().numpy(), atol=1e-6)
    for s, i in [(0, 0), (1, 4), (2, 8)]:
        model.zero_grad()
        model(X)[s, i, 0].backward()
        row = torch.cat([p.grad[s].reshape(-1) for p in trainable]).double()
        np.testing.assert_allclose(Phi[s, i].numpy(), row.numpy(), atol=1e-6)


def test_random_features_are_the_last_hidden_layer_and_a_constant():
    net = MLP(4, 16, 2, n_replicas=2, generator=[0, 1])
    X = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(2))
    Phi, f0 = features(net, X, "random-features")
    h = torch.relu(torch.baddbmm(net.biases[0].unsqueeze(1), X, net.weights[0]))
    h = torch.relu(torch.baddbmm(net.biases[1].unsqueeze(1), h, net.weights[1]))
    np.testing.assert_allclose(Phi[..., :16].numpy(), h.detach().double().numpy(), atol=1e-6)
    assert torch.all(Phi[..., 16] == 1) and torch.all(f0 == 0)


def test_bad_input():
    net = MLP(4, 8, 1, n_replicas=2)
    with pytest.raises(InvalidValue, match="regime must be one of"):
        features(net, torch.randn(2, 3, 4), "rich")
    with pytest.raises(InvalidValue, match="X must be"):
        features(net, torch.randn(3, 4), "lazy")
    Phi, y, Phi_test = _problem()
    with pytest.raises(InvalidValue, match="size must be <= 60"):
        fit_min_norm(Phi, y, [61], Phi_test)
    with pytest.raises(InvalidValue, match="shapes"):
        fit_min_norm(Phi, y[:, :5], [3], Phi_test)
