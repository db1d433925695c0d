"""Stacked training vs a plain loop: S MLPs trained one by one, then the same S as one stacked model.

Both paths use modscale.training.train with the same data (a SineTask sample, full batch), the same seeds and
the same number of Adam steps. Printed: ms per model both ways, their ratio (loop / stacked; > 1 means
stacking is faster), and the FLOP rate of the stacked run, counted analytically:

    forward FLOPs per step and model = 2 n (in_dim w + (depth - 1) w^2 + w out_dim)   (matmuls only)
    training FLOPs = 3 x forward (backward ~ 2 x forward) x steps x S

The loop is timed on ``--loop-models`` models (default: all S on CPU, 32 on CUDA, where a loop over 512 models
would take minutes) and reported per model, which is what the ratio compares. The last line is
``ratio=<float> tflops=<float>``.

    python benchmarks/bench_stacked.py                # CPU defaults (S=32, n=256, width 64, 100 steps)
    python benchmarks/bench_stacked.py --device cuda  # GPU defaults (S=512, n=1024, width 256, 200 steps)
    python benchmarks/bench_stacked.py --device cuda --tf32 --compile
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from modscale.models import MLP
from modscale.tasks import SineTask
from modscale.training import train

DEFAULTS = {
    # 2 CPU cores: small enough to finish in seconds, large enough that matmuls dominate Python overhead
    "cpu": dict(S=32, n=256, width=64, steps=100, loop_models=None),
    "cuda": dict(S=512, n=1024, width=256, steps=200, loop_models=32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_train(net, X, y, steps, lr, device, compile=False) -> float:
    _sync(device)
    t0 = time.perf_counter()
    # one history row, at the end: no host synchronisation inside the timed loop
    train(net, (X, y), steps=steps, lr=lr, eval_every=steps, device=device, compile=compile)
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--S", type=int, default=None, help="number of networks")
    parser.add_argument("--n", type=int, default=None, help="training samples (full batch)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=2, help="hidden layers")
    parser.add_argument("--in-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="Adam steps")
    parser.add_argument("--loop-models", type=int, default=None, help="models timed in the one-by-one loop")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--tf32", action="store_true", help="allow TF32 matmuls on CUDA (default: strict fp32)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the stacked model")
    args = parser.parse_args(argv)

    kind = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        print("bench_stacked: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(kind)
    d = DEFAULTS[kind]
    S = args.S or d["S"]
    n = args.n or d["n"]
    width = args.width or d["width"]
    steps = args.steps or d["steps"]
    loop_models = min(S, args.loop_models or d["loop_models"] or S)
    if args.threads:
        torch.set_num_threads(args.threads)
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    lr = 1e-3

    task = SineTask(args.in_dim, 4, generator=0)
    X, y = task.sample(n, generator=1)
    X, y = X.to(device), y.to(device)

    def single(seed):
        return MLP(args.in_dim, width, args.depth, n_replicas=1, generator=seed)

    def stacked():
        return MLP(args.in_dim, width, args.depth, n_replicas=S, generator=list(range(S)))

    # warm-up: CUDA context, allocator, kernel selection and thread pools for both paths; with --compile the
    # timed stacked model is compiled here and then reset to its initial weights in place, so the timed run
    # reuses the compiled graphs
    _time_train(single(0), X, y, 3, lr, device)
    net = stacked()
    initial = [p.detach().clone() for p in net.parameters()]
    _time_train(net, X, y, 3, lr, device, compile=args.compile)
    with torch.no_grad():
        for p, p0 in zip(net.parameters(), initial, strict=True):
            p.copy_(p0)

    t_loop = 0.0
    for s in range(loop_models):
        t_loop += _time_train(single(s), X, y, steps, lr, device)
    t_stack = _time_train(net, X, y, steps, lr, device, compile=args.compile)

    ms_loop = 1e3 * t_loop / loop_models
    ms_stack = 1e3 * t_stack / S
    fwd = 2 * n * (args.in_dim * width + (args.depth - 1) * width * width + width * 1)
    flops = 3 * fwd * steps * S
    tflops = flops / t_stack / 1e12
    ratio = ms_loop / ms_stack
    name = (
        torch.cuda.get_device_name(device) if kind == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"device: {name}; fp32{' (TF32 matmuls allowed)' if args.tf32 else ''}; torch {torch.__version__}")
    print(f"S={S} n={n} in_dim={args.in_dim} width={width} depth={args.depth} steps={steps} full batch, Adam")
    print(f"one by one: {ms_loop:.2f} ms/model (timed on {loop_models} models, {t_loop:.2f} s)")
    print(f"stacked:    {ms_stack:.3f} ms/model ({t_stack:.2f} s for all {S})")
    print(f"matmul FLOPs (3 x forward): {flops:.3e}")
    print(f"ratio={ratio:.3f} tflops={tflops:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
