"""Adam training of S stacked replicas as one computation (DESIGN section 5).

``train(model, data, config, generator=..., val=..., test=...)`` minimises, for every replica s,

    L_s(theta_s) = (1 / n_s) sum_{j <= n_s} loss(f_s(x_sj), y_sj)

by Adam on the sum over replicas sum_s L_s: replica s's parameters receive exactly the gradient of its own
loss, so the stack trains S independent networks (each with its own learning rate, sample count, batches and
early stopping) and gives what training them one by one gives, to float32 rounding.

Model protocol (generic over nn.Module; the trainer imports no model):

- a *stacked* model has an int attribute ``n_replicas`` = S; every trainable parameter has leading
  dimension S; ``model(x)`` with x (n, ...) shared by all replicas (used only when S > 1) or x (S, n, ...)
  returns (S, n, ...). A single-replica stacked model is always called with (1, n, ...).
- any other nn.Module is one network (S = 1), called as ``model(x)`` with x (n, ...) returning (n, ...).
- an ``in_dim`` attribute, when present, is checked against the inputs' last dimension.

Data protocol:

- tensors ``(X, y)``. Targets are vectors per sample: y (n, q) is shared by all replicas, y (S, n, q) gives
  every replica its own targets (e.g. its own label noise). Inputs: when the model declares ``in_dim`` (vector
  inputs), X (n, in_dim) is shared and X (S, n, in_dim) per replica, independently of y; otherwise X follows
  y (X (n, ...) with y (n, q), X (S, n, ...) with y (S, n, q)). ``n_samples`` (S,) restricts replica s to
  the first n_s rows (a mask), so one stack can sweep the sample size n. Inputs and float targets must be
  finite.
- a batch source: a callable ``batch(step, generator) -> (X, y)`` called once per step with the step index
  (0-based) and the trainer's CPU torch.Generator (the first one when a sequence is given), returning tensors
  in the same layouts. Use it for data built on the fly (e.g. composite images); it needs ``steps`` (an epoch
  is undefined).

Loss: "mse" (per sample, the mean over output columns of (f - y)^2) or a callable
``loss(pred (S, B, ...), y (S, B, ...)) -> (S, B)`` of per-sample losses, e.g. a sum of k cross-entropies.

Minibatches: with ``batch_size`` B, each replica draws batches from its own random permutation of its n_s
samples, epoch after epoch (the last batch of an epoch may be smaller; B_s = min(B, n_s)). The permutations
come from ``generator``: one generator, seed or None (seed 0) shared by all replicas, or a sequence of S, one
per replica; with per-replica seeds replica s sees exactly the batches that training it alone with its seed
gives. Without ``batch_size`` training is full batch.

Example::

    net = MLP(8, 64, 2, n_replicas=4, generator=[0, 1, 2, 3])
    hist = train(net, (X, y), steps=2000, lr=torch.tensor([1e-3, 1e-3, 3e-3, 3e-3]), batch_size=128,
                 n_samples=[100, 1000, 100, 1000], val=(Xv, yv), test=(Xt, yt), early_stopping=True,
                 generator=[0, 1, 2, 3])
    hist.final_test        # (4,) test loss of each replica, with its best validation weights
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modscale._checks import check_choice, check_int
from modscale._torch import (
    as_generators,
    compile_unavailable,
    flush_denormals,
    keep_freed_memory,
    resolve_device,
)
from modscale.errors import InvalidType, InvalidValue, NonFiniteLossError
from modscale.training.adam import StackedAdam

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchSource = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train` (all keyword overrides of ``train`` are fields of this class).

    steps / epochs: exactly one (epochs count each replica's own n_s; a replica that finishes its epochs
        first is frozen). lr: a number or a sequence/tensor of S per-replica learning rates.
    batch_size: None for full batch. eval_every: steps between history rows (default: about 50 rows).
    early_stopping: keep each replica's weights with the best validation loss and stop a replica after
        ``patience`` evaluations without an improvement larger than ``min_delta`` (needs ``val``).
    on_nonfinite: "raise" (NonFiniteLossError naming replicas and step) or "freeze" (freeze the replica at
        its last finite weights, mark it diverged, keep training the others).
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or a torch.device.
    weight_decay: L2 penalty (weight_decay / 2) |theta|^2 on every trainable parameter, added to each
        replica's loss through its gradient (as torch.optim.Adam's weight_decay); not part of the reported
        losses.
    eval_batch_size: rows per forward pass when evaluating (bounds memory). compile: wrap the model in
        torch.compile for training (where no C++ compiler or Python headers are found, a RuntimeWarning
        says so and training runs uncompiled). It pays only for long trainings of one shape: each new
        model compiles for 2-5 s on a 2-core CPU (benchmarks/README.md), so the experiments leave it off.
    """

    steps: int | None = None
    epochs: int | None = None
    lr: float | Sequence[float] | torch.Tensor = 1e-3
    batch_size: int | None = None
    loss: str | LossFn = "mse"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    eval_every: int | None = None
    early_stopping: bool = False
    patience: int = 10
    min_delta: float = 0.0
    weight_decay: float = 0.0
    on_nonfinite: str = "raise"
    device: str | torch.device = "auto"
    eval_batch_size: int = 8192
    compile: bool = False


@dataclass
class History:
    """What :func:`train` returns: losses per evaluation (rows) and replica (columns), float64 numpy arrays.

    steps (T,): the step after which each row was recorded. train (T, S): mean minibatch loss since the
    previous row. val, test (T, S) or None. best_step (S,): step whose weights the replica ends with.
    stopped_step (S,): last step at which the replica was updated. diverged (S,): replicas frozen by
    on_nonfinite="freeze". final_train/final_val/final_test (S,): losses of the returned weights on the
    whole training set (None for a batch source), validation and test sets.
    """

    steps: np.ndarray
    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray | None
    best_step: np.ndarray
    stopped_step: np.ndarray
    diverged: np.ndarray
    final_train: np.ndarray | None
    final_val: np.ndarray | None
    final_test: np.ndarray | None
    wall_s: float
    device: str
    n_replicas: int
    config: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as lists, NaN kept as float('nan')."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


# validation ------------------------------------------------------------------------------------------------
def _n_replicas(model: nn.Module) -> tuple[int, bool]:
    S = getattr(model, "n_replicas", None)
    if S is None:
        return 1, False
    if isinstance(S, bool) or not isinstance(S, numbers.Integral):
        raise InvalidType(f"model.n_replicas must be an int, got {S!r}")
    if S < 1:
        raise InvalidValue(f"model.n_replicas (S) must be >= 1, got {S}")
    for name, p in model.named_parameters():
        if p.requires_grad and (p.dim() == 0 or p.shape[0] != S):
            raise InvalidValue(
                f"parameter {name!r} has shape {tuple(p.shape)}; a stacked model needs leading dimension "
                f"n_replicas = {S} on every trainable parameter"
            )
    return int(S), True


def _check_pair(name: str, pair, S: int, in_dim: int | None) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    """Validate (X, y) against the data protocol; returns (X, y, X shared, y shared)."""
    if not (isinstance(pair, tuple | list) and len(pair) == 2):
        raise InvalidType(f"{name} must be a pair (X, y) of tensors, got {type(pair).__name__}")
    X, y = pair
    for what, t in (("X", X), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise InvalidType(f"{name} {what} must be a torch.Tensor, got {type(t).__name__}")
    if y.dim() not in (2, 3) or (y.dim() == 3 and y.shape[0] != S):
        raise InvalidValue(
            f"{name} y must have shape (n, q) (shared) or (S={S}, n, q) (one per replica), "
            f"got {tuple(y.shape)}"
        )
    y_shared = y.dim() == 2
    n = y.shape[-2]
    if in_dim is not None:
        if X.dim() not in (2, 3) or X.shape[-1] != in_dim or (X.dim() == 3 and X.shape[0] != S):
            raise InvalidValue(
                f"{name} X must have shape (n, in_dim={in_dim}) or (S={S}, n, in_dim={in_dim}) to match the "
                f"model's input width, got {tuple(X.shape)}"
            )
        x_shared = X.dim() == 2
    else:
        x_shared = y_shared
        if not x_shared and (X.dim() < 2 or X.shape[0] != S):
            raise InvalidValue(f"{name} X must have shape (S={S}, n, ...) like y, got {tuple(X.shape)}")
    rows = X.shape[0] if x_shared else X.shape[1]
    if rows != n:
        raise InvalidValue(f"{name} X and y must have the same number of samples, got {rows} and {n}")
    if n < 1:
        raise InvalidValue(f"{name} must hold at least one sample, got n = 0")
    if not X.is_floating_point():
        raise InvalidType(f"{name} X must be a floating-point tensor, got dtype {X.dtype}")
    if not torch.isfinite(X).all():
        raise InvalidValue(f"{name} X contains NaN or inf; every input must be finite")
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise InvalidValue(f"{name} y contains NaN or inf; every target must be finite")
    return X, y, x_shared, y_shared


def _check_lr(lr, S: int) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(lr.cpu() if isinstance(lr, torch.Tensor) else lr, dtype=np.float64))
    except (TypeError, ValueError):
        raise InvalidType(f"lr must be a number or a sequence of S = {S} numbers, got {lr!r}") from None
    if t.dim() == 0:
        t = t.expand(S)
    if t.shape != (S,):
        raise InvalidValue(
            f"lr must be a number or have one entry per replica (S = {S}), got shape {tuple(t.shape)}"
        )
    if not (torch.isfinite(t).all() and (t > 0).all()):
        raise InvalidValue(f"lr must be positive and finite, got {t.tolist()}")
    return t.to(torch.float32)


def _check_config(cfg: TrainConfig, batch_source: bool) -> None:
    if (cfg.steps is None) == (cfg.epochs is None):
        raise InvalidValue("give exactly one of steps and epochs")
    if cfg.steps is not None:
        check_int("steps", cfg.steps, low=1)
    if cfg.epochs is not None:
        check_int("epochs", cfg.epochs, low=1)
        if batch_source:
            raise InvalidValue("epochs needs a fixed data set; a batch source trains for a number of steps")
    if cfg.batch_size is not None:
        check_int("batch_size", cfg.batch_size, low=1)
    if cfg.eval_every is not None:
        check_int("eval_every", cfg.eval_every, low=1)
    check_int("patience", cfg.patience, low=1)
    check_int("eval_batch_size", cfg.eval_batch_size, low=1)
    if not (isinstance(cfg.loss, str) and cfg.loss == "mse") and not callable(cfg.loss):
        raise InvalidValue(
            f"loss must be 'mse' or a callable (pred, y) -> per-sample losses, got {cfg.loss!r}"
        )
    betas = cfg.betas
    if not (
        isinstance(betas, tuple | list)
        and len(betas) == 2
        and all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in betas)
    ):
        raise InvalidType(f"betas must be two numbers (beta1, beta2), got {betas!r}")
    if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
        raise InvalidValue(f"betas must lie in [0, 1), got {cfg.betas}")
    for name in ("eps", "min_delta", "weight_decay"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidType(f"{name} must be a number, got {value!r}")
    if not (cfg.eps > 0 and math.isfinite(cfg.eps)):
        raise InvalidValue(f"eps must be positive and finite, got {cfg.eps}")
    if not (cfg.min_delta >= 0 and math.isfinite(cfg.min_delta)):
        raise InvalidValue(f"min_delta must be finite and >= 0, got {cfg.min_delta}")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise InvalidValue(f"weight_decay must be finite and >= 0, got {cfg.weight_decay}")
    for name in ("early_stopping", "compile"):
        if not isinstance(getattr(cfg, name), bool):
            raise InvalidType(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    check_choice("on_nonfinite", cfg.on_nonfinite, ("raise", "freeze"))


# batches ---------------------------------------------------------------------------------------------------
_CHUNK = 64  # steps of minibatch indices drawn and sent to the device at once


class _Batches:
    """Per-replica epoch permutations of each replica's n_s samples, served as (S, T, B) index chunks."""

    def __init__(self, n_samples: list[int], B: int, gens: list[torch.Generator]):
        self.n = n_samples
        self.Bs = [min(B, n) for n in n_samples]
        self.B = max(self.Bs)
        self.per_epoch = [math.ceil(n / b) for n, b in zip(n_samples, self.Bs, strict=True)]
        self.gens = gens
        self.rows: list[list[torch.Tensor]] = [[] for _ in n_samples]  # pending batch rows per replica
        self.have = [0] * len(n_samples)

    def _epoch(self, s: int) -> torch.Tensor:
        n, b, r = self.n[s], self.Bs[s], self.per_epoch[s]
        perm = torch.randperm(n, generator=self.gens[s])
        rows = torch.full((r * b,), -1, dtype=torch.long)
        rows[:n] = perm
        rows = rows.view(r, b)
        if b < self.B:
            rows = torch.cat([rows, torch.full((r, self.B - b), -1, dtype=torch.long)], dim=1)
        return rows  # (batches per epoch, B), -1 = padding

    def take(self, T: int) -> torch.Tensor:
        out = []
        for s in range(len(self.n)):
            while self.have[s] < T:
                e = self._epoch(s)
                self.rows[s].append(e)
                self.have[s] += e.shape[0]
            pending = torch.cat(self.rows[s])
            out.append(pending[:T])
            self.rows[s] = [pending[T:]]
            self.have[s] -= T
        return torch.stack(out)  # (S, T, B)


# the loop --------------------------------------------------------------------------------------------------
def _mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = (pred - y).pow(2)
    return d.reshape(d.shape[0], d.shape[1], -1).mean(-1)  # (S, B)


def train(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor] | BatchSource,
    config: TrainConfig | None = None,
    *,
    generator=None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_samples: Sequence[int] | torch.Tensor | None = None,
    val_samples: Sequence[int] | torch.Tensor | None = None,
    callback: Callable[[nn.Module, int], None] | None = None,
    **overrides,
) -> History:
    """Train ``model`` (all its replicas at once) with Adam; returns a :class:`History`.

    ``config`` holds the hyperparameters; keyword ``overrides`` replace its fields (``steps=...``). Every
    argument is validated before any work starts. The model is moved to the chosen device and left there,
    holding the final weights (the best validation weights under early stopping).

    ``n_samples`` / ``val_samples``: per replica, how many leading rows of the training / validation data it
    uses (replicas trained on nested subsets of one array; a validation split of each replica's own data).

    ``callback(model, step)``, when given, is called before the first step (step 0) and at every history
    row (step = steps done), in eval mode under ``torch.no_grad()``: a way to read the weights during
    training (e.g. the projections' alignment) without restarting the optimiser. It must not change them.
    """
    # validation, before any work --------------------------------------------------------------------------
    cfg = config if config is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise InvalidType(f"config must be a TrainConfig or None, got {type(cfg).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InvalidValue(f"unknown training option(s) {unknown}; allowed: {sorted(names)}")
    cfg = dataclasses.replace(cfg, **overrides)
    if not isinstance(model, nn.Module):
        raise InvalidType(f"model must be a torch.nn.Module, got {type(model).__name__}")
    S, stacked = _n_replicas(model)
    in_dim = getattr(model, "in_dim", None)
    in_dim = int(in_dim) if isinstance(in_dim, numbers.Integral) and not isinstance(in_dim, bool) else None
    source = callable(data) and not isinstance(data, tuple | list)
    _check_config(cfg, source)
    lr = _check_lr(cfg.lr, S)
    gens = as_generators(generator, S)
    device = resolve_device(cfg.device)
    loss_fn: LossFn = _mse if cfg.loss == "mse" else cfg.loss
    X = y = None
    n_list = None
    if source:
        if n_samples is not None:
            raise InvalidValue("n_samples applies to tensor data, not to a batch source")
    else:
        X, y, x_shared, y_shared = _check_pair("data", data, S, in_dim)
        n = y.shape[-2]
        n_list = [n] * S if n_samples is None else _check_n_samples(n_samples, S, n)
    evals = {}
    for name, pair in (("val", val), ("test", test)):
        if pair is not None:
            evals[name] = _check_pair(name, pair, S, in_dim)
    val_list = None
    if val_samples is not None:
        if val is None:
            raise InvalidValue("val_samples needs val")
        val_list = _check_n_samples(val_samples, S, val[1].shape[-2], "val_samples")
    if cfg.early_stopping and "val" not in evals:
        raise InvalidValue("early_stopping needs a validation set: pass val=(X_val, y_val)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidValue("model has no trainable parameters")
    if callback is not None and not callable(callback):
        raise InvalidType(
            f"callback must be callable as callback(model, step), got {type(callback).__name__}"
        )

    # Denormal floats (Adam's moments of near-zero gradients) are ~100x slower on CPUs: flushed to zero
    # while training (modscale._torch.flush_denormals), the caller's setting restored afterwards.
    if device.type == "cpu":
        keep_freed_memory()  # activations stay in malloc's heap between steps (modscale._torch)
    with flush_denormals(device):
        # setup ---------------------------------------------------------------------------------------
        model.to(device)
        net = model
        if cfg.compile:
            reason = compile_unavailable()
            if reason is None:
                net = torch.compile(model)
            else:
                warnings.warn(f"compile=True: {reason}; training without torch.compile", RuntimeWarning, 2)
        opt = StackedAdam(
            params, lr.to(device), S, cfg.betas, cfg.eps, replica_dim=stacked, weight_decay=cfg.weight_decay
        )
        if X is not None:
            X, y = X.to(device), y.to(device)
        evals = {
            k: tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in v) for k, v in evals.items()
        }

        def forward(x: torch.Tensor, shared: bool, f=net) -> torch.Tensor:  # -> (S, n, ...)
            if not stacked:
                return f(x if shared else x[0]).unsqueeze(0)
            out = f(x.unsqueeze(0) if shared and S == 1 else x)
            if out.shape[0] != S:
                raise InvalidValue(f"a stacked model must return (S={S}, n, ...), got {tuple(out.shape)}")
            return out

        def per_replica(t: torch.Tensor, shared: bool) -> torch.Tensor:  # (n, ...) -> (S, n, ...) view
            return t.unsqueeze(0).expand(S, *t.shape) if shared else t

        full_batch = source or cfg.batch_size is None or cfg.batch_size >= max(n_list)
        if n_list is not None:
            full_w = _leading_weights(n_list, y.shape[-2], device)  # replica s: the mean of its first n_s
        eval_w = {}
        if val_list is not None:
            eval_w["val"] = _leading_weights(val_list, evals["val"][1].shape[-2], device)
        per_epoch = [1] * S if full_batch else [math.ceil(v / min(cfg.batch_size, v)) for v in n_list]
        total_steps = [cfg.steps] * S if cfg.steps is not None else [cfg.epochs * r for r in per_epoch]
        T_max = max(total_steps)
        eval_every = cfg.eval_every or max(1, T_max // 50)
        # masking costs a few elementwise kernels per step; plain steps when every replica runs every step
        masked = cfg.early_stopping or cfg.on_nonfinite == "freeze" or len(set(total_steps)) > 1
        steps_left = torch.tensor(total_steps, device=device)
        active = torch.ones(S, dtype=torch.bool, device=device)
        first_bad = torch.full((S,), -1, dtype=torch.long, device=device)
        last_step = torch.zeros(S, dtype=torch.long, device=device)
        best_val = torch.full((S,), math.inf, device=device)
        best_step = torch.zeros(S, dtype=torch.long, device=device)
        since_best = torch.zeros(S, dtype=torch.long, device=device)
        best_params = [p.detach().clone() for p in params] if cfg.early_stopping else None
        batches = None if full_batch else _Batches(n_list, cfg.batch_size, gens)
        replica_index = torch.arange(S, device=device)[:, None]
        rows_steps, rows_train, rows_eval = [], [], {k: [] for k in evals}
        acc, acc_n, chunk = torch.zeros(S, device=device), 0, None

        def evaluate(Xe, ye, xs, ys, weights=None) -> torch.Tensor:  # (S,) mean per-sample loss
            n_e = ye.shape[-2]
            total = torch.zeros(S, device=device)
            for start in range(0, n_e, cfg.eval_batch_size):
                sl = slice(start, start + cfg.eval_batch_size)
                xb = Xe[sl] if xs else Xe[:, sl]
                yb = per_replica(ye[sl], True) if ys else ye[:, sl]
                per = loss_fn(forward(xb, xs, f=model), yb)  # (S, b)
                total += (per * weights[:, sl]).sum(1) if weights is not None else per.sum(1) / n_e
            return total

        def raise_if_nonfinite() -> None:
            if cfg.on_nonfinite == "raise":
                bad = first_bad >= 0
                if bool(bad.any()):  # a host sync, only at evaluation points
                    replicas = torch.nonzero(bad).flatten().tolist()
                    raise NonFiniteLossError(
                        replicas, int(first_bad[bad].min()), "try a smaller learning rate"
                    )

        def observe(step: int) -> None:
            if callback is not None:
                model.eval()
                with torch.no_grad():
                    callback(model, step)
                model.train()

        # the loop ---------------------------------------------------------------------------------------
        observe(0)
        model.train()
        xs = ys = True
        t0 = time.perf_counter()
        for step in range(T_max):
            if source:
                xb, yb = data(step, gens[0])
                if step == 0:  # the first batch is checked in full; later ones must keep its layout
                    _, _, xs, ys = _check_pair("batch", (xb, yb), S, in_dim)
                xb, yb = xb.to(device, non_blocking=True), per_replica(yb.to(device, non_blocking=True), ys)
                w = None
            elif full_batch:
                xb, xs, yb, w = X, x_shared, per_replica(y, y_shared), full_w
            else:
                t = step % _CHUNK
                if t == 0:
                    chunk = batches.take(_CHUNK).to(device, non_blocking=True)  # (S, CHUNK, B)
                idx = chunk[:, t]  # (S, B); -1 pads replicas whose batch is smaller
                valid = idx >= 0
                idx = idx.clamp_min(0)
                xb, xs = (X[idx] if x_shared else X[replica_index, idx]), False  # (S, B, ...)
                yb = y[idx] if y_shared else y[replica_index, idx]
                w = valid.float() / valid.sum(1, keepdim=True).float()
            per = loss_fn(forward(xb, xs), yb)  # (S, B)
            loss_s = per.mean(1) if w is None else (per * w).sum(1)  # (S,)
            opt.zero_grad()
            loss_s.sum().backward()  # the sum: replica s gets exactly the gradient of its own loss
            loss_s = loss_s.detach()
            finite = torch.isfinite(loss_s)
            first_bad = torch.where(active & ~finite & (first_bad < 0), step, first_bad)
            if masked:
                active = active & (steps_left > 0)
                if cfg.on_nonfinite == "freeze":
                    active = active & finite
                opt.step(active)
                last_step = torch.where(active, step + 1, last_step)
                steps_left = steps_left - active.long()
            else:
                opt.step()
            acc += loss_s
            acc_n += 1

            if (step + 1) % eval_every == 0 or step + 1 == T_max:
                raise_if_nonfinite()
                model.eval()
                with torch.no_grad():
                    rows_steps.append(step + 1)
                    rows_train.append(acc / acc_n)
                    acc, acc_n = torch.zeros(S, device=device), 0
                    for k, (Xe, ye, xse, yse) in evals.items():
                        rows_eval[k].append(evaluate(Xe, ye, xse, yse, eval_w.get(k)))
                    if cfg.early_stopping:
                        v = rows_eval["val"][-1]
                        improved = active & (v < best_val - cfg.min_delta)
                        best_val = torch.where(improved, v, best_val)
                        best_step = torch.where(improved, step + 1, best_step)
                        since_best = torch.where(improved, 0, since_best + active.long())
                        for bp, p in zip(best_params, params, strict=True):
                            bp.copy_(torch.where(improved.view((S,) + (1,) * (p.dim() - 1)), p, bp))
                        active = active & (since_best < cfg.patience)
                observe(step + 1)
                model.train()
                if cfg.early_stopping and not bool(active.any()):  # one host sync per evaluation
                    break
        raise_if_nonfinite()
        if not masked:
            last_step = torch.full((S,), T_max, dtype=torch.long, device=device)

        # final weights and losses -------------------------------------------------------------------------
        model.eval()
        with torch.no_grad():
            if cfg.early_stopping:
                for bp, p in zip(best_params, params, strict=True):
                    p.copy_(bp)
            else:
                best_step = last_step
            final = {}
            if X is not None:
                final["train"] = evaluate(X, y, x_shared, y_shared, weights=full_w)
            for k, (Xe, ye, xse, yse) in evals.items():
                final[k] = evaluate(Xe, ye, xse, yse, eval_w.get(k))
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        diverged = (first_bad >= 0).cpu().numpy()

        def rows(r):
            return torch.stack(r).double().cpu().numpy() if r else np.zeros((0, S))

        def final_of(k):
            if k not in final:
                return None
            v = final[k].double().cpu().numpy()
            v[diverged] = np.nan  # a frozen replica's weights are those that gave a non-finite loss
            return v

        summary = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("loss", "lr", "device")}
        summary.update(
            loss=cfg.loss if isinstance(cfg.loss, str) else getattr(cfg.loss, "__name__", "callable"),
            lr=lr.tolist(),
            device=str(device),
        )
        return History(
            steps=np.asarray(rows_steps, dtype=np.int64),
            train=rows(rows_train),
            val=rows(rows_eval["val"]) if "val" in evals else None,
            test=rows(rows_eval["test"]) if "test" in evals else None,
            best_step=best_step.cpu().numpy(),
            stopped_step=last_step.cpu().numpy(),
            diverged=diverged,
            final_train=final_of("train"),
            final_val=final_of("val"),
            final_test=final_of("test"),
            wall_s=wall,
            device=str(device),
            n_replicas=S,
            config=summary,
        )


def _check_n_samples(n_samples, S: int, n: int, name: str = "n_samples") -> list[int]:
    arr = np.asarray(n_samples.cpu() if isinstance(n_samples, torch.Tensor) else n_samples)
    if arr.shape != (S,) or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidValue(f"{name} must be {S} integers (one per replica), got {arr.tolist()}")
    if (arr < 1).any() or (arr > n).any():
        raise InvalidValue(f"{name} must lie in [1, n = {n}], got {arr.tolist()}")
    return [int(v) for v in arr]


def _leading_weights(counts: list[int], n: int, device) -> torch.Tensor:
    """(S, n) weights: 1 / counts[s] on replica s's first counts[s] rows, 0 after them."""
    c = torch.tensor(counts, device=device, dtype=torch.float32)
    mask = torch.arange(n, device=device)[None, :] < c[:, None]
    return mask.float() / c[:, None]


__all__ = ["train", "TrainConfig", "History"]
