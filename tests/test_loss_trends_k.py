"""The k study: runs at other n, models or step budgets get their own figure and stay out of loss_trends."""

from __future__ import annotations

import pytest

from modscale.plots import render
from modscale.results import make_record


def _rec(seed, test, train=0.001, **config):
    base = dict(panel="k", model="monolithic", m=4, n=1000, p=2000, steps=0, lr=0.0, b=1)
    config = {**base, **config}
    metrics = {"test": test, "train": train}
    return make_record("sine_loss_trends", config, seed, metrics, wall_s=0.0, device="cpu")


def _study():
    rows = []
    for seed in range(2):
        for k in (2, 4, 8):
            # the tier's own k panel (n = 1000) at two p, then the study's settings at p = 2000
            rows += [_rec(seed, 0.01 * k + seed * 1e-3, k=k, p=p) for p in (400, 2000)]
            rows.append(_rec(seed, 0.002 * k, k=k, n=16000))
            rows.append(_rec(seed, 0.01, k=k, model="modular"))
            rows.append(_rec(seed, 0.5, k=k, steps=40000))  # far off: averaging it in would show
    return rows


def test_the_k_study_is_drawn_per_setting_and_kept_out_of_loss_trends():
    outs = {o.name: o for o in render(_study())}
    study = outs["loss_trends_k"]
    rows = {(c.quantity, c.at): c for c in study.comparisons}
    assert rows[("test loss, monolithic, n=16000", "k=8")].ours == pytest.approx(0.016)
    assert rows[("test loss, monolithic, n=1000, 40000 steps", "k=2")].ours == pytest.approx(0.5)
    assert rows[("test loss, modular, n=1000", "k=4")].ours == pytest.approx(0.01)
    assert rows[("test loss, monolithic, n=1000", "k=2")].ours == pytest.approx(0.0205)
    assert rows[("test loss, monolithic, n=1000", "k=2")].n_seeds == 2
    assert "p = 2000" in study.caption and "trained longer" in study.caption and "2 seeds" in study.caption
    # loss_trends' k panel holds n = 1000 and the tier's steps: the mean over its two p, nothing else
    k_panel = outs["loss_trends"].figure.axes[0]
    (line,) = [ln for ln in k_panel.get_lines() if ln.get_label() == "test, network"]
    expected = [0.01 * k + 0.0005 for k in (2, 4, 8)]  # seeds 0 and 1 add 0 and 0.001
    assert list(line.get_xdata()) == [2, 4, 8] and list(line.get_ydata()) == pytest.approx(expected)


def test_no_study_figure_for_a_single_setting_per_p():
    rows = [_rec(s, 0.01 * k, k=k, p=p) for s in range(2) for k in (2, 4) for p in (400, 2000)]
    assert "loss_trends_k" not in {o.name for o in render(rows)}
