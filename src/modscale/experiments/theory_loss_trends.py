"""Theory curves of the paper's loss_trends figure: train and test loss vs k, m, p and n (Theorem 1).

Each run is one point (panel, k, m, n, p) of the closed forms of :mod:`modscale.theory`: the monolithic
model on the spectrum lam(m) (DESIGN section 1), or with ``model=modular`` k modules on the true projections
(lam(b)/k each; free of m, the paper's claim 2). The panels follow the paper's figure: loss vs k and vs m at
n = 1000 for several p (thin lines; the figure averages over them), loss vs p at n = 1000 and vs n at p = 1000
for every m in 2..9. The closed form is deterministic, so one seed per point is enough; all points of a
chunk are evaluated in one vectorised call.
"""

from __future__ import annotations

from collections.abc import Sequence

from modscale.experiments._theory_common import MODEL, SPECTRUM_PARAMS, columns, groups, log_grid
from modscale.experiments.experiment import Context, Experiment, Job, Param, Tier, grid
from modscale.theory import modular_losses, monolithic_losses, spectrum

M_RANGE = list(range(2, 10))
K_RANGE = list(range(2, 10))
# p for the k and m panels ("varying p" in the paper), on both sides of the threshold p = n = 1000.
P_LINES = [100, 200, 400, 2000, 5000, 10000, 50000]


def _panels(ms, ks, p_lines, sweep, modular_m=True) -> list[dict]:
    out = grid(panel="k", k=ks, m=4, n=1000, p=p_lines)
    out += grid(panel="m", m=ms, k=4, n=1000, p=p_lines)
    if modular_m:
        out += grid(panel="m", model="modular", m=ms, k=4, n=1000, p=p_lines)
    out += grid(panel="p", p=sweep(1000), m=ms, n=1000)
    out += grid(panel="n", n=sweep(1000), m=ms, p=1000)
    return out


def run(jobs: Sequence[Job], ctx: Context) -> list[dict]:
    out: list[dict] = [{} for _ in jobs]
    for (model, family), idx in groups(jobs, ("model", "family")).items():
        sub = [jobs[i] for i in idx]
        col = columns(sub, ("k", "m", "n", "p", "b", "c", "omega", "s", "noise"))
        shape_kw = {"c": col["c"], "omega": col["omega"], "s": col["s"]}
        if model == "monolithic":
            lam = spectrum(col["m"], family, **shape_kw)
            train, test = monolithic_losses(col["n"], col["p"], lam, noise=col["noise"])
        else:
            train, test = modular_losses(
                col["n"], col["p"], col["k"], col["b"], family=family, noise=col["noise"], **shape_kw
            )
        for j, i in enumerate(idx):
            out[i] = {"train": float(train[j]), "test": float(test[j])}
    return out


EXPERIMENTS = (
    Experiment(
        name="theory_loss_trends",
        description="closed-form train/test loss vs k, m, p and n (Theorem 1; modular: Theorem 2)",
        params=(
            Param(
                "panel",
                str,
                "m",
                "which panel of the figure the point belongs to",
                choices=("k", "m", "p", "n"),
            ),
            MODEL,
            Param("k", int, 4, "number of task modules", low=1),
            Param("m", int, 4, "input dimension", low=1),
            Param("b", int, 1, "module input dimension (modular model)", low=1),
            Param("n", int, 1000, "training samples", low=1),
            Param("p", int, 1000, "learned features (parameters)", low=1),
            *SPECTRUM_PARAMS,
        ),
        tiers={
            "smoke": Tier(
                _panels([2, 5, 9], [2, 5, 9], [200, 5000], lambda t: log_grid(100, 1e5, 5, avoid=t)), seeds=1
            ),
            "small": Tier(
                _panels(M_RANGE, K_RANGE, P_LINES, lambda t: log_grid(100, 1e5, 31, avoid=t)), seeds=1
            ),
            "paper": Tier(
                _panels(M_RANGE, K_RANGE, P_LINES, lambda t: log_grid(100, 1e5, 121, avoid=t)), seeds=1
            ),
        },
        run=run,
        stack_key=lambda config: "all",
        max_chunk=100_000,
        accelerated=False,
        paper="loss_trends (Fig.: loss vs k, m, p, n; dashed = theory)",
        cost=lambda config: 5e-5,  # vectorised: well under a second for the 776 points of the small tier
    ),
)
