"""``--jobs N``: chunks in worker processes, the same numbers for any N, faults, signals and the schedule."""

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
from hypothesis import given, settings
from hypothesis import strategies as st

from modscale import cli
from modscale.errors import InvalidType, InvalidValue
from modscale.experiments import Experiment, Param, Tier, execute, grid, plan, registry, run_sweep
from modscale.experiments.backends import WorkerDied, available_cores
from modscale.experiments.schedule import build, makespan
from modscale.results import load

PLUGIN = Path(__file__).with_name("_sweep_experiments.py")


@pytest.fixture
def plugin(monkeypatch):
    """The sweep fixtures loaded as a plugin (as `MODSCALE_EXPERIMENTS=...` does): workers find them there."""
    monkeypatch.setenv(registry.ENV_VAR, str(PLUGIN))
    registry.load(force=True)
    module = sys.modules[registry.PLUGIN_PREFIX + PLUGIN.stem]
    yield module
    for experiment in module.EXPERIMENTS:
        registry.unregister(experiment.name)
    monkeypatch.delenv(registry.ENV_VAR)
    registry.load(force=True)


def _metrics(out: Path) -> dict[tuple, dict]:
    """Every stored run's metrics but the timings (keys ending in ``_s``: seconds measured on the machine)."""
    return {
        r.key: {k: v for k, v in r.metrics.items() if not k.endswith("_s") and k != "worker_pid"}
        for r in load(out).records
    }


# ------------------------------------------------------------------------------------------ same numbers


def test_every_experiment_stores_the_same_metrics_with_1_and_2_jobs(tmp_path, monkeypatch):
    """The smoke tier of every registered experiment, in this process and in two worker processes: identical
    metrics (exact equality, floats included); only timings may differ."""
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "cache"))
    from modscale.experiments import cifar_training as ct

    names = [n for n in registry.names() if "cifar" not in n or ct.data_available()]
    plans = [plan(n, "smoke") for n in names]
    one = execute(plans, tmp_path / "one", jobs=1)
    two = execute(plans, tmp_path / "two", jobs=2)
    assert one.errors == two.errors == {} and two.workers == 2
    assert sum(one.ran.values()) == sum(two.ran.values()) == sum(len(p.jobs) for p in plans)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert a.keys() == b.keys()
    differ = sorted({key[0] for key in a if a[key] != b[key]})
    assert differ == [], f"metrics differ between --jobs 1 and --jobs 2 in {differ}"


def test_chunks_run_in_worker_processes_and_only_the_parent_writes(plugin, tmp_path):
    summary = run_sweep("sweep_probe", tmp_path, tier="small", jobs=2)
    records = load(tmp_path).records
    assert summary.ran == {"sweep_probe": 36} and len(records) == 36
    pids = {r.metrics["worker_pid"] for r in records}
    assert len(pids) == 2 and os.getpid() not in pids
    for r in records:
        assert r.metrics["draws"] == plugin.expected(r.config, r.seed)["draws"]


def test_a_stacked_experiment_with_a_lambda_stack_key_runs_in_workers_by_its_module(plugin, tmp_path):
    """stacked_probe's stack_key is a lambda (no pickle): the worker imports the plugin it came from."""
    run_sweep("stacked_probe", tmp_path / "one", tier="smoke")
    run_sweep("stacked_probe", tmp_path / "two", tier="smoke", jobs=2)
    assert _metrics(tmp_path / "one") == _metrics(tmp_path / "two")


def _local_run(jobs, ctx):
    return [{"x": job.seed} for job in jobs]


def test_an_experiment_registered_by_hand_goes_by_pickle_or_is_refused_before_any_work(tmp_path):
    tiers = {t: Tier(grid(a=[1, 2])) for t in ("smoke", "small", "paper")}
    params = (Param("a", int, 0),)
    picklable = Experiment("by_hand", "", params, tiers, _local_run, accelerated=False)
    run_sweep(picklable, tmp_path / "a", tier="smoke", jobs=2)
    assert sorted(r.config["a"] for r in load(tmp_path / "a").records) == [1, 2]
    local = Experiment(
        "by_hand_lambda", "", params, tiers, lambda jobs, ctx: [{} for _ in jobs], accelerated=False
    )
    with pytest.raises(InvalidValue, match="cannot be sent to a worker process.*--jobs 1"):
        run_sweep(local, tmp_path / "b", tier="smoke", jobs=2)
    assert not (tmp_path / "b").exists()
    run_sweep(local, tmp_path / "b", tier="smoke", jobs=1)  # in this process it runs


def _unpicklable_run(jobs, ctx):
    return [{"x": lambda: None} for _ in jobs]


def test_a_result_that_cannot_come_back_from_a_worker_is_an_error_not_a_death(tmp_path):
    tiers = {t: Tier(grid(a=[1])) for t in ("smoke", "small", "paper")}
    params = (Param("a", int, 0),)
    e = Experiment("by_hand_unpicklable", "", params, tiers, _unpicklable_run, accelerated=False)
    with pytest.raises(
        RuntimeError, match="the chunk's result could not be sent back: AttributeError: Can't pickle"
    ):
        run_sweep(e, tmp_path, tier="smoke", jobs=2)


@pytest.mark.parametrize(("jobs", "error"), [(0, InvalidValue), (-1, InvalidValue), (1.5, InvalidType)])
def test_bad_jobs_raise_before_anything_is_written(plugin, tmp_path, jobs, error):
    with pytest.raises(error, match="jobs must be"):
        run_sweep("sweep_probe", tmp_path / "o", tier="smoke", jobs=jobs)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "argument --jobs/-j: expected a positive integer (worker processes), got 0"),
        (["--jobs", "-2"], "expected a positive integer (worker processes), got -2"),
        (["--jobs", "1.5"], "expected a positive integer (worker processes), got '1.5'"),
        (["-j", "two"], "expected a positive integer (worker processes), got 'two'"),
        (["--jobs", "2", "--backend", "ray"], "--jobs applies to the local backend"),
    ],
)
@pytest.mark.parametrize("command", [["run", "theory_check"], ["reproduce", "--only", "theory_check"]])
def test_bad_jobs_on_the_command_line_is_one_line_and_exit_2(capsys, tmp_path, command, argv, message):
    out = tmp_path / "out"
    assert cli.main([*command, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


# ------------------------------------------------------------------------------------------ faults


def test_a_worker_killed_mid_chunk_fails_that_chunk_and_the_others_go_on(plugin, tmp_path):
    """SIGKILL inside a worker (what the out-of-memory killer does): with keep_going the chunk is reported
    with a clear message, every other chunk is stored; the rerun runs just that chunk."""
    marker = tmp_path / "died-once"
    overrides = {"die_seed": 1, "die_marker": str(marker), "a": [0, 1, 2, 3, 4, 5]}
    sweep = plan("sweep_probe", "smoke", 2, overrides)  # 6 configs x 2 seeds; chunks of one config
    summary = execute([sweep], tmp_path / "out", jobs=2, keep_going=True)
    assert marker.exists()
    assert summary.failed_chunks == {"sweep_probe": 1}
    message = summary.errors["sweep_probe"]
    assert message.startswith("WorkerDied: the worker process running sweep_probe chunk")
    assert "killed by SIGKILL (the out-of-memory killer sends it)" in message
    assert summary.ran["sweep_probe"] == 10 and len(load(tmp_path / "out").records) == 10
    again = execute([sweep], tmp_path / "out", jobs=2)
    assert again.ran["sweep_probe"] == 2 and again.skipped["sweep_probe"] == 10
    records = load(tmp_path / "out").records
    assert len({r.key for r in records}) == len(records) == 12


def test_without_keep_going_a_dead_worker_stops_the_sweep_cleanly(plugin, tmp_path):
    marker = tmp_path / "died-once"
    overrides = {"die_seed": 0, "die_marker": str(marker), "a": [0, 1, 2, 3], "delay": 0.05}
    with pytest.raises(WorkerDied, match="killed by SIGKILL"):
        run_sweep("sweep_probe", tmp_path / "out", tier="smoke", overrides=overrides, jobs=2)
    stored = load(tmp_path / "out").records  # what finished before the death is kept, whole
    assert all(r.metrics["draws"] == plugin.expected(r.config, r.seed)["draws"] for r in stored)
    summary = run_sweep("sweep_probe", tmp_path / "out", tier="smoke", overrides=overrides, jobs=2)
    assert summary.ran["sweep_probe"] + len(stored) == 8


def test_a_dead_worker_on_the_command_line_is_one_line_and_exit_1(plugin, tmp_path, capsys):
    marker = tmp_path / "died-once"
    argv = ["run", "sweep_probe", "--tier", "smoke", "--jobs", "2", "--out", str(tmp_path / "out"), "--quiet"]
    assert cli.main([*argv, "--set", "die_seed=0", f"die_marker={marker}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("modscale: the worker process running sweep_probe chunk ") and err.count("\n") == 1
    assert "killed by SIGKILL" in err and "every run that finished is stored" in err
    assert cli.main([*argv, "--set", "die_seed=0", f"die_marker={marker}"]) == 0  # the rerun completes


def test_an_error_in_a_worker_keeps_its_type_and_where_it_happened(plugin, tmp_path):
    with pytest.raises(RuntimeError, match="asked to fail at seed 1") as info:
        run_sweep("sweep_probe", tmp_path, tier="smoke", overrides=["fail_seed=1"], jobs=2)
    assert any(
        "raised in a worker process" in note and "_sweep_experiments.py" in note
        for note in info.value.__notes__
    )
    summary = execute(
        [plan("sweep_probe", "smoke", 2, ["fail_seed=1"])], tmp_path / "k", jobs=2, keep_going=True
    )
    assert summary.failed_chunks == {"sweep_probe": 3} and "Traceback" in summary.tracebacks["sweep_probe"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_workers_and_keeps_every_finished_run(tmp_path, sig):
    """SIGTERM to the command, or SIGINT to its whole process group (Ctrl-C): exit 128 + signal within
    seconds, no worker left running, every stored line whole, and the same command resumes exactly."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "modscale", "run", "sweep_probe", "--tier", "small", "--jobs", "2"]
    argv += ["--set", "delay=0.1", "--out", str(out), "--quiet"]
    env = {**os.environ, registry.ENV_VAR: str(PLUGIN)}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    path = out / "results.jsonl"
    deadline = time.monotonic() + 60
    try:
        while not (path.exists() and path.read_bytes().count(b"\n") >= 6):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "nothing stored within 60 s"
            time.sleep(0.01)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig
    assert "interrupted" in err and "the same command resumes" in err and "Traceback" not in err
    lines = path.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)  # no half record
    pids = {json.loads(line)["metrics"]["worker_pid"] for line in lines}
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a worker outlived the command"
    stored = len(lines)
    assert 6 <= stored < 36
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = load(out).records
    assert len(records) == 36 and len({r.key for r in records}) == 36


# ------------------------------------------------------------------------------------------ the schedule


def test_makespan_by_hand():
    assert makespan([3, 2, 2, 1], 2) == 4.0  # 3+1 | 2+2
    assert makespan([1, 1, 1], 1) == 3.0
    assert makespan([5], 4) == 5.0 and makespan([], 3) == 0.0
    with pytest.raises(ValueError):
        makespan([1], 0)


def _simulate(seconds, workers):
    """A second route to list scheduling: step time forward event by event."""
    t, running, queue = 0.0, [], list(seconds)
    while queue or running:
        while queue and len(running) < workers:
            running.append(t + queue.pop(0))
        t = min(running)
        running.remove(t)
    return t


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), max_size=20), st.integers(1, 5))
def test_makespan_is_list_scheduling(seconds, workers):
    span = makespan(seconds, workers)
    assert span == pytest.approx(_simulate(seconds, workers))
    if seconds:  # the bounds every schedule obeys, and Graham's for list scheduling
        assert span >= max(max(seconds), sum(seconds) / workers) - 1e-9
        assert span <= sum(seconds) / workers + max(seconds) + 1e-9


def _cost(config):
    return float(config["a"])


def test_the_schedule_orders_longest_first_only_with_several_workers(tmp_path):
    e = Experiment(
        "sched_toy",
        "",
        (Param("a", int, 1),),
        {t: Tier(grid(a=[1, 5, 2, 4])) for t in ("smoke", "small", "paper")},
        _local_run,
        accelerated=False,
        cost=_cost,
    )
    p = plan(e, "smoke")
    one = build([p], [], "cpu", workers=1)
    two = build([p], [], "cpu", workers=2)
    assert [c.seconds for c in one.chunks] == [1, 5, 2, 4]  # plan order
    assert [c.seconds for c in two.chunks] == [5, 4, 2, 1]  # longest first
    assert one.wall_s == one.compute_s == 12 and two.wall_s == 6.0  # 5+1 | 4+2
    assert (two.todo, two.stored) == (4, 0)


def test_available_cores_is_the_affinity():
    assert available_cores() == len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else True


def test_the_cifar_decode_cache_is_built_once_by_concurrent_loaders(tmp_path, monkeypatch):
    """Workers that miss the decode cache at once: one decodes, the others wait and read its file."""
    import threading

    from modscale.data import cifar10

    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train.npz", 20), ("test.npz", 10)):
        from io import BytesIO

        from PIL import Image

        blobs = []
        for _ in range(n):
            buf = BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
            blobs.append(buf.getvalue())
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        labels = (np.arange(n) % 10).astype(np.uint8)
        np.savez(folder / name, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, labels=labels)
    calls = []
    decode = cifar10._decode_jpegs

    def slow_decode(*args):
        calls.append(1)
        time.sleep(0.3)  # long enough for the other loader to arrive while this one decodes
        return decode(*args)

    monkeypatch.setattr(cifar10, "_decode_jpegs", slow_decode)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                cifar10.load_cifar10(folder, tmp_path / "cache", check_counts=False)
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and len(calls) == 2  # one decode of train and one of test, in all
    for r in results[1:]:
        np.testing.assert_array_equal(r.x_train, results[0].x_train)
