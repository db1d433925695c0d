"""One Compositional CIFAR-10 run per job: build the task, initialise, train S seeds as one stack, evaluate.

The registered experiments (:mod:`modscale.experiments.cifar`) share this ``run``. A chunk holds the seeds of
one config; they are trained as one stacked model (``n_replicas`` = S), each replica with its own
initialisation, its own training sample and its own batch order, so a job's numbers depend on its config and
seed alone (DESIGN section 5).

Methods (DESIGN section 3; PAPER.md claim 4):

- ``monolithic``: :class:`~modscale.models.image.MonolithicCNN` on the whole 3 x 32 x 32k composite, its
  hidden width chosen so its parameter count matches the modular network's (``MonolithicCNN.hidden_for``);
- ``modular-random``: :class:`~modscale.models.image.ImageModularNet` with K = k modules whose slot
  projections w_i in R^k start as random unit vectors;
- ``modular-kernel``: the same network (same weights for the same seed) whose projections start where the
  kernel learning rule puts them: for module i, w_i minimises y^T K(Z_i)^{-1} y with Z_i = sum_j w_ij x_j the
  module's input (DESIGN section 4), computed before training on the first min(kernel_samples, n_train)
  training composites. Projections are then trained with everything else.

The kernel's representation of a slot image is its 4 x 4 average-pooled, normalised pixels (3 x 8 x 8 = 192
numbers; ``kernel_pool``). Pooling is linear, so the representation of a mixture is the mixture of the
representations, pool(sum_j w_j x_j) = sum_j w_j pool(x_j): the rule works on X (n, k, 192) and U (K, 1, k)
and its objective is exactly that of the pooled module input. The targets are the k one-hot labels (n, 10k).

The ridge (``kernel_jitter``, lam = jitter * mean diag K) is large, 10, not the rule's 1e-2. Why: a module
reads one slot, so the 10(k - 1) label columns of the other slots are independent of its kernel, and each
adds about Var(y) tr((K + lam I)^-1) to the objective, a term that depends only on the kernel's spectrum.
With a small ridge that term dominates, and it is smallest for mixtures of slots (their pooled pixels are
closer to Gaussian, their kernel matrix better conditioned): measured at k = 2 on 1024 composites, jitter
1e-2 returns w = (0.74, 0.67) and (0.70, -0.72), near-equal mixtures (purity 0.53), for both strategies.
As lam grows, lam^2 (L - ||y||^2 / lam) -> -sum_c y_c^T K y_c, the kernel-target alignment, to which the
unrelated columns add sigma^2 tr K, the same for every w (an RBF kernel has unit diagonal); the minimiser
is then a slot: jitter 10 gives purity 0.98 at k = 2 (docs/cifar.md).

Seeds. A job's seed s fixes: the network initialisation (shared by the two modular methods, so they differ
only in W), its training sample (n_train composites of seen class tuples, drawn in nested chunks: the first
n rows of a larger sample are the sample of size n), its batch order and the kernel rule's randomness. The
held-out class tuples and the fixed test sets come from ``split_seed`` and are the same for every seed and
method, so methods are compared on identical test composites (and identical test-time noise).

Timings (``kernel_s``, ``train_s``, ``eval_s``) are per replica: the stack's wall time divided by S.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from modscale.data import default_cache_dir, load_cifar10, locate_cifar10
from modscale.data.cifar10 import Cifar10Arrays
from modscale.errors import InvalidValue
from modscale.experiments._seeds import mix_seed
from modscale.experiments.experiment import Context, Job
from modscale.models.image import ImageModularNet, MonolithicCNN, slot_cross_entropy
from modscale.tasks.cifar import CompositionalCIFAR
from modscale.training import train

METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-true")
KERNEL_STRATEGIES = ("deflation", "independent")
N_CLASSES = 10
# The kernel rule's search effort per module (deflation): candidates screened, restarts optimised together,
# backfitting passes. Smaller than the rule's defaults (32, 4, 1): at k = 4 they cost 2-3x the time for
# projections as slot-like on 1024 composites (measured); the small tier has about five CPU minutes.
KERNEL_SEARCH = dict(n_candidates=8, restarts=2, passes=0)
_STREAMS = {"init": 1, "train_rows": 2, "order": 3, "kernel": 4}


# --------------------------------------------------------------------------------------------- parsing


def parse_levels(text: str, name: str = "noise_levels") -> tuple[float, ...]:
    """Noise levels written as space-separated numbers ("0.1 0.5 1"); each must be finite and >= 0."""
    values = []
    for part in text.split():
        try:
            v = float(part)
        except ValueError:
            raise InvalidValue(
                f"config key {name!r} must hold space-separated numbers >= 0, got {part!r}"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise InvalidValue(f"config key {name!r}: every noise level must be finite and >= 0, got {part}")
        values.append(v)
    return tuple(dict.fromkeys(values))


def parse_channels(text: str) -> tuple[int, ...]:
    """Conv channels written as space-separated positive integers ("16 32"); 1 to 5 blocks."""
    parts = text.split()
    if not 1 <= len(parts) <= 5 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InvalidValue(
            f"config key 'channels' must hold 1 to 5 space-separated positive integers, got {text!r}"
        )
    return tuple(int(p) for p in parts)


def check_config(c: dict[str, Any]) -> None:
    """Combinations of keys that are not allowed (every single key is range-checked by its Param)."""
    parse_levels(c["noise_levels"])
    parse_channels(c["channels"])
    if c["lr"] <= 0:
        raise InvalidValue(f"config key 'lr' must be > 0, got {c['lr']}")
    if c["kernel_jitter"] <= 0:
        raise InvalidValue(f"config key 'kernel_jitter' must be > 0, got {c['kernel_jitter']}")
    if c["method"] == "modular-kernel" and c["kernel_batch"] > min(c["kernel_samples"], c["n_train"]):
        raise InvalidValue(
            f"config key 'kernel_batch' ({c['kernel_batch']}) must be <= the composites the kernel rule "
            "sees, "
            f"min(kernel_samples, n_train) = {min(c['kernel_samples'], c['n_train'])}"
        )
    if c["k"] >= 2 and round(c["holdout"] * N_CLASSES ** c["k"]) < 1:
        raise InvalidValue(f"config key 'holdout' ({c['holdout']}) holds out no class tuple at k = {c['k']}")


# --------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def _arrays(folder: str, cache_dir: str) -> Cifar10Arrays:
    return load_cifar10(folder, cache_dir)


def _location() -> tuple[str, str]:
    """(data folder, cache folder) as found now ($MODSCALE_DATA, the data home, ../shared/data/cifar10)."""
    _, folder = locate_cifar10(None)
    return str(folder), str(default_cache_dir())


def cifar_arrays() -> Cifar10Arrays:
    """CIFAR-10 from the usual places (:func:`modscale.data.find_cifar10`), loaded once per process.

    Raises :class:`~modscale.errors.InvalidValue` (missing data, a corrupt file, wrong shapes or counts)
    before any training starts.
    """
    return _arrays(*_location())


def build_task(config: dict[str, Any], device: str) -> CompositionalCIFAR:
    """The task of a config: held-out tuples and test sets from ``split_seed``; no fixed training set.

    The last task built is kept (the chunks of one k follow each other), so a sweep normalises the images
    once per k rather than once per chunk; the key includes where the data was found.
    """
    return _task(config["k"], config["holdout"], config["n_test"], config["split_seed"], device, _location())


@functools.lru_cache(maxsize=1)
def _task(k: int, holdout: float, n_test: int, split_seed: int, device: str, location) -> CompositionalCIFAR:
    return CompositionalCIFAR(
        k,
        holdout_fraction=holdout,
        n_test=n_test,
        data=_arrays(*location),
        generator=split_seed,
        device=device,
    )


def training_rows(task: CompositionalCIFAR, n: int, split_seed: int, seed: int) -> torch.Tensor:
    """Seed ``seed``'s training sample: image indices (n, k) of seen class tuples, nested in n
    (:meth:`CompositionalCIFAR.training_rows`, chunk c seeded by (split_seed, seed, c))."""
    return task.training_rows(n, functools.partial(mix_seed, _STREAMS["train_rows"], split_seed, seed))


def replica_batches(task: CompositionalCIFAR, rows: torch.Tensor, batch_size: int, seeds, split_seed: int):
    """Per-replica minibatches X (S, B, 3, 32, 32k), Y (S, B, k) of rows (S, n, k)
    (:meth:`CompositionalCIFAR.replica_batch_source`): replica s's epoch e is ordered by a permutation
    seeded by (split_seed, seed_s, e), so a replica sees the same batches whatever else is in the stack."""
    orders = [functools.partial(mix_seed, _STREAMS["order"], split_seed, s) for s in seeds]
    return task.replica_batch_source(rows, batch_size, orders)


# --------------------------------------------------------------------------------------------- kernel init


def slot_features(task: CompositionalCIFAR, rows: torch.Tensor, pool: int) -> torch.Tensor:
    """The kernel's representation of each slot: pooled normalised pixels, (n, k, 3 (32/pool)^2) float32.

    Average pooling is linear, so pool(sum_j w_j x_j) = sum_j w_j pool(x_j): mixing these features with w is
    exactly the pooled module input z = sum_j w_j x_j.
    """
    X = task.compose(rows, "train")  # (n, 3, 32, 32k)
    if pool > 1:
        X = F.avg_pool2d(X, pool)  # (n, 3, r, r k), r = 32 / pool; pooling never mixes slots
    n, c, r, _ = X.shape
    return X.view(n, c, r, task.k, r).permute(0, 3, 1, 2, 4).reshape(n, task.k, c * r * r)


def kernel_slot_projections(
    task: CompositionalCIFAR, rows: torch.Tensor, config: dict[str, Any], seed: int, device: str
) -> torch.Tensor:
    """The kernel rule's slot projections W (K, k) for one replica, from its first ``kernel_samples`` rows.

    X (n, k, D) pooled slot images and y (n, 10k) one-hot labels; the rule's U (K, 1, k) acts on the slot
    axis, carrying the D pixels along: Z_i = sum_j U_i1j X_:j: (n, 1, D) (DESIGN section 4).
    """
    from modscale.rules import kernel_projections

    rows = rows[: config["kernel_samples"]]  # at most n_train: the rule sees only training composites
    X = slot_features(task, rows, config["kernel_pool"])  # (n, k, D)
    Y = F.one_hot(task.labels(rows, "train"), N_CLASSES).flatten(1).float()  # (n, 10 k)
    U = kernel_projections(
        X,
        Y,
        n_modules=task.k,
        module_dim=1,
        kernel="rbf",
        strategy=config["kernel_strategy"],
        steps=config["kernel_steps"],
        batch_size=config["kernel_batch"],
        jitter=config["kernel_jitter"],
        **KERNEL_SEARCH,
        bandwidth=None,  # median heuristic: the pooled pixels are not on the unit scale of the defaults
        init="random",  # the paper: random starts
        generator=mix_seed(_STREAMS["kernel"], seed),
        device=device,
        progress=False,
    )
    return U.reshape(task.k, task.k).to(torch.float32).cpu()  # (K, 1, k) -> (K, k)


def projection_alignment(W: torch.Tensor) -> dict[str, np.ndarray]:
    """How slot-like projections W (S, K, k) are: per replica, purity and coverage.

    purity = mean_i max_j w_ij^2 / ||w_i||^2 (1: every module reads one slot; 1/k: uniform mixtures);
    coverage = (number of distinct slots argmax_j |w_ij|) / k (1: every slot is some module's main slot).
    """
    W = W.detach().double().cpu()
    share = W.pow(2) / W.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)  # (S, K, k)
    purity = share.max(-1).values.mean(-1)
    main = share.argmax(-1)  # (S, K)
    k = W.shape[-1]
    coverage = torch.tensor([len(set(m.tolist())) / k for m in main])
    return {"purity": purity.numpy(), "coverage": coverage.numpy()}


# --------------------------------------------------------------------------------------------- the run


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return slot_cross_entropy(out, y, "none")  # (S, B): the sum of the k per-slot cross-entropies


def _per_replica(value, S: int) -> np.ndarray:
    return np.broadcast_to(np.atleast_1d(np.asarray(value, dtype=float)), (S,))


def _per_replica_rows(value, S: int) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    return a if a.ndim == 2 else np.broadcast_to(a, (S, a.shape[-1]))


def run(jobs: Sequence[Job], ctx: Context) -> list[dict[str, Any]]:
    """Train the chunk's seeds of one config as one stacked model and evaluate every replica."""
    config = jobs[0].config
    if any(job.config_hash != jobs[0].config_hash for job in jobs):
        raise InvalidValue("a CIFAR chunk must hold the seeds of one config")
    seeds = [job.seed for job in jobs]
    S, k, method = len(seeds), config["k"], config["method"]
    device = ctx.device
    levels = parse_levels(config["noise_levels"])
    channels = parse_channels(config["channels"])
    task = build_task(config, device)  # loads (and validates) the data: any data error is raised here

    rows = torch.stack([training_rows(task, config["n_train"], config["split_seed"], s) for s in seeds])
    inits = [mix_seed(_STREAMS["init"], s) for s in seeds]
    if method == "monolithic":  # as many parameters as the modular network (closed-form counts)
        p = ImageModularNet.count_parameters(k, k, channels, config["hidden"])
        net = MonolithicCNN(
            k, channels, MonolithicCNN.hidden_for(p, k, channels), n_replicas=S, generator=inits
        )
    else:
        net = ImageModularNet(k, k, channels, config["hidden"], n_replicas=S, generator=inits)
    out: list[dict[str, Any]] = [{} for _ in jobs]

    t0 = time.perf_counter()
    if method == "modular-kernel":
        W = torch.stack(
            [kernel_slot_projections(task, rows[i], config, s, device) for i, s in enumerate(seeds)]
        )
        net.set_projections(W)  # (S, K, k)
    elif method == "modular-true":
        net.set_projections(torch.eye(k))  # module i reads slot i
    kernel_s = (time.perf_counter() - t0) / S
    if method != "monolithic":
        start = projection_alignment(net.projections)

    steps = config["epochs"] * math.ceil(config["n_train"] / config["batch_size"])
    batches = replica_batches(task, rows, config["batch_size"], seeds, config["split_seed"])
    t0 = time.perf_counter()
    hist = train(
        net,
        batches,
        steps=steps,
        lr=config["lr"],
        loss=_loss,
        eval_every=steps,
        device=device,
        generator=seeds[0],  # unused by the batch source: every replica's batches come from its own seed
    )
    train_s = (time.perf_counter() - t0) / S

    t0 = time.perf_counter()
    net.eval()
    eval_batch = 1024 if device.startswith("cuda") else 250
    evals = {"": task.evaluate(net, "seen", batch_size=eval_batch)}
    if task.n_holdout > 0:
        evals["ood_"] = task.evaluate(net, "unseen", batch_size=eval_batch)
    evals["noise_"] = task.evaluate(net, "seen", config["noise"], batch_size=eval_batch)
    curve = [task.evaluate(net, "seen", v, batch_size=eval_batch)["per_slot_accuracy"] for v in levels]
    eval_s = (time.perf_counter() - t0) / S

    for prefix, m in evals.items():
        acc, allc = _per_replica(m["per_slot_accuracy"], S), _per_replica(m["all_correct_accuracy"], S)
        slots = _per_replica_rows(m["slot_accuracy"], S)
        for i in range(S):
            out[i][f"{prefix}accuracy"] = float(acc[i])
            out[i][f"{prefix}all_correct"] = float(allc[i])
            if prefix == "":
                out[i]["slot_accuracy"] = [float(v) for v in slots[i]]
    for i in range(S):
        r = out[i]
        if "ood_accuracy" in r:
            r["ood_minus_seen"] = r["ood_accuracy"] - r["accuracy"]
        if levels:
            r["noise_levels"] = list(levels)
            r["noise_accuracy_by_level"] = [float(_per_replica(c, S)[i]) for c in curve]
        r["train_loss"] = float(hist.train[-1, i])  # mean minibatch loss over training
        r["n_params"] = int(net.count())
        r["steps"] = int(steps)
        r["kernel_s"], r["train_s"], r["eval_s"] = kernel_s, train_s, eval_s
        r["n_test"] = int(config["n_test"])
    if method != "monolithic":
        end = projection_alignment(net.projections)
        W_end = net.projections.cpu()
        for i in range(S):
            out[i]["purity_start"] = float(start["purity"][i])
            out[i]["coverage_start"] = float(start["coverage"][i])
            out[i]["purity_end"] = float(end["purity"][i])
            out[i]["coverage_end"] = float(end["coverage"][i])
            out[i]["projections_end"] = W_end[i].tolist()
    return out


def data_available() -> bool:
    """True when CIFAR-10 can be located (the tests skip real-data runs otherwise)."""
    try:
        locate_cifar10(None)
    except InvalidValue:
        return False
    return True


__all__ = [
    "METHODS",
    "KERNEL_STRATEGIES",
    "run",
    "check_config",
    "parse_levels",
    "parse_channels",
    "build_task",
    "training_rows",
    "replica_batches",
    "slot_features",
    "kernel_slot_projections",
    "projection_alignment",
    "cifar_arrays",
    "data_available",
]
