"""Methods, parameter matching, training settings, evaluation and compute accounting for the sine task.

Every sine-task experiment compares *methods* on stacks of jobs that share one shape (a :class:`Setup`):

| method | network | projections |
|---|---|---|
| ``monolithic`` | :class:`~modscale.models.MLP` on x | - |
| ``modular-random`` | :class:`~modscale.models.ModularNet`, K modules | random unit rows, trained |
| ``modular-kernel`` | ModularNet | the kernel rule's answer on the training set, then trained |
| ``modular-none`` | ModularNet, projection "none" | every module sees all of x (MoE-like ablation) |
| ``ensemble`` | E independent MLPs, predictions averaged | - |
| ``modular-oracle`` | ModularNet, projection "fixed" | the task's true U, never trained (upper bound) |

Choices (ours; the paper gives none):

- **Parameter matching: equal trainable parameter count p.** Every method gets the width whose closed-form
  count is closest to the target p (``MLP.width_for``, ``ModularNet.width_for``); an ensemble of E members
  gives each member p / E. Projections count when they are trained (``modular-random``, ``modular-kernel``)
  and not when fixed (``modular-oracle``: its U is a buffer). The exact count is stored as ``n_params``.
- **Ensemble**: E = K members (as many as the modular network has modules), each trained on the same n
  samples from its own initialisation and batch order, with its own early stopping; the ensemble predicts
  the mean of its members.
- **Training** (:data:`TRAINING`, one setting per tier): minibatch Adam at one learning rate for every
  method, a fixed step budget, early stopping on a held-out validation set of ``n_val`` samples (drawn
  afresh, the same for every method and not counted in n) with the weights of the best validation loss kept.
  Depth 2 (two hidden ReLU layers) for the MLP and for every module.
- **Kernel stage** (:data:`KERNEL_RULE`): :func:`modscale.rules.kernel_projections` on the job's own training
  set (its first n samples), strategy ``deflation`` by default (``independent`` is the paper's), rbf kernel;
  the minibatch is min(batch, n). Its wall time, CPU time and FLOPs are recorded separately.
- **Evaluation**: test MSE of the returned weights against the noiseless target on ``n_test`` fresh samples:
  the fraction of unexplained variance, since Var y = 1 (predicting 0 scores 1). ``train`` is the MSE on the
  n training samples, ``ood`` (when asked) the test MSE on :meth:`SineTask.sample_ood`.
- **Compute**: ``train_s`` is the job's share of its stack's training wall time (the stack's time / S),
  ``kernel_s`` the kernel stage's wall time, ``wall_s`` their sum; ``cpu_s`` the same in process CPU time.
  FLOPs are analytic: training 6 p B per step taken (forward 2 p B, backward 4 p B per minibatch of B) plus
  2 p per sample evaluated; the kernel stage as counted by the rule itself (``KernelRuleInfo.flops``: its
  Gram matrices, Cholesky solves, spectral start, screening and Nystrom fits).
- **Seeds**: a job's seed s gives independent streams for its task (U, phases), training pool, validation
  and test sets, initialisation, batches and kernel rule (:func:`seed_for`). The task and data depend on
  the seed only, not on the method, so methods at one seed are compared on the same task and samples
  (paired). A job's training set is drawn for its n alone, or (``n_pool``) is the first n rows of a pool,
  so that sets of growing n are nested; either way it does not depend on which jobs share its stack.

Example::

    setup = Setup("modular-kernel", m=8, k=4, p=2000)
    out = run_stack(setup, seeds=[0, 1, 2], n=[500, 1000, 2000], tier="small")
    out.metrics[0]["test"], out.metrics[0]["kernel_s"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from modscale._checks import check_choice, check_int
from modscale.errors import InvalidValue
from modscale.experiments._seeds import mix_seed
from modscale.experiments.experiment import Param
from modscale.models import MLP, ModularNet
from modscale.tasks import SineTask
from modscale.training import REGIMES as _CLOSED_FORM
from modscale.training import History, TrainConfig, features, fit_min_norm, train

METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-none", "ensemble", "modular-oracle")
MODULAR = ("modular-random", "modular-kernel", "modular-none", "modular-oracle")
_PROJECTION = {
    "modular-random": "linear",
    "modular-kernel": "linear",
    "modular-none": "none",
    "modular-oracle": "fixed",
}
# distinct random streams per job (seed_for); the numbers only need to differ
_PURPOSES = {"task": 1, "train": 2, "val": 3, "test": 4, "ood": 5, "init": 6, "batches": 7, "kernel": 8}


# ---------------------------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Training:
    """Training and evaluation settings of one tier; the choices are in the module docstring."""

    steps: int
    lr: float
    batch_size: int
    patience: int
    eval_every: int
    n_val: int
    n_test: int
    early_stopping: bool = True
    depth: int = 2


@dataclasses.dataclass(frozen=True)
class KernelRule:
    """Options of :func:`modscale.rules.kernel_projections` for the ``modular-kernel`` method."""

    steps: int
    batch_size: int
    restarts: int
    n_candidates: int
    passes: int
    strategy: str = "deflation"
    kernel: str = "rbf"
    init: str = "spectral"


# How a network is trained: Adam (the feature-learning "rich" regime), or to convergence in closed form with
# only its readout (random features) or linearised around its initialisation (lazy): training.linearized.
REGIMES = ("rich", *_CLOSED_FORM)

# What early stopping watches (run_stack's ``validation``), and the share of a job's n held out by "split".
VALIDATION = ("fresh", "split", "none")
VAL_FRACTION = 0.2

TRAINING = {
    "smoke": Training(steps=150, lr=3e-3, batch_size=64, patience=4, eval_every=25, n_val=128, n_test=512),
    "small": Training(steps=1200, lr=3e-3, batch_size=128, patience=6, eval_every=50, n_val=256, n_test=2000),
    "paper": Training(
        steps=20_000, lr=1e-3, batch_size=256, patience=20, eval_every=250, n_val=2000, n_test=10_000
    ),
}
KERNEL_RULE = {
    "smoke": KernelRule(steps=15, batch_size=64, restarts=2, n_candidates=4, passes=0),
    "small": KernelRule(steps=40, batch_size=192, restarts=2, n_candidates=8, passes=0),
    "paper": KernelRule(steps=150, batch_size=512, restarts=4, n_candidates=32, passes=1),
}


def common_params(**defaults: Any) -> tuple[Param, ...]:
    """Config keys every sine experiment shares (override defaults by keyword, e.g. ``p=4000``)."""
    d = {"m": 8, "k": 4, "b": 1, "p": 2000, "lr": 0.0, "steps": 0, **defaults}
    return (
        Param("m", int, d["m"], "input dimension", low=1),
        Param("k", int, d["k"], "task modules", low=1),
        Param("b", int, d["b"], "module input dimension", low=1),
        Param("p", int, d["p"], "trainable parameters per network (all methods matched)", low=8),
        Param("lr", float, d["lr"], "Adam learning rate; 0 = the tier's", low=0.0),
        Param("steps", int, d["steps"], "training steps; 0 = the tier's", low=0),
    )


def training_for(tier: str, config: dict[str, Any] | None = None) -> Training:
    """The tier's :class:`Training`, with ``lr`` / ``steps`` from ``config`` when they are set (non-zero)."""
    check_choice("tier", tier, tuple(TRAINING))
    t = TRAINING[tier]
    config = config or {}
    if config.get("lr"):
        t = dataclasses.replace(t, lr=float(config["lr"]))
    if config.get("steps"):
        t = dataclasses.replace(t, steps=int(config["steps"]))
    return t


def scaled_cost(seconds_small: float, config: dict[str, Any], tier: str, p_measured: int = 2000) -> float:
    """A run's seconds at ``tier`` from ``seconds_small`` measured at the small tier with ``p_measured``
    parameters: scaled by the training FLOPs 6 p B T (batch B, steps T of the tier; ``steps`` of the config
    when set). Early stopping ends many trainings sooner, so this is an upper estimate that the plan's
    calibration on stored runs corrects."""
    t = training_for(tier if tier in TRAINING else "small", config)
    s = TRAINING["small"]
    p = config.get("p", p_measured) or p_measured
    return seconds_small * (p * t.batch_size * t.steps) / (p_measured * s.batch_size * s.steps)


def check_common(config: dict[str, Any]) -> None:
    """The config checks every sine experiment shares, run before any work: module inputs b <= m
    (:class:`Setup` enforces it too, but only once a run builds one)."""
    if config["b"] > config["m"]:
        raise InvalidValue(f"config key 'b' must be <= m = {config['m']}, got {config['b']}")


def stack_key_all_but_n(config: dict[str, Any]) -> tuple:
    """A ``stack_key``: jobs whose configs differ only in n share a stack (one network shape; each replica
    trains on its own first n samples through the trainer's mask)."""
    return tuple(sorted((key, v) for key, v in config.items() if key != "n"))


def seed_for(seed: int, purpose: str, *extra: int) -> int:
    """An integer seed for one purpose of one job (``"task"``, ``"train"``, ``"init"``, ...):
    ``mix_seed(seed, purpose's number, *extra)``, independent streams that depend on (seed, purpose, extra)
    only."""
    check_choice("purpose", purpose, tuple(_PURPOSES))
    return mix_seed(check_int("seed", seed, low=0), _PURPOSES[purpose], *extra)


# ------------------------------------------------------------------------------------------------- setup


@dataclasses.dataclass(frozen=True)
class Setup:
    """The shape shared by one stack of jobs: the task family and the network of a method.

    K: network modules (default k); members: ensemble size (default K); projection: override of a modular
    method's projection (e.g. "nonlinear" for ``modular-random`` on the nonlinear task).
    """

    method: str
    m: int
    k: int
    p: int
    b: int = 1
    K: int | None = None
    depth: int = 2
    nonlinear: bool = False
    noise: float = 0.0
    members: int | None = None
    projection: str | None = None
    regime: str = "rich"

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_choice("regime", self.regime, REGIMES)
        if self.regime != "rich" and self.method in ("ensemble", "modular-none"):
            raise InvalidValue(
                f"regime {self.regime!r} is defined for one network per job, not {self.method!r}"
            )
        check_int("m", self.m, low=1)
        check_int("k", self.k, low=1)
        check_int("b", self.b, low=1, high=self.m)
        check_int("p", self.p, low=8)
        check_int("depth", self.depth, low=1)
        if self.K is not None:
            check_int("K", self.K, low=1)
        if self.members is not None:
            check_int("members", self.members, low=1)
        if self.projection is not None:
            if self.method not in MODULAR:
                raise InvalidValue(
                    f"projection applies to the modular methods {MODULAR}, not {self.method!r}"
                )
            check_choice("projection", self.projection, ("linear", "nonlinear", "none", "fixed"))
        if self.method == "modular-kernel" and self.module_projection != "linear":
            raise InvalidValue("modular-kernel needs linear projections (the kernel rule returns U)")
        if self.method == "modular-oracle" and (self.n_modules != self.k or self.nonlinear):
            raise InvalidValue("modular-oracle needs K = k on the linear task (it uses the true projections)")

    @property
    def n_modules(self) -> int:
        return self.k if self.K is None else self.K

    @property
    def n_members(self) -> int:
        return 1 if self.method != "ensemble" else (self.members or self.n_modules)

    @property
    def module_projection(self) -> str | None:
        return None if self.method not in MODULAR else (self.projection or _PROJECTION[self.method])

    @property
    def net_depth(self) -> int:
        """Hidden layers of the network built: one for random features (the frozen layer), else ``depth``."""
        return 1 if self.regime == "random-features" else self.depth

    def width(self) -> int:
        """The width (of the MLP, of every module, or of every ensemble member) that matches p; for random
        features, the width whose readout has p parameters (p features: the theory's p)."""
        if self.regime == "random-features":
            per = self.p if self.method == "monolithic" else self.p / self.n_modules
            return max(1, round(per) - 1)  # the readout: w weights and a bias (per module)
        if self.method in ("monolithic", "ensemble"):
            return MLP.width_for(max(1, round(self.p / self.n_members)), self.m, self.depth)
        return ModularNet.width_for(
            self.p, self.m, self.n_modules, self.b, self.depth, self.module_projection
        )

    def n_params(self) -> int:
        """Trainable parameters of one network (all members of an ensemble together), closed form; for random
        features, the readout's."""
        w = self.width()
        if self.regime == "random-features":
            return (w + 1) * (1 if self.method == "monolithic" else self.n_modules)
        if self.method in ("monolithic", "ensemble"):
            return self.n_members * MLP.count_parameters(self.m, w, self.depth)
        return ModularNet.count_parameters(
            self.m, self.n_modules, self.b, w, self.depth, self.module_projection
        )

    def build(self, seeds: Sequence[int]) -> torch.nn.Module:
        """A stacked network with one replica per seed (an ensemble: seeds x members replicas)."""
        w = self.width()
        if self.method in ("monolithic", "ensemble"):
            gens = [seed_for(s, "init", e) for s in seeds for e in range(self.n_members)]
            return MLP(self.m, w, self.net_depth, n_replicas=len(gens), generator=gens)
        gens = [seed_for(s, "init") for s in seeds]
        return ModularNet(
            self.m, self.n_modules, self.b, w, self.net_depth, self.module_projection,
            n_replicas=len(gens), generator=gens,
        )  # fmt: skip

    def flops_per_sample(self) -> float:
        """Forward FLOPs per sample of one network: 2 per trainable weight (+ 2 K b m for a fixed U; + the
        frozen layer for random features)."""
        fixed = 2 * self.n_modules * self.b * self.m if self.module_projection == "fixed" else 0
        if self.regime == "random-features":
            fan_in = self.m if self.method == "monolithic" else self.b
            fixed += 2 * (fan_in + 1) * self.n_params()  # the frozen layer: about fan_in + 1 per feature
        return 2.0 * self.n_params() + fixed


# ------------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=256)
def make_task(m: int, k: int, b: int, nonlinear: bool, noise: float, seed: int) -> SineTask:
    """The task of a job (cached: a nonlinear task estimates its normalisation by Monte Carlo once)."""
    return SineTask(m, k, b, nonlinear=nonlinear, noise=noise, generator=seed_for(seed, "task"))


def task_of(setup: Setup, seed: int) -> SineTask:
    """The task a setup names for one seed: every setup with the same (m, k, b, nonlinear, noise, seed)
    shares one planted task, so methods compared at a seed see the same U_i and the same modules."""
    return make_task(setup.m, setup.k, setup.b, setup.nonlinear, setup.noise, seed)


def draw(
    tasks: Sequence[SineTask], n: int, purpose: str, seeds: Sequence[int], *, region: str = "all"
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of every task, stacked: X (S, n, m), y (S, n, 1). ``purpose``: "train" (noisy labels),
    "val" (noisy labels, for early stopping), "test" or "ood" (noiseless targets, for the excess risk)."""
    Xs, ys = [], []
    for task, seed in zip(tasks, seeds, strict=True):
        gen = seed_for(seed, purpose, n)
        if purpose == "ood":
            X, _ = task.sample_ood(n, generator=gen)
        else:
            X, y = task.sample(n, generator=gen, region=region)
        if purpose in ("test", "ood"):
            y = task.target(X)
        Xs.append(X)
        ys.append(y)
    return torch.stack(Xs), torch.stack(ys)


# ----------------------------------------------------------------------------------------- kernel stage


def kernel_stage(
    X: torch.Tensor, y: torch.Tensor, n: Sequence[int], seeds: Sequence[int], setup: Setup, rule: KernelRule,
    device: str = "cpu",
) -> tuple[torch.Tensor, list[dict[str, float]]]:  # fmt: skip
    """Projections U (S, K, b, m) from the kernel rule on each job's first n_s samples, and per job its
    ``kernel_s`` (wall), ``kernel_cpu_s`` and ``flops_kernel``."""
    from modscale.rules import kernel_projections  # the rule is only needed by this method

    Us, costs = [], []
    for s, (n_s, seed) in enumerate(zip(n, seeds, strict=True)):
        t0, c0 = time.perf_counter(), time.process_time()
        U, info = kernel_projections(
            X[s, :n_s], y[s, :n_s], setup.n_modules, setup.b, rule.kernel, rule.strategy,
            steps=rule.steps, batch_size=min(rule.batch_size, n_s), restarts=rule.restarts,
            n_candidates=rule.n_candidates, init=rule.init, passes=rule.passes,
            generator=seed_for(seed, "kernel"), device=device, progress=False, return_info=True,
        )  # fmt: skip
        Us.append(U.cpu())
        costs.append(
            {
                "kernel_s": time.perf_counter() - t0,
                "kernel_cpu_s": time.process_time() - c0,
                "flops_kernel": float(info.flops),  # the rule's own count of the work it did
            }
        )
    return torch.stack(Us), costs


# ------------------------------------------------------------------------------------------------- run


@contextlib.contextmanager
def cpu_threads(device: str, threads: int = 1):
    """Run torch on ``threads`` CPU threads inside the block when ``device`` is the CPU, then restore.

    Why: these networks are small (kernels of microseconds), and on a busy 2-core machine two threads per
    op spend more time synchronising than computing: measured 10x slower than one thread (0.36 s vs 2.5 s
    wall for 150 steps of a 2-replica stack at load average 4). Several stacks in parallel (Ray) use the
    cores instead.
    """
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclasses.dataclass
class StackResult:
    """What :func:`run_stack` returns: one metrics dict per job, the trained stack (an ensemble's members
    are replicas seeds x members), each job's task, the initial projections (S, K, b, m) of linear modular
    methods (None otherwise) and the training history."""

    metrics: list[dict[str, Any]]
    model: torch.nn.Module
    tasks: list[SineTask]
    initial_projections: torch.Tensor | None
    history: History


@torch.no_grad()
def predict(model: torch.nn.Module, X: torch.Tensor, members: int = 1, chunk: int = 8192) -> torch.Tensor:
    """Predictions (S, n, 1) of a stack on X (S, n, m); an ensemble of ``members`` averages its members."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    for start in range(0, X.shape[1], chunk):
        xb = X[:, start : start + chunk].to(dev)
        if members > 1:
            xb = xb.repeat_interleave(members, 0)
        out = model(xb)  # (S * members, chunk, 1)
        outs.append(out.reshape(X.shape[0], members, *out.shape[1:]).mean(1))
    model.train(was_training)
    return torch.cat(outs, 1).cpu()


def mse(pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-replica mean squared error, (S,) float64."""
    return (pred.double() - y.double()).pow(2).mean(dim=(1, 2)).numpy()


def run_stack(
    setup: Setup,
    seeds: Sequence[int],
    n: Sequence[int],
    tier: str = "small",
    *,
    training: Training | None = None,
    rule: KernelRule | None = None,
    n_pool: int | None = None,
    region: str = "all",
    ood: bool = False,
    device: str = "cpu",
    projections: torch.Tensor | None = None,
    callback: Callable[[torch.nn.Module, int], None] | None = None,
    ks: Sequence[int] | None = None,
    validation: str = "fresh",
) -> StackResult:
    """Train one stack: job s has seed ``seeds[s]`` and ``n[s]`` training samples; returns metrics per job.

    training / rule: override the tier's :data:`TRAINING` / :data:`KERNEL_RULE`. n_pool: None (default)
    draws each job's n samples for that n alone; a number makes every training set the first n of a pool of
    n_pool samples (nested sets, e.g. for a search over n; keep it fixed so that a job's data never depend
    on its stack). region: training region ("even" for the out-of-distribution experiment). ood: also report
    the loss on the odd region. projections: start U (S, K, b, m) for linear modular methods instead of the
    method's own (random or kernel). callback(model, step): passed to :func:`~modscale.training.train`,
    which calls it before the first step and at every evaluation (every ``eval_every`` steps), under
    no_grad, to read the weights during training (alignment over training). ks: the task's module count
    per job (monolithic methods only, whose network does not depend on k; default ``setup.k`` for all).
    validation: what early stopping watches. "fresh": ``n_val`` samples drawn apart from the n (not counted
    in n); "split": the last :data:`VAL_FRACTION` of each job's own n samples (counted: the network trains on
    the rest); "none": no early stopping, the weights after the tier's full step budget.

    Metrics per job: test, train, val, [ood], n, n_params, width, steps (taken), train_s, kernel_s, wall_s,
    cpu_s, flops_train, flops_kernel, flops; for linear or fixed projections also recovery_init and
    recovery (:func:`modscale.rules.recovery_score` of the initial and the trained U against the task's).
    """
    check_choice("tier", tier, tuple(TRAINING))
    t = training or TRAINING[tier]
    rule = rule or KERNEL_RULE[tier]
    seeds = [check_int("seed", s, low=0) for s in seeds]
    n = [check_int("n", v, low=2) for v in n]
    if len(seeds) != len(n) or not seeds:
        raise InvalidValue(f"seeds and n must have one entry per job, got {len(seeds)} and {len(n)}")
    if ks is not None:
        if setup.method not in ("monolithic", "ensemble") or len(ks) != len(seeds):
            raise InvalidValue("ks (the task's k per job) needs a monolithic method and one entry per job")
        ks = [check_int("ks", k, low=1) for k in ks]
    if n_pool is not None:
        n_pool = check_int("n_pool", n_pool, low=max(n))
    check_choice("region", region, ("all", "even", "odd"))
    check_choice("validation", validation, VALIDATION)  # "split" leaves >= 1 row each side as n >= 2
    if ood and setup.k < 2:
        raise InvalidValue("ood needs a task with k >= 2 modules (the split is over combinations)")
    S, E = len(seeds), setup.n_members

    if ks is None:
        tasks = [task_of(setup, s) for s in seeds]
    else:  # one task module count per job: only a monolithic network is the same for every k
        tasks = [
            make_task(setup.m, k, setup.b, setup.nonlinear, setup.noise, s)
            for k, s in zip(ks, seeds, strict=True)
        ]
    if n_pool is None:  # each job its own n samples (drawn for that n), zero-padded to the longest
        X = torch.zeros(S, max(n), setup.m)
        y = torch.zeros(S, max(n), 1)
        for s, (task, seed, n_s) in enumerate(zip(tasks, seeds, n, strict=True)):
            Xs, ys = draw([task], n_s, "train", [seed], region=region)
            X[s, :n_s], y[s, :n_s] = Xs[0], ys[0]
    else:  # nested training sets: the first n of one pool
        X, y = draw(tasks, n_pool, "train", seeds, region=region)  # (S, n_pool, m), (S, n_pool, 1)
        # only the rows some job uses: a full-batch step computes on every row given (masked), not just n_s
        X, y = X[:, : max(n)].contiguous(), y[:, : max(n)].contiguous()
    n_val = [t.n_val] * S
    n_train = list(n)
    val_samples = None
    if validation == "split":  # the last rows of each job's own n: counted in n, never trained on
        n_val = [min(v - 1, max(1, round(VAL_FRACTION * v))) for v in n]
        n_train = [v - w for v, w in zip(n, n_val, strict=True)]
        X_val, y_val = torch.zeros(S, max(n_val), setup.m), torch.zeros(S, max(n_val), 1)
        for s, (a, b) in enumerate(zip(n_train, n, strict=True)):
            X_val[s, : b - a], y_val[s, : b - a] = X[s, a:b], y[s, a:b]
        val_samples = n_val
    else:
        X_val, y_val = draw(tasks, t.n_val, "val", seeds, region=region)
    X_test, y_test = draw(tasks, t.n_test, "test", seeds)
    model = setup.build(seeds)

    costs = [{"kernel_s": 0.0, "kernel_cpu_s": 0.0, "flops_kernel": 0.0} for _ in seeds]
    U0 = None
    if projections is not None:
        model.set_projections(projections)
    elif setup.method == "modular-kernel":
        U, costs = kernel_stage(X, y, n, seeds, setup, rule, device)
        model.set_projections(U)
    elif setup.method == "modular-oracle":
        model.set_projections(torch.stack([task.projections for task in tasks]))
    if setup.module_projection in ("linear", "fixed"):
        U0 = model.projections.clone()

    def rep(tensor: torch.Tensor) -> torch.Tensor:  # one copy per ensemble member
        return tensor if E == 1 else tensor.repeat_interleave(E, 0)

    cfg = TrainConfig(
        steps=t.steps, lr=t.lr, batch_size=t.batch_size,
        early_stopping=t.early_stopping and validation != "none",
        patience=t.patience, eval_every=t.eval_every, device=device,
    )  # fmt: skip
    gens = [seed_for(s, "batches", e) for s in seeds for e in range(E)]
    n_rep = [v for v in n_train for _ in range(E)]
    v_rep = None if val_samples is None else [v for v in val_samples for _ in range(E)]
    t0, c0 = time.perf_counter(), time.process_time()
    hist = train(
        model, (rep(X), rep(y)), cfg, generator=gens, val=(rep(X_val), rep(y_val)), n_samples=n_rep,
        val_samples=v_rep, callback=callback,
    )  # fmt: skip
    steps_taken = hist.stopped_step.reshape(S, E).sum(1)
    evals = len(hist.steps)
    train_wall, train_cpu = time.perf_counter() - t0, time.process_time() - c0

    test = mse(predict(model, X_test, E), y_test)
    sq = (predict(model, X[:, : max(n)], E).double() - y[:, : max(n)].double()).pow(2)[..., 0]  # (S, n_max)
    train_loss = np.array([float(sq[s, : n_train[s]].mean()) for s in range(S)])  # the rows it trained on
    if validation == "split":  # each job's own held-out rows
        sq_val = (predict(model, X_val, E).double() - y_val.double()).pow(2)[..., 0]  # (S, max n_val)
        val = np.array([float(sq_val[s, : n_val[s]].mean()) for s in range(S)])
    elif validation == "none":
        val = np.full(S, np.nan)  # nothing was selected on validation data
    else:
        val = mse(predict(model, X_val, E), y_val)
    ood_loss = None
    if ood:
        X_ood, y_ood = draw(tasks, t.n_test, "ood", seeds)
        ood_loss = mse(predict(model, X_ood, E), y_ood)

    recovery = _recovery(model, U0, tasks) if U0 is not None else None
    f = setup.flops_per_sample()  # all members of an ensemble together
    metrics = []
    for s in range(S):
        B = min(t.batch_size, n_train[s])
        watched = 0 if validation == "none" else n_val[s]
        evaluated = watched * (evals + 1) + n[s] + t.n_test * (2 if ood else 1)
        flops_train = 3 * (f / E) * B * float(steps_taken[s]) + f * evaluated
        row = {
            "test": float(test[s]),
            "train": float(train_loss[s]),
            "val": float(val[s]),
            "n": n[s],
            "n_train": n_train[s],
            "n_params": setup.n_params(),
            "width": setup.width(),
            "steps": int(steps_taken[s]) // E,
            "train_s": train_wall / S,
            "kernel_s": costs[s]["kernel_s"],
            "wall_s": train_wall / S + costs[s]["kernel_s"],
            "cpu_s": train_cpu / S + costs[s]["kernel_cpu_s"],
            "flops_train": flops_train,
            "flops_kernel": costs[s]["flops_kernel"],
            "flops": flops_train + costs[s]["flops_kernel"],
        }
        if ood_loss is not None:
            row["ood"] = float(ood_loss[s])
        if recovery is not None:
            row["recovery_init"], row["recovery"] = recovery[s]
        metrics.append(row)
    return StackResult(metrics, model, tasks, U0, hist)


def fit_stack(
    setup: Setup,
    seeds: Sequence[int],
    n: Sequence[int],
    tier: str = "small",
    *,
    rule: KernelRule | None = None,
    n_pool: int | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """:func:`run_stack` for the closed-form regimes (``setup.regime`` "random-features" or "lazy"): job s
    (seed ``seeds[s]``, ``n[s]`` samples) is the network of that seed, initialised as the rich regime's,
    trained to convergence by the minimum-norm least-squares fit (:mod:`modscale.training.linearized`).

    Training sets are the first n of one pool of ``n_pool`` samples (default: the largest n), as in
    run_stack with ``n_pool``: a seed's features are computed once and every n of it is a leading block.
    modular-kernel's projections depend on n (the rule sees the job's n samples), so its jobs are one
    network each. Nothing is selected on validation data: every one of the n samples is fitted.

    Metrics per job: test, train, n, n_train, n_params (the fitted parameters: p), width, steps (0),
    features_s, fit_s, kernel_s, wall_s, cpu_s, flops_fit (Gram products and solves), flops_kernel, flops;
    recovery_init and recovery for linear projections (equal: nothing moves U).
    """
    check_choice("tier", tier, tuple(TRAINING))
    if setup.regime == "rich":
        raise InvalidValue("fit_stack solves the closed-form regimes; train the rich one with run_stack")
    t, rule = TRAINING[tier], rule or KERNEL_RULE[tier]
    seeds = [check_int("seed", s, low=0) for s in seeds]
    n = [check_int("n", v, low=2) for v in n]
    if len(seeds) != len(n) or not seeds:
        raise InvalidValue(f"seeds and n must have one entry per job, got {len(seeds)} and {len(n)}")
    n_pool = max(n) if n_pool is None else check_int("n_pool", n_pool, low=max(n))
    per_n = setup.method == "modular-kernel"
    # one network per seed, or per job where the projections depend on n
    groups: dict[tuple, list[int]] = {}
    for j, (seed, n_j) in enumerate(zip(seeds, n, strict=True)):
        groups.setdefault((seed, n_j) if per_n else (seed,), []).append(j)
    keys = list(groups)
    net_seeds = [key[0] for key in keys]
    tasks = [task_of(setup, s) for s in net_seeds]
    X, y = draw(tasks, n_pool, "train", net_seeds)  # the rich regime's pool: the same samples per seed
    X_test, y_test = draw(tasks, t.n_test, "test", net_seeds)
    tops = [max(n[j] for j in groups[key]) for key in keys]
    X, y = X[:, : max(tops)].contiguous(), y[:, : max(tops)].contiguous()
    costs = [{"kernel_s": 0.0, "kernel_cpu_s": 0.0, "flops_kernel": 0.0} for _ in keys]
    U = None
    if setup.method == "modular-kernel":
        U, costs = kernel_stage(X, y, tops, net_seeds, setup, rule, device)
    elif setup.method == "modular-oracle":
        U = torch.stack([task.projections for task in tasks])

    c0 = time.process_time()
    rows: dict[int, dict[str, Any]] = {}
    for g, key in enumerate(keys):
        # one network at a time (replica g of the stack, built alone: the same weights), its features on
        # its own first rows only: G networks x N rows x P features at once would not fit in memory
        model = setup.build([net_seeds[g]])
        if U is not None:
            model.set_projections(U[g : g + 1])
        U0 = model.projections.clone() if setup.module_projection in ("linear", "fixed") else None
        t0 = time.perf_counter()
        Phi, f0 = features(model, X[g : g + 1, : tops[g]], setup.regime)  # (1, top, P), (1, top)
        Phi_test, f0_test = features(model, X_test[g : g + 1], setup.regime)
        features_s = time.perf_counter() - t0
        P = Phi.shape[-1]
        recovery = _recovery(model, U0, [tasks[g]])[0] if U0 is not None else None
        sizes = sorted({n[j] for j in groups[key]})
        t1 = time.perf_counter()
        pred, residual = fit_min_norm(
            Phi, y[g : g + 1, : tops[g], 0].double() - f0, sizes, Phi_test, train=True
        )
        fit_s = time.perf_counter() - t1
        del Phi
        pred = pred[0] + f0_test[0]  # (sizes, T)
        test = (pred - y_test[g, :, 0].double()).pow(2).mean(1)
        small = [v for v in sizes if v <= P]
        big = max([v for v in sizes if v > P], default=0)
        flops = 2.0 * (max(small, default=0) ** 2) * P + 2.0 * big * P * P  # the Gram matrices
        flops += sum(min(v, P) ** 3 / 3 for v in sizes)  # their Cholesky factorisations
        for i, v in enumerate(sizes):
            row = {
                "test": float(test[i]),
                "train": float(residual[0, i]),
                "n": v,
                "n_train": v,
                "n_params": setup.n_params(),
                "width": setup.width(),
                "steps": 0,
                "features_s": features_s / len(sizes),
                "fit_s": fit_s / len(sizes),
                "kernel_s": costs[g]["kernel_s"],
                "wall_s": (features_s + fit_s) / len(sizes) + costs[g]["kernel_s"],
                "cpu_s": (time.process_time() - c0) / len(n) + costs[g]["kernel_cpu_s"],
                "flops_fit": flops / len(sizes),
                "flops_kernel": costs[g]["flops_kernel"],
                "flops": flops / len(sizes) + costs[g]["flops_kernel"],
            }
            if recovery is not None:
                row["recovery_init"], row["recovery"] = recovery
            for j in groups[key]:
                if n[j] == v:
                    rows[j] = dict(row)
    return [rows[j] for j in range(len(n))]


# The probe's training time on the machine the sine experiments' cost constants were measured on: a 2-core AMD
# EPYC (CPU family 25, model 17), one thread, nothing else running, 2026-12-04 (min of two after a warm-up:
# 0.181-0.188 s). The constants are seconds per run with two workers side by side, as `make run` runs them.
PROBE_REFERENCE_S = 0.182


def probe(device_label: str) -> tuple[float, str]:
    """This machine's speed on the sine networks against the machine their cost constants were measured on:
    a fixed training (3 stacked modular networks, m = 8, k = 4, p = 2000, 150 Adam steps of 128 samples)
    timed here over :data:`PROBE_REFERENCE_S`. Shared by every sine experiment (one probe, one cost family:
    stored runs of one calibrate the others); about a second."""
    device = device_label.split(" ")[0] if device_label.startswith("cuda") else "cpu"
    setup = Setup("modular-oracle", m=8, k=4, p=2000)
    training = Training(
        steps=150, lr=3e-3, batch_size=128, patience=10**6, eval_every=50, n_val=256, n_test=512
    )

    def once() -> float:
        start = time.perf_counter()
        run_stack(setup, [0, 1, 2], [1000] * 3, "small", training=training, device=device)
        return time.perf_counter() - start

    once()  # warm-up: first-call costs (allocator, lazy initialisation) are not what a sweep pays per run
    measured = min(once(), once())
    return measured / PROBE_REFERENCE_S, "probe: 150 training steps of a stacked sine network timed here"


def _recovery(model, U0: torch.Tensor, tasks: Sequence[SineTask]) -> list[tuple[float, float]]:
    """(initial, final) recovery score of each replica's projections against its task's true ones."""
    from modscale.rules import recovery_score

    U1 = model.projections.cpu()
    return [
        (float(recovery_score(U0[s], task.projections)), float(recovery_score(U1[s], task.projections)))
        for s, task in enumerate(tasks)
    ]


__all__ = [
    "METHODS",
    "MODULAR",
    "Training",
    "KernelRule",
    "TRAINING",
    "KERNEL_RULE",
    "common_params",
    "training_for",
    "check_common",
    "stack_key_all_but_n",
    "probe",
    "PROBE_REFERENCE_S",
    "VALIDATION",
    "VAL_FRACTION",
    "REGIMES",
    "fit_stack",
    "seed_for",
    "Setup",
    "make_task",
    "task_of",
    "draw",
    "kernel_stage",
    "StackResult",
    "cpu_threads",
    "predict",
    "mse",
    "run_stack",
]
