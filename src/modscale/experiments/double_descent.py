"""Double descent of a monolithic MLP on the sine task (PAPER.md claim 1; DESIGN sections 1 and 5).

The linear theory (DESIGN section 1) puts a spike of the test loss at the interpolation threshold p ~ n. For
a real network trained by Adam the peak appears when (a) the labels are noisy, (b) training runs until the
network (nearly) interpolates its training set, and (c) nothing regularises it: no early stopping, no weight
decay. Then the narrowest networks that can just fit the noise (p a little above n, where p counts
parameters) fit it with large, wiggly functions, and wider networks fit it more smoothly again. This module
sweeps the width of a one-hidden-layer ReLU MLP (p = (m + 2) w + 1) at fixed n, every width trained for all
seeds as one stack of replicas, each replica with its own training sample and initialisation.

Test loss is measured against the noiseless target (so it is the excess risk, a fraction of the unit signal
variance; a constant predictor scores 1); the training loss is on the noisy labels it was fitted to.

Example (the figure of docs/tasks-and-networks.md; about 20 minutes on one CPU core)::

    python -m modscale.experiments.double_descent --out results/double_descent
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modscale._checks import check_at_least, check_int, check_positive
from modscale.errors import InvalidValue
from modscale.models import MLP
from modscale.tasks import SineTask
from modscale.training import train

DEFAULT_WIDTHS = (1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 15, 18, 25, 40, 100, 400)


def double_descent(
    m: int = 8,
    k: int = 2,
    n: int = 100,
    noise: float = 0.5,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    seeds: Sequence[int] = tuple(range(8)),
    steps: int = 10_000,
    lr: float = 1e-2,
    depth: int = 1,
    n_test: int = 4000,
    task_seed: int = 0,
    device: str = "auto",
) -> dict:
    """Train MLPs of every width on n noisy samples of SineTask(m, k, noise) and return their losses.

    Every width is one stacked model of len(seeds) replicas; replica s uses initialisation seed s and its own
    training sample (drawn with seed 1000 + s). Full-batch Adam for ``steps`` steps at learning rate ``lr``.

    Returns a JSON-ready dict: "config" (the arguments), "width", "p" (parameters per network), "p_over_n",
    and "train", "test" as lists (one per width) of per-seed losses.
    """
    m, k, n = check_int("m", m, low=1), check_int("k", k, low=1), check_int("n", n, low=1)
    check_at_least("noise", noise, 0.0)
    steps, depth = check_int("steps", steps, low=1), check_int("depth", depth, low=1)
    n_test = check_int("n_test", n_test, low=1)
    check_positive("lr", lr)
    widths = [check_int("widths", w, low=1) for w in widths]
    seeds = [check_int("seeds", s, low=0) for s in seeds]
    if not widths or not seeds:
        raise InvalidValue("widths and seeds must each hold at least one value")

    task = SineTask(m, k, noise=float(noise), generator=task_seed)
    data = [task.sample(n, generator=1000 + s) for s in seeds]
    X = torch.stack([d[0] for d in data])  # (S, n, m): each replica its own sample
    y = torch.stack([d[1] for d in data])  # (S, n, 1), noisy labels
    X_test, _ = task.sample(n_test, generator=999)
    y_test = task.target(X_test)  # noiseless: test loss = excess risk
    out = {
        "config": dict(
            m=m, k=k, n=n, noise=float(noise), widths=widths, seeds=seeds, steps=steps, lr=float(lr),
            depth=depth, n_test=n_test, task_seed=task_seed,
        ),
        "width": [], "p": [], "p_over_n": [], "train": [], "test": [],
    }  # fmt: skip
    for w in widths:
        net = MLP(m, w, depth, n_replicas=len(seeds), generator=seeds)
        hist = train(net, (X, y), steps=steps, lr=lr, test=(X_test, y_test), eval_every=steps, device=device)
        p = MLP.count_parameters(m, w, depth)
        out["width"].append(w)
        out["p"].append(p)
        out["p_over_n"].append(p / n)
        out["train"].append(hist.final_train.tolist())
        out["test"].append(hist.final_test.tolist())
    return out


def summarise(result: dict) -> list[dict]:
    """Per width: p, p/n and mean, standard deviation and median over seeds of train and test loss."""
    rows = []
    for i, w in enumerate(result["width"]):
        tr, te = np.asarray(result["train"][i]), np.asarray(result["test"][i])
        rows.append(
            dict(
                width=w, p=result["p"][i], p_over_n=result["p_over_n"][i],
                train_mean=float(tr.mean()), train_sd=float(tr.std(ddof=1)) if tr.size > 1 else 0.0,
                test_mean=float(te.mean()), test_sd=float(te.std(ddof=1)) if te.size > 1 else 0.0,
                test_median=float(np.median(te)),
            )
        )  # fmt: skip
    return rows


def figure(result: dict, path: str | Path) -> list[Path]:
    """Test and train loss vs p / n (log axis): every seed faint, the mean and a +-1 sd band; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    rows = summarise(result)
    x = np.array([r["p_over_n"] for r in rows])
    floor = 1e-5  # train losses of interpolating networks reach ~0; clip them onto the log axis
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, color, label in (
        ("test", "C3", "test (noiseless target)"),
        ("train", "C0", "train (noisy labels)"),
    ):
        per_seed = np.asarray(result[key])  # (W, S)
        ax.plot(x, np.maximum(per_seed, floor), color=color, alpha=0.15, lw=0.8)
        mean = per_seed.mean(1)
        sd = per_seed.std(1, ddof=1) if per_seed.shape[1] > 1 else np.zeros_like(mean)
        ax.fill_between(
            x, np.maximum(mean - sd, floor), np.maximum(mean + sd, floor), color=color, alpha=0.15
        )
        ax.plot(x, np.maximum(mean, floor), "o-", color=color, ms=3.5, label=f"{label}, mean +- sd")
    ax.axvline(1.0, color="0.4", ls="--", lw=1, label="p = n")
    ax.axhline(cfg["noise"], color="0.6", ls=":", lw=1, label=f"label-noise variance {cfg['noise']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.5)
    ax.set_xlabel("parameters per network / training samples (p / n)")
    ax.set_ylabel(f"MSE (signal variance = 1; clipped at {floor:g})")
    S = len(cfg["seeds"])
    ax.set_title(
        f"MLP (depth {cfg['depth']}) on SineTask(m={cfg['m']}, k={cfg['k']}), n={cfg['n']}, "
        f"noise {cfg['noise']:g}, {cfg['steps']} Adam steps, {S} seeds",
        fontsize=9,
    )
    ax.legend(fontsize=7.5, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        fig.savefig(target, dpi=150)
        written.append(target)
    plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modscale.experiments.double_descent",
        description="Double descent of a monolithic MLP on the sine task: JSON results and a figure.",
    )
    parser.add_argument("--out", default="results/double_descent", help="output directory")
    parser.add_argument("--m", type=int, default=8)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.5, help="label-noise variance")
    parser.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)), help="comma-separated")
    parser.add_argument("--seeds", type=int, default=8, help="number of seeds (0..seeds-1)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    widths = [int(v) for v in args.widths.split(",") if v.strip()]
    result = double_descent(
        m=args.m, k=args.k, n=args.n, noise=args.noise, widths=widths, seeds=range(args.seeds),
        steps=args.steps, lr=args.lr, depth=args.depth, device=args.device,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "double_descent.json").write_text(json.dumps(result, indent=1))
    written = figure(result, out / "double_descent")
    print(
        f"{'width':>6} {'p':>6} {'p/n':>7} {'train mean':>11} {'test mean':>10} {'test sd':>8} {'median':>8}"
    )
    for r in summarise(result):
        print(
            f"{r['width']:6d} {r['p']:6d} {r['p_over_n']:7.2f} {r['train_mean']:11.4f} "
            f"{r['test_mean']:10.3f} {r['test_sd']:8.3f} {r['test_median']:8.3f}"
        )
    print("wrote", ", ".join(str(p) for p in [out / "double_descent.json", *written]))
    return 0


__all__ = ["double_descent", "summarise", "figure", "DEFAULT_WIDTHS"]

if __name__ == "__main__":
    sys.exit(main())
