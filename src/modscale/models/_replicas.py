"""Stacked replicas (DESIGN section 3): S independent networks of one shape held as one module.

Every parameter and buffer of a :class:`Replicated` module has a leading replica dimension S, and replica s
depends only on slice s, so one forward/backward pass over the stack computes S independent networks. The
initialisation draws replica 0's tensors first, then replica 1's, each from its own generator when a
sequence of S generators or seeds is given, so that replica s of a stack built from
``[seed_0, ..., seed_S-1]`` holds exactly the weights of a single network built from ``seed_s``.
"""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn

from modscale.errors import InvalidType, InvalidValue


def init_replicas(gens: list[torch.Generator], specs: list[tuple[str, tuple[int, ...], float]]):
    """One (S, *shape) tensor per spec (kind, shape, bound), drawn replica by replica (replica-major).

    kind "uniform": U(-bound, bound), with bound = 1 / sqrt(fan_in) torch.nn.Linear's default for weights and
    biases; "unit_rows": Gaussian rows scaled to unit norm (random directions); "zeros": no draw.
    """
    out = [torch.zeros(len(gens), *shape) for _, shape, _ in specs]
    for s, gen in enumerate(gens):
        for t, (kind, shape, bound) in zip(out, specs, strict=True):
            if kind == "uniform":
                t[s] = (2 * torch.rand(shape, generator=gen) - 1) * bound
            elif kind == "unit_rows":
                v = torch.randn(shape, generator=gen)
                t[s] = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return out


class Replicated(nn.Module):
    """Base of networks with a leading replica dimension: input checks and extraction of one replica."""

    n_replicas: int
    in_dim: int
    out_dim: int

    def _check_input(self, x) -> bool:
        """Validate x; True when x is shared by all replicas, (n, in_dim), False when it is (S, n, in_dim)."""
        if not isinstance(x, torch.Tensor):
            raise InvalidType(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InvalidType(f"x must be a floating-point tensor, got dtype {x.dtype}")
        S = self.n_replicas
        if x.dim() == 2 and x.shape[1] == self.in_dim:
            return True
        if x.dim() == 3 and x.shape[0] == S and x.shape[2] == self.in_dim:
            return False
        raise InvalidValue(
            f"x must have shape (n, in_dim={self.in_dim}) or (n_replicas={S}, n, in_dim={self.in_dim}), "
            f"got {tuple(x.shape)}"
        )

    def _finish(self, out: torch.Tensor, shared: bool) -> torch.Tensor:
        # (S, n, out_dim); a single network fed a 2-D batch answers like a plain network
        return out[0] if shared and self.n_replicas == 1 else out

    def replica(self, s: int) -> Replicated:
        """A new single-replica network (n_replicas = 1) holding a copy of replica s's weights."""
        S = self.n_replicas
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not -S <= s < S:
            raise InvalidValue(f"s must be an integer replica index in [0, {S}), got {s!r}")
        s = int(s) % S
        clone = copy.deepcopy(self)
        with torch.no_grad():
            for mod in clone.modules():
                for name, p in mod._parameters.items():
                    if p is not None:
                        mod._parameters[name] = nn.Parameter(
                            p[s : s + 1].clone(), requires_grad=p.requires_grad
                        )
                for name, buf in mod._buffers.items():
                    if buf is not None:
                        mod._buffers[name] = buf[s : s + 1].clone()
                if isinstance(mod, Replicated):
                    mod.n_replicas = 1
        return clone
