"""Experiments, the registry, --set validation, chunking, the local runner, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modscale.errors import InvalidType, InvalidValue, UsageError
from modscale.experiments import (
    Crossing,
    Experiment,
    Param,
    Tier,
    bisect_log_grid,
    crossing,
    current,
    dense_grid,
    execute,
    grid,
    log_grid_n,
    plan,
    registry,
    run_sweep,
)
from modscale.results import ResultsStore, load, make_record

PLUGIN = Path(__file__).with_name("_sweep_experiments.py")


@pytest.fixture
def probe():
    module = registry.import_plugin(str(PLUGIN))
    for experiment in module.EXPERIMENTS:
        registry.register(experiment, replace=True)
    yield module
    for experiment in module.EXPERIMENTS:
        registry.unregister(experiment.name)


def _raw_keys(path: Path) -> list[tuple]:
    """Every stored run's key as written in the file, duplicates included (load() would hide them)."""
    out = []
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        out.append((obj["experiment"], obj["config_hash"], obj["seed"]))
    return out


# ------------------------------------------------------------------------------------------ schema and grid


def test_grid_is_the_cartesian_product():
    assert grid(m=[2, 3], k=4) == [{"m": 2, "k": 4}, {"m": 3, "k": 4}]
    assert grid(a=range(2), b=["x", "y"]) == [
        {"a": 0, "b": "x"},
        {"a": 0, "b": "y"},
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
    ]


def test_jobs_are_configs_times_seeds_with_defaults_filled(probe):
    e = registry.get("sweep_probe")
    jobs = e.jobs("smoke")
    assert len(jobs) == 3 * 2
    assert jobs[0].config == {
        "a": 0,
        "scale": 1.0,
        "delay": 0.0,
        "fail_seed": -1,
        "die_seed": -1,
        "die_marker": "",
        "mode": "plain",
        "flag": False,
    }
    assert [j.seed for j in jobs[:2]] == [0, 1]
    assert len(e.jobs("smoke", seeds=5)) == 15


def test_set_fixes_or_sweeps_a_key_with_its_declared_type(probe):
    e = registry.get("sweep_probe")
    jobs = e.jobs("smoke", overrides=["scale=2", "flag=yes", "mode=other"])
    assert {j.config["scale"] for j in jobs} == {2.0} and isinstance(jobs[0].config["scale"], float)
    assert all(j.config["flag"] is True and j.config["mode"] == "other" for j in jobs)
    swept = e.jobs("smoke", seeds=1, overrides=["a=5,6", "scale=1e1"])  # fixing a grid axis collapses it
    assert [j.config["a"] for j in swept] == [5, 6] and swept[0].config["scale"] == 10.0
    assert e.jobs("smoke", seeds=1, overrides={"a": [1, 1, 2]})[1].config["a"] == 2
    assert e.jobs("smoke", seeds=1, overrides=["a=1e3"])[0].config["a"] == 1000


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        ("nope=1", InvalidValue, "no config key 'nope'; valid keys: a, scale, delay"),
        ("a=1.5", InvalidType, "config key 'a' expects int, got '1.5'"),
        ("a=two", InvalidType, "config key 'a' expects int"),
        ("scale=big", InvalidType, "config key 'scale' expects float, got 'big'"),
        ("flag=maybe", InvalidType, r"config key 'flag' expects bool \(true/false\)"),
        ("mode=third", InvalidValue, "config key 'mode' must be one of 'plain', 'other'"),
        ("scale=-1", InvalidValue, "config key 'scale' must be >= 0"),
        ("scale=nan", InvalidValue, "config key 'scale' must not be NaN"),
        ("scale=inf", InvalidValue, "config key 'scale' must be finite, got inf"),
        ("noequals", InvalidValue, "--set expects key=value"),
    ],
)
def test_bad_set_names_the_key_and_the_expected_type(probe, item, error, match):
    with pytest.raises(error, match=match):
        registry.get("sweep_probe").jobs("smoke", overrides=[item])


def test_bad_tier_and_seeds(probe):
    e = registry.get("sweep_probe")
    with pytest.raises(InvalidValue, match="tier must be one of smoke, small, paper"):
        e.jobs("huge")
    with pytest.raises(InvalidValue, match="seeds must be >= 1, got 0"):
        e.jobs("smoke", seeds=0)
    with pytest.raises(InvalidType, match="seeds must be an integer, got 1.5"):
        e.jobs("smoke", seeds=1.5)


def test_unknown_experiment_lists_the_valid_names(probe):
    with pytest.raises(InvalidValue, match="unknown experiment 'nope'; valid names: .*sweep_probe"):
        registry.get("nope")


def test_register_takes_experiments_only():
    with pytest.raises(InvalidType, match="register expects an Experiment, got dict"):
        registry.register({"name": "x"})


def test_experiment_declaration_is_checked():
    def run(jobs, ctx):
        return [{} for _ in jobs]

    tiers = {t: Tier(grid(a=[1])) for t in ("smoke", "small", "paper")}
    with pytest.raises(InvalidValue, match="exactly the tiers"):
        Experiment("x", "", (Param("a", int, 0),), {"smoke": tiers["smoke"]}, run)
    with pytest.raises(InvalidValue, match="twice"):
        Experiment("x", "", (Param("a", int, 0), Param("a", int, 1)), tiers, run)
    with pytest.raises(InvalidType, match="config key 'a' expects int"):
        Experiment("x", "", (Param("a", int, 0),), {**tiers, "paper": Tier([{"a": "1"}])}, run)
    with pytest.raises(InvalidValue, match="lower_snake_case"):
        Experiment("Bad Name", "", (), {t: Tier([{}]) for t in tiers}, run)
    with pytest.raises(InvalidType, match="type must be"):
        Param("a", list, [])


def test_cross_key_check_runs_on_every_config():
    def check(config):
        if config["b"] > config["m"]:
            raise InvalidValue(f"b must be <= m, got b={config['b']} > m={config['m']}")

    e = Experiment(
        "checked",
        "",
        (Param("m", int, 4), Param("b", int, 1)),
        {t: Tier(grid(m=[2, 4])) for t in ("smoke", "small", "paper")},
        lambda jobs, ctx: [{} for _ in jobs],
        check=check,
        accelerated=False,
    )
    with pytest.raises(InvalidValue, match="b must be <= m"):
        e.jobs("smoke", overrides=["b=3"])


def test_chunks_follow_stack_key_and_max_chunk(probe):
    e = registry.get("sweep_probe")  # default stack_key: the seeds of one config; max_chunk 4
    chunks = e.chunks(e.jobs("smoke", seeds=6))
    assert [len(c) for c in chunks] == [3, 3] * 3  # 6 seeds -> two equal chunks of 3, not 4 + 2
    assert all(len({j.config_hash for j in c}) == 1 for c in chunks)
    together = Experiment(
        "together",
        "",
        (Param("a", int, 0), Param("w", int, 1)),
        {t: Tier(grid(a=[0, 1, 2], w=[1, 2])) for t in ("smoke", "small", "paper")},
        lambda jobs, ctx: [{} for _ in jobs],
        stack_key=lambda c: c["w"],
        max_chunk=100,
        accelerated=False,
    )
    chunks = together.chunks(together.jobs("smoke", seeds=2))
    assert [len(c) for c in chunks] == [6, 6] and {j.config["w"] for j in chunks[0]} == {1}


# ------------------------------------------------------------------------------------------ running


def test_run_stores_every_run_and_a_rerun_skips_them(probe, tmp_path):
    summary = run_sweep("sweep_probe", tmp_path, tier="smoke")
    assert summary.ran == {"sweep_probe": 6} and summary.skipped == {"sweep_probe": 0}
    records = load(tmp_path).records
    assert len(records) == 6
    for r in records:
        assert r.metrics["mean"] == probe.expected(r.config, r.seed)["mean"]
        assert r.device == "cpu" and r.tier == "smoke" and r.chunk_size == 2 and r.wall_s >= 0
    again = run_sweep("sweep_probe", tmp_path, tier="smoke")
    assert again.ran == {"sweep_probe": 0} and again.skipped == {"sweep_probe": 6}
    more = run_sweep("sweep_probe", tmp_path, tier="smoke", seeds=3)  # one more seed per config
    assert more.ran == {"sweep_probe": 3} and more.skipped == {"sweep_probe": 6}
    assert len(_raw_keys(tmp_path / "results.jsonl")) == 9


def test_bad_input_writes_nothing(probe, tmp_path):
    out = tmp_path / "out"
    for kwargs in (
        {"overrides": ["a=x"]},
        {"tier": "nope"},
        {"device": "tpu"},
        {"backend": "spark"},
        {"ray_address": "1.2.3.4:1"},
    ):
        with pytest.raises((InvalidValue, InvalidType)):
            run_sweep("sweep_probe", out, **{"tier": "smoke", **kwargs})
    assert not out.exists()


def test_a_failing_chunk_keeps_what_finished(probe, tmp_path):
    with pytest.raises(RuntimeError, match="asked to fail at seed 1"):
        run_sweep("sweep_probe", tmp_path, tier="smoke", seeds=2, overrides=["fail_seed=1", "a=0,1"])
    assert load(tmp_path).records == []  # the first chunk (config a=0, seeds 0-1) failed as a whole
    summary = execute(
        [plan("sweep_probe", "smoke", 2, ["fail_seed=1"]), plan("sweep_probe", "smoke", 1)],
        tmp_path,
        keep_going=True,
    )
    assert "asked to fail" in summary.errors["sweep_probe"]
    assert summary.ran["sweep_probe"] == 3  # the second plan (seed 0 only) still ran
    # an unexpected error keeps its traceback (where it happened) for the report of a bug
    assert (
        "Traceback" in summary.tracebacks["sweep_probe"]
        and "RuntimeError" in summary.tracebacks["sweep_probe"]
    )


def test_a_store_that_fails_to_open_releases_its_lock(probe, tmp_path, monkeypatch):
    from modscale.results import ResultsStore

    def broken(self):
        raise OSError("disk went away")

    monkeypatch.setattr(ResultsStore, "_cut_torn_tail", broken)
    with pytest.raises(OSError, match="disk went away"):
        run_sweep("sweep_probe", tmp_path, tier="smoke")
    monkeypatch.undo()
    run_sweep("sweep_probe", tmp_path, tier="smoke")  # not "being written by another modscale process"
    assert load(tmp_path).records


def test_current_leaves_out_stale_records_and_says_why(probe, tmp_path):
    e = registry.get("sweep_probe")
    ok = make_record("sweep_probe", e.config({"a": 1}), 0, {"mean": 0.0}, wall_s=0.1, device="cpu")
    stale = make_record("sweep_probe", e.config({"a": 2}), 0, {}, wall_s=0.1, device="cpu", revision=7)
    removed_key = make_record("sweep_probe", {**e.config(), "gone": 1}, 0, {}, wall_s=0.1, device="cpu")
    added_key = make_record(
        "sweep_probe", {k: v for k, v in e.config().items() if k != "flag"}, 0, {}, wall_s=0.1, device="cpu"
    )
    unknown = make_record("not_here", {}, 0, {}, wall_s=0.1, device="cpu")
    kept, notes = current([ok, stale, removed_key, added_key, unknown])
    assert kept == [ok]
    text = "\n".join(notes)
    assert "revision 7 is stale" in text and "no config key 'gone'" in text
    assert "lacks keys added" in text and "'not_here' is not registered" in text


def test_plugins_load_from_the_environment(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, str(PLUGIN))
    try:
        registry.load(force=True)
        assert "sweep_probe" in registry.names()
    finally:
        registry.unregister("sweep_probe")
    monkeypatch.setenv(registry.ENV_VAR, "no/such/plugin.py")
    with pytest.raises(InvalidValue, match="no such plugin file"):
        registry.load(force=True)
    monkeypatch.delenv(registry.ENV_VAR)
    registry.load(force=True)


def test_kill_mid_sweep_then_resume_loses_nothing_and_stores_nothing_twice(probe, tmp_path):
    """SIGKILL a sweep in a subprocess once some runs are stored; the rerun completes it exactly."""
    out = tmp_path / "out"
    overrides = {"delay": 0.1}
    total = len(registry.get("sweep_probe").jobs("small"))  # 12 configs x 3 seeds, chunks of 3 runs
    code = (
        f"from modscale.experiments import run_sweep; "
        f"run_sweep('sweep_probe', {str(out)!r}, tier='small', overrides={overrides!r})"
    )
    env = {**os.environ, registry.ENV_VAR: str(PLUGIN)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    path = out / "results.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.01)
        else:
            pytest.fail("the sweep stored nothing within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stored_before = len(load(path, warn=False).records)  # a torn last line, if the kill made one, is ignored
    assert 6 <= stored_before < total, "the kill did not land mid-sweep"

    summary = run_sweep("sweep_probe", out, tier="small", overrides=overrides)
    assert summary.skipped["sweep_probe"] == stored_before
    assert summary.ran["sweep_probe"] == total - stored_before
    keys = _raw_keys(path)
    assert len(keys) == total and len(set(keys)) == total  # nothing lost, nothing stored twice
    expected = {
        (j.config_hash, j.seed) for j in registry.get("sweep_probe").jobs("small", overrides=overrides)
    }
    assert {(h, s) for _, h, s in keys} == expected
    for r in load(path).records:
        assert r.metrics["draws"] == probe.expected(r.config, r.seed)["draws"]


def test_store_opened_by_a_sweep_is_locked(probe, tmp_path):
    with ResultsStore(tmp_path):
        with pytest.raises(UsageError, match="another modscale process"):
            run_sweep("sweep_probe", tmp_path, tier="smoke")


# ------------------------------------------------------------------------------------------ bisection on n


def _closed_form(ms, p=50):
    """Test loss of the monolithic model at p (under-parameterised for n > p + 1: falls with n)."""
    from modscale.theory import monolithic_losses, spectrum

    calls = []

    def evaluate(jobs, n):
        calls.append(len(jobs))
        return monolithic_losses(n, p, spectrum(np.asarray(ms)[jobs]))[1]

    return evaluate, calls


def test_bisection_finds_the_dense_answer_with_3x_fewer_trainings():
    grid = log_grid_n(60, 1e5, 33)
    ms = [2, 3, 4, 5, 6]
    eps = [0.5, 0.6, 1.25, 1.3, 1.35]
    evaluate, calls = _closed_form(ms)
    found = bisect_log_grid(evaluate, grid, eps, n_jobs=len(ms))
    dense = dense_grid(_closed_form(ms)[0], grid, eps, n_jobs=len(ms))
    assert np.isfinite(dense.n_star).sum() >= 4  # the check is not vacuous
    np.testing.assert_array_equal(found.n_star, dense.n_star)
    assert found.trainings.max() * 3 <= dense.trainings.min()
    assert found.rounds == len(calls) <= 1 + int(np.ceil(np.log2(len(grid) + 1)))
    assert calls[0] == len(ms)  # every job in one stacked call per round
    for j, n_star in enumerate(found.n_star):  # the history shows why: a hit at n*, a miss just below
        seen = dict(found.history[j])
        if np.isfinite(n_star):
            assert seen[int(n_star)] <= eps[j]
            below = grid[np.searchsorted(grid, n_star) - 1] if n_star > grid[0] else None
            assert below is None or seen.get(int(below), np.inf) > eps[j]


def test_bisection_unreachable_threshold_costs_one_training():
    evaluate, _ = _closed_form([9])
    found = bisect_log_grid(evaluate, log_grid_n(60, 1e3, 9), 0.01, n_jobs=1)
    assert found.n_star[0] == np.inf and found.trainings[0] == 1


def test_bisection_on_noisy_losses_returns_a_crossing():
    rng = np.random.default_rng(0)
    grid = log_grid_n(10, 1e4, 25)
    noise = rng.normal(scale=0.2, size=(3, len(grid)))

    def evaluate(jobs, n):
        idx = np.searchsorted(grid, n)
        return 10 / np.sqrt(n) + noise[jobs, idx]

    found = bisect_log_grid(evaluate, grid, 0.5, n_jobs=3)
    for j in range(3):
        seen = dict(found.history[j])
        n_star = int(found.n_star[j])
        assert seen[n_star] <= 0.5
        assert all(loss > 0.5 for n, loss in seen.items() if n < n_star)
    with pytest.raises(InvalidValue, match="increasing"):
        bisect_log_grid(evaluate, grid[::-1], 0.5, n_jobs=1)


def test_stacked_chunks_give_what_each_job_gives_alone(probe, tmp_path):
    """Configs x seeds trained as one stacked model equal the same jobs run one at a time."""
    e = registry.get("stacked_probe")
    jobs = e.jobs("smoke")
    assert [len(c) for c in e.chunks(jobs)] == [6]  # three n x two seeds share one stack
    summary = run_sweep(e, tmp_path, tier="smoke", device="cpu")
    assert summary.ran == {"stacked_probe": 6}
    stacked = {r.key: r.metrics for r in load(tmp_path).records}
    assert all(r.chunk_size == 6 and r.device == "cpu" for r in load(tmp_path).records)
    from modscale.experiments import execute_chunk

    for job in jobs:
        alone = execute_chunk(e, [job], "smoke", "cpu").metrics[0]
        got = stacked[("stacked_probe", e.revision, job.config_hash, job.seed)]
        assert got["test"] == pytest.approx(alone["test"], rel=1e-4)
        assert got["train"] == pytest.approx(alone["train"], rel=1e-4, abs=1e-6)


def test_a_job_in_two_plans_runs_once(probe, tmp_path):
    summary = execute([plan("sweep_probe", "smoke", 2), plan("sweep_probe", "smoke", 3)], tmp_path)
    assert summary.ran == {"sweep_probe": 9} and summary.planned == {"sweep_probe": 15}
    assert len(_raw_keys(tmp_path / "results.jsonl")) == 9


# ------------------------------------------------------------------------------------------ crossings


@pytest.mark.parametrize(("c", "alpha", "eps"), [(3.0, 0.5, 0.2), (10.0, 1.0, 0.05), (1.0, 0.3, 0.31)])
def test_crossing_of_a_power_law_is_exact(c, alpha, eps):
    """Second route: for L = c n^-alpha the crossing is (c / eps)^(1 / alpha), whatever the grid."""
    grid = log_grid_n(2, 1e6, 13)
    found = crossing(grid, c * grid.astype(float) ** -alpha, eps)
    assert found.censored == "none"
    assert found.n_star == pytest.approx((c / eps) ** (1 / alpha), rel=1e-9)
    lo, hi = found.bracket
    assert lo < found.n_star <= hi and list(grid).index(hi) == list(grid).index(lo) + 1


def test_crossing_is_the_last_one_and_nan_is_a_miss():
    n = [8, 16, 32, 64, 128]
    assert crossing(n, [1.0, 0.1, 0.5, 0.1, 0.05], 0.2).bracket == (32, 64)  # a broken training at 32
    assert crossing(n, [1.0, 0.1, 0.1, float("nan"), 0.05], 0.2).bracket == (64, 128)
    shuffled = crossing([64, 8, 128, 32, 16], [0.1, 1.0, 0.05, 0.5, 0.1], 0.2)
    assert shuffled == crossing(n, [1.0, 0.1, 0.5, 0.1, 0.05], 0.2)  # order of the measurements is free
    assert crossing(n, [1.0, 0.5, 0.0, 0.0, 0.0], 0.2).n_star == 32  # a zero loss: the crossing is there


def test_crossing_censored_on_either_side_is_a_bound():
    below = crossing([10, 20, 40], [0.1, 0.05, 0.01], 0.5)
    assert below == Crossing(10.0, (None, 10), "below")
    above = crossing([10, 20, 40], [2.0, 1.0, 0.6], 0.5)
    assert above == Crossing(40.0, (40, None), "above")
    assert above.as_metrics() == {"n_star": 40.0, "n_star_bracket": [40, None], "censored": "above"}


def test_crossing_agrees_with_the_dense_grid_search():
    """Second route: on monotone curves the upper end of the bracket is the dense search's grid answer."""
    grid = log_grid_n(60, 1e5, 33)
    ms = [2, 3, 4, 5, 6]
    eps = [0.5, 0.6, 1.25, 1.3, 1.35]
    evaluate, _ = _closed_form(ms)
    dense = dense_grid(evaluate, grid, eps, n_jobs=len(ms))
    for j in range(len(ms)):
        n_seen, losses = zip(*dense.history[j], strict=True)
        found = crossing(n_seen, losses, eps[j])
        if np.isfinite(dense.n_star[j]) and dense.n_star[j] > grid[0]:
            assert found.censored == "none" and found.bracket[1] == dense.n_star[j]
        elif not np.isfinite(dense.n_star[j]):
            assert found.censored == "above"


@pytest.mark.parametrize(
    ("n", "loss", "eps", "message"),
    [
        ([], [], 0.1, "1-D of one length"),
        ([1, 2], [0.1], 0.1, "1-D of one length"),
        ([2, 2], [0.1, 0.2], 0.1, "distinct"),
        ([2, 3], [0.1, 0.2], 0.0, "eps must be positive"),
    ],
)
def test_crossing_bad_input(n, loss, eps, message):
    with pytest.raises(InvalidValue, match=message):
        crossing(n, loss, eps)
