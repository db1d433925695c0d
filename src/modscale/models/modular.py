"""The modular network of the paper (DESIGN section 3), with S stacked replicas.

    f(x) = (1/sqrt(K)) sum_{i=1..K} f_i(P_i(x)),   f_i a ReLU MLP on R^b,

where the module input P_i(x) depends on ``projection``:

- "linear" (default): P_i(x) = U_i x, U_i in R^{b x in_dim} learnable, rows initialised as random unit vectors
  (so P_i(x) ~ N(0, I_b)-like for standard inputs); :meth:`ModularNet.set_projections` sets them, e.g. to the
  kernel learning rule's answer (DESIGN section 4);
- "fixed": the same, but U is a buffer that training never changes;
- "none": P_i(x) = x, every module sees the whole input (the mixture-of-experts-like ablation the reviewers
  asked for; module_dim is ignored and b = in_dim);
- "nonlinear": P_i(x) = V_i tanh(A_i x + c_i), a per-module one-hidden-layer MLP with ``projection_width``
  hidden units (default in_dim) as learnable nonlinear projection, the counterpart of the task's nonlinear
  variant z_i = U_i tanh(A_i x) (DESIGN section 2). Rows of A_i and V_i start as random unit vectors, c_i = 0.

All K modules and all S replicas run as one batched computation: weights are stacked as (S, K, fan_in,
fan_out) and every layer is one batched matmul over (S, K); there is no Python loop over modules or replicas.

Trainable parameters per replica (closed form, :meth:`ModularNet.count_parameters`), with b the module input
width (in_dim for "none"), w the module width, L the depth, o = out_dim, h = projection_width:

    K [b w + w + (L - 1)(w^2 + w) + w o + o]  +  {linear: K b in_dim;  fixed, none: 0;
                                                   nonlinear: K (h in_dim + h + b h)}

Example::

    net = ModularNet(16, n_modules=4, module_dim=1, width=32, depth=2, n_replicas=3, generator=[0, 1, 2])
    net.set_projections(U)                 # U (4, 1, 16) for all replicas or (3, 4, 1, 16)
    y = net(torch.randn(100, 16))          # (3, 100, 1)
    z = net.module_inputs(torch.randn(100, 16))   # (3, 4, 100, 1)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from modscale._checks import check_choice, check_int
from modscale._torch import GeneratorLike, as_generators
from modscale.errors import InvalidType, InvalidValue
from modscale.models._replicas import Replicated, init_replicas
from modscale.models.mlp import _solve_width

PROJECTIONS = ("linear", "nonlinear", "none", "fixed")
"""ModularNet's projections of the input: learned linear, learned nonlinear, none, or fixed buffers."""


class ModularNet(Replicated):
    """K module MLPs on learned (or fixed, or no) projections of the input, summed with weight 1/sqrt(K).

    forward(x): x (n, in_dim) shared by all replicas or (S, n, in_dim) -> (S, n, out_dim); a single replica
    fed a 2-D batch returns (n, out_dim).

    Parameters
    ----------
    in_dim : input width.
    n_modules : K.
    module_dim : b, the width of each module's input (<= in_dim; ignored for projection="none").
    width : hidden width of every module MLP.
    depth : number of hidden layers of every module MLP.
    projection : "linear" | "nonlinear" | "none" | "fixed" (module docstring).
    out_dim : output width of every module and of the network.
    n_replicas : S, the number of independent stacked networks.
    generator : torch.Generator, int seed or None (seed 0) shared by all replicas, or a sequence of S of
        them, one per replica (replica s then equals the single network built from ``generator[s]``).
    projection_width : hidden width of the nonlinear projections (default in_dim).
    """

    def __init__(
        self,
        in_dim: int,
        n_modules: int,
        module_dim: int | None,
        width: int,
        depth: int,
        projection: str = "linear",
        out_dim: int = 1,
        n_replicas: int = 1,
        generator: GeneratorLike | Sequence[GeneratorLike] = None,
        *,
        projection_width: int | None = None,
    ):
        super().__init__()
        self.projection = check_choice("projection", projection, PROJECTIONS)
        self.in_dim = check_int("in_dim", in_dim, low=1)
        self.n_modules = check_int("n_modules", n_modules, low=1)
        self.module_dim = self._module_dim(self.in_dim, module_dim, self.projection)
        self.width = check_int("width", width, low=1)
        self.depth = check_int("depth", depth, low=1)
        self.out_dim = check_int("out_dim", out_dim, low=1)
        self.n_replicas = check_int("n_replicas", n_replicas, low=1)
        self.projection_width = None
        if self.projection == "nonlinear":
            pw = self.in_dim if projection_width is None else projection_width
            self.projection_width = check_int("projection_width", pw, low=1)
        K, b, d = self.n_modules, self.module_dim, self.in_dim
        gens = as_generators(generator, self.n_replicas)

        # Every replica draws its projections, then its module MLPs, before the next replica draws anything.
        specs = []
        if self.projection in ("linear", "fixed"):
            specs.append(("unit_rows", (K, b, d), 0.0))  # U (K, b, in_dim)
        elif self.projection == "nonlinear":
            h = self.projection_width
            specs += [("unit_rows", (K, h, d), 0.0), ("zeros", (K, h), 0.0), ("unit_rows", (K, b, h), 0.0)]
        n_proj = len(specs)
        dims = [b] + [self.width] * self.depth + [self.out_dim]
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = fan_in**-0.5
            specs += [("uniform", (K, fan_in, fan_out), bound), ("uniform", (K, fan_out), bound)]
        tensors = init_replicas(gens, specs)
        proj, layers = tensors[:n_proj], tensors[n_proj:]
        self.U = None
        if self.projection == "linear":
            self.U = nn.Parameter(proj[0])  # (S, K, b, in_dim)
        elif self.projection == "fixed":
            del self.U
            self.register_buffer("U", proj[0])  # (S, K, b, in_dim), never trained
        elif self.projection == "nonlinear":
            self.A = nn.Parameter(proj[0])  # (S, K, h, in_dim)
            self.c = nn.Parameter(proj[1])  # (S, K, h)
            self.V = nn.Parameter(proj[2])  # (S, K, b, h)
        self.weights = nn.ParameterList(nn.Parameter(t) for t in layers[0::2])  # (S, K, fan_in, fan_out)
        self.biases = nn.ParameterList(nn.Parameter(t) for t in layers[1::2])  # (S, K, fan_out)

    @staticmethod
    def _module_dim(in_dim: int, module_dim, projection: str) -> int:
        if projection == "none":
            return in_dim
        b = check_int("module_dim", module_dim, low=1)
        if b > in_dim:
            raise InvalidValue(f"module_dim must be <= in_dim = {in_dim}, got {b}")
        return b

    # parameter counts -------------------------------------------------------------------------------------
    @staticmethod
    def count_parameters(
        in_dim: int,
        n_modules: int,
        module_dim: int | None,
        width: int,
        depth: int,
        projection: str = "linear",
        out_dim: int = 1,
        *,
        projection_width: int | None = None,
    ) -> int:
        """Trainable parameters of one replica (closed form in the module docstring); buffers not counted."""
        projection = check_choice("projection", projection, PROJECTIONS)
        d, K = check_int("in_dim", in_dim, low=1), check_int("n_modules", n_modules, low=1)
        b = ModularNet._module_dim(d, module_dim, projection)
        w, L = check_int("width", width, low=1), check_int("depth", depth, low=1)
        o = check_int("out_dim", out_dim, low=1)
        modules = K * (b * w + w + (L - 1) * (w * w + w) + w * o + o)
        if projection == "linear":
            return modules + K * b * d
        if projection == "nonlinear":
            h = check_int("projection_width", d if projection_width is None else projection_width, low=1)
            return modules + K * (h * d + h + b * h)
        return modules

    @classmethod
    def width_for(
        cls,
        p: int,
        in_dim: int,
        n_modules: int,
        module_dim: int | None,
        depth: int,
        projection: str = "linear",
        out_dim: int = 1,
        *,
        projection_width: int | None = None,
    ) -> int:
        """The module width whose total parameter count is closest to p (for sweeps over p); at least 1."""

        def count(w: int) -> int:
            return cls.count_parameters(
                in_dim,
                n_modules,
                module_dim,
                w,
                depth,
                projection,
                out_dim,
                projection_width=projection_width,
            )

        return _solve_width(p, count, "a ModularNet")

    # projections ------------------------------------------------------------------------------------------
    @property
    def projections(self) -> torch.Tensor:
        """The linear projections U, (S, K, b, in_dim), detached ("none": the identity for every module)."""
        if self.projection == "nonlinear":
            raise InvalidValue(
                "projection='nonlinear' has no linear projections; use module_inputs(x) for the module inputs"
            )
        if self.projection == "none":
            eye = torch.eye(self.in_dim, device=self.weights[0].device, dtype=self.weights[0].dtype)
            return eye.expand(self.n_replicas, self.n_modules, self.in_dim, self.in_dim)
        return self.U.detach()

    def set_projections(self, U: torch.Tensor) -> None:
        """Overwrite the linear projections with U (K, b, in_dim) for every replica, or (S, K, b, in_dim)."""
        if self.projection not in ("linear", "fixed"):
            raise InvalidValue(
                f"set_projections needs projection='linear' or 'fixed', this network has {self.projection!r}"
            )
        if not isinstance(U, torch.Tensor):
            raise InvalidType(f"U must be a torch.Tensor, got {type(U).__name__}")
        S, K, b, d = self.U.shape
        if tuple(U.shape) not in ((K, b, d), (S, K, b, d)):
            raise InvalidValue(
                f"U must have shape ({K}, {b}, {d}) or ({S}, {K}, {b}, {d}), got {tuple(U.shape)}"
            )
        if not torch.isfinite(U).all():
            raise InvalidValue("U must be finite (no NaN or inf)")
        with torch.no_grad():
            self.U.copy_(U.to(self.U).expand_as(self.U))

    def module_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """P_i(x) for every replica and module: (S, K, n, b) (a broadcast view of x for projection="none")."""
        shared = self._check_input(x)
        return self._module_inputs(x, shared)

    def _module_inputs(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        S, K = self.n_replicas, self.n_modules
        xs = "nd" if shared else "snd"
        if self.projection in ("linear", "fixed"):
            return torch.einsum(f"{xs},skbd->sknb", x, self.U)  # (S, K, n, b)
        if self.projection == "nonlinear":
            pre = torch.einsum(f"{xs},skhd->sknh", x, self.A) + self.c.unsqueeze(-2)  # (S, K, n, h)
            return torch.matmul(torch.tanh(pre), self.V.transpose(-1, -2))  # (S, K, n, b)
        x = x.unsqueeze(0) if shared else x
        return x.unsqueeze(1).expand(S, K, *x.shape[-2:])  # (S, K, n, in_dim), a view

    def module_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every module's contribution f_i(P_i x) / sqrt(K) to the output: (S, K, n, out_dim); the forward
        pass is their sum over K (before the output's final reshaping)."""
        return self._module_outputs(x, self._check_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self._check_input(x)
        return self._finish(self._module_outputs(x, shared).sum(1), shared)  # (S, n, out_dim)

    def module_functions(self, z: torch.Tensor) -> torch.Tensor:
        """Every module's MLP on its own inputs, f_i(z_i) / sqrt(K): z (S, K, n, b) -> (S, K, n, out_dim).

        ``module_outputs(x)`` is ``module_functions(module_inputs(x))``; this reads the modules on any
        input, e.g. a grid along each module's coordinate (the estimators' shape functions)."""
        S, K = self.n_replicas, self.n_modules
        if z.dim() != 4 or tuple(z.shape[:2]) != (S, K) or z.shape[-1] != self.weights[0].shape[-2]:
            raise InvalidValue(
                f"module inputs must have shape (S={S}, K={K}, n, {self.weights[0].shape[-2]}), "
                f"got {tuple(z.shape)}"
            )
        return self._mlp(torch.matmul(z, self.weights[0]))  # (S, K, n, b) @ (S, K, b, w)

    def _module_outputs(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        W0 = self.weights[0]
        if self.projection == "none":
            # every module reads x itself: one GEMM against all (S, K) first-layer weights, no expanded copy
            xs = "nd" if shared else "snd"
            return self._mlp(torch.einsum(f"{xs},skdw->sknw", x, W0))
        return self._mlp(torch.matmul(self._module_inputs(x, shared), W0))  # (S, K, n, b) @ (S, K, b, w)

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        """The modules' MLPs after their first GEMM: h (S, K, n, w) -> (S, K, n, out_dim) / sqrt(K)."""
        h = h + self.biases[0].unsqueeze(-2)  # (S, K, n, w)
        S, K, n = h.shape[:3]
        h = h.reshape(S * K, n, -1)
        # islice, not weights[1:]: a sliced ParameterList holds the registered tensors themselves, which
        # torch.func.functional_call (modscale.training.linearized) could not swap for its own
        for W, c in itertools.islice(zip(self.weights, self.biases, strict=True), 1, None):
            # ReLU in place, then c + h W as one GEMM call (as in MLP.forward)
            h = torch.baddbmm(c.reshape(S * K, 1, -1), h.relu_(), W.reshape(S * K, *W.shape[2:]))
        return h.view(S, K, n, -1) / math.sqrt(self.n_modules)  # (S, K, n, out_dim)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, n_modules={self.n_modules}, module_dim={self.module_dim}, "
            f"width={self.width}, depth={self.depth}, projection={self.projection!r}, "
            f"out_dim={self.out_dim}, n_replicas={self.n_replicas}"
        )


__all__ = ["ModularNet", "PROJECTIONS"]
