"""A spectral start for the learning rule: the directions of x that y depends on, from moments of the data.

For y = sum_i g_i(U_i x) with x Gaussian, every conditional moment of x given y varies only inside the span
of the U_i (the central subspace of sufficient dimension reduction). Two classical estimators of it, on
whitened inputs x_w = C^{-1/2} (x - mean) and H slices of each target column sorted by value:

    M_SIR  = sum_h p_h mu_h mu_h^T                 (sliced inverse regression, Li 1991; first moments)
    M_SAVE = sum_h p_h (I - C_h)^2                 (sliced average variance estimation, Cook and
                                                    Weisberg 1991; second moments, sees even functions)

with p_h the fraction of samples in slice h, mu_h and C_h their mean and covariance. The eigenvectors of
M = M_SIR + M_SAVE (summed over target columns) with large eigenvalues span the central subspace; a
direction v of whitened space is u = C^{-1/2} v in input space. Exact in expectation for Gaussian x; for
other inputs a heuristic. The rule uses it only to choose starting points (and candidate restarts) for the
kernel objective, which decides. Cost O(n m^2 + m^3), memory O(m^2).
"""

from __future__ import annotations

import torch


def whitening(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (m,), W (m, m)) with W = C^{-1/2}, a pseudo-inverse for directions of (almost) no variance."""
    X = X.to(torch.float64)
    mean = X.mean(0)
    Xc = X - mean
    C = Xc.T @ Xc / max(1, X.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(C)
    keep = evals > 1e-10 * evals.max().clamp_min(1e-300)
    inv_sqrt = torch.where(keep, evals.clamp_min(1e-300).rsqrt(), torch.zeros_like(evals))
    return mean, (evecs * inv_sqrt) @ evecs.T


def sdr_matrix(X: torch.Tensor, Y: torch.Tensor, n_slices: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """M = M_SIR + M_SAVE (module docstring) for X (n, m), Y (n, c); returns (M (m, m), W (m, m)) in float64.

    Directions of whitened space map to input space by W (u = W v).
    """
    mean, W = whitening(X)
    Zw = (X.to(torch.float64) - mean) @ W  # (n, m)
    n, m = Zw.shape
    H = max(1, min(n_slices, n // 2))  # every slice keeps >= 2 samples
    eye = torch.eye(m, dtype=torch.float64, device=Zw.device)
    M = torch.zeros(m, m, dtype=torch.float64, device=Zw.device)
    for col in Y.to(torch.float64).T:  # (n,) per target column
        for rows in torch.chunk(torch.argsort(col, stable=True), H):
            Zh = Zw[rows]
            p = rows.numel() / n
            mu = Zh.mean(0)
            Ch = (Zh - mu).T @ (Zh - mu) / max(1, rows.numel() - 1)
            D = eye - Ch
            M += p * (torch.outer(mu, mu) + D @ D)
    return M, W


def spectral_directions(
    X: torch.Tensor, Y: torch.Tensor, n_directions: int, n_slices: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``n_directions`` eigen-directions of :func:`sdr_matrix`, as unit rows in input space.

    Returns (directions (n_directions, m) float32, eigenvalues (m,) decreasing, float64).
    """
    M, W = sdr_matrix(X, Y, n_slices)
    evals, evecs = torch.linalg.eigh(M)  # increasing
    evals, evecs = evals.flip(0), evecs.flip(1)
    U = (W @ evecs[:, :n_directions]).T  # (d, m)
    U = U / U.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return U.to(torch.float32), evals


__all__ = ["sdr_matrix", "spectral_directions", "whitening"]
