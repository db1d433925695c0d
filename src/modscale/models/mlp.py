"""The monolithic baseline: a ReLU multilayer perceptron with S stacked replicas (DESIGN section 3).

    h_0 = x,  h_l = relu(h_{l-1} W_l + c_l)  (l = 1..depth),  f(x) = h_depth W_out + c_out

Parameters per replica (closed form, :meth:`MLP.count_parameters`):

    p = in_dim w + w + (depth - 1)(w^2 + w) + w out_dim + out_dim

Example::

    net = MLP(in_dim=8, width=64, depth=2, n_replicas=4, generator=[0, 1, 2, 3])
    y = net(torch.randn(100, 8))          # (4, 100, 1): the same input for all replicas
    y = net(torch.randn(4, 100, 8))       # (4, 100, 1): each replica its own input
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modscale._checks import check_int
from modscale._torch import GeneratorLike, as_generators
from modscale.errors import InvalidValue
from modscale.models._replicas import Replicated, init_replicas


def _solve_width(p: int, count, what: str) -> int:
    """The width w >= 1 whose parameter count(w) (increasing in w) is closest to p; ties go to the smaller."""
    p = check_int("p", p, low=1)
    lo, hi = 1, 1
    while count(hi) < p:
        hi *= 2
        if hi > 2**40:
            raise InvalidValue(f"p = {p} is out of reach for {what}")
    while lo < hi:  # smallest w with count(w) >= p
        mid = (lo + hi) // 2
        if count(mid) >= p:
            hi = mid
        else:
            lo = mid + 1
    if lo > 1 and p - count(lo - 1) <= count(lo) - p:
        return lo - 1
    return lo


class MLP(Replicated):
    """ReLU MLP with ``depth`` hidden layers of ``width`` units, stacked over ``n_replicas`` replicas.

    Weights are stored as (S, fan_in, fan_out) and biases as (S, fan_out); initialisation is torch.nn.Linear's
    default (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))). ``generator``: a torch.Generator, an int
    seed or None (seed 0) shared by all replicas, or a sequence of S of them, one per replica (replica s then
    equals ``MLP(..., n_replicas=1, generator=generator[s])``).

    forward(x): x (n, in_dim) shared by all replicas or (S, n, in_dim) -> (S, n, out_dim); a single replica
    fed a 2-D batch returns (n, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        out_dim: int = 1,
        n_replicas: int = 1,
        generator: GeneratorLike | Sequence[GeneratorLike] = None,
    ):
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim, low=1)
        self.width = check_int("width", width, low=1)
        self.depth = check_int("depth", depth, low=1)
        self.out_dim = check_int("out_dim", out_dim, low=1)
        self.n_replicas = check_int("n_replicas", n_replicas, low=1)
        gens = as_generators(generator, self.n_replicas)
        dims = [self.in_dim] + [self.width] * self.depth + [self.out_dim]
        specs = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = fan_in**-0.5
            specs += [("uniform", (fan_in, fan_out), bound), ("uniform", (fan_out,), bound)]
        tensors = init_replicas(gens, specs)
        self.weights = nn.ParameterList(nn.Parameter(t) for t in tensors[0::2])  # (S, fan_in, fan_out)
        self.biases = nn.ParameterList(nn.Parameter(t) for t in tensors[1::2])  # (S, fan_out)

    @staticmethod
    def count_parameters(in_dim: int, width: int, depth: int, out_dim: int = 1) -> int:
        """Trainable parameters of one replica: in w + w + (depth - 1)(w^2 + w) + w out + out."""
        d, w = check_int("in_dim", in_dim, low=1), check_int("width", width, low=1)
        L, o = check_int("depth", depth, low=1), check_int("out_dim", out_dim, low=1)
        return d * w + w + (L - 1) * (w * w + w) + w * o + o

    @classmethod
    def width_for(cls, p: int, in_dim: int, depth: int, out_dim: int = 1) -> int:
        """The width whose parameter count is closest to p (for sweeps over p); at least 1."""
        return _solve_width(p, lambda w: cls.count_parameters(in_dim, w, depth, out_dim), "an MLP")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self._check_input(x)
        # a shared x (n, in_dim) is an expanded view (S, n, in_dim): no copy
        h = x.expand(self.n_replicas, *x.shape) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for l, (W, c) in enumerate(zip(self.weights, self.biases, strict=True)):
            # bias, product and ReLU in two kernels: c + h W in one GEMM call, then ReLU in place (its
            # backward reads its output only, and baddbmm's backward never reads it)
            h = torch.baddbmm(c.unsqueeze(-2), h, W)  # (S, n, fan_out)
            if l < last:
                h = h.relu_()
        return self._finish(h, shared)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, width={self.width}, depth={self.depth}, out_dim={self.out_dim}, "
            f"n_replicas={self.n_replicas}"
        )


__all__ = ["MLP"]
