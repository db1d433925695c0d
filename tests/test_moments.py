"""Moment-tensor starts (modscale.rules.moments): contractions against the full tensors, the joint
diagonaliser against a planted solution, recovery on planted tasks with odd, even, correlated and
non-Gaussian inputs, the no-signal fallback, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modscale.errors import InvalidType, InvalidValue
from modscale.rules import kernel_projections, moment_directions, recovery_score
from modscale.rules.moments import _joint_diagonalise, _Moments


def _residual_data(n=3000, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, m, generator=g, dtype=torch.float64)
    y = torch.sin(X[:, :1] * 2) + X[:, 1:2] ** 2 + 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = y - y.mean(0)
    coef = torch.linalg.lstsq(X, y).solution
    R = y - X @ coef  # orthogonal to every column of X, as in moment_directions
    beta = coef / coef.norm(dim=0, keepdim=True)
    return X, R, beta


def _full_tensors(X, r):
    """M2 = E[r He2(x)] and T3 = E[r He3(x)] formed entry by entry (small m only)."""
    n, m = X.shape
    eye = torch.eye(m, dtype=X.dtype)
    he2 = X[:, :, None] * X[:, None, :] - eye  # (n, m, m)
    x3 = X[:, :, None, None] * X[:, None, :, None] * X[:, None, None, :]
    d = X[:, :, None, None] * eye[None, None] + X[:, None, :, None] * eye[None, :, None] * 0
    he3 = (
        x3
        - torch.einsum("np,qs->npqs", X, eye)
        - torch.einsum("nq,ps->npqs", X, eye)
        - torch.einsum("ns,pq->npqs", X, eye)
    )
    del d
    M2 = torch.einsum("n,npq->pq", r, he2) / n
    T3 = torch.einsum("n,npqs->pqs", r, he3) / n
    return M2, T3


def test_contractions_equal_the_full_hermite_tensors():
    X, R, beta = _residual_data()
    M2, T3 = _full_tensors(X, R[:, 0])
    Q = torch.linalg.qr(torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    mom = _Moments(X, R, beta)
    m2q, m3q, t3qq = mom.blocks(Q)
    M3 = torch.einsum("pqs,s->pq", T3, beta[:, 0])
    torch.testing.assert_close(m2q, M2 @ Q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m3q, M3 @ Q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t3qq, torch.einsum("pqs,qj,sj->pj", T3, Q, Q), rtol=1e-10, atol=1e-12)
    # in the space of Z = X Q: M2, M3 and the slices T3(., ., e_j), all restricted to Q
    mats = mom.space(X @ Q)
    torch.testing.assert_close(mats[0], Q.T @ M2 @ Q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mats[1], Q.T @ M3 @ Q, rtol=1e-10, atol=1e-12)
    T3q = torch.einsum("pqs,pa,qb,sc->abc", T3, Q, Q, Q)
    for j in range(3):
        torch.testing.assert_close(mats[2 + j], T3q[:, :, j], rtol=1e-10, atol=1e-12)


def test_joint_diagonaliser_recovers_a_planted_basis():
    rng = np.random.default_rng(0)
    V0 = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    A = np.stack([V0 @ np.diag(rng.normal(size=6)) @ V0.T for _ in range(5)])
    V = _joint_diagonalise(A)
    P = np.abs(V.T @ V0)  # a permutation matrix when V0's columns are found (up to sign)
    assert np.allclose(np.sort(P, axis=1)[:, -1], 1, atol=1e-8)
    assert np.allclose(V.T @ V, np.eye(6), atol=1e-12)
    off = np.einsum("dp,kde,eq->kpq", V, A, V)
    off[:, range(6), range(6)] = 0
    assert np.abs(off).max() < 1e-8


def _ridge_task(n, m, funcs, seed, mix=None, uniform=False):
    """y = sum_i g_i(u_i . x) with orthonormal u_i; x = A s for s Gaussian or uniform (unit variance)."""
    g = torch.Generator().manual_seed(seed)
    k = len(funcs)
    U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))[0].T  # (k, m)
    S = torch.rand(n, m, generator=g, dtype=torch.float64) if uniform else None
    S = (S - 0.5) * 12**0.5 if uniform else torch.randn(n, m, generator=g, dtype=torch.float64)
    if mix is None:
        X = S
    else:  # correlated inputs: the modules are ridge functions of the input x itself
        A = torch.eye(m, dtype=torch.float64) + mix * torch.randn(m, m, generator=g, dtype=torch.float64)
        X = S @ A.T
        X = X / X.std(0)
    Z = X @ U.T
    Z = (Z - Z.mean(0)) / Z.std(0)
    y = sum(f(Z[:, i]) for i, f in enumerate(funcs))
    return X.float(), y.float(), U.float()[:, None, :]


ODD_AND_EVEN = [
    lambda z: torch.sin(2 * z),  # odd: third order
    lambda z: z.abs(),  # even: second order
    lambda z: z**3 / 3,  # odd, a pure cubic
    lambda z: torch.cos(1.5 * z),  # even
]


def test_moment_starts_find_odd_and_even_modules():
    X, y, U = _ridge_task(20_000, 16, ODD_AND_EVEN, seed=0)
    starts = moment_directions(X, y, 4, generator=0)
    assert starts.directions.shape == (4, 16)
    assert recovery_score(starts.directions[:, None, :], U) > 0.95
    assert starts.n_signal >= 4


def test_moment_starts_on_correlated_inputs():
    # whitening with the data's covariance: Gaussian inputs with correlated coordinates are exact
    X, y, U = _ridge_task(20_000, 16, ODD_AND_EVEN, seed=1, mix=0.4)
    starts = moment_directions(X, y, 4, generator=0)
    # directions are compared in input space: a ridge function of u . x is found as u (unit rows)
    assert recovery_score(starts.directions[:, None, :], U) > 0.9


def test_the_rule_with_moment_starts_on_non_gaussian_correlated_inputs():
    # uniform sources mixed: the moments are only a heuristic there; the kernel objective refines
    X, y, U = _ridge_task(20_000, 16, ODD_AND_EVEN, seed=2, mix=0.4, uniform=True)
    Xs = (X - X.mean(0)) / X.std(0)
    Um, info = kernel_projections(Xs, y, 4, generator=0, progress=False, return_info=True)
    assert info.init == "moments"
    # standardising x rescales the input space: u . x = (u * scale) . x_s
    Us = U * X.std(0)
    assert recovery_score(Um, Us) > 0.9


@pytest.mark.parametrize("kind", ["linear", "noise"])
def test_no_moment_signal_falls_back_to_spectral_starts(kind):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(5000, 8, generator=g)
    y = X @ torch.randn(8, generator=g) if kind == "linear" else torch.randn(5000, generator=g)
    y = y + 0.1 * torch.randn(5000, generator=g)
    assert moment_directions(X, y, 2, generator=0).n_signal == 0
    _, info = kernel_projections(X, y, 2, steps=5, passes=0, generator=0, progress=False, return_info=True)
    assert info.init == "spectral" and info.moment_signal == 0
    assert info.options["lr"] == 0.05  # lr=None: the step of spectral starts


def test_default_step_follows_the_starts():
    X, y, _ = _ridge_task(4000, 8, ODD_AND_EVEN[:2], seed=6)
    run = dict(steps=2, passes=0, generator=0, progress=False, return_info=True)
    assert kernel_projections(X, y, 2, **run)[1].options["lr"] == 0.01  # moment starts, b = 1
    assert kernel_projections(X, y, 2, init="random", **run)[1].options["lr"] == 0.05
    assert kernel_projections(X, y, 1, module_dim=2, **run)[1].options["lr"] == 0.05  # b >= 2
    assert kernel_projections(X, y, 2, lr=0.03, **run)[1].options["lr"] == 0.03


def test_moment_starts_are_reproducible():
    X, y, _ = _ridge_task(4000, 8, ODD_AND_EVEN[:2], seed=4)
    a = moment_directions(X, y, 2, generator=7)
    b = moment_directions(X, y, 2, generator=7)
    assert torch.equal(a.directions, b.directions)


def _two_dimensional_task(n=30_000, m=12, seed=5):
    """Two modules of b = 2 whose moments up to third order are diagonal within their planes."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, 4, generator=g, dtype=torch.float64))[0].T  # (4, m)
    X = torch.randn(n, m, generator=g, dtype=torch.float64)
    Z = X @ U.T
    y = Z[:, 0] * Z[:, 1] + (Z[:, 0] ** 2 - Z[:, 1] ** 2) / 2 + torch.sin(Z[:, 2]) * Z[:, 3] + Z[:, 2] ** 2
    return X.float(), y.float(), U.float().reshape(2, 2, m)


def test_two_dimensional_modules_lie_in_the_moment_span_and_the_rule_groups_them():
    X, y, U = _two_dimensional_task()
    starts = moment_directions(X, y, 4, generator=0)
    Q = torch.linalg.qr(starts.directions.T.double())[0]  # (m, 4)
    held = (U.reshape(4, -1).double() @ Q).pow(2).sum(1)  # each true direction's share inside the span
    assert held.min() > 0.9  # measured 0.946-0.999: z_3 enters only through E[cos z_2] z_3
    # which directions form a module the kernel objective decides (screening every pair of them); greedy
    # deflation at b = 2 is fragile whatever the starts (benchmarks/README.md): checked here for shape only
    Um, info = kernel_projections(X, y, 2, module_dim=2, steps=20, passes=1, generator=0, progress=False,
                                  return_info=True)  # fmt: skip
    assert info.init == "moments" and Um.shape == (2, 2, 12)


@pytest.mark.parametrize(
    ("args", "kw", "error", "match"),
    [
        (("x", [1.0]), {}, InvalidType, "X must be a numeric array"),
        ((np.ones((10, 3)), np.ones(9)), {}, InvalidValue, "y must have shape"),
        ((np.ones((10, 3, 2)), np.ones(10)), {}, InvalidValue, r"shape \(n, m\) for moment starts"),
        ((np.ones(10), np.ones(10)), {}, InvalidValue, "X must have shape"),
        ((np.full((10, 3), np.nan), np.ones(10)), {}, InvalidValue, "finite"),
        ((np.ones((10, 3)), np.ones(10)), {"n_directions": 0}, InvalidValue, "n_directions"),
        ((np.ones((2, 3)), np.ones(2)), {"n_directions": 1}, InvalidValue, "at least 3 samples"),
    ],
)
def test_bad_input_is_one_clear_error(args, kw, error, match):
    kw = {"n_directions": 1, **kw}
    with pytest.raises(error, match=match):
        moment_directions(*args, **kw)
