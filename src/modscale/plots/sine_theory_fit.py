"""The theory calibrated to the networks: how well Theorem 1 with fitted constants tracks trained MLPs.

Records: ``sine_loss_trends`` (monolithic runs; metrics ``train``, ``test``, ``n_params``). The spectrum
constants (c, Omega, label noise s2) of the closed form (DESIGN section 1) are fitted to every network point
by :func:`modscale.theory.fit` (least squares in log loss, test and under-parameterised train losses), with
p = the network's exact parameter count. Each panel shows the networks' mean test loss (solid, markers),
the calibrated theory at the same points averaged the same way (dash-dot) and the theory with the default
constants (dashed). The gap that remains after calibration is what the linear-in-parameters model cannot
express about a trained network (feature learning, Adam and a finite step budget instead of the min-norm
solution); the report tabulates it per point as the ratio network / calibrated theory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from modscale.plots.figure import Comparison, FigureOutput, figure, new_figure, seeds_phrase
from modscale.plots.stats import curve, draw
from modscale.results import Record
from modscale.theory import fit, monolithic_losses, spectrum

EXPERIMENT = "sine_loss_trends"
PANELS = {"m": False, "p": True, "n": True}  # x key -> log axis


def _points(rows: Sequence[Record]) -> tuple[np.ndarray, ...]:
    n = np.array([float(r.config["n"]) for r in rows])
    p = np.array([float(r.metrics.get("n_params", r.config["p"])) for r in rows])
    m = np.array([float(r.config["m"]) for r in rows])
    test = np.array([float(r.metrics.get("test", np.nan)) for r in rows])
    train = np.array([float(r.metrics.get("train", np.nan)) for r in rows])
    return n, p, m, test, train


def _with(rows: Sequence[Record], test: np.ndarray) -> list[Record]:
    return [dataclasses.replace(r, metrics={"test": float(t)}) for r, t in zip(rows, test, strict=True)]


@figure(
    "sine_theory_fit",
    experiments=(EXPERIMENT,),
    title="Theory calibrated to the networks (sine task)",
    paper="loss_trends.png (reviewers: theory and experiment in one figure)",
)
def sine_theory_fit(records: Mapping[str, Sequence[Record]]) -> FigureOutput:
    rows = [
        r
        for r in records[EXPERIMENT]
        if r.config.get("model", "monolithic") == "monolithic" and np.isfinite(r.metrics.get("test", np.nan))
    ]
    fig, axes = new_figure(1, 3, width=4.4, height=3.6)
    comparisons: list[Comparison] = []
    usable = [r for r in rows if r.metrics.get("test", 0) > 0]
    n, p, m, test, train = _points(usable)
    try:
        f = fit(n, p, m, test, train_loss=train)
    except ValueError as err:  # too few points (e.g. a smoke run): draw the networks alone
        f = None
        note = f" The theory could not be fitted: {err}."
    seeds: list[int] = []
    if f is not None:
        _, fitted = f.predict(n, p, m)
        _, default = monolithic_losses(n, p, spectrum(m))
        note = (
            f" Fitted (exp family): c = {f.c:.3g}, Omega = {f.shape_param:.3g}, s2 = {f.noise:.3g}; "
            f"rms log residual {f.rmse_log:.2f} over {f.n_points} points (a factor exp({f.rmse_log:.2f}) = "
            f"{np.exp(f.rmse_log):.2f} typical error)."
        )
        comparisons.append(
            Comparison(
                "fit: rms log residual (network vs calibrated theory)", "all points", f.rmse_log, None, 0
            )
        )
    for ax, (panel, log_x) in zip(axes, PANELS.items(), strict=True):
        idx = [i for i, r in enumerate(usable) if r.config.get("panel") == panel]
        if not idx:
            ax.set_visible(False)
            continue
        sub = [usable[i] for i in idx]
        net = curve(sub, panel, "test")
        draw(ax, net, color="C1", label="network (test)")
        ax.plot(net.x, net.mean, "o", color="C1", ms=3.5)
        seeds.extend(net.n_seeds.tolist())
        if f is not None:
            cal = curve(_with(sub, fitted[idx]), panel, "test")
            dflt = curve(_with(sub, default[idx]), panel, "test")
            draw(ax, cal, color="C3", linestyle="-.", band=False, label="theory, calibrated")
            draw(ax, dflt, color="0.5", linestyle="--", band=False, label="theory, default constants")
            for i, xv in enumerate(net.x):
                got = cal.at(float(xv))
                if got is None or not np.isfinite(got[0]) or got[0] <= 0:
                    continue
                comparisons.append(
                    Comparison(
                        f"network / calibrated theory, test loss vs {panel}",
                        f"{panel}={xv:g}",
                        float(net.mean[i] / got[0]),
                        None,
                        int(net.n_seeds[i]),
                        note="1 = the calibrated theory matches",
                    )
                )
        if log_x:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(panel)
        ax.set_ylabel("test loss (fraction of Var y)")
        ax.set_title(f"vs {panel} (averaged over the other keys)")
    axes[0].legend(fontsize=7)
    caption = (
        "Monolithic MLPs on the sine task (test loss against the noiseless target, solid, mean over "
        f"{seeds_phrase(seeds)}, band +-1 SD) and the closed-form theory at the same (n, p, m) with p the "
        "network's exact parameter count: calibrated to these points (dash-dot) and with the default "
        f"constants c = 1.15, Omega = 2 (dashed).{note}"
    )
    return FigureOutput("sine_theory_fit", fig, caption, comparisons)
