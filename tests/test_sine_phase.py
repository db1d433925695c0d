"""sine_phase: the map of where training finds the modules from random starts, and its figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modscale.errors import InvalidType, InvalidValue
from modscale.experiments import get, run_sweep
from modscale.plots import render
from modscale.plots.sine_phase import boundary_fit, cell_stats, n_needed
from modscale.results import load, make_record

NAME = "sine_phase"


def _rec(config, seed, metrics):
    full = get(NAME).config(config)
    return make_record(NAME, full, seed, metrics, wall_s=0.0, device="cpu")


def test_registered_with_every_tier_and_five_paper_seeds():
    exp = get(NAME)
    assert set(exp.tiers) == {"smoke", "small", "paper"}
    assert exp.tiers["paper"].seeds >= 5
    for tier in exp.tiers:
        jobs = exp.jobs(tier)
        assert jobs and all(j.config["k"] * j.config["b"] <= j.config["m"] for j in jobs)
    paper = exp.jobs("paper", seeds=1)
    assert {j.config["m"] for j in paper} == {4, 8, 16, 32, 64}
    assert {j.config["k"] for j in paper} == {2, 4, 8, 16}
    assert {j.config["b"] for j in paper} == {1, 2, 3}
    assert {j.config["method"] for j in paper} == {
        "monolithic", "modular-random", "modular-kernel", "modular-oracle"
    }  # fmt: skip
    assert any(j.config["nonlinear"] for j in paper)


@pytest.mark.parametrize(
    "override, key, error",
    [
        ({"b": 20}, "'b'", InvalidValue),  # b > m = 16
        ({"k": 8, "b": 3}, "k * b", InvalidValue),  # 24 > m = 16
        ({"n": 1}, "'n'", InvalidValue),
        ({"n": 2.5}, "'n'", InvalidType),
        ({"method": "ensemble"}, "'method'", InvalidValue),
        ({"method": "modular-oracle", "nonlinear": True}, "modular-oracle", InvalidValue),
    ],
)
def test_bad_configs_are_rejected_before_any_work(override, key, error):
    with pytest.raises(error) as info:
        get(NAME).config(override)
    assert key in str(info.value)


def test_bad_set_values_fail_in_the_cli_before_any_run(tmp_path, capsys):
    from modscale.cli import main

    assert main(["run", NAME, "--tier", "smoke", "--set", "k=8", "m=4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "k * b must be <= m" in err[0]
    assert not (tmp_path / "results.jsonl").exists()


# ------------------------------------------------------------------------------------- pure analysis


def _synthetic(alpha: float, c: float, ms=(4, 8, 16, 32), ks=(2, 4), ns=(2**i for i in range(6, 20))):
    """Records whose modular-random recovery crosses 0.9 exactly at n = c * k * m**alpha (on a 2**i grid)."""
    ns = list(ns)
    rows = []
    for m in ms:
        for k in ks:
            crossing = c * k * m**alpha
            for n in ns:
                rec = 0.95 if n >= crossing else 0.2
                for seed in range(3):
                    rows.append(_rec({"method": "modular-random", "m": m, "k": k, "n": n}, seed,
                                     {"recovery": rec, "recovery_init": 0.1, "test": 1 - rec}))  # fmt: skip
    return rows


def test_samples_needed_is_the_first_n_of_the_grid_that_reaches_the_threshold():
    rows = _synthetic(1.0, 8.0)
    need = n_needed(cell_stats(rows, "modular-random", "recovery"), 0.9)
    for (m, k, b), n in need.items():
        assert b == 1
        assert n == 2 ** math.ceil(math.log2(8.0 * k * m))  # second route: the grid point above c k m
    below = n_needed(cell_stats(rows, "modular-random", "test"), 0.1, below=True)
    assert below == need  # the test loss 1 - recovery crosses 0.1 where recovery crosses 0.9


def test_boundary_fit_recovers_the_planted_exponents():
    for alpha in (1.0, 2.0):
        rows = _synthetic(alpha, 1.0, ns=[2**i for i in range(2, 22)])
        fit = boundary_fit(n_needed(cell_stats(rows, "modular-random", "recovery"), 0.9))
        # n is rounded up to a power of two, so the fitted slopes are within the rounding of the grid
        assert fit.alpha == pytest.approx(alpha, abs=0.15)
        assert fit.beta == pytest.approx(1.0, abs=0.3)
        assert fit.cells == 8 and fit.censored == 0


def test_boundary_fit_counts_cells_never_reached_and_needs_two_dimensions():
    rows = _synthetic(1.0, 1e6)  # never reached on the grid
    need = n_needed(cell_stats(rows, "modular-random", "recovery"), 0.9)
    assert all(math.isinf(v) for v in need.values())
    assert boundary_fit(need) is None
    single_m = {(16, k, 1): 100.0 * k for k in (2, 4, 8, 16)}
    assert boundary_fit(single_m) is None


# ---------------------------------------------------------------------------------- a real smoke sweep


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase")
    summary = run_sweep(NAME, out, tier="smoke", device="cpu")
    assert not summary.errors
    return load(out).records


@pytest.mark.slow
def test_smoke_runs_store_recovery_test_loss_and_compute(smoke):
    by = {(r.config["method"], r.config["m"]): r.metrics for r in smoke}
    assert {method for method, _ in by} == {
        "monolithic",
        "modular-random",
        "modular-kernel",
        "modular-oracle",
    }
    for (method, _), metrics in by.items():
        assert 0 < metrics["test"] < 5 and metrics["flops_train"] > 0
        if method == "monolithic":
            assert "recovery" not in metrics
        else:
            assert 0 <= metrics["recovery_init"] <= 1 + 1e-9 and 0 <= metrics["recovery"] <= 1 + 1e-9
        if method == "modular-oracle":  # the true projections, fixed
            assert metrics["recovery_init"] == pytest.approx(1.0) == metrics["recovery"]
        if method == "modular-kernel":
            assert metrics["kernel_s"] > 0 and metrics["flops_kernel"] > 0
        else:
            assert metrics["kernel_s"] == 0
    params = {r.metrics["n_params"] for r in smoke if r.config["m"] == 4}
    assert max(params) <= 1.1 * min(params)  # equal trainable parameter count, up to integer widths


@pytest.mark.slow
def test_figures_are_pure_functions_of_the_runs(smoke):
    outputs = {o.name: o for o in render(smoke)}
    assert {"sine_phase", "sine_phase_samples"} <= set(outputs)
    assert "seed" in outputs["sine_phase"].caption
    again = {o.name: o for o in render(smoke)}
    for name in ("sine_phase", "sine_phase_samples"):
        assert outputs[name].caption == again[name].caption
        got = [(c.quantity, c.at, c.ours) for c in outputs[name].comparisons]
        assert got == [(c.quantity, c.at, c.ours) for c in again[name].comparisons]
    shares = [c.ours for c in outputs["sine_phase"].comparisons]
    assert shares and all(0 <= s <= 1 for s in shares)
    assert np.isfinite(shares).all()
