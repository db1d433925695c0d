"""The kernel learning rule at scale: n = 100,000 samples of SineTask(m=32, k=8), K = 8 modules, on the CPU.

Goal: recovery >= 0.9 within 60 s. Timed: one call of ``kernel_projections`` with its defaults
(deflation from spectral starts, rbf bandwidth 0.5, batch 512, 4 restarts, 100 Adam steps per module,
three backfitting passes); the task's sampling is not timed. Peak memory is the process's maximum
resident set size (everything: interpreter, torch, the data). One CPU thread by default: on a shared
2-core machine two threads per operation wait for each other (measured at load average 5: 404 s with two
threads, 45 s with one); ``--threads 2`` on a quiet machine. ``--compare`` then runs the references on
the same data: the paper's strategy (independent restarts from random starts), independent restarts
from spectral starts, deflation from random starts, and random projections. The last line is

    seconds=<float> recovery=<float> peak_rss_mb=<float>

for the timed deflation run.

Two studies behind the numbers of docs/learning-rule.md (one line per seed, then mean and standard
deviation over seeds; they print no final ``seconds=`` line):

- ``--study recovery``: SineTask(m=16, k=4), n=4000, the rule's defaults: deflation and independent
  restarts, each from spectral and from random starts, and random projections.
- ``--study estimators``: SineTask(m=16, k=4) at n in --sizes: test MSE (4000 test samples, a fraction of
  Var y) of ModularRegressor with kernel and with random projections, and of a monolithic MLP of similar
  size, all with the same trainer (Adam 3e-3, batch 128, 2000 steps, early stopping on 10%).

    python benchmarks/bench_kernel_rule.py               # the goal's setting, seed 0
    python benchmarks/bench_kernel_rule.py --seed 3 --compare
    python benchmarks/bench_kernel_rule.py --study recovery --seeds 10 11 12 13 14
    python benchmarks/bench_kernel_rule.py --study estimators --seeds 10 11 12 --sizes 500 2000 8000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch

from modscale.estimators import ModularRegressor
from modscale.models import MLP, ModularNet
from modscale.rules import kernel_projections, recovery_score
from modscale.tasks import SineTask
from modscale.training import train


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _summary(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{name:<34} mean {v.mean():.4f}  sd {sd:.4f}  per seed {np.round(v, 4).tolist()}"


def study_recovery(seeds: list[int]) -> None:
    methods = {
        "deflation, spectral starts": dict(strategy="deflation", init="spectral"),
        "deflation, random starts": dict(strategy="deflation", init="random"),
        "independent, spectral starts": dict(strategy="independent", init="spectral"),
        "independent, random starts (paper)": dict(strategy="independent", init="random"),
    }
    scores: dict[str, list[float]] = {name: [] for name in [*methods, "random projections"]}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for seed in seeds:
        task = SineTask(16, 4, generator=seed)
        X, y = task.sample(4000, generator=10_000 + seed)
        for name, kw in methods.items():
            t0 = time.perf_counter()
            U = kernel_projections(X, y, 4, generator=seed, progress=False, **kw)
            seconds[name].append(time.perf_counter() - t0)
            scores[name].append(recovery_score(U, task.projections))
        R = torch.randn(4, 1, 16, generator=torch.Generator().manual_seed(seed))
        scores["random projections"].append(recovery_score(R, task.projections))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()), flush=True)
    print(f"SineTask(m=16, k=4), n=4000, seeds {seeds}: recovery")
    for name, v in scores.items():
        extra = f"  ({np.mean(seconds[name]):.1f} s per run)" if name in seconds else ""
        print(_summary(name, v) + extra)


def _mlp_mse(X, y, Xt, yt, width: int, steps: int, seed: int) -> float:
    """A monolithic MLP with the estimators' standardisation, split and trainer."""
    mean, scale, ym, ys = X.mean(0), X.std(0), y.mean(), y.std()
    perm = np.random.default_rng(seed + 3).permutation(len(y))
    n_val = int(round(0.1 * len(y)))
    Xs = torch.tensor((X - mean) / scale, dtype=torch.float32)
    Ys = torch.tensor((y - ym) / ys, dtype=torch.float32)[:, None]
    fit, val = perm[n_val:], perm[:n_val]
    net = MLP(X.shape[1], width, 2, generator=seed)
    train(net, (Xs[fit], Ys[fit]), steps=steps, lr=3e-3, batch_size=128, val=(Xs[val], Ys[val]),
          early_stopping=True, generator=seed + 2, device="cpu")  # fmt: skip
    with torch.no_grad():
        pred = net(torch.tensor((Xt - mean) / scale, dtype=torch.float32))[:, 0].numpy() * ys + ym
    return float(np.mean((pred - yt) ** 2))


def study_estimators(seeds: list[int], sizes: list[int], steps: int = 2000) -> None:
    m, k = 16, 4
    p = ModularNet.count_parameters(m, k, 1, 32, 2)
    width = MLP.width_for(p, m, 2)
    print(f"modular: K={k}, b=1, width 32, depth 2, {p} parameters; MLP: width {width}, depth 2, "
          f"{MLP.count_parameters(m, width, 2)} parameters")  # fmt: skip
    for n in sizes:
        mse: dict[str, list[float]] = {"modular, kernel projections": [], "modular, random projections": [],
                                       "monolithic MLP": []}  # fmt: skip
        rec: dict[str, list[float]] = {"rule": [], "kernel, trained": [], "random, trained": []}
        for seed in seeds:
            task = SineTask(m, k, generator=seed)
            X, y = (t.numpy() for t in task.sample(n, generator=100 + seed))
            Xt, yt = (t.numpy() for t in task.sample(4000, generator=200 + seed))
            y, yt = y.ravel(), yt.ravel()
            for init, name in (
                ("kernel", "modular, kernel projections"),
                ("random", "modular, random projections"),
            ):
                est = ModularRegressor(
                    n_modules=k, projection_init=init, max_steps=steps, early_stopping=True, device="cpu",
                    random_state=seed,
                ).fit(X, y)  # fmt: skip
                mse[name].append(float(np.mean((est.predict(Xt) - yt) ** 2)))
                if init == "kernel":
                    rec["rule"].append(recovery_score(est.initial_projections_, task.projections))
                rec[f"{init}, trained"].append(recovery_score(est.projections_, task.projections))
            mse["monolithic MLP"].append(_mlp_mse(X, y, Xt, yt, width, steps, seed))
            print(f"n={n} seed {seed}: " + ", ".join(f"{a} {b[-1]:.4f}" for a, b in mse.items()), flush=True)
        print(f"n={n}, seeds {seeds}: test MSE")
        for name, v in mse.items():
            print(_summary(name, v))
        for name, v in rec.items():
            print(_summary(f"recovery, {name}", v))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--k", type=int, default=8, help="true modules; the rule looks for K = k")
    parser.add_argument("--seed", type=int, default=0, help="task, sample and rule seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see above)")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's setting), cuda or auto")
    parser.add_argument("--compare", action="store_true", help="also run the reference strategies")
    parser.add_argument("--study", choices=["recovery", "estimators"], help="a study instead of the goal")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14], help="for --study")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000], help="n for --study")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.study == "recovery":
        study_recovery(args.seeds)
        return 0
    if args.study == "estimators":
        study_estimators(args.seeds, args.sizes)
        return 0

    task = SineTask(args.m, args.k, generator=args.seed)
    X, y = task.sample(args.n, generator=10_000 + args.seed)
    print(
        f"SineTask(m={args.m}, k={args.k}), n={args.n}, K={args.k}, seed {args.seed}, "
        f"{torch.get_num_threads()} CPU thread(s), device {args.device}"
    )

    t0 = time.perf_counter()
    U, info = kernel_projections(X, y, args.k, generator=args.seed, device=args.device, return_info=True)
    if U.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    recovery = recovery_score(U, task.projections)
    peak = _peak_rss_mb()
    print(
        f"deflation (spectral starts)      recovery {recovery:.3f}  {seconds:6.1f} s  "
        f"({info.steps} Adam steps, explained variance {info.explained:.3f})"
    )

    if args.compare:
        refs = [
            ("independent, random starts (paper)", dict(strategy="independent", init="random")),
            ("independent, spectral starts", dict(strategy="independent", init="spectral")),
            ("deflation, random starts", dict(strategy="deflation", init="random")),
        ]
        for name, kw in refs:
            t1 = time.perf_counter()
            V = kernel_projections(X, y, args.k, generator=args.seed, device=args.device, **kw)
            rec, sec = recovery_score(V, task.projections), time.perf_counter() - t1
            print(f"{name:<33}recovery {rec:.3f}  {sec:6.1f} s")
        R = torch.randn(args.k, 1, args.m, generator=torch.Generator().manual_seed(args.seed))
        print(f"{'random projections':<33}recovery {recovery_score(R, task.projections):.3f}")

    print(f"seconds={seconds:.3f} recovery={recovery:.4f} peak_rss_mb={peak:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
