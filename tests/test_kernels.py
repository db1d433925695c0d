"""Kernels of the learning rule: contract (symmetric, PSD, K(X) == K(X, X), batching), second routes
(scikit-learn, scipy, finite-width networks, an exactly linear model) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics.pairwise import rbf_kernel

from modscale.errors import InvalidType, InvalidValue
from modscale.rules import kernels
from modscale.rules.kernels import arccos, laplace, median_bandwidth, mlp_init, ntk, rbf

GEN = torch.Generator


def _ntk_fixed(X, Z=None):
    """ntk with weights fixed once (the kernel of one network), so K(X) and K(X, X) are comparable."""
    params = mlp_init(X.shape[-1], width=32, generator=GEN().manual_seed(3), dtype=X.dtype)
    return ntk(X, Z, params=params)


KERNEL_FNS = {
    "rbf": lambda X, Z=None: rbf(X, Z, bandwidth=0.8),
    "rbf-median": rbf,
    "laplace": lambda X, Z=None: laplace(X, Z, bandwidth=0.8),
    "arccos-1": arccos,
    "arccos-3": lambda X, Z=None: arccos(X, Z, depth=3, bias=0.5),
    "ntk": _ntk_fixed,
}


@pytest.fixture(params=[1, 3, 12], ids=lambda d: f"d{d}")
def X(request):
    """Inputs including an exact duplicate row (the hard case for positive definiteness)."""
    X = torch.randn(40, request.param, generator=GEN().manual_seed(request.param), dtype=torch.float64)
    X[7] = X[3]
    return X


@pytest.mark.parametrize("name", list(KERNEL_FNS))
def test_contract_symmetric_psd_and_self_equals_pair(name, X):
    k = KERNEL_FNS[name]
    K = k(X)
    assert K.shape == (40, 40)
    assert torch.equal(K, k(X, X)), "K(X) must be exactly K(X, X)"
    assert torch.allclose(K, K.T, atol=1e-12, rtol=1e-10)
    evals = torch.linalg.eigvalsh((K + K.T) / 2)
    # PSD up to float64 rounding of an O(|K|) matrix
    assert evals.min() >= -1e-9 * evals.abs().max()
    assert torch.allclose(K[3], K[7]), "a duplicate point has the same kernel row"


@pytest.mark.parametrize("name", list(KERNEL_FNS))
def test_leading_dims_are_batches(name):
    g = GEN().manual_seed(1)
    X = torch.randn(3, 2, 9, 2, generator=g, dtype=torch.float64)
    Z = torch.randn(3, 2, 5, 2, generator=g, dtype=torch.float64)
    k = KERNEL_FNS[name]
    K = k(X, Z)
    assert K.shape == (3, 2, 9, 5)
    for a in range(3):
        for b in range(2):
            torch.testing.assert_close(K[a, b], k(X[a, b], Z[a, b]), rtol=1e-10, atol=1e-12)


def test_rbf_matches_scikit_learn():
    g = GEN().manual_seed(0)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    Z = torch.randn(20, 4, generator=g, dtype=torch.float64)
    for sigma in (0.3, 1.0, 2.5):
        ref = rbf_kernel(X.numpy(), Z.numpy(), gamma=1 / (2 * sigma**2))
        np.testing.assert_allclose(rbf(X, Z, bandwidth=sigma).numpy(), ref, rtol=1e-12, atol=1e-15)
    # wide inputs take the |x|^2 + |z|^2 - 2 x.z route: same answer
    W = torch.randn(25, 40, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(rbf(W, bandwidth=6.0).numpy(), rbf_kernel(W.numpy(), gamma=1 / 72), rtol=1e-10)


def test_laplace_matches_scipy_distances():
    g = GEN().manual_seed(0)
    X = torch.randn(30, 3, generator=g, dtype=torch.float64)
    Z = torch.randn(10, 3, generator=g, dtype=torch.float64)
    ref = np.exp(-cdist(X.numpy(), Z.numpy()) / 0.7)
    np.testing.assert_allclose(laplace(X, Z, bandwidth=0.7).numpy(), ref, rtol=1e-12)


def test_median_heuristic_is_the_median_pairwise_distance():
    X = torch.randn(101, 3, generator=GEN().manual_seed(0), dtype=torch.float64)
    assert float(median_bandwidth(X)) == pytest.approx(np.median(pdist(X.numpy())), rel=1e-12)
    Z = torch.randn(50, 3, generator=GEN().manual_seed(1), dtype=torch.float64)
    assert float(median_bandwidth(X, Z)) == pytest.approx(np.median(cdist(X.numpy(), Z.numpy())), rel=1e-12)
    # the default bandwidth is that median
    sigma = np.median(pdist(X.numpy()))
    torch.testing.assert_close(rbf(X), rbf(X, bandwidth=float(sigma)))
    # degenerate data: all points equal -> bandwidth 1, kernel of ones, no NaN
    same = torch.ones(10, 2)
    assert float(median_bandwidth(same)) == 1.0
    assert torch.equal(rbf(same), torch.ones(10, 10))


def test_arccos_diagonal_closed_form():
    X = torch.randn(20, 3, generator=GEN().manual_seed(0), dtype=torch.float64)
    for depth in (1, 2, 4):
        for bias in (0.0, 1.0, 2.0):
            expect = (depth + 1) * (X.pow(2).sum(-1) + bias**2)
            torch.testing.assert_close(arccos(X, depth=depth, bias=bias).diagonal(), expect)


def test_arccos_without_bias_is_piecewise_linear_in_one_dimension():
    """Docstring claim: bias=0, d=1 gives k(x, z) = 2 x z 1[x z > 0] (t = 0 or pi in the recursion)."""
    x = torch.linspace(-2, 2, 11, dtype=torch.float64).unsqueeze(1)
    expect = 2 * (x @ x.T) * ((x @ x.T) > 0)
    torch.testing.assert_close(arccos(x, bias=0.0), expect, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("depth,width,tol", [(1, 2**15, 0.03), (2, 1024, 0.08)])
def test_arccos_is_the_infinite_width_limit_of_the_empirical_ntk(depth, width, tol):
    """Second route: the empirical tangent kernel of a wide network (random weights, so a Monte Carlo
    estimate whose relative error shrinks like 1/sqrt(width); tol is several standard errors)."""
    X = torch.randn(6, 2, generator=GEN().manual_seed(5), dtype=torch.float64)
    exact = arccos(X, depth=depth)
    errs = []
    for seed in range(3):
        emp = ntk(X, width=width, depth=depth, generator=GEN().manual_seed(seed))
        errs.append(float((emp - exact).abs().max() / exact.abs().max()))
    assert np.mean(errs) < tol, errs


def test_ntk_of_a_linear_model_is_the_linear_kernel():
    """Second route for the Jacobian machinery: f(w, x) = w . x has tangent kernel x . z exactly, and a
    vector output sums the outputs' kernels."""
    g = GEN().manual_seed(0)
    X = torch.randn(7, 3, generator=g, dtype=torch.float64)
    Z = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ntk(X, Z, fn=lambda p, x: p @ x, params=w), X @ Z.T)
    W = torch.randn(2, 3, generator=g, dtype=torch.float64)  # two outputs, each linear: sum of two kernels
    torch.testing.assert_close(ntk(X, Z, fn=lambda p, x: p @ x, params=W), 2 * X @ Z.T)
    params = {"a": w, "b": torch.tensor(1.5, dtype=torch.float64)}  # pytree: f = b * (a . x)
    K = ntk(X, Z, fn=lambda p, x: p["b"] * (p["a"] @ x), params=params)
    expect = 1.5**2 * X @ Z.T + torch.outer(X @ w, Z @ w)
    torch.testing.assert_close(K, expect)


def test_ntk_weights_come_from_the_generator():
    X = torch.randn(5, 2, generator=GEN().manual_seed(0))
    a = ntk(X, generator=GEN().manual_seed(1))
    b = ntk(X, generator=GEN().manual_seed(1))
    c = ntk(X, generator=GEN().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("name", list(KERNEL_FNS))
def test_kernels_are_differentiable_in_their_inputs(name):
    """The rule moves U inside X U^T: gradients must be finite, also at the diagonal and duplicates."""
    Z = torch.randn(2, 12, 1, generator=GEN().manual_seed(0), dtype=torch.float64)
    Z[:, 5] = Z[:, 2]
    Z.requires_grad_(True)
    K = KERNEL_FNS[name](Z)
    (K * torch.linspace(0, 1, 144, dtype=torch.float64).view(12, 12)).sum().backward()
    assert torch.isfinite(Z.grad).all()


def test_rbf_gradient_matches_finite_differences():
    Z = torch.randn(6, 2, generator=GEN().manual_seed(0), dtype=torch.float64, requires_grad=True)
    W = torch.randn(6, 6, generator=GEN().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: (rbf(z, bandwidth=0.7) * W).sum(), (Z,))
    assert torch.autograd.gradcheck(lambda z: (arccos(z) * W).sum(), (Z,))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    p=st.integers(1, 6),
    d=st.integers(1, 10),
    lead=st.lists(st.integers(1, 3), max_size=2),
    name=st.sampled_from(["rbf", "laplace", "arccos-1"]),
)
def test_shapes_property(n, p, d, lead, name):
    g = GEN().manual_seed(n * 100 + p * 10 + d)
    X = torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    Z = torch.randn(*lead, p, d, generator=g, dtype=torch.float64)
    K = KERNEL_FNS[name](X, Z)
    assert K.shape == (*lead, n, p)
    assert torch.isfinite(K).all()


def test_bad_input():
    X = torch.randn(5, 2)
    with pytest.raises(InvalidValue, match="bandwidth"):
        rbf(X, bandwidth=0.0)
    with pytest.raises(InvalidValue, match="bandwidth"):
        laplace(X, bandwidth=-1.0)
    with pytest.raises(InvalidValue, match="bandwidth"):
        rbf(X, bandwidth=math.nan)
    with pytest.raises(InvalidType, match="bandwidth"):
        rbf(X, bandwidth="wide")
    with pytest.raises(InvalidValue, match="Z must have shape"):
        rbf(X, torch.randn(5, 3))
    with pytest.raises(InvalidValue, match="X must have shape"):
        rbf(torch.randn(5))
    with pytest.raises(InvalidType, match="torch tensors"):
        rbf(np.ones((3, 2)))
    with pytest.raises(InvalidValue, match="depth"):
        arccos(X, depth=0)
    with pytest.raises(InvalidValue, match="bias"):
        arccos(X, bias=-1.0)
    with pytest.raises(InvalidValue, match="params"):
        ntk(X, fn=lambda p, x: x.sum())
    with pytest.raises(InvalidType, match="fn"):
        ntk(X, fn=3, params=())
    with pytest.raises(InvalidType, match="generator"):
        mlp_init(2, generator=0)
    assert set(kernels.KERNELS) == {"rbf", "laplace", "arccos", "ntk"}
