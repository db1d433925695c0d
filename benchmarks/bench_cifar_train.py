"""Training speed of the paper tier's Compositional CIFAR-10 networks against the machine's matmul rate.

Trains the monolithic CNN and the image modular network of ``cifar_accuracy_vs_k --tier paper`` (channels
16 32, hidden 64, batch 64 per replica, Adam lr 1e-3, S seeds stacked as the sweep stacks them) for a fixed
number of steps with :func:`modscale.training.train`, on random composites (the arithmetic does not depend
on pixel values), and prints slot images per second and the achieved FLOP rate, counted analytically by the
models' closed forms (``ImageModularNet.forward_flops``, ``MonolithicCNN.forward_flops``: conv blocks,
dense layers and, for the modular network, the slot mixture), training = 3 x forward (backward ~ 2 x
forward).

In the same run it measures the rate of a large batched matmul (8 x 1024^3, same threads) and ends with

    modular_fraction=<> monolithic_fraction=<> fraction_of_peak=<both networks' FLOPs / their time / matmul>

    python benchmarks/bench_cifar_train.py                 # CPU, k=4, S=3, 30 steps per network
    python benchmarks/bench_cifar_train.py --device cuda --S 5 --k 8 --steps 200
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from modscale.models.image import ImageModularNet, MonolithicCNN, slot_cross_entropy
from modscale.training import train

CHANNELS = (16, 32)  # the paper tier's network (modscale.experiments.cifar.PAPER_NET)
HIDDEN = 64
BATCH = 64
LR = 1e-3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(net) -> int:
    """Forward FLOPs per composite of one replica (the models' closed forms, module docstring)."""
    if isinstance(net, ImageModularNet):
        return ImageModularNet.forward_flops(net.k_slots, net.n_modules, net.channels, net.hidden)
    return MonolithicCNN.forward_flops(net.k_slots, net.channels, net.hidden)


def matmul_rate(device: torch.device, reps: int = 10) -> float:
    """FLOP/s of a large batched matmul, (8, 1024, 1024) @ (8, 1024, 1024), best of ``reps``."""
    a = torch.randn(8, 1024, 1024, device=device)
    b = torch.randn(8, 1024, 1024, device=device)
    torch.bmm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        torch.bmm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * 8 * 1024**3 / best


def time_training(net, k: int, S: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` Adam steps of ``net`` on per-replica batches (S, 64, 3, 32, 32k)."""
    gen = torch.Generator().manual_seed(0)
    shape = (S, BATCH, 3, 32, 32 * k)
    pool = [
        (torch.randn(shape, generator=gen), torch.randint(0, 10, shape[:2] + (k,), generator=gen))
        for _ in range(4)
    ]

    def batches(step, _generator):
        return pool[step % len(pool)]

    def loss(out, y):
        return slot_cross_entropy(out, y, "none")

    train(net, batches, steps=3, lr=LR, loss=loss, eval_every=3, device=device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    train(net, batches, steps=steps, lr=LR, loss=loss, eval_every=steps, device=device)
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--k", type=int, default=4, help="images per composite (default 4)")
    parser.add_argument("--S", type=int, default=3, help="seeds stacked in one model (default 3)")
    parser.add_argument("--steps", type=int, default=30, help="timed Adam steps per network (default 30)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_cifar_train: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k, S, steps = args.k, args.S, args.steps

    seeds = list(range(S))
    modular = ImageModularNet(k, k, CHANNELS, HIDDEN, n_replicas=S, generator=seeds)
    hidden = MonolithicCNN.hidden_for(modular.count(), k, CHANNELS)
    mono = MonolithicCNN(k, CHANNELS, hidden, n_replicas=S, generator=seeds)

    peak = matmul_rate(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {name} ({torch.get_num_threads()} threads); torch {torch.__version__}; fp32")
    print(f"k={k} S={S} batch={BATCH} per replica, channels={CHANNELS}, hidden={HIDDEN}, {steps} Adam steps")
    print(f"batched matmul (8 x 1024^3): {peak / 1e9:.1f} GFLOP/s")
    total_flops = total_s = 0.0
    fractions = {}
    for label, net in (("modular", modular), ("monolithic", mono)):
        seconds = time_training(net, k, S, steps, device)
        flops = 3 * forward_flops(net) * BATCH * S * steps
        rate = flops / seconds
        total_flops, total_s = total_flops + flops, total_s + seconds
        fractions[label] = rate / peak
        slot_images = BATCH * S * k * steps / seconds
        print(
            f"{label:10s}: {1e3 * seconds / steps:7.1f} ms/step, {slot_images:8.0f} slot images/s, "
            f"{rate / 1e9:6.1f} GFLOP/s ({net.count():,} parameters per replica)"
        )
    print(
        f"modular_fraction={fractions['modular']:.3f} monolithic_fraction={fractions['monolithic']:.3f} "
        f"fraction_of_peak={total_flops / total_s / peak:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
