"""Sine-task experiments: shared method builders (sine_common), loss trends, sample complexity, K != k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modscale.errors import InvalidType, InvalidValue
from modscale.experiments import bisect_log_grid, dense_grid, get, log_grid_n, run_sweep
from modscale.experiments.sine_common import (
    METHODS,
    TRAINING,
    Setup,
    cpu_threads,
    draw,
    mse,
    predict,
    run_stack,
    seed_for,
    task_of,
)
from modscale.plots import render
from modscale.results import load, make_record
from modscale.theory import monolithic_losses, spectrum

SMOKE = TRAINING["smoke"]


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------- parameter matching


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p", [300, 2000, 12_000])
def test_every_method_gets_p_parameters_counted_by_numel(method, p):
    setup = Setup(method, m=6, k=3, p=p)
    model = setup.build([0, 1])
    # second route: the closed-form count against the tensors actually built (2 jobs, E members each)
    assert _numel(model) == 2 * setup.n_params()
    # equal parameter count: within one width step of the target
    w = setup.width()
    assert setup.n_params() == _count_at(setup, w)
    assert abs(setup.n_params() - p) <= _count_at(setup, w + 1) - _count_at(setup, w)


def _count_at(setup: Setup, w: int) -> int:
    from modscale.models import MLP, ModularNet

    if setup.method in ("monolithic", "ensemble"):
        return setup.n_members * MLP.count_parameters(setup.m, w, setup.depth)
    return ModularNet.count_parameters(
        setup.m, setup.n_modules, setup.b, w, setup.depth, setup.module_projection
    )


def test_ensemble_has_K_members_and_oracle_does_not_count_fixed_projections():
    assert Setup("ensemble", m=6, k=3, p=900).n_members == 3
    assert Setup("ensemble", m=6, k=3, p=900, members=5).n_members == 5
    assert Setup("ensemble", m=6, k=3, p=900, K=2).n_members == 2
    oracle = Setup("modular-oracle", m=6, k=3, p=900).build([0])
    assert not any(p is oracle.U for p in oracle.parameters())  # a buffer, never trained


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"method": "modular-magic"}, InvalidValue),
        ({"method": "modular-oracle", "K": 2}, InvalidValue),
        ({"method": "modular-kernel", "projection": "nonlinear"}, InvalidValue),
        ({"method": "monolithic", "projection": "linear"}, InvalidValue),
        ({"method": "monolithic", "b": 7}, InvalidValue),
        ({"method": "monolithic", "p": 3}, InvalidValue),
        ({"method": "monolithic", "m": 2.5}, InvalidType),
    ],
)
def test_bad_setups_raise_before_any_work(kwargs, error):
    base = {"m": 6, "k": 3, "p": 500}
    with pytest.raises(error):
        Setup(**{**base, **kwargs})


def test_seed_streams_are_reproducible_and_distinct():
    assert seed_for(3, "task") == seed_for(3, "task")
    values = {seed_for(s, purpose) for s in range(4) for purpose in ("task", "train", "init", "kernel")}
    assert len(values) == 16
    assert seed_for(0, "train", 100) != seed_for(0, "train", 200)
    with pytest.raises(InvalidValue, match="purpose"):
        seed_for(0, "weights")
    with pytest.raises(InvalidValue, match="seed"):
        seed_for(-1, "task")


def test_cpu_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with cpu_threads("cpu", 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------------------------- evaluation


def test_zero_prediction_scores_the_target_variance():
    # the normalised task has Var y = 1: predicting 0 must give test loss ~1 (second route to the
    # evaluation's scale, by the task's exact normalisation)
    setup = Setup("monolithic", m=5, k=3, p=300)
    tasks = [task_of(setup, s) for s in range(3)]
    X, y = draw(tasks, 20_000, "test", [0, 1, 2])
    loss = mse(torch.zeros_like(y), y)
    assert np.allclose(loss, 1.0, atol=0.05)


def test_ensemble_predicts_the_mean_of_its_members():
    setup = Setup("ensemble", m=4, k=2, p=400)
    model = setup.build([0, 1])  # 2 jobs x 2 members
    X = torch.randn(2, 50, 4)
    ens = predict(model, X, members=2)
    members = [model.replica(r)(X[r // 2]) for r in range(4)]  # (50, 1) each
    expected = torch.stack([(members[0] + members[1]) / 2, (members[2] + members[3]) / 2])
    assert torch.allclose(ens, expected, atol=1e-6)


@pytest.mark.parametrize("method", ["monolithic", "modular-kernel", "ensemble"])
def test_a_job_gives_the_same_numbers_alone_or_in_a_stack(method):
    setup = Setup(method, m=5, k=2, p=400)
    stacked = run_stack(setup, [0, 1, 2], [60, 90, 120], "smoke").metrics
    alone = run_stack(setup, [1], [90], "smoke").metrics[0]
    for key in ("test", "train", "val", "steps", "flops_kernel"):
        assert stacked[1][key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key


def test_monolithic_jobs_on_tasks_with_different_k_share_a_stack():
    setup = Setup("monolithic", m=5, k=2, p=400)
    mixed = run_stack(setup, [0, 0, 1], [80, 80, 80], "smoke", ks=[2, 4, 6]).metrics
    alone = run_stack(Setup("monolithic", m=5, k=4, p=400), [0], [80], "smoke").metrics[0]
    assert mixed[1]["test"] == pytest.approx(alone["test"], rel=1e-4)
    assert mixed[0]["test"] != pytest.approx(mixed[1]["test"], rel=1e-3)  # another task, another loss
    with pytest.raises(InvalidValue, match="ks"):
        run_stack(Setup("modular-random", m=5, k=2, p=400), [0], [80], "smoke", ks=[3])


def test_metrics_and_compute_accounting():
    setup = Setup("modular-kernel", m=5, k=2, p=400)
    out = run_stack(setup, [0, 1], [100, 150], "smoke", ood=True)
    numel = _numel(out.model) // 2
    for n, row in zip([100, 150], out.metrics, strict=True):
        assert row["n"] == n and row["n_params"] == numel
        assert 0 < row["test"] < 5 and 0 <= row["train"] < 5 and 0 < row["ood"] < 5
        assert 0 <= row["recovery_init"] <= 1 and 0 <= row["recovery"] <= 1
        assert row["kernel_s"] > 0 and row["flops_kernel"] > 0
        assert row["wall_s"] == pytest.approx(row["train_s"] + row["kernel_s"])
        # second route to the training FLOPs: 6 per parameter per sample of every step taken, 2 per sample
        # evaluated (validation at every evaluation, then train, val and test (and OOD) once)
        B = min(SMOKE.batch_size, n)
        evals = len(out.history.steps)
        evaluated = SMOKE.n_val * evals + n + SMOKE.n_val + 2 * SMOKE.n_test
        assert row["flops_train"] == pytest.approx(6 * numel * B * row["steps"] + 2 * numel * evaluated)
        assert row["flops"] == pytest.approx(row["flops_train"] + row["flops_kernel"])
    random = run_stack(Setup("modular-random", m=5, k=2, p=400), [0], [100], "smoke").metrics[0]
    assert random["kernel_s"] == 0 and random["flops_kernel"] == 0


def test_oracle_starts_on_the_true_projections_and_keeps_them():
    out = run_stack(Setup("modular-oracle", m=6, k=3, p=600), [0, 1], [100, 100], "smoke")
    for row in out.metrics:
        assert row["recovery_init"] == pytest.approx(1.0) and row["recovery"] == pytest.approx(1.0)


def test_run_stack_rejects_bad_input_before_training():
    setup = Setup("monolithic", m=4, k=2, p=300)
    with pytest.raises(InvalidValue, match="one entry per job"):
        run_stack(setup, [0, 1], [100], "smoke")
    with pytest.raises(InvalidValue, match="n"):
        run_stack(setup, [0], [1], "smoke")
    with pytest.raises(InvalidValue, match="n_pool"):
        run_stack(setup, [0], [100], "smoke", n_pool=50)
    with pytest.raises(InvalidValue, match="tier"):
        run_stack(setup, [0], [100], "huge")
    with pytest.raises(InvalidValue, match="region"):
        run_stack(setup, [0], [100], "smoke", region="left")
    with pytest.raises(InvalidValue, match="ood"):
        run_stack(Setup("monolithic", m=4, k=1, p=300), [0], [100], "smoke", ood=True)


def test_callback_reads_the_weights_during_training():
    steps: list[int] = []
    out = run_stack(
        Setup("modular-random", m=4, k=2, p=300), [0, 1], [80, 120], "smoke",
        callback=lambda model, step: steps.append(step),
    )  # fmt: skip
    assert steps[0] == 0 and steps[1:] == list(out.history.steps)
    assert all(b - a == SMOKE.eval_every for a, b in zip(steps, steps[1:], strict=False))
    assert all(np.isfinite(row["test"]) for row in out.metrics)
    plain = run_stack(Setup("modular-random", m=4, k=2, p=300), [0, 1], [80, 120], "smoke").metrics
    assert [r["test"] for r in plain] == pytest.approx([r["test"] for r in out.metrics], rel=1e-6)


# ------------------------------------------------------------------------------------------------- bisection


@pytest.mark.slow
def test_bisection_on_real_trainings_matches_the_dense_grid_with_3x_fewer_trainings():
    # real small trainings (the smoke tier's), nested training sets: the loss of (job, n) is the same
    # whichever other jobs share its stack, so both searches see the same numbers
    setup = Setup("monolithic", m=4, k=2, p=300)
    seeds = [0, 1, 2]
    n_grid = log_grid_n(16, 2048, 15)
    assert len(n_grid) == 15
    seen: dict[tuple[int, int], float] = {}

    def evaluate(idx, n):
        rows = run_stack(setup, [seeds[i] for i in idx], [int(v) for v in n], "smoke", n_pool=int(n_grid[-1]))
        losses = np.array([r["test"] for r in rows.metrics])
        for i, v, loss in zip(idx, n, losses, strict=True):
            seen.setdefault((int(i), int(v)), float(loss))
        return losses

    with cpu_threads("cpu"):
        dense = dense_grid(evaluate, n_grid, 0.5, n_jobs=3)
        bisect = bisect_log_grid(evaluate, n_grid, 0.5, n_jobs=3)
    assert np.array_equal(bisect.n_star, dense.n_star), (bisect.history, dense.history)
    assert dense.trainings.sum() >= 3 * bisect.trainings.sum()
    for j in range(3):  # the bisection saw the dense grid's losses (same job, same n)
        for n, loss in bisect.history[j]:
            assert loss == pytest.approx(seen[(j, n)], rel=1e-4)
    assert np.isfinite(dense.n_star).all()


# ---------------------------------------------------------------------------------------------- experiments


def test_experiment_configs_are_checked():
    sc = get("sine_sample_complexity")
    with pytest.raises(InvalidValue, match="n_min"):
        sc.config({"n_min": 500, "n_max": 100})
    with pytest.raises(InvalidValue, match="b"):
        sc.config({"m": 2, "b": 3})
    with pytest.raises(InvalidValue, match="modular-oracle"):
        sc.config({"method": "modular-oracle", "K": 2, "k": 3})
    with pytest.raises(InvalidValue, match="method"):
        sc.config({"method": "bogus"})
    with pytest.raises(InvalidValue, match="b"):
        get("sine_mismatch").config({"m": 2, "b": 3})
    with pytest.raises(InvalidValue, match="panel"):
        get("sine_loss_trends").config({"panel": "q"})


def test_tiers_are_sized_as_documented():
    sc = get("sine_sample_complexity")
    small = sc.jobs("small")
    assert {j.config["method"] for j in small} == {
        "monolithic",
        "modular-random",
        "modular-kernel",
        "modular-oracle",
    }
    assert {j.config["regime"] for j in small} == {"rich", "random-features", "lazy"}
    assert {j.config["eps"] for j in small} == {0.5, 0.2, 0.1, 0.05, 0.02}
    assert {j.config["validation"] for j in small} == {"split"} and min(j.config["n_min"] for j in small) <= 8
    assert min(sc.tiers["small"].seeds, get("sine_mismatch").tiers["small"].seeds) >= 3
    lt = get("sine_loss_trends").jobs("small")
    assert {j.config["panel"] for j in lt} == {"k", "m", "p", "n"}
    mm = get("sine_mismatch").jobs("small")
    assert {j.config["K"] / j.config["k"] for j in mm} == {0.5, 1.0, 2.0}


@pytest.mark.slow
def test_smoke_tiers_run_store_and_draw(tmp_path):
    for name in ("sine_sample_complexity", "sine_loss_trends", "sine_mismatch", "theory_loss_trends"):
        run_sweep(name, tmp_path, tier="smoke", device="cpu")
    records = load(tmp_path).records
    by = {}
    for r in records:
        by.setdefault(r.experiment, []).append(r)
    for r in by["sine_sample_complexity"]:
        m = r.metrics
        assert m["trainings"] == len(m["history"]) == 5  # the whole curve: every n of the grid
        assert m["crossing"] == ("last" if r.config["regime"] == "rich" else "first")
        losses = {int(n): loss for n, loss, _ in m["history"]}
        lo, hi = m["n_star_bracket"]
        if m["censored"] == "none":
            assert losses[lo] > r.config["eps"] >= losses[hi] and lo < m["n_star"] <= hi
            assert m["test"] == pytest.approx(losses[hi]) and m["flops"] > 0 and m["search_flops"] > 0
        elif m["censored"] == "above":
            assert hi is None and m["n_star"] == lo == max(losses) and losses[lo] > r.config["eps"]
        else:
            assert lo is None and m["n_star"] == hi == min(losses) and losses[hi] <= r.config["eps"]
    assert all({"train", "test", "n_params"} <= set(r.metrics) for r in by["sine_loss_trends"])
    assert all("recovery" in r.metrics for r in by["sine_mismatch"])
    # rerunning skips what is stored
    again = run_sweep("sine_mismatch", tmp_path, tier="smoke", device="cpu")
    assert again.ran == {"sine_mismatch": 0} and again.skipped == again.planned
    figures = {f.name: f for f in render(records)}
    assert {"sine_sample_complexity", "loss_trends", "sine_mismatch", "sine_theory_fit"} <= set(figures)
    assert "network" in " ".join(c.quantity for c in figures["loss_trends"].comparisons)


# -------------------------------------------------------------------------------------------------- figures


def _record(experiment, config, seed, metrics):
    return make_record(experiment, config, seed, metrics, wall_s=0.0, device="cpu")


def test_theory_fit_figure_recovers_constants_from_closed_form_points():
    # second route: "networks" whose losses ARE the closed form at known constants must be matched exactly
    lt = get("sine_loss_trends")
    records = []
    c, omega = 1.3, 1.7
    for job in lt.jobs("small", seeds=1):
        cfg = job.config
        if cfg["model"] != "monolithic" or abs(cfg["p"] - cfg["n"]) <= 2:
            continue
        train, test = monolithic_losses(cfg["n"], cfg["p"], spectrum(cfg["m"], c=c, omega=omega), noise=0.02)
        metrics = {"train": float(train), "test": float(test), "n_params": cfg["p"]}
        records.append(_record("sine_loss_trends", cfg, 0, metrics))
    out = render(records)
    fit_fig = next(f for f in out if f.name == "sine_theory_fit")
    rmse = next(c for c in fit_fig.comparisons if c.quantity.startswith("rms log residual"))
    assert rmse.ours < 1e-3
    near = next(c for c in fit_fig.comparisons if c.quantity.startswith("network / calibrated theory, test"))
    assert near.ours == pytest.approx(1.0, abs=1e-3)  # predicted, not fitted, near the threshold
    ratios = [c.ours for c in fit_fig.comparisons if c.quantity.startswith("network / calibrated")]
    assert ratios and np.allclose(ratios, 1.0, atol=1e-3)
    assert "c = 1.3" in fit_fig.caption and "Omega = 1.7" in fit_fig.caption


def test_sample_complexity_figure_keeps_bounds_and_compares_with_the_paper():
    records = []
    for method, base in (("monolithic", 200.0), ("modular-kernel", 50.0), ("modular-none", 300.0)):
        for m in (3, 6):
            for seed in range(3):
                n_star = base * m * (1 + seed)
                above = method == "modular-none" and m == 6 and seed >= 1  # two of three beyond the grid
                cfg = get("sine_sample_complexity").config({"method": method, "m": m})
                metrics = {
                    "n_star": 4096.0 if above else n_star,
                    "censored": "above" if above else "none",
                    "reached": not above,
                    "flops": 1e9 * m,
                }
                records.append(_record("sine_sample_complexity", cfg, seed, metrics))
    fig = next(f for f in render(records) if f.name == "sine_sample_complexity")
    rows = {
        (c.quantity.split(",")[2].split("(")[0].strip(), c.at): c
        for c in fig.comparisons
        if "n*," in c.quantity
    }
    mono = rows[("monolithic", "m=3")]
    assert mono.ours == pytest.approx(1200.0)  # the median of 600, 1200, 1800
    assert mono.paper == pytest.approx(5.0e2) and mono.n_seeds == 3 and "rich" in mono.quantity
    bound = rows[("modular-none", "m=6")]  # the median is a bound: said so, not averaged
    assert bound.ours == 4096.0 and bound.note.startswith("median only known to exceed this; 2 of 3 seeds")
    assert rows[("modular-none", "m=3")].paper is None  # the paper has no such method
    assert "1.5" in fig.caption and "bounds" in fig.caption
    growth = next(
        c for c in fig.comparisons if c.quantity.startswith("growth") and "monolithic" in c.quantity
    )
    assert growth.ours == pytest.approx(2.0 ** (1 / 3), rel=1e-3)  # n* doubles from m = 3 to 6
    none_growth = next(
        c for c in fig.comparisons if c.quantity.startswith("growth") and "modular-none" in c.quantity
    )
    assert none_growth.ours is not None  # 2 of 6 points are bounds: values still carry the fit


def test_a_validation_split_is_counted_in_n_and_none_trains_the_full_budget():
    """validation='split' holds out the last fifth of each job's own n samples (second route: the stored val
    loss is the trained model's error on exactly those rows, recomputed here); 'none' selects nothing."""
    from modscale.experiments.sine_common import VAL_FRACTION, draw, predict

    setup = Setup("monolithic", m=4, k=2, p=300)
    n = [10, 50, 400]
    out = run_stack(setup, [0, 1, 2], n, "smoke", n_pool=400, validation="split")
    X, y = draw(out.tasks, 400, "train", [0, 1, 2])
    with torch.no_grad():
        pred = predict(out.model, X).double()
    for s, (row, n_s) in enumerate(zip(out.metrics, n, strict=True)):
        held = round(VAL_FRACTION * n_s)
        assert (row["n"], row["n_train"]) == (n_s, n_s - held)
        mine = float((pred[s, n_s - held : n_s] - y[s, n_s - held : n_s].double()).pow(2).mean())
        assert row["val"] == pytest.approx(mine, rel=1e-9)
        ours = float((pred[s, : n_s - held] - y[s, : n_s - held].double()).pow(2).mean())
        assert row["train"] == pytest.approx(ours, rel=1e-9)
    fixed = run_stack(setup, [0, 1, 2], n, "smoke", n_pool=400, validation="none")
    assert all(r["steps"] == TRAINING["smoke"].steps and np.isnan(r["val"]) for r in fixed.metrics)
    with pytest.raises(InvalidValue, match="validation must be one of"):
        run_stack(setup, [0], [10], "smoke", validation="maybe")


def test_the_theory_calibrated_on_closed_form_curves_gives_back_their_n_star():
    """Second route: random-features 'runs' whose learning curves ARE the closed form at known constants;
    the figure's calibration must recover them, and theory / network n* is 1 wherever n* is a value."""
    from modscale.experiments import crossing
    from modscale.theory import spectrum

    sc = get("sine_sample_complexity")
    grid = np.unique(np.round(np.geomspace(8, 20_000, 16))).astype(int)
    p, records = 200, []
    for m in (2, 3, 4, 5):
        _, test = monolithic_losses(grid, p, spectrum(m, c=1.2, omega=1.6), noise=0.01)
        for eps in (0.5, 0.2):
            cfg = sc.config({"method": "monolithic", "m": m, "p": p, "eps": eps, "regime": "random-features"})
            hit = int(np.argmax(test <= eps)) if (test <= eps).any() else len(grid) - 1
            found = crossing(grid[: hit + 1], test[: hit + 1], eps)  # the first crossing, as the experiment
            history = [[int(n), float(t), 0.0] for n, t in zip(grid, test, strict=True)]
            metrics = {**found.as_metrics(), "history": history, "n_params": p}
            records.append(_record("sine_sample_complexity", cfg, 0, metrics))
    fig = next(f for f in render(records) if f.name == "sine_scaling_theory")
    assert "c = 1.2, Omega = 1.6" in fig.caption
    ratios = [c.ours for c in fig.comparisons if c.ours is not None]
    # interpolation in log-log between grid points (16 over 3.4 decades) is what is left: a few percent
    assert len(ratios) >= 3 and all(r == pytest.approx(1.0, rel=0.08) for r in ratios)
