"""The kernel learning rule: objective (second routes for value and gradient), jitter escalation, output
contract, bad input, memory, and recovery of planted modules (DESIGN section 4)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from modscale.errors import InvalidType, InvalidValue
from modscale.rules import (
    KernelJitterWarning,
    choose_n_modules,
    kernel_objective,
    kernel_projections,
    recovery_score,
)
from modscale.rules.kernels import arccos, laplace, rbf
from modscale.rules.nystrom import additive_nystrom
from modscale.rules.objective import rbf_objective
from modscale.rules.spectral import spectral_directions
from modscale.tasks import SineTask

GEN = torch.Generator
FAST = dict(steps=8, batch_size=64, restarts=2, n_candidates=4, passes=1)


def _direct(K, Y, jitter):
    """Second route: autograd through a dense solve of (K + lam I) a = Y."""
    B = K.shape[-1]
    lam = jitter * torch.diagonal(K, dim1=-2, dim2=-1).mean(-1).detach()
    A = K + lam[..., None, None] * torch.eye(B, dtype=K.dtype)
    sol = torch.linalg.solve(A, Y.expand(*K.shape[:-2], *Y.shape[-2:]))
    return (Y * sol).sum((-2, -1)) / B


@pytest.mark.parametrize(
    "kernel", [lambda z: rbf(z, bandwidth=0.5), lambda z: laplace(z, bandwidth=0.7), arccos]
)
def test_objective_value_and_gradient_match_a_dense_solve(kernel):
    g = GEN().manual_seed(0)
    Z = torch.randn(3, 40, 2, generator=g, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    a = kernel_objective(kernel(Z), Y, 1e-2)
    (ga,) = torch.autograd.grad(a.sum(), Z)
    b = _direct(kernel(Z), Y, 1e-2)
    (gb,) = torch.autograd.grad(b.sum(), Z)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-8)


def test_rbf_fast_path_matches_the_generic_route():
    g = GEN().manual_seed(1)
    Z = torch.randn(4, 50, 3, generator=g, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(50, 1, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.5, 1.0, 2.0], dtype=torch.float64)
    a = rbf_objective(Z, Y, sigma, 1e-2)
    (ga,) = torch.autograd.grad((a * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), Z)
    b = kernel_objective(rbf(Z, bandwidth=sigma), Y, 1e-2)
    (gb,) = torch.autograd.grad((b * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), Z)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-10)
    Zs = Z[0].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: rbf_objective(z, Y, 0.5, 1e-2), (Zs,))


def test_objective_is_small_when_y_is_a_function_of_z():
    """The rule's premise: on the right projection the targets are smooth in z, elsewhere they are noise."""
    g = GEN().manual_seed(2)
    X = torch.randn(256, 5, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, :1])
    right = rbf_objective(X[:, :1], y, 0.5)
    wrong = rbf_objective(X[:, 1:2], y, 0.5)
    assert right < 0.05 * wrong


def test_duplicate_points_and_tiny_jitter_escalate_with_a_warning():
    g = GEN().manual_seed(0)
    z = torch.randn(64, 1, generator=g)
    Z = torch.cat([z, z, z])  # every point three times: K is singular
    Y = torch.randn(192, 1, generator=g)
    with pytest.warns(KernelJitterWarning, match="ridge"):
        val = kernel_objective(rbf(Z, bandwidth=0.5), Y, jitter=1e-12)
    assert torch.isfinite(val).all()
    # the default jitter needs no escalation, even with every row duplicated (no warning raised here)
    X = torch.randn(300, 4, generator=g).repeat(4, 1)
    y = torch.sin(X[:, :1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        U = kernel_projections(X, y, 2, generator=0, **FAST)
    assert torch.isfinite(U).all()
    with pytest.warns(KernelJitterWarning):
        U = kernel_projections(X, y, 1, jitter=1e-12, generator=0, **FAST)
    assert torch.isfinite(U).all()


def test_output_contract_and_reproducibility():
    task = SineTask(8, 2, generator=0)
    X, y = task.sample(500, generator=1)
    U = kernel_projections(X, y, 3, module_dim=2, generator=5, **FAST)
    assert U.shape == (3, 2, 8) and U.dtype == torch.float32
    torch.testing.assert_close(U.norm(dim=-1), torch.ones(3, 2))
    again = kernel_projections(
        X.numpy(), y.numpy().ravel(), 3, module_dim=2, generator=GEN().manual_seed(5), **FAST
    )
    assert torch.equal(U, again), "same seed -> same projections (arrays or tensors, seed or generator)"
    other = kernel_projections(X, y, 3, module_dim=2, generator=6, **FAST)
    assert not torch.equal(U, other)
    auto = kernel_projections(X, y, 3, module_dim=2, generator=5, device="auto", **FAST)
    if not torch.cuda.is_available():
        assert torch.equal(U, auto)
    U, info = kernel_projections(X, y, 2, generator=0, return_info=True, init="spectral", **FAST)
    assert info.strategy == "deflation" and info.objective.shape == (2,) and np.isfinite(info.objective).all()
    assert 0 < info.explained <= 1 and info.spectrum.shape == (8,) and info.steps == 2 * (8 + 8 // 3)
    U, info = kernel_projections(X, y, 2, generator=0, return_info=True, **FAST)  # moment starts, the default
    assert info.init == "moments" and info.moment_signal >= 1 and info.spectrum is None
    U, info = kernel_projections(
        X, y, 2, strategy="independent", init="random", generator=0, return_info=True, **FAST
    )
    assert info.explained is None and info.spectrum is None and info.steps == 8


def test_flop_count_of_the_independent_strategy():
    """info.flops counts the path taken: for independent restarts from random starts it is steps forward and
    backward passes plus 4 held-out forward passes of K restarts on B x B kernels (counted here by hand)."""
    X = torch.randn(500, 6, generator=GEN().manual_seed(0))
    y = torch.sin(X[:, :2])  # c = 2 columns
    K, B, m, steps, c, d = 3, 64, 6, 7, 2, 1
    _, info = kernel_projections(
        X,
        y,
        K,
        strategy="independent",
        init="random",
        steps=steps,
        batch_size=B,
        generator=0,
        return_info=True,
    )
    fwd = K * (2 * B * m + 3 * B * B * d + B**3 / 3 + 4 * B * B * c)
    bwd = K * (2 * B * B * c + 4 * B * B * d + 2 * B * m)
    assert info.flops == pytest.approx(steps * (fwd + bwd) + 4 * fwd)
    _, deflation = kernel_projections(X, y, K, generator=0, return_info=True, **FAST)
    assert deflation.flops > 0


@pytest.mark.parametrize("kernel", ["rbf", "laplace", "arccos", "ntk", "callable"])
@pytest.mark.parametrize("strategy", ["independent", "deflation"])
def test_every_kernel_and_strategy_runs(kernel, strategy):
    task = SineTask(6, 2, generator=0)
    X, y = task.sample(300, generator=1)
    k = (lambda A, B: torch.exp(-(A - B.transpose(-1, -2)).abs())) if kernel == "callable" else kernel
    U = kernel_projections(X, y, 2, kernel=k, strategy=strategy, generator=0, **FAST)
    assert U.shape == (2, 1, 6) and torch.isfinite(U).all()
    U = kernel_projections(X, y, 2, kernel=k, strategy=strategy, bandwidth=None, generator=0, **FAST)
    assert torch.isfinite(U).all()


def test_feature_axes_mix_like_image_slots():
    """X (n, m, D): a module's input is sum_j U_ij X[:, j] (a D-vector), e.g. a mixture of image slots."""
    g = GEN().manual_seed(0)
    X = torch.randn(400, 3, 4, generator=g)
    y = torch.sin(X[:, 1]).sum(1)  # depends on slot 1 only
    U = kernel_projections(X, y, 1, init="random", bandwidth=None, generator=0, **FAST)
    assert U.shape == (1, 1, 3)
    with pytest.raises(InvalidValue, match="init='random'"):
        kernel_projections(X, y, 1, generator=0, **FAST)


@pytest.mark.parametrize("kernel", ["arccos", "ntk"])
def test_feature_axes_with_the_tangent_kernels(kernel):
    """The ntk network reads a module's whole input, b * D numbers for X (n, m, D), as other kernels do."""
    g = GEN().manual_seed(0)
    X = torch.randn(300, 3, 2, generator=g)
    y = torch.sin(X[:, 1]).sum(1)
    U = kernel_projections(X, y, 2, kernel=kernel, init="random", generator=0, **FAST)
    assert U.shape == (2, 1, 3) and torch.isfinite(U).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectral_directions_span_the_directions_y_depends_on(seed):
    """The spectral start on correlated, off-centre Gaussian inputs (condition number 64) with
    y = sin(2 s) + t^2, s, t the standardised u.x and v.x: SIR sees the odd part, SAVE the even one, and the
    top two directions, mapped back to input space, span {u, v}. Second route: the planted u, v. (Measured
    over seeds 0-19 at n = 10,000: overlap >= 0.977; without the map back it is 0.70-0.87.)"""
    g = GEN().manual_seed(seed)
    m = 8
    Q, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    R, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    A = R * torch.linspace(0.25, 2.0, m, dtype=torch.float64)
    X = 3.0 + torch.randn(10_000, m, generator=g, dtype=torch.float64) @ A.T
    u, v = Q[:, 0], Q[:, 1]
    s, t = X @ u, X @ v
    s, t = (s - s.mean()) / s.std(), (t - t.mean()) / t.std()
    y = (torch.sin(2 * s) + t**2).unsqueeze(1)
    D, evals = spectral_directions(X.float(), y.float(), 2)
    assert D.shape == (2, m) and evals.shape == (m,) and bool((evals[:-1] >= evals[1:]).all())
    assert recovery_score(D[None].double(), torch.stack([u, v])[None]) > 0.95
    assert evals[1] > 5 * evals[2]  # two directions matter, the rest is sampling noise


def test_memory_is_independent_of_n_squared():
    """n = 200,000 rows: an n x n float32 matrix would need 160 GB; the rule needs O(B^2 + n K)."""
    g = GEN().manual_seed(0)
    X = torch.randn(200_000, 4, generator=g)
    y = torch.sin(X[:, :1])
    U = kernel_projections(X, y, 1, steps=3, batch_size=64, restarts=1, n_candidates=2, passes=1, generator=0)
    assert U.shape == (1, 1, 4)


def test_progress_bar_option_runs():
    X = torch.randn(200, 3, generator=GEN().manual_seed(0))
    y = X[:, :1] ** 2
    a = kernel_projections(X, y, 1, progress=True, generator=0, **FAST)
    b = kernel_projections(X, y, 1, progress=False, generator=0, **FAST)
    assert torch.equal(a, b)


def test_nystrom_fit_recovers_a_smooth_function_and_apportions_additive_targets():
    g = GEN().manual_seed(0)
    Z = torch.randn(2, 3000, 1, generator=g, dtype=torch.float64)
    f0, f1 = torch.sin(2 * Z[0]), torch.cos(Z[1])
    fit = additive_nystrom(
        Z, f0 + f1, [lambda a, b: rbf(a, b, bandwidth=0.5)] * 2, 100, ridge=1e-6, generator=g
    )
    parts = fit.parts(Z)
    assert (parts.sum(0) - f0 - f1).pow(2).mean() < 1e-4
    # each part is its own function up to a constant (the additive model cannot tell constants apart)
    for part, f in ((parts[0], f0), (parts[1], f1)):
        d = part - f
        assert (d - d.mean()).pow(2).mean() < 1e-3


def test_bad_input_raises_before_any_work():
    X = torch.randn(100, 4)
    y = torch.randn(100)
    bad = X.clone()
    bad[3, 1] = float("nan")
    cases = [
        (dict(X=bad), InvalidValue, "X contains NaN"),
        (dict(y=torch.full((100,), float("inf"))), InvalidValue, "y contains NaN or inf"),
        (dict(module_dim=5), InvalidValue, "module_dim"),
        (dict(n_modules=0), InvalidValue, "n_modules"),
        (dict(batch_size=128), InvalidValue, "batch_size"),
        (dict(y=torch.randn(99)), InvalidValue, "y must have shape"),
        (dict(X=torch.randn(100)), InvalidValue, "X must have shape"),
        (dict(strategy="greedy"), InvalidValue, "strategy"),
        (dict(kernel="poly"), InvalidValue, "kernel"),
        (dict(kernel=3), InvalidType, "kernel"),
        (dict(init="zeros"), InvalidValue, "init"),
        (dict(lr=0.0), InvalidValue, "lr"),
        (dict(jitter=-1.0), InvalidValue, "jitter"),
        (dict(bandwidth=0.0), InvalidValue, "bandwidth"),
        (dict(bandwidth="wide"), InvalidType, "bandwidth must be a positive finite number or None"),
        (dict(ridge=float("nan")), InvalidValue, "ridge must be a positive finite number"),
        (dict(steps=0), InvalidValue, "steps"),
        (dict(restarts=0), InvalidValue, "restarts"),
        (dict(generator="seed"), InvalidType, "generator"),
        (dict(generator=-1), InvalidValue, "generator seed must be >= 0"),
        (dict(device="tpu"), InvalidValue, "device"),
        (dict(progress="yes"), InvalidType, "progress"),
        (dict(in_span=1), InvalidType, "in_span"),
        (dict(X="abc"), InvalidType, "X"),
    ]
    for override, error, match in cases:
        kw = dict(X=X, y=y, n_modules=2, batch_size=32, steps=2)
        kw.update(override)
        with pytest.raises(error, match=match):
            kernel_projections(**kw)
    with pytest.raises(InvalidValue, match="tol"):
        choose_n_modules(X, y, 3, tol=0.0)
    with pytest.raises(InvalidValue, match="generator seed must be >= 0"):
        choose_n_modules(X, y, 3, batch_size=32, generator=-1)
    with pytest.raises(InvalidValue, match="validation_fraction"):
        choose_n_modules(X, y, 3, validation_fraction=1.0)
    with pytest.raises(InvalidValue, match="unknown rule option"):
        choose_n_modules(X, y, 3, passes=2)


def _recovery_table(seeds, **options):
    """recovery per seed on the planted task of DESIGN section 4: SineTask m=16, k=4, b=1, n=4000."""
    out = {"deflation": [], "independent": [], "random": []}
    for seed in seeds:
        task = SineTask(16, 4, generator=seed)
        X, y = task.sample(4000, generator=1000 + seed)
        for strategy in ("deflation", "independent"):
            U = kernel_projections(X, y, 4, strategy=strategy, generator=seed, **options)
            out[strategy].append(recovery_score(U, task.projections))
        R = torch.randn(4, 1, 16, generator=GEN().manual_seed(seed))
        out["random"].append(recovery_score(R, task.projections))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.slow
def test_planted_modules_are_recovered_by_deflation():
    """Goal: recovery >= 0.9 with deflation at m=16, k=4, n=4000 (3 seeds, every seed must pass), at
    test scale (batch 256, 100 steps per module, one backfitting pass; about 10 s of one core).
    Independent restarts (the paper's strategy, from spectral starts here) and random projections are the
    references; their numbers at the defaults and over more seeds are in docs/learning-rule.md."""
    table = _recovery_table(seeds=(0, 1, 2), batch_size=256, steps=100, passes=1)
    assert (table["deflation"] >= 0.9).all(), table
    assert table["deflation"].mean() > table["independent"].mean() + 0.1, table
    assert table["random"].mean() < 0.5 < table["deflation"].min(), table


@pytest.mark.slow
def test_choose_n_modules_finds_the_planted_count():
    task = SineTask(16, 4, generator=3)
    X, y = task.sample(4000, generator=7)
    K, ev = choose_n_modules(X, y, max_modules=7, batch_size=256, steps=100, generator=0)
    assert K == 4, ev["unexplained"]
    assert ev["levelled_off"] and ev["n_modules"] == 4 and len(ev["unexplained"]) == 6
    assert ev["gains"][-1] < ev["tol"] <= min(ev["gains"][:-1])
    assert ev["projections"].shape == (5, 1, 16)
    assert recovery_score(ev["projections"][:4], task.projections) > 0.8
    # too few candidates allowed: the curve has not levelled off, and the evidence says so
    K, ev = choose_n_modules(X, y, max_modules=2, batch_size=256, steps=100, generator=0)
    assert K == 2 and not ev["levelled_off"] and "max_modules" in ev["criterion"]


def _rule(m: int = 24, k: int = 3, n: int = 3000, seed: int = 0, **options):
    from modscale.rules.projections import _check_options, _Rule

    task = SineTask(m, k, generator=seed)
    X, y = task.sample(n, generator=seed + 1)
    base = dict(
        n_modules=k, module_dim=1, kernel="rbf", strategy="deflation", steps=20, batch_size=256, lr=0.05,
        restarts=2, n_candidates=8, init="spectral", passes=0, bandwidth=0.5, jitter=1e-2, n_centres=None,
        ridge=1e-3, in_span=True, progress=False,
    )  # fmt: skip
    opt = _check_options(X, **{**base, **options})
    gen = torch.Generator().manual_seed(seed)
    return _Rule(X, y - y.mean(0), opt, gen, torch.device("cpu"), lambda k=1: 0)


def test_the_search_stays_inside_its_space():
    rule = _rule()
    assert rule.Q is not None and rule.Q.shape == (24, 3)
    torch.testing.assert_close(rule.Q.T @ rule.Q, torch.eye(3), atol=1e-5, rtol=0)
    V, Q = rule.candidates(0)
    assert Q.shape[0] == 24 and 3 < Q.shape[1] <= 3 + 4  # the span, widened by residual directions
    torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[1]), atol=1e-5, rtol=0)
    U, _ = rule.optimise(V[:2], 0, 10, Q)
    outside = U - U @ Q @ Q.T  # (2, 1, 24): what of U lies outside the space
    assert float(outside.norm()) < 1e-4 and torch.allclose(U.norm(dim=-1), torch.ones(2, 1))
    # without a space the same starts move in all of R^m
    W, _ = rule.optimise(V[:2], 0, 10, None)
    assert float((W - W @ Q @ Q.T).norm()) > 1e-3


def test_in_span_false_or_random_starts_search_all_of_r_m():
    assert _rule(in_span=False).Q is None
    assert _rule(init="random").Q is None
    assert _rule(m=3, k=3).Q is None  # the span is all of R^m already


def test_rule_adam_step_matches_torch_optim_adam():
    """The rule's written-out Adam (no torch.optim import) against torch.optim.Adam (second route)."""
    from modscale.rules.projections import _adam_step

    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 1, 16, generator=g)
    q = p.clone().requires_grad_(True)
    ref = torch.optim.Adam([q], lr=0.05)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t in range(1, 30):
        grad = torch.randn(4, 1, 16, generator=g)
        q.grad = grad.clone()
        ref.step()
        _adam_step(p, grad, m, v, t, 0.05)
    torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-7)
