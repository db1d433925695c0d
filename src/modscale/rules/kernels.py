"""Kernels for the learning rule (DESIGN section 4): pure functions of tensors, batched over leading dims.

Every kernel has the signature ``kernel(X, Z=None, **options) -> K`` with X (..., n, d), Z (..., p, d) and
K (..., n, p); ``kernel(X)`` means ``kernel(X, X)`` and returns exactly the same tensor (one code path).
Leading dimensions are batch dimensions (the learning rule uses them for its restarts): K[r] = k(X[r], Z[r]).
All are differentiable in X and Z, which is what the rule needs (it moves the projections U inside X U^T).

- :func:`rbf`:     k(x, z) = exp(-|x - z|^2 / (2 sigma^2)), sigma given or the median heuristic.
- :func:`laplace`: k(x, z) = exp(-|x - z| / sigma), sigma given or the median heuristic.
- :func:`arccos`:  the tangent kernel of an infinitely wide ReLU network (closed form, below).
- :func:`ntk`:     the empirical tangent kernel <df(x)/dtheta, df(z)/dtheta> of a network at fixed weights,
  by torch.func; by default the small ReLU network of :func:`mlp_init` / :func:`mlp_apply`.

Example::

    Z = torch.randn(100, 1)
    K = rbf(Z, bandwidth=0.5)              # (100, 100)
    K = arccos(Z, depth=1)                 # the infinite-width limit of ntk(Z, width=w, depth=1)
    K = ntk(Z, width=64, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import jacrev, vmap

from modscale._checks import check_int
from modscale.errors import InvalidType, InvalidValue

_MEDIAN_ROWS = 1024  # the median heuristic looks at (at most) this many evenly spaced rows of X and of Z
_DIRECT_DIMS = 8  # up to this input width, squared distances are formed from differences (exact diagonal)


def _pair(X: torch.Tensor, Z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(X, torch.Tensor) or (Z is not None and not isinstance(Z, torch.Tensor)):
        raise InvalidType("kernel inputs X and Z must be torch tensors")
    if X.dim() < 2:
        raise InvalidValue(f"X must have shape (..., n, d), got {tuple(X.shape)}")
    if Z is None:
        return X, X
    if Z.dim() < 2 or Z.shape[-1] != X.shape[-1]:
        raise InvalidValue(f"Z must have shape (..., p, d={X.shape[-1]}), got {tuple(Z.shape)}")
    return X, Z


def squared_distances(X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
    """|x_i - z_j|^2, (..., n, p). Narrow inputs (d <= 8) use differences, so the diagonal is exactly 0."""
    X, Z = _pair(X, Z)
    if X.shape[-1] <= _DIRECT_DIMS:  # one (..., n, p) difference per coordinate: d is small
        d2 = None
        for k in range(X.shape[-1]):
            term = (X[..., :, k : k + 1] - Z[..., :, k].unsqueeze(-2)).square()
            d2 = term if d2 is None else d2 + term
        return d2
    d2 = X.pow(2).sum(-1).unsqueeze(-1) + Z.pow(2).sum(-1).unsqueeze(-2) - 2 * X @ Z.transpose(-1, -2)
    return d2.clamp_min(0)


def _safe_sqrt(d2: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient at 0, where |x - z| has no derivative."""
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, 1.0).sqrt(), 0.0)


def median_bandwidth(X: torch.Tensor, Z: torch.Tensor | None = None) -> torch.Tensor:
    """The median heuristic: sigma = median_{i != j} |x_i - z_j|, one value per leading index, (...,).

    Computed without gradient on at most 1024 evenly spaced rows of X and Z (the median of a large sample
    is stable to a few percent). A median of 0 (over half the pairs coincide) falls back to the mean
    distance, and a mean of 0 (all points equal) to 1, so the bandwidth is always positive.
    """
    X, Z = _pair(X, Z)
    with torch.no_grad():
        same = Z is X
        X = X[..., :: max(1, math.ceil(X.shape[-2] / _MEDIAN_ROWS)), :]
        Z = X if same else Z[..., :: max(1, math.ceil(Z.shape[-2] / _MEDIAN_ROWS)), :]
        d = _safe_sqrt(squared_distances(X, Z))  # (..., n', p')
        if same:
            n = d.shape[-1]
            iu = torch.triu_indices(n, n, offset=1, device=d.device)
            d = d[..., iu[0], iu[1]] if n > 1 else d.flatten(-2)
        else:
            d = d.flatten(-2)
        med = torch.quantile(d, 0.5, dim=-1)  # the midpoint of the two middle values, as numpy.median
        mean = d.mean(dim=-1)
        sigma = torch.where(med > 0, med, torch.where(mean > 0, mean, torch.ones_like(mean)))
    return sigma


def _bandwidth(bandwidth, X, Z, name: str) -> torch.Tensor | float:
    if bandwidth is None:
        return median_bandwidth(X, Z).unsqueeze(-1).unsqueeze(-1)  # (..., 1, 1)
    if isinstance(bandwidth, torch.Tensor):
        if not (torch.isfinite(bandwidth).all() and (bandwidth > 0).all()):
            raise InvalidValue(f"{name} bandwidth must be positive and finite")
        return bandwidth.unsqueeze(-1).unsqueeze(-1) if bandwidth.dim() else bandwidth
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float):
        raise InvalidType(f"{name} bandwidth must be a positive number, a tensor or None, got {bandwidth!r}")
    if not (math.isfinite(bandwidth) and bandwidth > 0):
        raise InvalidValue(f"{name} bandwidth must be positive and finite, got {bandwidth}")
    return float(bandwidth)


def rbf(X: torch.Tensor, Z: torch.Tensor | None = None, *, bandwidth=None) -> torch.Tensor:
    """Gaussian kernel k(x, z) = exp(-|x - z|^2 / (2 sigma^2)), (..., n, p).

    ``bandwidth`` sigma: a positive number, a tensor of one sigma per leading index (...,), or None for the
    median heuristic (:func:`median_bandwidth`, no gradient through sigma). Positive definite for distinct
    points, k(x, x) = 1. scikit-learn's ``rbf_kernel(X, Z, gamma)`` is this kernel with
    gamma = 1 / (2 sigma^2).
    """
    X, Z = _pair(X, Z)
    sigma = _bandwidth(bandwidth, X, Z, "rbf")
    return torch.exp(-squared_distances(X, Z) / (2 * sigma**2))


def laplace(X: torch.Tensor, Z: torch.Tensor | None = None, *, bandwidth=None) -> torch.Tensor:
    """Laplace kernel k(x, z) = exp(-|x - z| / sigma), (..., n, p); ``bandwidth`` as for :func:`rbf`.

    Rougher than the Gaussian kernel (its functions are only continuous), positive definite for distinct
    points; the gradient of |x - z| at x = z is taken as 0.
    """
    X, Z = _pair(X, Z)
    sigma = _bandwidth(bandwidth, X, Z, "laplace")
    return torch.exp(-_safe_sqrt(squared_distances(X, Z)) / sigma)


def _check_depth_bias(depth, bias) -> tuple[int, float]:
    depth = check_int("depth", depth, low=1)
    if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias) or bias < 0:
        raise InvalidValue(f"bias must be a finite number >= 0, got {bias!r}")
    return depth, float(bias)


def _augment(X: torch.Tensor, bias: float) -> torch.Tensor:
    """x~ = [x, beta]: a constant input coordinate plays the role of the first layer's bias."""
    return torch.cat([X, torch.full_like(X[..., :1], bias)], dim=-1) if bias > 0 else X


def arccos(
    X: torch.Tensor, Z: torch.Tensor | None = None, *, depth: int = 1, bias: float = 1.0
) -> torch.Tensor:
    """Tangent kernel of an infinitely wide ReLU network with ``depth`` hidden layers, (..., n, p).

    The network (:func:`mlp_apply`, He scaling c = 2, weights N(0, 1)) on x~ = [x, beta] (beta = ``bias``):

        h_1 = W_1 x~,  h_{l+1} = sqrt(2 / w) W_{l+1} relu(h_l),  f(x) = sqrt(2 / w) w_out . relu(h_depth).

    As w -> infinity its tangent kernel <df(x)/dtheta, df(z)/dtheta> at initialisation converges to
    (Jacot et al. 2018; Arora et al. 2019, with the arc-cosine integrals of Cho and Saul 2009)

        Sigma_1 = x~ . z~,   cos t_l = Sigma_l(x, z) / sqrt(Sigma_l(x, x) Sigma_l(z, z)),
        Sigma_{l+1} = sqrt(Sigma_l(x, x) Sigma_l(z, z)) (sin t_l + (pi - t_l) cos t_l) / pi,
        dSigma_{l+1} = (pi - t_l) / pi,
        Theta_1 = Sigma_1,   Theta_{l+1} = Theta_l dSigma_{l+1} + Sigma_{l+1},   k = Theta_{depth+1}.

    With c = 2 the diagonal is preserved, Sigma_l(x, x) = |x~|^2, so k(x, x) = (depth + 1) |x~|^2. The
    constant coordinate matters: without it (bias=0) a one-dimensional input gives k(x, z) = 2 xz 1[xz > 0],
    which cannot fit a sine. Exact in the infinite-width limit; a network of width w deviates by
    O(1/sqrt(w)) (tests compare with :func:`ntk` at large width).
    """
    depth, bias = _check_depth_bias(depth, bias)
    X, Z = _pair(X, Z)
    same = Z is X
    Xa = _augment(X, bias)
    Za = Xa if same else _augment(Z, bias)
    sigma = Xa @ Za.transpose(-1, -2)  # (..., n, p)
    nx = Xa.pow(2).sum(-1).unsqueeze(-1)  # (..., n, 1): Sigma_l(x, x), the same at every layer
    nz = Za.pow(2).sum(-1).unsqueeze(-2)  # (..., 1, p)
    norm = (nx * nz).sqrt()
    theta = sigma
    eps = 8 * torch.finfo(X.dtype).eps
    for _ in range(depth):
        c = sigma / norm.clamp_min(torch.finfo(X.dtype).tiny)
        # arccos and sqrt(1 - c^2) have infinite slopes at c = +-1 (the diagonal, duplicate points): there
        # c is set to exactly +-1 without gradient; the values stay exact and the gradient finite.
        inner = c.abs() < 1 - eps
        c = torch.where(inner, c, c.detach().sign())
        t = torch.arccos(c)
        sigma = norm * (torch.sqrt(1 - c * c) + (math.pi - t) * c) / math.pi
        theta = theta * (math.pi - t) / math.pi + sigma
    return theta


# the default network of ntk ---------------------------------------------------------------------------------
Params = Sequence[torch.Tensor]


def mlp_init(
    in_dim: int,
    width: int = 64,
    depth: int = 1,
    *,
    bias: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, ...]:
    """Weights of the small ReLU network of :func:`mlp_apply`, all N(0, 1), drawn from ``generator``.

    Returns (W_1 (w, in_dim + [bias > 0]), W_2 (w, w), ..., w_out (w,)): plain tensors, no module.
    """
    in_dim = check_int("in_dim", in_dim, low=1)
    width = check_int("width", width, low=1)
    depth, bias = _check_depth_bias(depth, bias)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidType(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shapes = [(width, in_dim + (bias > 0))] + [(width, width)] * (depth - 1) + [(width,)]
    return tuple(torch.randn(s, generator=gen, dtype=dtype).to(device) for s in shapes)


def mlp_apply(params: Params, x: torch.Tensor, *, bias: float = 1.0) -> torch.Tensor:
    """f(x) of the network in :func:`arccos` (He scaling, inputs x~ = [x, beta]); x (..., d) -> (...,)."""
    h = _augment(x, bias) @ params[0].T  # (..., w)
    for W in params[1:-1]:
        h = torch.relu(h) @ W.T * math.sqrt(2 / W.shape[1])
    w_out = params[-1]
    return torch.relu(h) @ w_out * math.sqrt(2 / w_out.shape[0])


def ntk(
    X: torch.Tensor,
    Z: torch.Tensor | None = None,
    *,
    fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    params: Any = None,
    width: int = 64,
    depth: int = 1,
    bias: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Empirical tangent kernel k(x, z) = sum_o <d f_o(x)/d theta, d f_o(z)/d theta> at fixed weights.

    ``fn(params, x)`` maps one input x (d,) to a scalar or a vector of outputs f_o; ``params`` is any pytree
    of tensors (the weights theta, e.g. a module network's initial weights). Jacobians come from
    ``torch.func.vmap(torch.func.jacrev(fn))``; the result stays differentiable in X and Z. Without ``fn``
    the network is :func:`mlp_apply` with weights ``params`` or, without them, fresh weights from
    :func:`mlp_init` (``width``, ``depth``, ``bias``, ``generator``); pass the same weights every call to
    get the same kernel. Cost O((n + p) P) memory for P parameters; meant for small module networks.
    Converges to :func:`arccos` as the default network's width grows.
    """
    X, Z = _pair(X, Z)
    same = Z is X
    if fn is None:
        if params is None:
            params = mlp_init(
                X.shape[-1], width, depth, bias=bias, generator=generator, dtype=X.dtype, device=X.device
            )
        _, bias = _check_depth_bias(depth, bias)

        def fn(p, x):
            return mlp_apply(p, x, bias=bias)

    elif not callable(fn):
        raise InvalidType(f"fn must be a callable fn(params, x), got {type(fn).__name__}")
    elif params is None:
        raise InvalidValue("ntk with a custom fn needs its params")

    sizes = [leaf.numel() for leaf in torch.utils._pytree.tree_leaves(params)]

    def jacobian(A: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N, outputs, P)
        J = vmap(jacrev(fn), in_dims=(None, 0))(params, A)  # leaves (N, *output shape, *parameter shape)
        leaves = torch.utils._pytree.tree_leaves(J)
        return torch.cat([j.reshape(A.shape[0], -1, s) for j, s in zip(leaves, sizes, strict=True)], dim=-1)

    JX = jacobian(X.reshape(-1, X.shape[-1]))  # (N, outputs, P)
    JZ = JX if same else jacobian(Z.reshape(-1, Z.shape[-1]))
    JX = JX.reshape(*X.shape[:-1], *JX.shape[-2:])  # (..., n, outputs, P)
    JZ = JZ.reshape(*Z.shape[:-1], *JZ.shape[-2:])
    return torch.einsum("...nok,...pok->...np", JX, JZ)


KERNELS = {"rbf": rbf, "laplace": laplace, "arccos": arccos, "ntk": ntk}

__all__ = [
    "rbf",
    "laplace",
    "arccos",
    "ntk",
    "mlp_init",
    "mlp_apply",
    "median_bandwidth",
    "squared_distances",
    "KERNELS",
]
