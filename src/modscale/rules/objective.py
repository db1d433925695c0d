"""The kernel objective of the learning rule (PAPER.md claim 3; DESIGN section 4).

For a minibatch of B samples with targets Y (B, c) and the kernel matrix K = k(Z, Z) of the projected inputs
Z = X U^T, the objective is

    L(U) = (1 / B) sum_{columns j} Y_j^T (K + lam I)^{-1} Y_j,     lam = jitter * mean(diag K),

the squared RKHS norm that kernel ridge regression on the projected inputs needs to fit the targets (up to
the ridge lam): small when Y is a smooth function of Z, about |Y|^2 / (B lam) when Z says nothing about Y.
The ridge is relative to the kernel's scale so that one ``jitter`` serves every kernel.

Gradient without differentiating the Cholesky factorisation: L is the maximum over alpha of
2 <Y, alpha> - <alpha, (K + lam I) alpha>, attained at alpha* = (K + lam I)^{-1} Y, so by the envelope theorem
dL/dK = -alpha* alpha*^T / B. :func:`kernel_objective` therefore solves for alpha* without autograd and
returns 2 <Y, alpha*> - <alpha*, (K + lam I) alpha*> (equal to L in value): its gradient in K is exact and
costs O(B^2 c) instead of the O(B^3) backward pass of a Cholesky factorisation.

Ill-conditioning (duplicate points, a tiny jitter, float32 rounding): a failed Cholesky factorisation is
retried with 10 times the ridge, up to 8 times, for the failing batch entries only, and a
:class:`KernelJitterWarning` says so; it never raises for a finite symmetric K.
"""

from __future__ import annotations

import warnings

import torch


class KernelJitterWarning(RuntimeWarning):
    """The kernel matrix needed a larger ridge than asked for (duplicate points or ill-conditioning)."""


_MAX_TRIES = 8


def jittered_cholesky(K: torch.Tensor, lam: torch.Tensor, *, what: str = "kernel matrix") -> tuple:
    """Cholesky factor of K + lam I for a batch (..., B, B), escalating lam where the factorisation fails.

    lam (...,) is the ridge per batch entry. Returns (L, lam_used). Warns (:class:`KernelJitterWarning`)
    when any entry needed more than its ridge; after 8 escalations (lam x 1e8) a remaining failure (only
    possible for a non-finite K) gets the identity factor of a diagonal fallback, never an exception.
    """
    K = K.detach()
    lam = lam.detach().to(K.dtype).expand(K.shape[:-2]).clone()

    def factor(ridge):
        A = K.clone()
        A.diagonal(dim1=-2, dim2=-1).add_(ridge.unsqueeze(-1))
        return torch.linalg.cholesky_ex(A)

    L, info = factor(lam)
    tries = 0
    while bool((info > 0).any()) and tries < _MAX_TRIES:
        bad = info > 0
        lam = torch.where(bad, lam * 10, lam)
        L_new, info_new = factor(lam)
        L = torch.where(bad[..., None, None], L_new, L)
        info = torch.where(bad, info_new, info)
        tries += 1
    if tries:
        warnings.warn(
            f"{what} was not positive definite at the requested ridge (duplicate points or "
            f"ill-conditioning); raised the ridge up to {float(lam.max()):.3g} to factorise it",
            KernelJitterWarning,
            stacklevel=3,
        )
    if bool((info > 0).any()):  # only a non-finite K gets here: fall back to a diagonal matrix
        bad = (info > 0)[..., None, None]
        diag = torch.diagonal(K, dim1=-2, dim2=-1).nan_to_num(1.0, 1.0, 1.0).abs() + lam[..., None]
        L = torch.where(bad, torch.diag_embed(diag.sqrt()), L)
    return L, lam


def _solve(K: torch.Tensor, Y: torch.Tensor, jitter: float):
    """alpha* = (K + lam I)^{-1} Y and lam, without gradient; Y (B, c) or (..., B, c)."""
    with torch.no_grad():
        lam = jitter * torch.diagonal(K, dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(K.dtype).tiny)
        L, lam = jittered_cholesky(K, lam)
        Yb = Y.expand(*K.shape[:-2], *Y.shape[-2:])
        return torch.cholesky_solve(Yb, L), lam, Yb


def kernel_objective(K: torch.Tensor, Y: torch.Tensor, jitter: float = 1e-2) -> torch.Tensor:
    """(1/B) sum_j Y_j^T (K + lam I)^{-1} Y_j for K (..., B, B), Y (B, c) or (..., B, c) -> (...,).

    lam = jitter * mean(diag K) per batch entry (no gradient through lam). Differentiable in K by the
    envelope theorem (module docstring): the backward pass costs O(B^2 c), not a Cholesky backward.
    """
    B = K.shape[-1]
    alpha, lam, Yb = _solve(K, Y, jitter)
    # 2 <Y, a> - <a, (K + lam I) a>: equal to Y^T (K + lam I)^{-1} Y at a = alpha*, gradient -a a^T in K
    value = 2 * (Yb * alpha).sum((-2, -1)) - (alpha * (K @ alpha)).sum((-2, -1))
    value = value - lam * alpha.pow(2).sum((-2, -1))
    return value / B


class _RbfObjective(torch.autograd.Function):
    """kernel_objective(rbf(Z, bandwidth=sigma), Y) with a hand-written backward (the rule's default path).

    With A = sum_j alpha_j alpha_j^T and K_il = exp(-|z_i - z_l|^2 / (2 sigma^2)), dL/dK = -A / B, so

        dL/dz_i = (2 / (B sigma^2)) sum_l A_il K_il (z_i - z_l),

    i.e. grad_Z = (2 / (B sigma^2)) (rowsum(W) * Z - W Z) with W = A * K: a handful of passes over the
    (R, B, B) matrices instead of autograd's chain through the distance computation.
    """

    @staticmethod
    def forward(ctx, Z, Y, sigma, jitter):
        from modscale.rules.kernels import squared_distances

        s2 = (sigma * sigma)[..., None, None]
        K = torch.exp(squared_distances(Z) / (-2 * s2))  # (..., B, B)
        alpha, lam, Yb = _solve(K, Y, jitter)
        B = K.shape[-1]
        value = ((Yb * alpha).sum((-2, -1))) / B  # = Y^T (K + lam I)^{-1} Y / B at the solution
        ctx.save_for_backward(Z, K, alpha, sigma)
        return value

    @staticmethod
    def backward(ctx, grad_out):
        Z, K, alpha, sigma = ctx.saved_tensors
        B = K.shape[-1]
        W = (alpha @ alpha.transpose(-1, -2)).mul_(K)  # (..., B, B)
        grad_Z = W.sum(-1, keepdim=True) * Z - W @ Z  # (..., B, b)
        scale = grad_out * 2 / (B * sigma * sigma)  # (...,)
        return grad_Z * scale[..., None, None], None, None, None


def rbf_objective(Z: torch.Tensor, Y: torch.Tensor, bandwidth, jitter: float = 1e-2) -> torch.Tensor:
    """kernel_objective(rbf(Z, bandwidth=bandwidth), Y, jitter) for Z (..., B, b), differentiable in Z.

    ``bandwidth`` a positive number or one per leading index (...,). Same value and gradient as the
    generic route (tested), at a fraction of its cost.
    """
    sigma = torch.as_tensor(bandwidth, dtype=Z.dtype, device=Z.device).expand(Z.shape[:-2])
    return _RbfObjective.apply(Z, Y, sigma, jitter)


__all__ = ["kernel_objective", "rbf_objective", "jittered_cholesky", "KernelJitterWarning"]
