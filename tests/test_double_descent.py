"""Double descent of a monolithic MLP on the sine task, at small scale.

Conditions (docs/tasks-and-networks.md): noisy labels (variance 0.5), full-batch Adam long enough to
(nearly) interpolate, no regularisation. m = 8, n = 40, one hidden layer: p = 10 w + 1, so widths 1, 5, 40
give p / n = 0.28, 1.28 and 10. Six seeds (initialisation and training sample each), one stack per width.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from modscale.errors import InvalidValue
from modscale.experiments.double_descent import double_descent, figure, main, summarise


@pytest.mark.slow
def test_test_loss_peaks_near_the_interpolation_threshold():
    result = double_descent(m=8, k=2, n=40, noise=0.5, widths=[1, 5, 40], seeds=range(6), steps=4000, lr=1e-2)
    assert result["p"] == [11, 51, 401]
    small, threshold, large = summarise(result)
    # the peak: mean test loss over seeds at p ~ n above both p << n and p >> n
    assert threshold["test_mean"] > small["test_mean"]
    assert threshold["test_mean"] > large["test_mean"]
    # and why: at p ~ n the networks (nearly) interpolate the noisy labels, at p << n they cannot
    assert threshold["train_mean"] < 0.2 < small["train_mean"]
    assert large["train_mean"] < 0.01


def test_result_layout_summary_and_figure(tmp_path):
    result = double_descent(m=3, k=2, n=20, widths=[2, 8], seeds=[0, 1], steps=30, n_test=100)
    assert result["width"] == [2, 8] and result["p"] == [11, 41]
    assert np.asarray(result["test"]).shape == (2, 2)
    json.dumps(result)  # JSON-ready
    rows = summarise(result)
    assert rows[1]["p_over_n"] == pytest.approx(41 / 20)
    assert rows[0]["test_mean"] == pytest.approx(np.mean(result["test"][0]))
    written = figure(result, tmp_path / "dd")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in written)


def test_command_line_writes_json_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--out", str(out), "--m", "3", "--n", "20", "--widths", "2,4", "--seeds", "2", "--steps", "20"]
    assert main(args) == 0
    assert (out / "double_descent.json").exists() and (out / "double_descent.png").exists()
    assert "test mean" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(widths=[]), "widths"), (dict(n=0), "n"), (dict(lr=0.0), "lr"), (dict(noise=-1.0), "noise")],
)
def test_bad_input(kwargs, match):
    with pytest.raises(InvalidValue, match=match):
        double_descent(**{"steps": 1, **kwargs})
