"""Training to convergence in closed form: the random-features and lazy (linearised) regimes of a network.

Two limits of gradient-descent training of f(x; theta) on the squared loss have a closed form, and both are
"finite-width" checks of the theory (modscale.theory), whose model is linear in p parameters:

- **random features**: every layer but the readout frozen at its initialisation, the readout (W_out, c_out)
  fitted by minimum-norm least squares on the last hidden layer's activations: the theory's model exactly,
  with the features of the network at init (p = the readout's parameters);
- **lazy**: the network linearised around its initial weights theta_0,

      f_lin(x) = f(x; theta_0) + J(x) (theta - theta_0),   J(x) = d f(x; theta) / d theta at theta_0,

  trained to convergence: gradient descent (or flow) from theta_0 on the squared loss converges to the
  minimum-norm displacement, the least-squares fit of y - f(x; theta_0) on the tangent features J(x) (Jacot,
  Gabriel, Hongler 2018; "lazy training", Chizat, Oyallon, Bach 2019). p = every trainable parameter.

:func:`features` computes the features of a stacked model (S replicas, each on its own inputs) by per-sample
gradients (``torch.func``: the readout's gradient is the last hidden layer's activation, so one routine serves
both regimes); :func:`fit_min_norm` solves the minimum-norm least squares of every replica on nested training
sets (its first n rows, for each n of a grid) and returns the predictions.

Example::

    net = MLP(8, 64, 2, n_replicas=3, generator=[0, 1, 2])
    Phi, f0 = features(net, X, "lazy")                  # (3, n, p), (3, n)
    Phi_t, f0_t = features(net, X_test, "lazy")
    pred = fit_min_norm(Phi, y - f0, [10, 100, 1000], Phi_t) + f0_t[:, None]   # (3, 3 sizes, n_test)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modscale._checks import check_choice, check_int
from modscale.errors import InvalidValue

REGIMES = ("random-features", "lazy")
"""The closed-form training regimes: a random-features fit and the linearised (lazy) network."""
# The minimum-norm solve adds this much ridge, relative to the mean of the Gram matrix's diagonal: far below
# any eigenvalue that carries signal in float64, it only keeps Cholesky defined where features are collinear.
JITTER = 1e-10


def _readout_names(model: nn.Module) -> set[str]:
    last = len(model.weights) - 1
    return {f"weights.{last}", f"biases.{last}"}


def features(
    model: nn.Module, X: torch.Tensor, regime: str, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every replica of a stacked ``model`` (an MLP or a ModularNet) on its own inputs.

    X: (S, n, in_dim). Returns (Phi (S, n, P), f0 (S, n)) in float64: for ``"random-features"`` the
    gradient of the output over the readout's weights and biases (the last hidden layer's activations and a
    constant; P = the readout's parameters) and f0 = 0 (the readout is refitted from scratch); for ``"lazy"``
    the gradient over every trainable parameter (P = p) and f0 = the output at the initial weights.
    """
    from torch.func import functional_call, grad, vmap

    check_choice("regime", regime, REGIMES)
    S = model.n_replicas
    if X.dim() != 3 or X.shape[0] != S:
        raise InvalidValue(f"X must be (S={S}, n, in_dim), got {tuple(X.shape)}")
    keep = _readout_names(model) if regime == "random-features" else None
    params = {
        name: p.detach()
        for name, p in model.named_parameters()
        if p.requires_grad and (keep is None or name in keep)
    }

    def output(p: dict, xi: torch.Tensor) -> torch.Tensor:  # xi (S, in_dim): one sample per replica
        return functional_call(model, p, (xi.unsqueeze(1),)).sum()  # the replicas' outputs do not mix

    per_sample = vmap(grad(output), in_dims=(None, 1))
    blocks, offsets = [], []
    with torch.no_grad():
        for start in range(0, X.shape[1], chunk):
            xc = X[:, start : start + chunk]
            g = per_sample(params, xc)  # name -> (nc, S, *shape)
            blocks.append(torch.cat([v.transpose(0, 1).reshape(S, xc.shape[1], -1) for v in g.values()], -1))
            if regime == "lazy":
                offsets.append(model(xc)[..., 0])
            else:
                offsets.append(torch.zeros(S, xc.shape[1]))
    return torch.cat(blocks, 1).double(), torch.cat(offsets, 1).double()


def _solve_spd(G: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """G^-1 b for a symmetric positive semi-definite G, with a relative ridge of :data:`JITTER`."""
    ridge = JITTER * float(G.diagonal().mean().clamp_min(1e-300))
    eye = torch.eye(G.shape[0], dtype=G.dtype)
    L, info = torch.linalg.cholesky_ex(G + ridge * eye)
    if int(info) == 0:
        return torch.cholesky_solve(b.unsqueeze(-1), L)[..., 0]
    return torch.linalg.lstsq(G + ridge * eye, b.unsqueeze(-1), driver="gelsd").solution[..., 0]


def fit_min_norm(
    Phi: torch.Tensor, y: torch.Tensor, sizes: Sequence[int], Phi_test: torch.Tensor, *, train: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Predictions on ``Phi_test`` of the minimum-norm least-squares fit of ``y`` on the first n rows of
    ``Phi``, for every replica and every n in ``sizes``.

    theta_n = argmin { |theta| : theta minimises |Phi[:n] theta - y[:n]|^2 },  prediction Phi_test theta_n.

    Phi (S, N, P), y (S, N), Phi_test (S, T, P) -> (S, len(sizes), T), float64. Computed in the smaller of the
    two dual forms: n <= P through the n x n Gram matrix (theta = Phi^T (Phi Phi^T)^-1 y, the interpolating
    solution), n > P through the P x P one (accumulated along the sizes, nested sets); both with the tiny
    relative ridge :data:`JITTER`. Cost per replica: O(N_P^2 P + N P^2 + sizes x min(n, P)^3).
    ``train=True`` also returns the mean squared residual on each fit's own n rows, (S, len(sizes)).
    """
    S, N, P = Phi.shape
    if y.shape != (S, N) or Phi_test.dim() != 3 or Phi_test.shape[::2] != (S, P):
        raise InvalidValue(
            f"shapes: Phi (S, N, P), y (S, N), Phi_test (S, T, P); got {tuple(Phi.shape)}, {tuple(y.shape)}, "
            f"{tuple(Phi_test.shape)}"
        )
    sizes = [check_int("size", n, low=1, high=N) for n in sizes]
    Phi, y, Phi_test = Phi.double(), y.double(), Phi_test.double()
    out = torch.empty(S, len(sizes), Phi_test.shape[1], dtype=torch.float64)
    residual = torch.empty(S, len(sizes), dtype=torch.float64)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for s in range(S):
        small = [i for i in order if sizes[i] <= P]
        if small:  # one Gram matrix of the largest such n; smaller n use its leading blocks
            top = sizes[small[-1]]
            K = Phi[s, :top] @ Phi[s, :top].T  # (top, top)
            K_test = Phi_test[s] @ Phi[s, :top].T  # (T, top)
            for i in small:
                n = sizes[i]
                alpha = _solve_spd(K[:n, :n], y[s, :n])
                out[s, i] = K_test[:, :n] @ alpha
                residual[s, i] = (K[:n, :n] @ alpha - y[s, :n]).pow(2).mean()
        G = torch.zeros(P, P, dtype=torch.float64)
        b = torch.zeros(P, dtype=torch.float64)
        done = 0
        for i in (i for i in order if sizes[i] > P):  # nested sets: add the new rows only
            n = sizes[i]
            A = Phi[s, done:n]
            G += A.T @ A
            b += A.T @ y[s, done:n]
            done = n
            theta = _solve_spd(G, b)
            out[s, i] = Phi_test[s] @ theta
            if train:
                residual[s, i] = (Phi[s, :n] @ theta - y[s, :n]).pow(2).mean()
    return (out, residual) if train else out


__all__ = ["REGIMES", "JITTER", "features", "fit_min_norm"]
