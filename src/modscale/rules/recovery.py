"""Module recovery: how well learned projections line up with the true ones (DESIGN section 4).

For a learned module U_hat_i (b', m) and a true module U_j (b, m), with Q_i and P_j orthonormal bases of their
row spaces, the subspace overlap is

    o_ij = |Q_i P_j^T|_F^2 / max(b', b)   in [0, 1],

the mean squared cosine of the principal angles (1: the same subspace; about b/m for random directions).
For the usual b' = b with orthonormal rows this is |U_hat_i U_j^T|_F^2 / b. Rows of U_hat need not be
orthonormal (the rule keeps them unit-norm only): their row space is what a module sees, so it is
orthonormalised first (a rank-deficient U_hat_i counts only its rank).

Learned and true modules are matched one to one by the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) maximising the total overlap, and the score is

    score = (1 / k) sum over matched pairs of o_ij.

K != k: with fewer learned modules (K < k) the unmatched true modules count 0, so the score is at most K/k;
with more (K > k) every true module gets its best distinct partner and the extra learned modules are
ignored (use the matching to see them). Cheap (a K x k overlap matrix), so it can track alignment during
training; a leading replica dimension (S, K, b', m) gives one score per replica.

Example::

    recovery_score(net.projections, task.projections)   # (S,) for a stacked ModularNet
    recovery_score(U, task.projections)                 # float for U (K, b, m)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from modscale.errors import InvalidType, InvalidValue


def _as_modules(name: str, U) -> np.ndarray:
    if isinstance(U, torch.Tensor):
        U = U.detach().cpu().to(torch.float64).numpy()
    try:
        U = np.asarray(U, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidType(
            f"{name} must be an array or tensor of shape (K, b, m), got {type(U).__name__}"
        ) from None
    if U.ndim == 2:  # (K, m): one direction per module
        U = U[:, None, :]
    if U.ndim not in (3, 4) or 0 in U.shape:
        raise InvalidValue(f"{name} must have shape (K, b, m) or (S, K, b, m), got {U.shape}")
    if not np.isfinite(U).all():
        raise InvalidValue(f"{name} contains NaN or inf")
    return U


def _row_space(U: np.ndarray) -> np.ndarray:
    """Orthonormal bases of the row spaces of U (..., b, m), padded with zero rows where rank < b."""
    u, s, vt = np.linalg.svd(U, full_matrices=False)  # vt (..., b, m)
    tol = s.max(axis=-1, keepdims=True) * max(U.shape[-2:]) * np.finfo(np.float64).eps
    return vt * (s > tol)[..., None]


def overlap_matrix(U_hat, U_true) -> np.ndarray:
    """o_ij for every learned i and true j: (K, k), or (S, K, k) with replicas (module docstring)."""
    A, B = _as_modules("U_hat", U_hat), _as_modules("U_true", U_true)
    if B.ndim != 3:
        raise InvalidValue(f"U_true must have shape (k, b, m), got {B.shape}")
    if A.shape[-1] != B.shape[-1]:
        raise InvalidValue(
            f"U_hat and U_true must share the input width m, got {A.shape[-1]} and {B.shape[-1]}"
        )
    Q, P = _row_space(A), _row_space(B)
    o = np.einsum("...iam,jbm->...ijab", Q, P) ** 2  # (..., K, k, b', b)
    return o.sum(axis=(-1, -2)) / max(A.shape[-2], B.shape[-2])


@dataclass
class Recovery:
    """score: the recovery score; pairs: (learned i, true j) matched; overlaps: the (K, k) matrix."""

    score: float
    pairs: list[tuple[int, int]]
    overlaps: np.ndarray


def _match(o: np.ndarray) -> Recovery:
    rows, cols = linear_sum_assignment(o, maximize=True)
    return Recovery(
        float(o[rows, cols].sum() / o.shape[1]), list(zip(rows.tolist(), cols.tolist(), strict=True)), o
    )


def recovery_score(U_hat, U_true, *, details: bool = False):
    """Mean matched subspace overlap in [0, 1] of learned U_hat (K, b', m) with true U_true (k, b, m).

    A leading replica dimension on U_hat (S, K, b', m) gives an (S,) array. ``details=True`` returns
    :class:`Recovery` objects (score, matched pairs, overlap matrix) instead of numbers.
    """
    o = overlap_matrix(U_hat, U_true)
    if o.ndim == 2:
        rec = _match(o)
        return rec if details else rec.score
    recs = [_match(oi) for oi in o]
    return recs if details else np.array([r.score for r in recs])


__all__ = ["recovery_score", "overlap_matrix", "Recovery"]
