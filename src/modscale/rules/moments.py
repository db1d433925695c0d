"""Moment-tensor starts for the learning rule: each module's direction from Hermite moments of the data.

For y = sum_i g_i(w_i^T x) with x ~ N(0, I_m) (inputs whitened first), Stein's lemma gives the Hermite
moments of y as sums of one rank-one term per module:

    E[y x]              = sum_i E[g_i'(z_i)]   w_i                 (first order: one direction, all mixed)
    M2 = E[r He2(x)]    = sum_i E[g_i''(z_i)]  w_i w_i^T            He2(x) = x x^T - I
    T3 = E[r He3(x)]    = sum_i E[g_i'''(z_i)] w_i (x) w_i (x) w_i  He3(x)_pqs = x_p x_q x_s - 3 sym(x_p d_qs)

with r = y minus its least-squares linear part (which has no He2 or He3 content, only variance). The
first-order term folds every module into one direction; the second and third separate them: a module
whose function is even (cos, |z|, z^2) shows in M2, an odd one (sin) in T3. With the w_i close to
orthogonal, M2 and every contraction T3(., ., a) are diagonal in the basis {w_i}, so the modules are the
joint eigenvectors of those matrices (the route of JADE, Cardoso and Souloumiac 1993, and of tensor
decomposition by simultaneous diagonalisation, Kuleshov, Chaganty and Liang 2015; method of moments for
latent-variable models, Anandkumar et al. 2014).

The steps, never an m x m x m array:

1. Whiten x (the data's mean and covariance: correlated inputs work; non-Gaussian ones make the moments a
   heuristic, which the kernel objective then corrects), take r = y - linear fit, per target column.
2. The span: sketches M2 Omega and T3(I, Omega, Omega') for L random directions Omega (O(n m L) each, by
   contractions x -> x^T Omega), each divided by the same sketch of r shuffled across samples (the null
   with no dependence on x: the sampling noise of that order); the top d = K b left singular vectors of
   the noise-scaled sketches are the search space Q (m, d). Singular values above the null level's
   ``_SIGNAL`` times say how many directions carry moment signal.
3. In that space (z = Q^T x_w, O(n d^2) per matrix): M2 and d contractions T3(., ., e_j), each weighted by
   its own signal-to-noise ratio, jointly diagonalised by Jacobi rotations (Cardoso and Souloumiac 1996);
   the rotated axes are the directions, ranked by their diagonal energy.

Cost O(n m L c + n d^3 c) time, O(n (m + d)) memory for c target columns. Exact in expectation for
Gaussian inputs and orthogonal modules of one dimension (b = 1). A module of b >= 2 dimensions comes out
as b directions inside its subspace; which directions belong together the moments up to third order
cannot always tell (a function of z_1, z_2 with only second-order content is diagonalised within its
plane like two one-dimensional modules), so the rule groups them by its kernel objective.

Example::

    task = SineTask(m=64, k=16, generator=0)
    X, y = task.sample(100_000, generator=1)
    starts = moment_directions(X, y, 16, generator=0)
    starts.directions.shape          # (16, 64): unit rows in input space, strongest first
    starts.n_signal                  # directions whose moments stand above the shuffled-target null
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from modscale._checks import check_int
from modscale._torch import as_generator
from modscale.errors import InvalidValue
from modscale.rules._inputs import as_data
from modscale.rules.spectral import whitening

_SIGNAL = 2.0  # a direction carries moment signal when its singular value exceeds 2x the null level
_SWEEPS = 30  # Jacobi sweeps (converges in 5-10 for d <= 64)
_MAX_ROWS = 200_000  # rows used (a fixed random subset beyond that)


@dataclass
class MomentStarts:
    """What :func:`moment_directions` found.

    directions (d, m) float32: unit rows in input space, strongest first. strength (d,): each direction's
    noise-scaled moment energy (about 1 where there is no signal). n_signal: how many of the span's
    singular values stand above ``_SIGNAL`` times the shuffled-target null. span_singular_values: those
    singular values, in units of the null.
    """

    directions: torch.Tensor
    strength: np.ndarray
    n_signal: int
    span_singular_values: np.ndarray


class _Moments:
    """Contractions of M2 = E[r He2(x)], M3 = T3(., ., beta) and T3 itself for whitened Xw (n, m) and the
    residual R (n, c), each O(n m L) for L directions: no m x m x m (or m x m) array is formed."""

    def __init__(self, Xw: torch.Tensor, R: torch.Tensor, beta: torch.Tensor):
        self.Xw, self.R = Xw, R  # (n, m), (n, c)
        self.Xb = Xw @ beta  # (n, c): x^T beta_c, the linear direction of each column

    def blocks(self, Q: torch.Tensor) -> list[torch.Tensor]:
        """Per column: M2 Q, M3 Q and [T3(I, q, q) for the columns q of Q], each (m, L).

        M2 q = X^T (r * X q) / n - mean(r) q; T3(., ., beta) q = X^T (r (x.beta) * X q) / n - mean(r x.beta) q
        (the terms with E[r x] vanish: r is the least-squares residual); T3(I, q, q) = X^T (r (X q)^2) / n
        - |q|^2 E[r x] - 2 q E[r x.q] = X^T (r (X q)^2) / n - 2 q mean(r X q).
        """
        n = self.Xw.shape[0]
        XQ = self.Xw @ Q  # (n, L)
        out = []
        for r, xb in zip(self.R.T, self.Xb.T, strict=True):
            rb = r * xb
            out.append(self.Xw.T @ (r[:, None] * XQ) / n - r.mean() * Q)
            out.append(self.Xw.T @ (rb[:, None] * XQ) / n - rb.mean() * Q)
            rq = r[:, None] * XQ
            out.append(self.Xw.T @ (rq * XQ) / n - 2 * Q * rq.mean(0))
        return out

    def space(self, Z: torch.Tensor) -> torch.Tensor:
        """M2, M3 and the d slices T3(., ., e_j) in the space of Z = Xw Q (n, d): (c (2 + d), d, d)."""
        n, d = Z.shape
        eye = torch.eye(d, dtype=Z.dtype)
        mats = []
        for r, xb in zip(self.R.T, self.Xb.T, strict=True):
            for w in (r, r * xb, *(r[:, None] * Z).T):  # (n,) weights: He2 along r, r x.beta, r z_j
                mats.append((Z * w[:, None]).T @ Z / n - w.mean() * eye)
            # T3(., ., e_j) also has - e_j s^T - s e_j^T with s = E[r z] = 0 (least-squares residual)
        return torch.stack(mats)


def _joint_diagonalise(A: np.ndarray, sweeps: int = _SWEEPS, tol: float = 1e-10) -> np.ndarray:
    """An orthogonal V (d, d) making every V^T A_k V (A (L, d, d) symmetric) as diagonal as it can.

    Jacobi rotations with the closed-form angle of Cardoso and Souloumiac (1996, "Jacobi angles for
    simultaneous diagonalization", SIAM J. Matrix Anal. Appl. 17(1)), real symmetric case: for the pair
    (p, q) the angle maximises sum_k (A_k,pp - A_k,qq)^2 + (2 A_k,pq)^2 after rotation, the leading
    eigenvector of G = sum_k h_k h_k^T with h_k = (A_k,pp - A_k,qq, 2 A_k,pq).
    """
    A = A.copy()
    d = A.shape[1]
    V = np.eye(d)
    for _ in range(sweeps):
        rotated = False
        for p in range(d - 1):
            for q in range(p + 1, d):
                h = np.stack([A[:, p, p] - A[:, q, q], 2 * A[:, p, q]])  # (2, L)
                G = h @ h.T
                ton, toff = G[0, 0] - G[1, 1], 2 * G[0, 1]
                theta = 0.5 * np.arctan2(toff, ton + np.hypot(ton, toff))
                c, s = np.cos(theta), np.sin(theta)
                if abs(s) < tol:
                    continue
                rotated = True
                rows_p, rows_q = A[:, p, :].copy(), A[:, q, :].copy()
                A[:, p, :], A[:, q, :] = c * rows_p + s * rows_q, c * rows_q - s * rows_p
                cols_p, cols_q = A[:, :, p].copy(), A[:, :, q].copy()
                A[:, :, p], A[:, :, q] = c * cols_p + s * cols_q, c * cols_q - s * cols_p
                vp, vq = V[:, p].copy(), V[:, q].copy()
                V[:, p], V[:, q] = c * vp + s * vq, c * vq - s * vp
        if not rotated:
            break
    return V


def _scaled(blocks: list[torch.Tensor], null: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each block in units of its shuffled-null spectral norm, side by side: (signal (m, sum L), null)."""
    units = [torch.linalg.matrix_norm(b0, ord=2).clamp_min(1e-300) for b0 in null]
    return (torch.cat([b / u for b, u in zip(blocks, units, strict=True)], 1),
            torch.cat([b0 / u for b0, u in zip(null, units, strict=True)], 1))  # fmt: skip


def moment_directions(
    X, y, n_directions: int, *, iterations: int = 4, oversample: int = 8, generator=None,
) -> MomentStarts:  # fmt: skip
    """Module directions from the second- and third-order Hermite moments of y (module docstring).

    X (n, m) and y (n,) or (n, c), arrays or tensors; ``n_directions`` = K b directions are returned
    (capped at m).
    The span comes from ``iterations`` rounds of subspace iteration on ``n_directions + oversample``
    columns; ``generator`` (torch.Generator or seed) draws its start and the shuffled null.
    """
    gen = as_generator(generator)
    X, Y = as_data(X, y, dtype=torch.float64)
    if X.dim() != 2:
        raise InvalidValue(f"X must have shape (n, m) for moment starts, got {tuple(X.shape)}")
    n_directions = check_int("n_directions", n_directions, low=1)
    iterations = check_int("iterations", iterations, low=1)
    oversample = check_int("oversample", oversample, low=0)
    if X.shape[0] < 3:
        raise InvalidValue(f"X needs at least 3 samples for third-order moments, got {X.shape[0]}")
    if X.shape[0] > _MAX_ROWS:
        rows = torch.randperm(X.shape[0], generator=gen)[:_MAX_ROWS]
        X, Y = X[rows], Y[rows]
    n, m = X.shape
    d = min(n_directions, m)
    mean, W = whitening(X)
    Xw = (X - mean) @ W  # (n, m)
    Yc = Y - Y.mean(0)
    coef = torch.linalg.lstsq(Xw, Yc).solution  # (m, c)
    R = Yc - Xw @ coef  # (n, c): y without its linear part
    beta = coef / coef.norm(dim=0, keepdim=True).clamp_min(1e-300)
    shuffle = torch.randperm(n, generator=gen)
    signal, null = _Moments(Xw, R, beta), _Moments(Xw, R[shuffle], beta)  # null: no dependence on x

    # the span: subspace iteration on the noise-scaled contractions (O(n m L) per round)
    L = min(m, d + oversample)
    Q = torch.linalg.qr(torch.randn(m, L, generator=gen, dtype=torch.float64))[0]  # (m, L)
    for _ in range(iterations):
        G, G0 = _scaled(signal.blocks(Q), null.blocks(Q))
        Us, sv, _ = torch.linalg.svd(G, full_matrices=False)
        Q = Us[:, :L]
    n_signal = int((sv > _SIGNAL * torch.linalg.matrix_norm(G0, ord=2)).sum())
    Z = Xw @ Q[:, :d]  # (n, d)

    # the directions: joint eigenvectors of the noise-scaled matrices in that space
    mats, mats0 = signal.space(Z), null.space(Z)  # (c (2 + d), d, d)
    A = (mats / torch.linalg.matrix_norm(mats0).clamp_min(1e-300)[:, None, None]).numpy()
    V = _joint_diagonalise(A)  # (d, d)
    rotated = np.einsum("dp,kde,eq->kpq", V, A, V)
    strength = np.sqrt((np.diagonal(rotated, axis1=1, axis2=2) ** 2).sum(0))  # (d,)
    order = np.argsort(-strength)
    dirs = (W @ Q[:, :d] @ torch.from_numpy(V[:, order])).T  # (d, m) in input space: u = W v
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return MomentStarts(
        directions=dirs.to(torch.float32),
        strength=strength[order],
        n_signal=n_signal,
        span_singular_values=sv.numpy(),
    )


__all__ = ["MomentStarts", "moment_directions"]
