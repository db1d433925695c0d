"""Nystrom kernel ridge regression of targets on modules' projected inputs (DESIGN section 4).

Deflation fits the functions f_j(z_j), z_j = U_j x, of one or several modules (an additive model) to a
target R. With M_j centres c_j1..c_jM drawn from the fitting points of each module, the Nystrom estimator
(Smola and Schoelkopf 2000; Rudi, Camoriano and Rosasco 2015; additive: Hastie and Tibshirani 1990) is

    f(x) = sum_j sum_l alpha_jl k(z_j, c_jl),
    alpha = (Phi^T Phi + ridge n blockdiag_j K_j)^{-1} Phi^T R,      Phi = [k(z_j, c_j)]_j  (n, sum_j M_j),

the additive kernel ridge solution restricted to the span of the centres (K_j = k(c_j, c_j)). Fitting all
modules jointly (rather than one after the other) apportions the target among correlated directions
correctly. Phi^T Phi is accumulated over chunks of rows, so memory is O(chunk J M + (J M)^2), never n x n;
chunk sums are added and the system solved in float64. Cost O(n (J M)^2 + (J M)^3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_CHUNK = 8192


def solve_psd(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A^{-1} B for a symmetric positive semidefinite A (float64), regularised just enough to factorise.

    A relative ridge of 1e-12 x mean(diag A) is raised by 100x until the Cholesky factorisation succeeds
    (a singular A comes from coinciding centres: any solution of the regularised system fits as well).
    """
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    scale = torch.diagonal(A).mean().clamp_min(torch.finfo(A.dtype).tiny)
    for rel in (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0):
        L, info = torch.linalg.cholesky_ex(A + rel * scale * eye)
        if int(info) == 0:
            return torch.cholesky_solve(B, L)
    evals, evecs = torch.linalg.eigh(A)  # pragma: no cover - only a non-finite A gets here
    inv = torch.where(evals > 0, 1 / evals.clamp_min(torch.finfo(A.dtype).tiny), torch.zeros_like(evals))
    return evecs @ (inv[:, None] * (evecs.T @ B))


@dataclass
class AdditiveNystrom:
    """f(x) = sum_j k_j(z_j, centres_j) @ alpha_j; ``parts(Z)`` (J, n, c) per module, ``self(Z)`` the sum."""

    kernels: list[Kernel]
    centres: list[torch.Tensor]  # J of (M_j, b)
    alphas: list[torch.Tensor]  # J of (M_j, c)

    def parts(self, Z: torch.Tensor) -> torch.Tensor:
        """Z (J, n, b) -> (J, n, c), evaluated in chunks of rows."""
        out = []
        for k, C, a, Zj in zip(self.kernels, self.centres, self.alphas, Z, strict=True):
            Ca, aa = C.to(Zj), a.to(Zj)
            out.append(torch.cat([k(Zj[s : s + _CHUNK], Ca) @ aa for s in range(0, Zj.shape[0], _CHUNK)]))
        return torch.stack(out)

    def __call__(self, Z: torch.Tensor) -> torch.Tensor:
        return self.parts(Z).sum(0)


def additive_nystrom(
    Z: torch.Tensor,
    R: torch.Tensor,
    kernels: Sequence[Kernel],
    n_centres: int,
    *,
    ridge: float = 1e-3,
    generator: torch.Generator | None = None,
) -> AdditiveNystrom:
    """Fit R (n, c) on the projected inputs Z (J, n, b) of J modules jointly (module docstring).

    Every module gets ``n_centres`` centres (at most n) drawn from its own rows; ``kernels[j]`` is module
    j's kernel k(Z1, Z2). Kernels run in Z's dtype (weights of ntk have theirs); sums are float64.
    """
    J, n, _ = Z.shape
    M = min(n_centres, n)
    picks = [torch.randperm(n, generator=generator)[:M].to(Z.device) for _ in range(J)]
    centres = [Z[j, p] for j, p in enumerate(picks)]  # J of (M, b)
    size = J * M
    A = torch.zeros(size, size, dtype=torch.float64, device=Z.device)
    rhs = torch.zeros(size, R.shape[1], dtype=torch.float64, device=Z.device)
    for s in range(0, n, _CHUNK):
        Phi = torch.cat([k(Z[j, s : s + _CHUNK], centres[j]) for j, k in enumerate(kernels)], dim=1)
        A += (Phi.T @ Phi).to(torch.float64)  # (J M, J M): one chunk's sum in Z's dtype, the total in float64
        rhs += (Phi.T @ R[s : s + _CHUNK].to(Phi)).to(torch.float64)
    for j, k in enumerate(kernels):  # the ridge penalises each module's RKHS norm
        blk = slice(j * M, (j + 1) * M)
        A[blk, blk] += ridge * n * k(centres[j], centres[j]).to(torch.float64)
    alpha = solve_psd((A + A.T) / 2, rhs).to(Z.dtype)  # (J M, c)
    return AdditiveNystrom(list(kernels), centres, list(alpha.split(M)))


__all__ = ["AdditiveNystrom", "additive_nystrom", "solve_psd"]
