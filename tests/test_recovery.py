"""recovery_score: Hungarian-matched subspace overlap. Second routes: brute force over permutations, the
squared cosine for b = 1, Monte Carlo for random directions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from modscale.errors import InvalidType, InvalidValue
from modscale.rules import overlap_matrix, recovery_score


def _orthonormal(k, b, m, seed):
    G = torch.randn(k, m, b, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(G)[0].transpose(-1, -2)  # (k, b, m) orthonormal rows


def test_identical_permuted_and_sign_flipped_modules_score_one():
    U = _orthonormal(5, 2, 12, 0)
    assert recovery_score(U, U) == pytest.approx(1.0, abs=1e-12)
    perm = U[torch.tensor([3, 0, 4, 1, 2])]
    assert recovery_score(perm, U) == pytest.approx(1.0, abs=1e-12)
    flipped = perm * torch.tensor([1.0, -1.0]).view(1, 2, 1)
    rec = recovery_score(flipped, U, details=True)
    assert rec.score == pytest.approx(1.0, abs=1e-12)
    assert sorted(rec.pairs) == [(0, 3), (1, 0), (2, 4), (3, 1), (4, 2)]


def test_b1_overlap_is_the_squared_cosine():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 1, 7, generator=g, dtype=torch.float64)
    B = torch.randn(3, 1, 7, generator=g, dtype=torch.float64)
    cos = (A[:, 0] / A[:, 0].norm(dim=1, keepdim=True)) @ (B[:, 0] / B[:, 0].norm(dim=1, keepdim=True)).T
    np.testing.assert_allclose(overlap_matrix(A, B), (cos**2).numpy(), rtol=1e-12)


def test_hungarian_matches_brute_force():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(4, 2, 6, generator=g, dtype=torch.float64)
        B = _orthonormal(4, 2, 6, seed + 10)
        o = overlap_matrix(A, B)
        best = max(sum(o[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4))) / 4
        assert recovery_score(A, B) == pytest.approx(best, abs=1e-12)


def test_non_orthonormal_rows_use_the_row_space():
    U = _orthonormal(2, 2, 8, 3)
    skew = torch.stack([U[:, 0], U[:, 0] + 0.3 * U[:, 1]], dim=1)  # same row spaces, rows not orthogonal
    assert recovery_score(skew, U) == pytest.approx(1.0, abs=1e-12)
    # a rank-deficient module (two equal rows) counts only its rank: at most 1/2 of a 2-d subspace
    collapsed = torch.stack([U[:, 0], U[:, 0]], dim=1)
    assert recovery_score(collapsed, U) == pytest.approx(0.5, abs=1e-12)
    zero = torch.zeros(2, 2, 8, dtype=torch.float64)
    assert recovery_score(zero, U) == pytest.approx(0.0, abs=1e-12)


def test_more_or_fewer_learned_modules():
    U = _orthonormal(4, 1, 10, 4)
    assert recovery_score(U[:2], U) == pytest.approx(2 / 4, abs=1e-12)  # K < k: missing modules count 0
    extra = torch.cat([U, _orthonormal(3, 1, 10, 5)])
    assert recovery_score(extra, U) == pytest.approx(1.0, abs=1e-12)  # K > k: the extra ones are ignored
    rec = recovery_score(
        extra[torch.randperm(7, generator=torch.Generator().manual_seed(0))], U, details=True
    )
    assert rec.overlaps.shape == (7, 4) and len(rec.pairs) == 4


def test_random_directions_score_near_b_over_m():
    """Monte Carlo route: a random unit vector has E cos^2 = 1/m with a true one; matching the best of K
    lifts it a little, so the score of random projections sits between 1/m and a few times 1/m."""
    m, k = 64, 4
    U = _orthonormal(k, 1, m, 0)
    scores = [
        recovery_score(torch.randn(k, 1, m, generator=torch.Generator().manual_seed(s)), U)
        for s in range(200)
    ]
    assert 1 / m < np.mean(scores) < 4 / m
    o = overlap_matrix(torch.randn(2000, 1, m, generator=torch.Generator().manual_seed(9)), U)
    assert o.mean() == pytest.approx(1 / m, rel=0.1)


def test_replicas_and_tensor_inputs():
    U = _orthonormal(3, 2, 9, 6)
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(4, 3, 2, 9, generator=g, requires_grad=True)  # e.g. a stacked network's parameters
    scores = recovery_score(stack, U)
    assert scores.shape == (4,)
    for s in range(4):
        assert scores[s] == pytest.approx(recovery_score(stack[s].detach().numpy(), U.numpy()), abs=1e-12)
    assert recovery_score(U[:, 0], U[:, :1]) == pytest.approx(1.0)  # (K, m) means b = 1


def test_bad_input():
    U = _orthonormal(2, 1, 5, 0)
    with pytest.raises(InvalidValue, match="input width"):
        recovery_score(torch.randn(2, 1, 6), U)
    bad = U.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InvalidValue, match="NaN"):
        recovery_score(bad, U)
    with pytest.raises(InvalidValue, match="shape"):
        recovery_score(torch.randn(5), U)
    with pytest.raises(InvalidValue, match="U_true"):
        recovery_score(U, torch.randn(2, 2, 1, 5))
    with pytest.raises(InvalidType, match="U_hat"):
        recovery_score("abc", U)
