"""``--plan``: runs to do, runs stored, calibrated time; nothing run, nothing written; bad input exits 2."""

from __future__ import annotations

import argparse

import pytest

from modscale import cli
from modscale.cli import _sweeps
from modscale.experiments import Experiment, Param, Tier, grid, registry
from modscale.experiments.calibration import UNCALIBRATED, calibrate
from modscale.experiments.runner import plan
from modscale.experiments.schedule import build
from modscale.results import make_record


@pytest.fixture
def main(monkeypatch):
    original = cli.build_parser

    def build():
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "reproduce" not in sub.choices:
            _sweeps.add_parsers(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main


def _never(jobs, ctx):  # a plan must never run anything
    raise AssertionError("--plan ran a job")


def _toy(name="plan_toy", cost=lambda c: 2.0 * c["a"], probe=None) -> Experiment:
    return Experiment(
        name=name,
        description="a toy with a known cost",
        params=(Param("a", int, 1, "work per run", low=1),),
        tiers={t: Tier(grid(a=[1, 2, 3]), seeds=2) for t in ("smoke", "small", "paper")},
        run=_never,
        accelerated=False,
        cost=cost,
        probe=probe,
    )


@pytest.fixture
def toy():
    e = registry.register(_toy(), replace=True)
    yield e
    registry.unregister(e.name)


def _record(e: Experiment, a: int, seed: int, wall_s: float, device="cpu"):
    return make_record(e.name, e.config({"a": a}), seed, {"x": 1.0}, wall_s=wall_s, device=device)


def test_calibration_from_stored_runs_is_measured_over_estimated_seconds(toy):
    """Second route: the factor by hand, sum(wall) / sum(cost), and the plan's seconds from it."""
    records = [_record(toy, 1, 0, 1.0), _record(toy, 3, 0, 9.0)]  # cost 2 and 6, wall 1 and 9
    cal = calibrate(toy, records, "cpu", [toy])
    assert cal.source == "runs" and cal.factor == pytest.approx(10.0 / 8.0)
    (line,) = build([plan(toy, "small")], records, "cpu").lines
    assert (line.planned, line.stored, line.todo) == (6, 2, 4)
    # to do: a=1 seed 1, a=2 seeds 0 and 1, a=3 seed 1: cost 2 + 4 + 4 + 6 = 16
    assert line.estimate_s == pytest.approx(16 * 10.0 / 8.0)


def test_calibration_keeps_device_kinds_apart_and_falls_back(toy):
    gpu = [_record(toy, 1, 0, 0.01, device="cuda:0 (Some GPU)")]
    assert calibrate(toy, gpu, "cpu", [toy]) == UNCALIBRATED
    assert calibrate(toy, gpu, "cuda:0 (Some GPU)", [toy]).factor == pytest.approx(0.01 / 2.0)
    calls = []

    def probe(label):
        calls.append(label)
        return 3.0, "probe: timed"

    probed = _toy("plan_probed", probe=probe)
    sibling = _toy("plan_sibling", probe=probe)
    assert calibrate(probed, [], "cpu", [probed]).factor == 3.0
    assert calibrate(probed, [], "cpu", [probed], probe=False) == UNCALIBRATED
    # a stored run of an experiment of the same family (same probe) calibrates without probing
    stored = [_record(sibling, 2, 0, 2.0)]
    cal = calibrate(probed, stored, "cpu", [probed, sibling])
    assert cal.source == "other" and cal.factor == pytest.approx(0.5)
    # but not an experiment of another family
    assert calibrate(toy, stored, "cpu", [toy, sibling]) == UNCALIBRATED
    assert calls == ["cpu"]


def test_run_plan_prints_the_table_and_writes_nothing(main, capsys, tmp_path, toy):
    out = tmp_path / "out"
    assert main(["run", "plan_toy", "--tier", "small", "--plan", "--out", str(out), "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "plan: tier small" in text
    row = next(line for line in text.splitlines() if line.startswith("plan_toy"))
    # 6 runs to do, none stored, 2*(1+2+3)*2 = 24 estimated seconds, uncalibrated
    assert row.split()[1:4] == ["6", "0", "0:24"] and "uncalibrated" in row
    assert text.splitlines()[-1].split()[:4] == ["total", "6", "0", "0:24"]
    # two workers: the same compute; chunks of one config (2 seeds) cost 12, 8, 4: 12 | 8 + 4 = 12 s
    assert main(["run", "plan_toy", "--tier", "small", "--plan", "--out", str(out), "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split()[:4] == ["total", "6", "0", "0:24"]
    assert (
        lines[-1].startswith("wall time")
        and "0:12  2 workers, longest chunk first (the longest: 0:12)" in lines[-1]
    )


def test_plan_counts_stored_runs_and_calibrates_on_them(main, capsys, tmp_path, toy):
    from modscale.results import ResultsStore

    out = tmp_path / "out"
    with ResultsStore(out) as store:
        store.append([_record(toy, 1, 0, 4.0), _record(toy, 1, 1, 4.0)])  # cost 2 each: factor 2
    before = (out / "results.jsonl").read_bytes()
    assert main(["run", "plan_toy", "--tier", "small", "--plan", "--out", str(out)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("plan_toy"))
    # 4 left: cost 4 + 4 + 6 + 6 = 20, x2 = 40 s
    assert row.split()[1:4] == ["4", "2", "0:40"] and "x2.00 from 2 stored run(s)" in row
    assert (out / "results.jsonl").read_bytes() == before


def test_a_long_plan_says_how_to_go_faster(main, capsys, tmp_path):
    e = registry.register(_toy("plan_long", cost=lambda c: 3600.0), replace=True)
    try:
        assert main(["run", "plan_long", "--tier", "paper", "--plan", "--out", str(tmp_path / "o")]) == 0
    finally:
        registry.unregister(e.name)
    text = capsys.readouterr().out
    assert "6:00:00" in text and "--backend ray" in text and "--seeds 1" in text and "--device cuda" in text


def test_reproduce_plan_lists_every_experiment(main, capsys, tmp_path):
    assert main(["reproduce", "--tier", "smoke", "--plan", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    for name in registry.names():
        assert any(line.startswith(name + " ") for line in text.splitlines())
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope", "--plan"], "unknown experiment 'nope'"),
        (["run", "theory_check", "--plan", "--set", "n=abc"], "config key 'n' expects int, got 'abc'"),
        (["run", "theory_check", "--plan", "--set", "zz=1"], "has no config key 'zz'"),
        (["reproduce", "--plan", "--only", "nope"], "unknown experiment 'nope'"),
    ],
)
def test_plan_bad_input_is_one_line_and_exit_2(main, capsys, tmp_path, argv, message):
    out = tmp_path / "o"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_calibration_ignores_runs_of_another_revision(toy):
    import dataclasses

    old = [_record(toy, 1, 0, 100.0)]  # made by revision 1
    newer = dataclasses.replace(toy, revision=2)
    assert calibrate(toy, old, "cpu", [toy]).source == "runs"
    assert calibrate(newer, old, "cpu", [newer]) == UNCALIBRATED
