"""The registered double-descent experiment (monolithic MLP on the sine task) and its figure.

The peak test runs the experiment's own ``run`` at small scale. Conditions (docs/tasks-and-networks.md):
noisy labels (variance 0.5), full-batch Adam long enough to (nearly) interpolate, no regularisation. m = 8,
n = 40, one hidden layer: p = 10 w + 1, so widths 1, 5, 40 give p / n = 0.28, 1.28 and 10. Six seeds
(initialisation and training sample each), one stack per width.
"""

from __future__ import annotations

import numpy as np
import pytest

from modscale.cli import main
from modscale.errors import InvalidType, InvalidValue
from modscale.experiments import Context, Job, get, run_sweep
from modscale.models import MLP
from modscale.plots import render, save
from modscale.results import load

NAME = "double_descent"


def _run(seeds, **config):
    exp = get(NAME)
    jobs = [Job.make(exp.config(config), s) for s in seeds]
    return exp.run(jobs, Context("cpu", "small", NAME))


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


@pytest.mark.slow
def test_test_loss_peaks_near_the_interpolation_threshold():
    small, threshold, large = (_run(range(6), width=w, n=40, steps=4000) for w in (1, 5, 40))
    assert [r[0]["p"] for r in (small, threshold, large)] == [11, 51, 401]
    # the peak: mean test loss over seeds at p ~ n above both p << n and p >> n
    assert _mean(threshold, "test") > _mean(small, "test")
    assert _mean(threshold, "test") > _mean(large, "test")
    # and why: at p ~ n the networks (nearly) interpolate the noisy labels, at p << n they cannot
    assert _mean(threshold, "train") < 0.2 < _mean(small, "train")
    assert _mean(large, "train") < 0.01


def test_parameter_count_and_ratio_match_the_closed_form():
    for m, w, depth in ((3, 2, 1), (5, 7, 2)):
        row = _run([0], width=w, m=m, depth=depth, n=20, steps=2, n_test=10)[0]
        expected = (m + 1) * w + (depth - 1) * (w * w + w) + w + 1  # layer by layer: weights and biases
        assert row["p"] == expected == MLP.count_parameters(m, w, depth)
        assert row["p_over_n"] == pytest.approx(expected / 20)


def test_a_seed_gives_the_same_numbers_alone_and_in_a_stack():
    alone = _run([1], width=4, m=3, n=20, steps=50, n_test=100)[0]
    stacked = _run([0, 1], width=4, m=3, n=20, steps=50, n_test=100)
    for key in ("test", "train"):
        assert stacked[1][key] == pytest.approx(alone[key], rel=1e-4)
    assert stacked[0]["test"] != stacked[1]["test"]  # each seed its own sample and initialisation


def test_smoke_tier_stores_runs_and_the_figure_is_a_function_of_them(tmp_path):
    run_sweep(NAME, tmp_path, tier="smoke", device="cpu")
    records = [r for r in load(tmp_path).records if r.experiment == NAME]
    assert sorted(r.config["width"] for r in records) == [2, 2, 8, 8] and {r.seed for r in records} == {0, 1}
    assert all(np.isfinite(r.metrics["test"]) and r.metrics["train"] >= 0 for r in records)
    first, again = (next(o for o in render(records) if o.name == NAME) for _ in range(2))
    assert first.caption == again.caption and first.comparisons == again.comparisons
    assert "2 seeds" in first.caption and "+-1 SD" in first.caption
    peak = next(c for c in first.comparisons if c.quantity == "test MSE, peak")
    by_width = {w: [r.metrics["test"] for r in records if r.config["width"] == w] for w in (2, 8)}
    top = max(by_width.values(), key=np.mean)  # the width with the larger mean test loss over seeds
    assert peak.n_seeds == 2 and peak.ours == pytest.approx(np.mean(top))
    assert peak.spread == pytest.approx(np.std(top, ddof=1))
    paths = save(first, tmp_path / "figures", formats=("png",))
    assert paths[0].stat().st_size > 1000


@pytest.mark.parametrize(
    "override,error,match",
    [
        ({"lr": 0.0}, InvalidValue, "lr"),
        ({"width": 0}, InvalidValue, "width"),
        ({"n": 1}, InvalidValue, "'n'"),
        ({"noise": -1.0}, InvalidValue, "noise"),
        ({"steps": 1.5}, InvalidType, "steps"),
        ({"widths": 3}, InvalidValue, "no config key 'widths'"),
    ],
)
def test_bad_config_is_refused_before_any_work(override, error, match):
    with pytest.raises(error, match=match):
        get(NAME).config(override)


def test_command_line_bad_value_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", NAME, "--set", "lr=0", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lr" in err and "Traceback" not in err
    assert not out.exists()
