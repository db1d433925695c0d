"""A linear term beside a modular network: the additive index model of the estimators.

    f(x) = x W + c + g(x),   g a single-replica :class:`ModularNet` (g(x) = (1/sqrt(K)) sum_i f_i(U_i x)),

the form y = w^T x + sum_i f_i(U_i x) that :mod:`modscale.estimators` fits (``linear_term=True``). The linear
part carries what is linear in x, so the modules' capacity goes to the nonlinear remainder (on the real
data sets of benchmarks/bench_tabular.py it was ahead of the modules alone on 7 of 8). Without W (None),
f = g. Stacked like the ModularNet (S = 1, every parameter has a leading replica dimension), so that
:func:`modscale.training.train` treats both alike.

Example::

    g = ModularNet(20, n_modules=4, module_dim=1, width=32, depth=2, generator=0)
    f = AdditiveIndexNet(g, W=torch.zeros(20, 1))
    f(torch.randn(100, 20)).shape      # (100, 1)
    f.linear(x) + g.module_outputs(x)[0].sum(0) == f(x)
"""

from __future__ import annotations

import torch
from torch import nn

from modscale.errors import InvalidType, InvalidValue
from modscale.models.modular import ModularNet


class AdditiveIndexNet(nn.Module):
    """f(x) = x W + c + g(x) with g a single-replica ModularNet; W (in_dim, out_dim) starts the linear term
    (c starts at 0; set it through ``.c``), None leaves it out."""

    def __init__(self, net: ModularNet, W: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(net, ModularNet):
            raise InvalidType(f"net must be a ModularNet, got {type(net).__name__}")
        if net.n_replicas != 1:
            raise InvalidValue(f"net must have one replica (n_replicas = 1), got {net.n_replicas}")
        if W is not None and tuple(W.shape) != (net.in_dim, net.out_dim):
            raise InvalidValue(
                f"W must have shape (in_dim, out_dim) = ({net.in_dim}, {net.out_dim}), got {tuple(W.shape)}"
            )
        self.net = net
        self.n_replicas, self.in_dim = 1, net.in_dim
        self.W = self.c = None
        if W is not None:
            self.W = nn.Parameter(W.to(torch.float32).unsqueeze(0).clone())  # (1, m, out)
            self.c = nn.Parameter(torch.zeros(1, W.shape[1]))  # (1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, m) -> (n, out); (1, n, m) -> (1, n, out)
        out = self.net(x)
        if self.W is None:
            return out
        if x.dim() == 2:
            return out + x @ self.W[0] + self.c[0]
        return out + x @ self.W + self.c.unsqueeze(-2)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """The linear term x W + c alone, (n, m) -> (n, out); zeros without it."""
        if self.W is None:
            return x.new_zeros(x.shape[0], self.net.out_dim)
        return x @ self.W[0] + self.c[0]


__all__ = ["AdditiveIndexNet"]
