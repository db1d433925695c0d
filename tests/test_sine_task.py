"""SineTask (DESIGN section 2): normalisation, ground truth, OOD split, nonlinear variant, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modscale.errors import InvalidType, InvalidValue
from modscale.tasks import SineTask

# Monte-Carlo draws for the moment checks. y is a bounded smooth function of a Gaussian, so Var(y^2) <= ~3 and
# the standard error of the empirical variance is <= sqrt(3 / N) ~ 0.004 at N = 2e5; a tolerance of 0.025
# is > 6 standard errors, so a correct normalisation fails with probability < 1e-8 while a wrong constant
# (e.g. forgetting the cross-module correlations, which shifts the variance by 5-50 % here) is caught.
N_MC = 200_000


@pytest.mark.parametrize("m,k,b", [(1, 1, 1), (2, 9, 1), (4, 3, 1), (8, 4, 2), (16, 4, 3), (5, 2, 5)])
def test_analytic_normalisation_matches_empirical_moments(m, k, b):
    task = SineTask(m, k, b, generator=m * 100 + k * 10 + b)
    _, y = task.sample(N_MC, generator=1)
    y = y.double()
    assert abs(float(y.mean())) < 0.02
    assert abs(float(y.var()) - 1.0) < 0.025


def test_moments_of_one_module_by_quadrature():
    """Second, deterministic route for k = b = m = 1: Gauss-Hermite quadrature of the raw module output."""
    task = SineTask(1, 1, generator=7)
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / math.sqrt(2 * math.pi)
    u = float(task.projections[0, 0, 0])  # +-1
    X = torch.tensor(nodes[:, None], dtype=torch.float64)
    g = task.module_outputs(X).double().numpy()[:, 0]  # float32 output: 1e-7 relative precision
    mean = float(weights @ g)
    var = float(weights @ (g - mean) ** 2)
    assert abs(u) == pytest.approx(1.0)
    assert mean == pytest.approx(task.mean, abs=1e-6)
    assert math.sqrt(var) == pytest.approx(task.std, rel=1e-6)


def test_projections_orthonormal_and_inputs_are_projections():
    task = SineTask(12, 5, 3, generator=0)
    U = task.projections
    assert U.shape == (5, 3, 12) and U.dtype == torch.float32
    eye = torch.eye(3).expand(5, 3, 3)
    torch.testing.assert_close(U @ U.transpose(-1, -2), eye, atol=1e-6, rtol=0)
    X, y = task.sample(50, generator=3)
    torch.testing.assert_close(task.module_inputs(X), torch.einsum("kbm,nm->nkb", U, X), atol=1e-5, rtol=1e-5)
    g = task.module_outputs(X)
    assert g.shape == (50, 5)
    expected = (g.double().sum(1, keepdim=True) / math.sqrt(5) - task.mean) / task.std
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(task.target(X), y)


def test_module_is_sum_of_sines_with_default_frequencies():
    task = SineTask(3, 2, 1, generator=4)
    assert task.frequencies.tolist() == [1.0, 3.0, 5.0]
    assert task.amplitudes.tolist() == [1.0, 0.5, 0.2]
    X, _ = task.sample(20, generator=0)
    z = task.module_inputs(X).double()[..., 0]  # (n, k); b = 1 so v = 1
    phase = task._phase  # (k, J)
    manual = sum(
        a * torch.sin(w * z + phase[:, j]) for j, (w, a) in enumerate([(1, 1.0), (3, 0.5), (5, 0.2)])
    )
    torch.testing.assert_close(task.module_outputs(X).double(), manual, atol=1e-5, rtol=1e-5)


def test_custom_components():
    task = SineTask(4, 2, n_components=2, frequencies=[2.0, 7.0], amplitudes=[1.0, -0.3], generator=1)
    _, y = task.sample(N_MC, generator=2)
    assert abs(float(y.double().var()) - 1.0) < 0.025
    assert SineTask(4, 2, n_components=1, generator=1).frequencies.tolist() == [1.0]


def test_reproducible_and_seeded():
    a, b = SineTask(6, 3, 2, generator=11), SineTask(6, 3, 2, generator=11)
    torch.testing.assert_close(a.projections, b.projections, rtol=0, atol=0)
    Xa, ya = a.sample(100, generator=5)
    Xb, yb = b.sample(100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(Xa, Xb) and torch.equal(ya, yb)
    # without a generator, each task continues its own private stream: reproducible, and not repeating
    s1, s2 = a.sample(10), a.sample(10)
    t1, t2 = b.sample(10), b.sample(10)
    assert torch.equal(s1[0], t1[0]) and torch.equal(s2[0], t2[0]) and not torch.equal(s1[0], s2[0])
    assert not torch.equal(SineTask(6, 3, 2, generator=12).projections, a.projections)
    assert X_dtype_ok(Xa, ya)


def X_dtype_ok(X, y):
    return (
        X.dtype == torch.float32 and y.dtype == torch.float32 and X.shape == (100, 6) and y.shape == (100, 1)
    )


def test_label_noise_is_added_after_normalisation():
    task = SineTask(5, 3, noise=0.25, generator=2)
    X, y = task.sample(N_MC, generator=0)
    resid = (y - task.target(X)).double()
    assert abs(float(resid.var()) - 0.25) < 0.01  # se of the variance: 0.25 * sqrt(2 / N) = 8e-4
    assert abs(float(y.double().var()) - 1.25) < 0.03


def test_ood_regions_have_the_right_parity_and_are_exact_conditionals():
    task = SineTask(6, 4, generator=8)
    X_even, y_even = task.sample(40_000, generator=1, region="even")
    X_odd, y_odd = task.sample_ood(40_000, generator=2)
    assert (task.region_parity(X_even) == 0).all() and (task.region_parity(X_odd) == 1).all()
    # Exactness of the rejection sampler, second route: E[f | even] = E[f 1_even] / P(even) on plain draws.
    X_all, y_all = task.sample(200_000, generator=3)
    even = task.region_parity(X_all) == 0
    for f_region, f_all, mask in ((y_even, y_all, even), (y_odd, y_all, ~even)):
        ref = f_all[mask].double()
        se = math.sqrt(float(ref.var()) / mask.sum() + float(f_region.double().var()) / f_region.shape[0])
        assert abs(float(f_region.double().mean()) - float(ref.mean())) < 6 * se
    # the two regions partition the input space, each with probability ~1/2 for this task
    assert 0.3 < float(even.double().mean()) < 0.7


def test_ood_split_needs_two_modules_and_a_nonempty_region():
    with pytest.raises(InvalidValue, match="k >= 2"):
        SineTask(3, 1, generator=0).sample_ood(10)
    # m = 1: U_i = +-1, so the parity is a function of sign(x) alone and one region may be empty
    empty = 0
    for seed in range(4):
        task = SineTask(1, 2, generator=seed)
        for region in ("even", "odd"):
            try:
                task.sample(5, generator=0, region=region)
            except InvalidValue as exc:
                assert "zero probability" in str(exc)
                empty += 1
    assert empty >= 1


def test_nonlinear_variant_whitened_inputs_and_normalisation():
    task = SineTask(6, 3, 2, nonlinear=True, generator=5)
    X, y = task.sample(N_MC, generator=9)
    z = task.module_inputs(X).double()  # (n, k, b)
    assert z.mean((0,)).abs().max() < 0.01
    cov = torch.einsum("nkb,nkc->kbc", z, z) / z.shape[0]
    torch.testing.assert_close(cov, torch.eye(2, dtype=torch.float64).expand(3, 2, 2), atol=0.02, rtol=0)
    # the normalisation is Monte Carlo (2^17 draws) in the nonlinear case: allow its error too
    assert abs(float(y.double().mean())) < 0.03
    assert abs(float(y.double().var()) - 1.0) < 0.04
    # the inputs are really nonlinear in x: a linear fit of z on x leaves a clear residual
    Xd = X.double()
    coef = torch.linalg.lstsq(Xd, z[:, 0, :]).solution
    assert float((z[:, 0, :] - Xd @ coef).var()) > 0.05


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(m=3, k=2, b=4), InvalidValue, "b"),
        (dict(m=3, k=0), InvalidValue, "k"),
        (dict(m=0, k=1), InvalidValue, "m"),
        (dict(m=3, k=1.5), InvalidType, "k"),
        (dict(m=3, k=2, noise=-0.1), InvalidValue, "noise"),
        (dict(m=3, k=2, noise=float("nan")), InvalidValue, "noise"),
        (dict(m=3, k=2, n_components=4), InvalidValue, "n_components"),
        (dict(m=3, k=2, frequencies=[1.0, 2.0]), InvalidValue, "frequencies"),
        (dict(m=3, k=2, frequencies=[1.0, -2.0, 3.0]), InvalidValue, "frequencies"),
        (dict(m=3, k=2, amplitudes=[1.0, float("inf"), 3.0]), InvalidValue, "amplitudes"),
        (dict(m=3, k=2, generator="seed"), InvalidType, "generator"),
        (dict(m=3, k=2, nonlinear="yes"), InvalidType, "nonlinear"),
    ],
)
def test_bad_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SineTask(**kwargs)


def test_bad_sampling_and_ground_truth_input():
    task = SineTask(4, 2, generator=0)
    with pytest.raises(InvalidValue, match="n"):
        task.sample(0)
    with pytest.raises(InvalidValue, match="region"):
        task.sample(5, region="train")
    with pytest.raises(InvalidValue, match="X"):
        task.target(torch.zeros(3, 5))
    with pytest.raises(InvalidValue, match="X"):
        task.module_outputs(torch.zeros(4))
