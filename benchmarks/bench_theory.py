"""Closed-form losses at 1e5 (n, p) points: goal <= 1 s on a 2-core CPU.

Points are drawn log-uniformly in n, p in [1e2, 1e5] (about half over-parameterised, each needing a
root solve for kappa) for the default ``exp`` spectrum at m = 4 and, separately, for a batch of spectra
(m = 2..9 mixed across points). The figure is the best of ``--repeat`` runs (the first includes warm-up).

    python benchmarks/bench_theory.py [--points 100000] [--repeat 5]

Final line: ``seconds=<float>`` (the single-spectrum case, best of the repeats).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from modscale.theory import monolithic_losses, spectrum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(2, 5, args.points)
    p = 10 ** rng.uniform(2, 5, args.points)
    m = rng.integers(2, 10, args.points).astype(float)
    over = np.mean(np.rint(p) > n + 1)
    cases = {"one spectrum (m=4)": (n, p, spectrum(4)), "mixed spectra (m=2..9)": (n, p, spectrum(m))}
    best = {}
    for label, (nn, pp, lam) in cases.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            train, test = monolithic_losses(nn, pp, lam)
            times.append(time.perf_counter() - t0)
        assert train.shape == (args.points,) and np.all(test > 0)
        best[label] = min(times)
        print(f"{label}: best {min(times):.3f} s, median {np.median(times):.3f} s over {args.repeat} runs")
    print(f"points={args.points} over-parameterised={over:.2f}", end=" ")
    print(f"machine={platform.machine()} cpus={os.cpu_count()}")
    print(f"seconds={best['one spectrum (m=4)']:.4f}")


if __name__ == "__main__":
    main()
