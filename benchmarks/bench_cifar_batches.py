"""Compositional CIFAR-10 batch construction: composite images per second (goal >= 50,000/s at k = 4, CPU).

Times ``CompositionalCIFAR.sample`` (draw class tuples from the allowed set through the seeded permutation,
draw an image per slot, gather and normalise the composite: everything a training step needs from the task)
over ``--batches`` batches of ``--batch-size``, repeated ``--repeat`` times; also the fixed-set path
(``compose`` of precomputed indices, as the batch source of a fixed training set does). The figure is the
best repeat (the first includes warm-up; the machine may be shared) with the median beside it.

Threads: one by default. Building a batch is a gather plus two elementwise passes over 48 KiB per composite,
limited by memory bandwidth, not arithmetic; on a 2-core machine shared with other work a second thread mostly
adds contention (measured: slower while the machine was busy). ``--threads 2`` measures the other setting.

    python benchmarks/bench_cifar_batches.py [--k 4] [--batch-size 256] [--threads N] [--device cpu]

Uses the CIFAR-10 copy found by modscale.data (``--data-dir``, $MODSCALE_DATA, ../shared/data/cifar10);
``--synthetic`` uses random images of the same shape instead (the speed does not depend on pixel values).
Final line: ``images_per_s=<float>`` (composites per second of the sampling path, best repeat).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from modscale.data import Cifar10Arrays, load_cifar10
from modscale.tasks.cifar import CompositionalCIFAR


def synthetic() -> Cifar10Arrays:
    rng = np.random.default_rng(0)

    def split(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.tile(
            np.arange(10, dtype=np.uint8), n // 10
        )

    return Cifar10Arrays(*split(50_000), *split(10_000))


def rate(fn, batches: int, batch_size: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for b in range(batches):
        fn(b)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batches * batch_size / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see above)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = synthetic() if args.synthetic else load_cifar10(args.data_dir)
    task = CompositionalCIFAR(
        args.k, n_train=args.batch_size * args.batches, data=data, generator=0, device=args.device
    )
    B = args.batch_size
    gen = torch.Generator().manual_seed(1)
    train_idx = task.train_indices

    paths = {
        "sample (on the fly)": lambda b: task.sample(B, gen),
        "compose (fixed set)": lambda b: task.compose(train_idx[b * B : (b + 1) * B]),
    }
    results = {}
    for name, fn in paths.items():
        rates = [rate(fn, args.batches, B, task.device) for _ in range(args.repeat)]
        results[name] = rates
        print(
            f"{name}: best {max(rates):,.0f} composites/s, median {statistics.median(rates):,.0f} "
            f"({args.repeat} repeats of {args.batches} batches of {B}, k={args.k})"
        )
    bytes_out = 4 * 3 * 32 * 32 * args.k
    best = max(results["sample (on the fly)"])
    print(
        f"output bandwidth {best * bytes_out / 1e9:.2f} GB/s (float32 composites of {bytes_out // 1024} KiB)"
    )
    print(
        f"device={task.device} threads={torch.get_num_threads()} machine={platform.machine()} "
        f"cpus={os.cpu_count()} data={'synthetic' if args.synthetic else 'cifar10'}"
    )
    print(f"images_per_s={best:.1f}")


if __name__ == "__main__":
    main()
