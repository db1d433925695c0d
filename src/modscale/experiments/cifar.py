"""Compositional CIFAR-10 experiments (PAPER.md claim 4 and its accuracy-vs-k figure and robustness table).

Three registered experiments share one config schema and one ``run`` (:mod:`.cifar_training`):

- ``cifar_accuracy_vs_k``: per-slot accuracy vs the number of images k for the monolithic CNN and the image
  modular network with random and with kernel-initialised slot projections, one epoch (the paper), and our
  control: the modular network with the true slot projections (module i reads slot i). Every run
  also measures all-correct accuracy, accuracy on unseen class combinations (the combinatorial OOD set) and
  under test-time Gaussian noise, so the OOD + noise table at k = 4 is read from the same runs.
- ``cifar_n_sweep``: accuracy vs the number of training composites n at k = 4 (reviewers asked for it).
- ``cifar_epochs``: accuracy vs training epochs at k = 4: one epoch (the paper) and more (reviewers asked).

Each run trains the seeds of one config as one stacked model. Tiers: ``smoke`` (tests: seconds),
``small`` (CPU: a few minutes for all three), ``paper`` (a GPU: the paper's k = 1..8 on 50,000 composites).
"""

from __future__ import annotations

from collections.abc import Mapping

from modscale.experiments.cifar_training import (
    KERNEL_STRATEGIES,
    METHODS,
    check_config,
    parse_channels,
    run,
)
from modscale.experiments.experiment import Experiment, Param, Tier, grid
from modscale.models.image import ImageModularNet, slot_cross_entropy

PAPER_METHODS = list(METHODS[:3])  # the paper's three; "modular-true" is our control (W = I)

# Small-tier sizes, chosen so the three experiments together take about five minutes on a 2-core CPU
# (measured: docs/cifar.md). The paper tier trains on as many composites as CIFAR-10 has training images.
SMALL_N = 4000
SMALL_TEST = 500
PAPER_N = 50_000
PAPER_TEST = 10_000
PAPER_NOISE_LEVELS = "0.1 0.2 0.5 1"
# The paper tier's network and optimiser (a GPU): ImageModularNet's default CNN, the usual Adam settings.
PAPER_NET = dict(channels="16 32", batch_size=64, lr=1e-3)

PARAMS = (
    Param("method", str, "modular-kernel", "network and projection init", choices=METHODS),
    Param("k", int, 4, "images side by side (slots)", low=1, high=18),
    Param("n_train", int, SMALL_N, "training composites (one epoch = n_train / batch_size steps)", low=1),
    Param("epochs", int, 1, "passes over the training composites (the paper: 1)", low=1),
    Param("batch_size", int, 16, "composites per Adam step (per seed)", low=1),
    Param("lr", float, 2e-3, "Adam learning rate (> 0)", low=0.0),
    Param("channels", str, "8 16", "conv channels of each block, space-separated"),
    Param(
        "hidden", int, 64, "hidden units of every module (the monolith matches the parameter count)", low=1
    ),
    Param("n_test", int, SMALL_TEST, "composites in each test set (seen, unseen)", low=1),
    Param(
        "holdout", float, 0.2, "fraction of class k-tuples held out of training (k >= 2)", low=0.0, high=0.99
    ),
    Param("split_seed", int, 0, "seed of the held-out tuples and the test sets", low=0),
    Param(
        "noise", float, 0.5, "test-time noise level of the noise metric (std of normalised pixels)", low=0.0
    ),
    Param("noise_levels", str, "", "further noise levels to evaluate, space-separated"),
    Param("kernel_samples", int, 2048, "training composites the kernel rule sees (at most n_train)", low=2),
    Param("kernel_steps", int, 100, "Adam steps of the kernel rule per module", low=1),
    Param("kernel_batch", int, 512, "minibatch of the kernel rule", low=2),
    Param("kernel_pool", int, 4, "average pooling of slot images for the kernel", choices=(1, 2, 4, 8, 16)),
    Param("kernel_strategy", str, "deflation", "the kernel rule's strategy", choices=KERNEL_STRATEGIES),
    Param("kernel_jitter", float, 10.0, "the rule's ridge, relative to the kernel's mean diagonal", low=0.0),
)


# The cost model's arithmetic rate: what a paper-tier run (training and evaluation) reached on a 2-core AMD
# EPYC (benchmarks/README.md); plans calibrate it on the machine at hand.
ASSUMED_FLOPS = 30e9


def _composite_flops(c: Mapping) -> float:
    """Forward FLOPs per composite of one replica (one module per slot; the monolith is about equal)."""
    return ImageModularNet.forward_flops(c["k"], c["k"], parse_channels(c["channels"]), c["hidden"])


def _cost(c: Mapping) -> float:
    """Seconds of one run on a 2-core CPU: training is 3 x forward FLOPs per composite per pass, every test
    evaluation 1 x, at ASSUMED_FLOPS; the kernel rule about 4 s per module (calibration scales it all)."""
    evals = 3 + len(c["noise_levels"].split())
    passes = 3 * c["n_train"] * c["epochs"] + c["n_test"] * evals
    kernel = 4.0 * c["k"] if c["method"] == "modular-kernel" else 0.0
    return passes * _composite_flops(c) / ASSUMED_FLOPS + kernel


def _probe(device_label: str) -> tuple[float, str]:
    """Time 4 Adam steps of the paper tier's modular network at k = 1 (64 images per step) against _cost."""
    import time

    import torch

    from modscale.experiments.backends import device_and_label
    from modscale.training import train

    device = device_label.split(" ")[0] if device_label.startswith("cuda") else "cpu"
    device, _ = device_and_label(device)
    config = dict(k=1, channels=PAPER_NET["channels"], hidden=64)
    B, steps = PAPER_NET["batch_size"], 4
    net = ImageModularNet(1, 1, parse_channels(config["channels"]), config["hidden"], generator=0)
    gen = torch.Generator().manual_seed(0)
    X, Y = torch.randn(B, 3, 32, 32, generator=gen), torch.randint(0, 10, (B, 1), generator=gen)

    def loss(out, y):
        return slot_cross_entropy(out, y, "none")

    train(net, (X, Y), steps=1, lr=1e-3, loss=loss, device=device)  # warm-up
    t0 = time.perf_counter()
    train(net, (X, Y), steps=steps, lr=1e-3, loss=loss, eval_every=steps, device=device)
    measured = (time.perf_counter() - t0) / (steps * B)
    estimated = 3 * _composite_flops(config) / ASSUMED_FLOPS
    return measured / estimated, f"probe: {steps} training steps of the paper-tier network timed here"


def _experiment(name: str, description: str, tiers: dict[str, Tier], paper: str = "") -> Experiment:
    return Experiment(
        name=name,
        description=description,
        params=PARAMS,
        tiers=tiers,
        run=run,
        check=check_config,
        max_chunk=16,
        gpu_fraction=0.5,
        paper=paper,
        cost=_cost,
        probe=_probe,
        data=("cifar10",),
    )


_SMOKE = dict(n_test=64, batch_size=32, kernel_samples=128, kernel_batch=64, kernel_steps=5)

EXPERIMENTS = (
    _experiment(
        "cifar_accuracy_vs_k",
        "Compositional CIFAR-10: accuracy vs k (seen, unseen, noise), three methods and a control",
        {
            "smoke": Tier(grid(k=[1, 2], method=list(METHODS), n_train=128, **_SMOKE), seeds=2),
            "small": Tier(grid(k=[1, 2, 4], method=list(METHODS)), seeds=3),
            "paper": Tier(
                grid(
                    k=list(range(1, 9)),
                    method=list(METHODS),
                    n_train=PAPER_N,
                    n_test=PAPER_TEST,
                    noise_levels=PAPER_NOISE_LEVELS,
                    kernel_samples=4096,
                    kernel_steps=200,
                    kernel_batch=512,
                    **PAPER_NET,
                ),
                seeds=5,
            ),
        },
        paper="multicifar_result; robustness table (project page)",
    ),
    _experiment(
        "cifar_n_sweep",
        "Compositional CIFAR-10 at k = 4: accuracy vs training composites n, three methods, one epoch",
        {
            "smoke": Tier(grid(k=2, n_train=[64, 128], method=PAPER_METHODS, **_SMOKE), seeds=1),
            "small": Tier(grid(k=4, n_train=[1000, 8000], method=PAPER_METHODS), seeds=1),
            "paper": Tier(
                grid(
                    k=4,
                    n_train=[1000, 2000, 5000, 10_000, 20_000, 50_000],
                    method=PAPER_METHODS,
                    n_test=PAPER_TEST,
                    kernel_samples=1000,
                    kernel_steps=200,
                    kernel_batch=512,
                    **PAPER_NET,
                ),
                seeds=5,
            ),
        },
    ),
    _experiment(
        "cifar_epochs",
        "Compositional CIFAR-10 at k = 4: accuracy after 1 (the paper) and more epochs, three methods",
        {
            "smoke": Tier(grid(k=2, epochs=[1, 2], method=PAPER_METHODS, n_train=128, **_SMOKE), seeds=1),
            "small": Tier(grid(k=4, n_train=1000, epochs=[1, 4], method=PAPER_METHODS), seeds=1),
            "paper": Tier(
                grid(
                    k=4,
                    n_train=PAPER_N,
                    epochs=[1, 2, 5, 10],
                    method=PAPER_METHODS,
                    n_test=PAPER_TEST,
                    kernel_samples=4096,
                    kernel_steps=200,
                    kernel_batch=512,
                    **PAPER_NET,
                ),
                seeds=5,
            ),
        },
    ),
)
