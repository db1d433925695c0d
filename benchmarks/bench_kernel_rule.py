"""The kernel learning rule at scale: n = 100,000 samples of SineTask(m, k), K = k modules, on the CPU.

Goals (median over task seeds 0, 1, 2, one thread): m = 32, k = 8 (the default): recovery >= 0.99 within
60 s; m = 64, k = 16: the moment starts alone >= 0.8 and the rule >= 0.9 within 300 s; m = 128, k = 16
measured. Timed: one call of ``kernel_projections`` with its defaults (deflation from moment starts, rbf
bandwidth 0.5, batch 512, 4 restarts, 100 Adam steps per module, three backfitting passes); the task's
sampling is not timed. Peak memory is the process's maximum resident set size (everything: interpreter,
torch, the data). One CPU thread by default: on a shared 2-core machine two threads per operation wait
for each other (measured at load average 5: 404 s with two threads, 45 s with one); ``--threads 2`` on a
quiet machine. ``--compare`` then runs, on the same data: the moment starts alone, the spectral
directions alone, random directions, and the rule from spectral starts (the default before moment
starts), from random starts, and the paper's strategy (independent restarts from random starts). The last
line is

    seconds=<float> recovery=<float> peak_rss_mb=<float>

for the timed default run (medians over the task seeds).

Two studies behind the numbers of docs/learning-rule.md (one line per seed, then mean and standard
deviation over seeds; they print no final ``seconds=`` line):

- ``--study recovery``: SineTask(m=16, k=4), n=4000, the rule's defaults: deflation and independent
  restarts, each from spectral and from random starts, and random projections.
- ``--study estimators``: SineTask(m=16, k=4) at n in --sizes: test MSE (4000 test samples, a fraction of
  Var y) of ModularRegressor with kernel and with random projections, and of a monolithic MLP of similar
  size, all with the same trainer (Adam 3e-3, batch 128, 2000 steps, early stopping on 10%).

A third, behind docs/results.md ("The rule at high dimension"):

- ``--study span``: SineTask(--m, --k) at --n, task seed --seed: the Hermite moments of y along every true
  direction, the fraction of each true direction inside the rule's spectral span and inside spans from
  second- and third-order moments of y without its linear part, and the objective along true, linear-fit
  and random directions.

    python benchmarks/bench_kernel_rule.py                       # m = 32, k = 8, task seeds 0 1 2
    python benchmarks/bench_kernel_rule.py --m 64 --k 16 --compare
    python benchmarks/bench_kernel_rule.py --study recovery --seeds 10 11 12 13 14
    python benchmarks/bench_kernel_rule.py --study estimators --seeds 10 11 12 --sizes 500 2000 8000
    python benchmarks/bench_kernel_rule.py --study span --m 64 --k 16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from functools import partial

import numpy as np
import torch

from modscale._provenance import code_version
from modscale.estimators import ModularRegressor
from modscale.models import MLP, ModularNet
from modscale.rules import kernel_projections, moment_directions, recovery_score
from modscale.rules.objective import rbf_objective
from modscale.rules.spectral import spectral_directions
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


def _span_hold(Q: torch.Tensor, U: torch.Tensor) -> np.ndarray:
    """Fraction ||Q^T u_i||^2 of each true direction u_i (rows of U (k, m)) inside span Q (m, d)."""
    return ((U.to(torch.float64) @ Q) ** 2).sum(-1).numpy()


def _top_span(M: torch.Tensor, d: int) -> torch.Tensor:
    """Orthonormal basis (m, d) of the d eigenvectors of symmetric M with the largest |eigenvalue|."""
    evals, evecs = torch.linalg.eigh(M)
    return evecs[:, torch.argsort(evals.abs(), descending=True)[:d]]


def study_span(m: int, k: int, n: int, seed: int, batches: int = 40) -> None:
    """Why the rule misses modules at large k: what its spectral span holds, and where the objective is low.

    For y = sum_i g_i(u_i^T x) with x ~ N(0, I_m), Stein's lemma gives the Hermite moments of y:
        E[y x]                  = sum_i E[g_i^(1)] u_i                          (one direction, beta)
        E[r (x x^T - I)]        = sum_i E[g_i^(2)] u_i u_i^T                    (principal Hessian directions)
        E[r He3(x)](., ., beta) = sum_i E[g_i^(3)] (u_i^T beta) u_i u_i^T       (third order along beta)
    with r = y minus its linear fit. A module whose first harmonic is even (cos z) sits in the second-order
    matrix, an odd one (sin z) in the third: their union spans every module, where the rule's sliced
    matrix (SIR + SAVE) sees the odd modules mostly through beta, which mixes them all.
    """
    task = SineTask(m, k, generator=seed)
    X, y = task.sample(n, generator=10_000 + seed)
    U = task.projections[:, 0, :]  # (k, m)
    Xd = X.to(torch.float64)
    yd = y[:, 0].to(torch.float64)
    yd = yd - yd.mean()
    Z = Xd @ U.T.to(torch.float64)  # (n, k) the true module inputs
    a1 = (yd[:, None] * Z).mean(0).numpy()
    a2 = (yd[:, None] * (Z**2 - 1)).mean(0).numpy()
    a3 = (yd[:, None] * (Z**3 - 3 * Z)).mean(0).numpy()
    coef = torch.linalg.lstsq(Xd, yd[:, None]).solution[:, 0]  # (m,)
    r = yd - Xd @ coef  # y without its linear part
    beta = coef / coef.norm()
    eye = torch.eye(m, dtype=torch.float64)
    H2 = (Xd * r[:, None]).T @ Xd / n - r.mean() * eye  # E[r (x x^T - I)]
    rb = r * (Xd @ beta)  # (n,)
    # E[r He3(x)](., ., beta) = E[r (x^T beta) (x x^T - I)] - 2 sym(E[r x] beta^T), and E[r x] = 0 (the fit)
    M3 = (Xd * rb[:, None]).T @ Xd / n - rb.mean() * eye

    P, _ = spectral_directions(X, y, k)  # the rule's start: top k of SIR + SAVE
    both = torch.cat([_top_span(H2, k), _top_span(M3, k)], 1)
    spans = {
        f"the rule's span (SIR + SAVE, top {k})": torch.linalg.qr(P.T.to(torch.float64))[0],
        f"second order on r (top {k})": _top_span(H2, k),
        f"third order on r along beta (top {k})": _top_span(M3, k),
        f"union of the last two ({2 * k} dims)": torch.linalg.qr(both)[0],
    }
    holds = {name: _span_hold(Q, U) for name, Q in spans.items()}
    print(f"SineTask(m={m}, k={k}), n={n}, task seed {seed}. Per true module i (z_i = u_i^T x): the Hermite")
    print("moments E[y z], E[y (z^2 - 1)], E[y (z^3 - 3z)], then the fraction of u_i inside each span")
    print("(a random d-dimensional span holds d / m of a direction):")
    print("  module  E[y z]  E[y He2]  E[y He3]   " + "  ".join(f"span{j + 1}" for j in range(len(holds))))
    for i in range(k):
        cells = "  ".join(f"{h[i]:5.2f}" for h in holds.values())
        print(f"  {i:6d}  {a1[i]:+.3f}   {a2[i]:+.3f}    {a3[i]:+.3f}   {cells}")
    for j, (name, h) in enumerate(holds.items()):
        print(f"  span{j + 1}: {name:<40} min {h.min():.2f}  mean {h.mean():.2f}")

    # the objective's landscape along single directions: L(u) averaged over batches (rbf 0.5, jitter 1e-2)
    gen = torch.Generator().manual_seed(20_000 + seed)  # not the task's seed: its U comes from that stream
    R = torch.randn(k, m, generator=gen, dtype=torch.float64)
    dirs = torch.cat([U.to(torch.float64), beta[None], R / R.norm(dim=1, keepdim=True)]).to(torch.float32)
    rows = torch.randint(n, (batches, 512), generator=gen)
    print(f"The objective L(u) (rbf bandwidth 0.5, jitter 1e-2, mean of {batches} batches of 512; lower is")
    print("preferred) at the k true directions, at beta and at k random directions:")
    for label, target in (("y", yd), ("r = y minus its linear fit", r)):
        target = target.to(torch.float32)
        L = torch.zeros(dirs.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for b in rows:
                Zb = (X[b] @ dirs.T).T.unsqueeze(-1)  # (D, B, 1)
                Yb = target[b][:, None].expand(dirs.shape[0], -1, -1)  # (D, B, 1)
                L += rbf_objective(Zb, Yb, 0.5, 1e-2).to(torch.float64) / batches
        true, rand = L[:k].numpy(), L[k + 1 :].numpy()
        print(
            f"  on {label}: true {true.min():.1f}-{true.max():.1f} (mean {true.mean():.1f}), "
            f"beta {float(L[k]):.1f}, random {rand.min():.1f}-{rand.max():.1f} (mean {rand.mean():.1f})"
        )


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
    parser.add_argument("--seed", type=int, default=0, help="task, sample and rule seed (--study span)")
    parser.add_argument(
        "--task-seeds", dest="seeds_goal", type=int, nargs="+", default=[0, 1, 2],
        help="task seeds of the goal's run (the median is reported)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see above)")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's setting), cuda or auto")
    parser.add_argument("--compare", action="store_true", help="also run the reference strategies")
    parser.add_argument(
        "--study", choices=["recovery", "estimators", "span"], help="a study instead of the goal"
    )
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
    if args.study == "span":
        study_span(args.m, args.k, args.n, args.seed)
        return 0

    print(
        f"SineTask(m={args.m}, k={args.k}), n={args.n}, K={args.k}, task seeds {args.seeds_goal}, "
        f"{torch.get_num_threads()} CPU thread(s), device {args.device}, CPU {_cpu_model()}, "
        f"modscale {code_version()}"
    )
    rows: dict[str, list[tuple[float, float]]] = {}
    for seed in args.seeds_goal:
        task = SineTask(args.m, args.k, generator=seed)
        X, y = task.sample(args.n, generator=10_000 + seed)
        for name, (rec, sec) in _goal_rows(task, X, y, seed, args).items():
            rows.setdefault(name, []).append((rec, sec))
            print(f"seed {seed}  {name:<40} recovery {rec:.3f}  {sec:6.1f} s", flush=True)
    print(f"median over task seeds {args.seeds_goal}:")
    for name, v in rows.items():
        rec, sec = np.median([r for r, _ in v]), np.median([t for _, t in v])
        print(f"  {name:<40} recovery {rec:.3f}  {sec:6.1f} s   per seed {[round(r, 3) for r, _ in v]}")
    rec = float(np.median([r for r, _ in rows["rule (defaults: deflation, moment starts)"]]))
    sec = float(np.median([t for _, t in rows["rule (defaults: deflation, moment starts)"]]))
    print(f"seconds={sec:.3f} recovery={rec:.4f} peak_rss_mb={_peak_rss_mb():.1f}")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    if isinstance(out, torch.Tensor) and out.device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _goal_rows(task, X, y, seed: int, args) -> dict[str, tuple[float, float]]:
    """(recovery, seconds) of the rule with its defaults and, with --compare, of the starts alone and of
    the rule from today's other starts, all on the same data."""
    k, truth = args.k, task.projections
    rule = partial(kernel_projections, X, y, k, generator=seed, device=args.device, progress=False)
    out = {}
    U, sec = _timed(rule)
    out["rule (defaults: deflation, moment starts)"] = (recovery_score(U, truth), sec)
    if not args.compare:
        return out
    starts, sec = _timed(lambda: moment_directions(X, y, k, generator=seed).directions)
    out["moment starts alone"] = (recovery_score(starts[:, None, :], truth), sec)
    (P, _), sec = _timed(lambda: spectral_directions(X, y, k))
    out["spectral directions alone"] = (recovery_score(P[:, None, :], truth), sec)
    R = torch.randn(k, 1, args.m, generator=torch.Generator().manual_seed(seed))
    out["random directions"] = (recovery_score(R, truth), 0.0)
    for name, kw in (
        ("rule from spectral starts (lr 0.05)", dict(init="spectral")),
        ("rule from random starts (lr 0.05)", dict(init="random")),
        ("independent, random starts (paper)", dict(strategy="independent", init="random")),
    ):
        U, sec = _timed(lambda kw=kw: rule(**kw))
        out[name] = (recovery_score(U, truth), sec)
    return out


if __name__ == "__main__":
    sys.exit(main())
