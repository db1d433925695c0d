"""The kernel learning rule: module projections found before training (PAPER.md claim 3; DESIGN section 4).

For a module with projection U (b, m) (rows kept unit-norm) and a minibatch (X_B, Y_B) the objective is

    L(U) = (1 / B) sum_j Y_j^T (k(X_B U^T, X_B U^T) + lam I)^{-1} Y_j          (:mod:`.objective`)

small when the targets are a smooth function (in the kernel's sense) of the projected inputs. Adam moves U
on minibatches; every step costs O(B^3) (one batched Cholesky factorisation) whatever n is, and memory is
O(R B^2) for R restarts batched as one computation. No n x n matrix is ever formed.

Strategies:

- ``"independent"`` (the paper): K restarts from random starts, all minimising L on y, batched as one
  (K, B, B) computation. Restarts that fall into the same basin return the same module.
- ``"deflation"`` (ours): module i is fitted to the residual that modules < i leave unexplained. For each
  module, candidate starts are screened by L on one batch and the best ``restarts`` of them are optimised
  together; the one with the lowest held-out L is kept. Its function f_i(U_i x) is then fitted to the
  residual by Nystrom kernel ridge regression (:mod:`.nystrom`), and the next module sees
  y - sum_{j<i} f_j. Then ``passes`` rounds of backfitting (projection pursuit regression, Friedman and
  Stuetzle 1981): the functions are refitted jointly for the current projections, and every module is
  re-optimised on what all the *other* modules leave unexplained (its current projection competes with
  new candidates). Why: with k modules of similar strength the first module sees the other k - 1 as
  noise, and then a mixture of two true directions can have a lower L than any true one (measured on
  the sine task at m = 32, k = 8); once the others are explained the mixture stops being optimal.

Starts (``init``): ``"moments"`` (the default): the modules' directions from the second- and third-order
Hermite moments of y without its linear part, by joint diagonalisation (:mod:`.moments`). Each module's
candidates include all of them (every b of them for b >= 2), its search space is their span, and Adam's
default step is 0.01 at b = 1, because they start close (benchmarks/README.md: at m = 64, k = 16,
n = 1e5 the starts alone recover about 0.8-0.9 of the modules, the rule from them about 0.98, from spectral
starts 0.38). Where the moments carry no signal (no direction stands above the shuffled-target null: y
linear, pure noise, or modules with no second- or third-order content) the rule falls back to spectral
starts and says so in ``KernelRuleInfo.init``. ``"random"``: uniform random unit rows. ``"spectral"``:
the span of the top K b directions of a sufficient-dimension-reduction matrix (:mod:`.spectral`); starts
are random directions inside it, and deflation adds the top directions of the same matrix computed on the
current residual.
At m = 32 a random direction overlaps a true one by about 1/m, where L is flat; inside the K b dimensional
span it overlaps by about 1/(K b).

Search space (``in_span``, spectral starts): the modules are searched for inside that K b dimensional span,
not in all of R^m. Adam moves every coordinate by about lr per step whatever the size of its gradient, and
outside the span the minibatch gradient is pure noise: the m - K b directions there take random steps as
large as the signal's. At m = 32 the signal wins; at m = 64, k = 8 (n = 1e5) the modules drifted away
(recovery 0.26, per module 0.09-0.77) although the span held 0.96-0.995 of every true direction; searched
inside the span, recovery was 0.975 (benchmarks/README.md). The price: a module can be recovered only as
far as the span holds it, and a module the spectral matrix misses entirely is not found (``in_span=False``).

Defaults: a feasibility probe found rbf bandwidth 0.5 on unit-variance projections, relative jitter 1e-2,
batch 512, Adam lr 0.05 and a few hundred steps per module (DESIGN section 4); the rule expects inputs
on that scale (standardised features, as the estimators provide). 100 greedy steps per module and three
backfitting passes: on SineTask(m=32, k=8), n=1e5, that recovered 0.991-0.994 (task seeds 0-4, 10-14)
where 150 greedy steps and one pass, at about the same cost, gave 0.75-0.99 (docs/learning-rule.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from modscale._checks import check_choice, check_int, check_positive_number
from modscale._torch import as_generator, resolve_device
from modscale.errors import InvalidType, InvalidValue
from modscale.rules._inputs import as_data
from modscale.rules.kernels import KERNELS, median_bandwidth, mlp_apply, mlp_init, ntk
from modscale.rules.moments import MomentStarts, moment_directions
from modscale.rules.nystrom import AdditiveNystrom, additive_nystrom
from modscale.rules.objective import kernel_objective, rbf_objective
from modscale.rules.spectral import sdr_matrix, spectral_directions

STRATEGIES = ("independent", "deflation")
"""kernel_projections' strategies: the paper's independent restarts, and modules one at a time."""
INITS = ("moments", "spectral", "random")
"""kernel_projections' starts: Hermite moments (the default), the SIR/SAVE span, random unit rows."""
_LR, _LR_MOMENTS = 0.05, 0.01  # lr=None: Adam's step from spectral or random starts, and from moments
_MAX_GROUPS = 256  # moment starts of b >= 2 directions screened per module (all b-subsets up to this)
_N_EVAL = 4  # held-out batches that pick the best restart
_N_EIGEN = 4  # residual eigen-directions added to the candidates of each deflation step
_MAX_FIT = 20_000  # rows the Nystrom fits and the spectral matrix of a residual use (a fixed random subset)
_MAX_SDR = 100_000  # rows the first spectral matrix uses
_MEDIAN_ROWS = 256  # rows of a batch the per-step median bandwidth looks at
_SCREEN_BATCH = 256  # candidates are ranked on one batch of at most this size (a cheap first look)


@dataclass
class KernelRuleInfo:
    """What :func:`kernel_projections` did (``return_info=True``).

    objective (K,): held-out objective of each returned module on what the other modules leave unexplained
    (deflation) or on y (independent). init: the starts used ("spectral" where "moments" was asked for and
    the moments carry no signal). moment_signal: how many directions' moments stand above the shuffled-target
    null (init="moments"). explained (deflation): fraction of the variance of y explained by
    the additive Nystrom model of all K modules on its fitting rows. spectrum: eigenvalues of the spectral
    matrix (init="spectral"). steps: Adam steps taken (summed over modules and passes). flops: an analytic
    count of the floating-point operations of the code path taken (dominant terms; the Gram matrices
    counted as for rbf), for equal-compute comparisons.
    """

    strategy: str
    kernel: str
    init: str
    objective: np.ndarray
    explained: float | None
    spectrum: np.ndarray | None
    steps: int
    seconds: float
    flops: float = 0.0
    moment_signal: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Options:
    n_modules: int
    module_dim: int
    kernel: str | Callable
    strategy: str
    steps: int
    batch_size: int
    lr: float | None
    restarts: int
    n_candidates: int
    init: str
    passes: int
    bandwidth: float | None
    jitter: float
    n_centres: int
    ridge: float
    in_span: bool
    progress: bool | None


def _check_options(X: torch.Tensor, **kw) -> _Options:
    n, m = X.shape[:2]
    K = check_int("n_modules", kw["n_modules"], low=1)
    b = check_int("module_dim", kw["module_dim"], low=1)
    if b > m:
        raise InvalidValue(f"module_dim must be <= in_dim = {m} (the width of X), got {b}")
    kernel = kw["kernel"]
    if isinstance(kernel, str):
        check_choice("kernel", kernel, tuple(KERNELS))
    elif not callable(kernel):
        raise InvalidType(f"kernel must be one of {sorted(KERNELS)} or a callable k(Z1, Z2), got {kernel!r}")
    batch = check_int("batch_size", kw["batch_size"], low=2)
    if n < batch:
        raise InvalidValue(
            f"X has {n} samples but batch_size = {batch} needs at least {batch}; "
            "lower batch_size or add samples"
        )
    n_centres = kw["n_centres"]
    n_centres = min(1000, 100 * b) if n_centres is None else check_int("n_centres", n_centres, low=1)
    if X.dim() > 2 and kw["init"] in ("moments", "spectral"):
        raise InvalidValue(
            f"init={kw['init']!r} needs X of shape (n, in_dim); X with feature axes "
            f"{tuple(X.shape)} needs init='random'"
        )
    if not isinstance(kw["in_span"], bool):
        raise InvalidType(f"in_span must be True or False, got {kw['in_span']!r}")
    progress = kw["progress"]
    if progress is not None and not isinstance(progress, bool):
        raise InvalidType(f"progress must be None (on a terminal), True or False, got {progress!r}")
    return _Options(
        n_modules=K,
        module_dim=b,
        kernel=kernel,
        strategy=check_choice("strategy", kw["strategy"], STRATEGIES),
        steps=check_int("steps", kw["steps"], low=1),
        batch_size=batch,
        lr=check_positive_number("lr", kw["lr"], allow_none=True),
        restarts=check_int("restarts", kw["restarts"], low=1),
        n_candidates=check_int("n_candidates", kw["n_candidates"], low=0),
        init=check_choice("init", kw["init"], INITS),
        passes=check_int("passes", kw["passes"], low=0),
        bandwidth=check_positive_number("bandwidth", kw["bandwidth"], allow_none=True),
        jitter=check_positive_number("jitter", kw["jitter"]),
        n_centres=n_centres,
        ridge=check_positive_number("ridge", kw["ridge"]),
        in_span=kw["in_span"],
        progress=progress,
    )


# the kernel of one run --------------------------------------------------------------------------------------
class _Kernel:
    """The rule's kernel: ``objective`` for the minibatches (per-restart median bandwidth when asked),
    ``fixed`` for the Nystrom fits (bandwidth frozen from the fitting points). ntk draws its module
    network's weights once."""

    def __init__(
        self, kernel, bandwidth: float | None, width: int, gen: torch.Generator, device: torch.device
    ):
        self.name = kernel if isinstance(kernel, str) else getattr(kernel, "__name__", "callable")
        self.bandwidth = bandwidth
        if kernel in ("rbf", "laplace"):
            self.fn, self.scaled = KERNELS[kernel], True
        elif kernel == "arccos":
            self.fn, self.scaled = KERNELS[kernel], False
        elif kernel == "ntk":
            params = mlp_init(width, generator=gen, device=device)
            self.fn, self.scaled = partial(ntk, fn=lambda p, x: mlp_apply(p, x), params=params), False
        else:
            self.fn, self.scaled = kernel, False

    def objective(self, Z: torch.Tensor, target: torch.Tensor, jitter: float) -> torch.Tensor:  # (R,)
        """The kernel objective of the projected batches Z (R, B, b) (rbf: the hand-written gradient)."""
        if not self.scaled:
            return kernel_objective(self.fn(Z, Z), target, jitter)
        sigma = self.bandwidth
        if sigma is None:
            sigma = median_bandwidth(Z[..., :_MEDIAN_ROWS, :])  # (R,)
        if self.fn is KERNELS["rbf"]:
            return rbf_objective(Z, target, sigma, jitter)
        return kernel_objective(self.fn(Z, Z, bandwidth=sigma), target, jitter)

    def fixed(self, Z_ref: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if not self.scaled:
            return self.fn
        sigma = self.bandwidth if self.bandwidth is not None else float(median_bandwidth(Z_ref[:1024]))
        return partial(self.fn, bandwidth=sigma)


def _progress(enabled: bool | None, total: int, what: str):
    """A rich progress bar on a terminal (or when asked), nothing otherwise; yields advance(k)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        return contextlib.nullcontext(lambda k=1: None)

    @contextlib.contextmanager
    def bar():
        cols = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*cols, console=console, transient=True) as p:
            task = p.add_task(what, total=total)
            yield lambda k=1: p.advance(task, k)

    return bar()


# the rule ---------------------------------------------------------------------------------------------------
class _Rule:
    """State of one run: data on the device, module projections U_i, their fitted functions and the
    predictions F_i = f_i(X U_i^T) on every row (K x n x c numbers: the residuals are O(n K), never n x n)."""

    def __init__(self, X, Y, opt: _Options, gen: torch.Generator, device: torch.device, advance):
        self.o, self.gen, self.device, self.advance = opt, gen, device, advance
        self.X, self.Y = X.to(device), Y.to(device)
        self.n, self.m = X.shape[:2]
        K, b = opt.n_modules, opt.module_dim
        # a module's kernel input: b mixtures of the feature vectors X[:, j] (b numbers for X (n, m))
        self.kernel = _Kernel(opt.kernel, opt.bandwidth, b * X[0, 0].numel(), gen, device)
        self.U: list[torch.Tensor | None] = [None] * K
        self.fits: list[AdditiveNystrom | None] = [None] * K  # module i alone (deflation step)
        self.objective = np.full(K, np.nan)
        self.F = torch.zeros(K, self.n, Y.shape[1], device=device)  # (K, n, c)
        self.fit_rows = torch.randperm(self.n, generator=gen)[:_MAX_FIT].to(device)
        self.pool: torch.Tensor | None = (
            None  # rows minibatches come from (None: all); F is kept current there
        )
        self.steps_taken = 0
        self.flops = 0.0
        self.P = self.spectrum = None
        self.moments: MomentStarts | None = None
        self.M: torch.Tensor | None = None  # moment starts (K', b, m), or None
        self.init_used = opt.init
        if opt.init == "moments":
            rows = torch.randperm(self.n, generator=gen)[:_MAX_SDR].to(device)
            self.moments = moment_directions(self.X[rows].cpu(), self.Y[rows].cpu(), K * b, generator=gen)
            self.flops += _moment_flops(rows.numel(), self.m, K * b, Y.shape[1])
            if self.moments.n_signal == 0:  # no second- or third-order content: today's spectral starts
                self.init_used = "spectral"
            else:
                D = self.moments.directions.to(device)  # (Kb, m)
                self.M = D[_combinations(D.shape[0], b, gen).to(device)]  # (J, b, m)
                self.P = D
        # Adam's step, an angle per step: small from moment starts, which begin close to the modules
        # (m = 64, k = 16, n = 1e5: recovery 0.87 at 0.05, 0.98 at 0.01), larger from the others
        # (b >= 2 keeps 0.05: the directions do not yet form modules, measured in benchmarks/README.md)
        close = self.init_used == "moments" and b == 1
        self.lr = opt.lr if opt.lr is not None else (_LR_MOMENTS if close else _LR)
        if self.init_used == "spectral":
            rows = torch.randperm(self.n, generator=gen)[:_MAX_SDR].to(device)
            P, evals = spectral_directions(self.X[rows], self.Y[rows], min(K * b, self.m))  # (Kb, m)
            self.flops += _sdr_flops(rows.numel(), self.m, Y.shape[1])
            self.spectrum = evals.cpu().numpy()
            P = P[P.norm(dim=-1) > 0.5]  # directions of no input variance come back as zero rows
            self.P = P if P.shape[0] else None
        # the search space: an orthonormal basis Q (m, d) of the spectral span, or None for all of R^m
        self.Q = None
        if opt.in_span and self.P is not None and self.P.shape[0] < self.m:
            self.Q = torch.linalg.qr(self.P.T.to(torch.float64))[0].to(torch.float32)  # (m, d)

    # targets ------------------------------------------------------------------------------------------------
    def residual(self, rows: torch.Tensor, skip: int | None) -> torch.Tensor:  # (B, c)
        r = self.Y[rows] - self.F[:, rows].sum(0)
        return r + self.F[skip, rows] if skip is not None else r

    def batch(self, size: int | None = None) -> torch.Tensor:
        size = size or self.o.batch_size
        if self.pool is None:
            return torch.randint(self.n, (size,), generator=self.gen).to(self.device)
        return self.pool[torch.randint(self.pool.numel(), (size,), generator=self.gen).to(self.device)]

    def live(self, U: torch.Tensor) -> tuple[torch.Tensor | slice, torch.Tensor]:
        """(rows, Z (J, rows, b)): the rows whose predictions F must be current and their projections."""
        rows = slice(None) if self.pool is None else self.pool
        return rows, self.project(U, rows)

    def project(self, U: torch.Tensor, rows) -> torch.Tensor:
        """Z = X U^T for U (J, b, m): (J, rows, b), or (J, rows, b * features) for X (n, m, *features)."""
        return torch.einsum("jbm,nm...->jnb...", U, self.X[rows]).flatten(2)

    def loss(self, U: torch.Tensor, rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # (R,)
        Z = self.project(U, rows)  # (R, B, b)
        R, B, d = Z.shape
        row = self.X[0].numel() * U.shape[1]  # multiply-adds of one projected row
        c = target.shape[-1]
        self.flops += R * (2 * B * row + 3 * B * B * d + B**3 / 3 + 4 * B * B * c)
        if torch.is_grad_enabled() and U.requires_grad:  # the envelope-theorem backward pass
            self.flops += R * (2 * B * B * c + 4 * B * B * d + 2 * B * row)
        return self.kernel.objective(Z, target, self.o.jitter)

    # starts -------------------------------------------------------------------------------------------------
    def random_starts(self, count: int) -> torch.Tensor:  # (count, b, m)
        b = self.o.module_dim
        if self.P is None:
            V = torch.randn(count, b, self.m, generator=self.gen)
        else:
            V = torch.randn(count, b, self.P.shape[0], generator=self.gen) @ self.P.cpu()
        return _unit_rows(V.to(self.device))

    def candidates(
        self, skip: int | None, current: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Starts (J, b, m) for one module and the search space Q (m, d) to optimise them in (None: R^m).

        The space is the spectral span, widened by the top directions of the spectral matrix of the current
        residual (a module the first span holds badly stands out there once the others are explained) and
        by the module's current projection."""
        parts = [self.random_starts(self.o.n_candidates)]
        if self.M is not None:
            parts.append(self.M)
        extra = []
        if self.P is not None:  # top directions of the spectral matrix of the current residual
            b = self.o.module_dim
            rows = self.fit_rows
            M, W = sdr_matrix(self.X[rows], self.residual(rows, skip))
            self.flops += _sdr_flops(rows.numel(), self.m, self.Y.shape[1])
            evecs = torch.linalg.eigh(M)[1].flip(1)[:, : _N_EIGEN * b]  # (m, <= 4b)
            E = (W @ evecs).T.to(torch.float32)
            E = _unit_rows(E[: (E.shape[0] // b) * b].reshape(-1, b, self.m))
            E = E[(E.norm(dim=-1) > 0.5).all(-1)]  # zero rows: directions of no variance
            parts.append(E)
            extra.append(E.reshape(-1, self.m))
        if current is not None:
            parts.append(current.unsqueeze(0))
            extra.append(current)
        Q = None
        if self.Q is not None:
            A = torch.cat([self.Q.T, *extra]).to(torch.float64)  # (d + e, m)
            Q = _orthonormal_span(A).to(torch.float32)
        return torch.cat(parts), Q

    def screen(self, V: torch.Tensor, skip: int | None) -> torch.Tensor:
        """The ``restarts`` candidates with the lowest objective on one batch (evaluated R at a time)."""
        R = self.o.restarts
        if V.shape[0] <= R:
            return V
        rows = self.batch(min(self.o.batch_size, _SCREEN_BATCH))
        target = self.residual(rows, skip)
        with torch.no_grad():
            L = torch.cat([self.loss(V[s : s + R], rows, target) for s in range(0, V.shape[0], R)])
        return V[torch.argsort(L)[:R]]

    # optimisation -------------------------------------------------------------------------------------------
    def optimise(
        self, V: torch.Tensor, skip: int | None, steps: int, Q: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam on R batched starts V (R, b, m) for ``steps`` batches -> (U (R, b, m), held-out L (R,)).

        In a search space Q (m, d) (orthonormal columns; starts inside it) the variables are the
        coordinates C = V Q (R, b, d) and U = C Q^T: Adam moves every coordinate by about lr per step
        whatever the size of its gradient, so outside the span of the modules, where the minibatch
        gradient is noise, it would take steps as large as the signal's; with m - d such directions that
        noise swamps the signal (module docstring).
        """
        C = (V if Q is None else V @ Q).clone().requires_grad_(True)  # (R, b, m or d)

        def rows_of(C: torch.Tensor) -> torch.Tensor:  # (R, b, m), unit rows
            return _unit_rows(C if Q is None else C @ Q.T)

        moments = (torch.zeros_like(C), torch.zeros_like(C))
        for step in range(steps):
            rows = self.batch()
            L = self.loss(rows_of(C), rows, self.residual(rows, skip))
            (grad,) = torch.autograd.grad(L.sum(), C)  # restarts are independent: each gets its own dL/dC
            with torch.no_grad():
                _adam_step(C, grad, *moments, step + 1, self.lr)
                C.copy_(_unit_rows(C))  # keep rows on the sphere so lr is an angle
            if step % 10 == 9 or step == steps - 1:
                self.advance(10 if step % 10 == 9 else steps % 10)
        self.steps_taken += steps
        U = rows_of(C.detach())
        with torch.no_grad():
            held = torch.stack(
                [self.loss(U, r, self.residual(r, skip)) for r in (self.batch() for _ in range(_N_EVAL))]
            )
        return U, held.mean(0)

    def fit_function(self, i: int) -> None:
        """f_i alone on what the other modules leave unexplained; F_i on every row."""
        rows = self.fit_rows
        with torch.no_grad():
            Z = self.project(self.U[i].unsqueeze(0), rows)  # (1, n_fit, b)
            fit = additive_nystrom(
                Z, self.residual(rows, i), [self.kernel.fixed(Z[0])], self.o.n_centres, ridge=self.o.ridge,
                generator=self.gen,
            )  # fmt: skip
            self.fits[i] = fit
            live, Z_live = self.live(self.U[i].unsqueeze(0))
            self.F[i, live] = fit.parts(Z_live)[0]
            self.flops += _nystrom_flops(Z, Z_live.shape[1], fit, self.Y.shape[1])

    def joint_fit(self, modules: list[int]) -> AdditiveNystrom:
        """The functions of ``modules`` fitted jointly to y (the others' predictions set to 0)."""
        rows = self.fit_rows
        with torch.no_grad():
            U = torch.stack([self.U[j] for j in modules])  # (J, b, m)
            Z = self.project(U, rows)  # (J, n_fit, b)
            kernels = [self.kernel.fixed(z) for z in Z]
            fit = additive_nystrom(
                Z, self.Y[rows], kernels, self.o.n_centres, ridge=self.o.ridge, generator=self.gen
            )
            live, Z_live = self.live(U)
            self.flops += _nystrom_flops(Z, Z_live.shape[1], fit, self.Y.shape[1])
            Z = Z_live
            self.F.zero_()
            index = torch.tensor(modules, device=self.device)
            if self.pool is None:
                self.F[index] = fit.parts(Z)
            else:
                self.F[index[:, None], live[None, :]] = fit.parts(Z)  # (J, rows, c)
        return fit

    def find(self, i: int, steps: int) -> None:
        """Module i on the residual of all other modules: screen candidates, optimise, keep the best."""
        V, Q = self.candidates(i, self.U[i])
        U, held = self.optimise(self.screen(V, i), i, steps, Q)
        best = int(torch.argmin(held))
        self.U[i], self.objective[i] = U[best], float(held[best])
        self.fit_function(i)

    def explained(self) -> float:
        """Fraction of the variance of y (fitting rows) explained by the current additive model."""
        Y = self.Y[self.fit_rows]
        r = Y - self.F[:, self.fit_rows].sum(0)
        return float(1 - r.pow(2).sum() / Y.pow(2).sum().clamp_min(1e-30))

    # strategies ---------------------------------------------------------------------------------------------
    def independent(self) -> torch.Tensor:
        V = self.random_starts(self.o.n_modules)  # the paper: K random restarts, one per module
        U, held = self.optimise(V, None, self.o.steps, self.Q)
        self.objective[:] = held.cpu().numpy()
        return U

    def deflation(self) -> torch.Tensor:
        K = self.o.n_modules
        for i in range(K):
            self.find(i, self.o.steps)
        if self.o.passes and self.n > self.fit_rows.numel():
            self.pool = (
                self.fit_rows
            )  # backfitting works on the fitting rows (their predictions stay current)
        for _ in range(self.o.passes):
            self.backfit(list(range(K)))
        return torch.stack(self.U)

    def backfit(self, modules: list[int]) -> AdditiveNystrom:
        """One backfitting pass: each module re-found (steps // 3) on what the others, refitted jointly
        without it, leave unexplained; returns the joint fit of all ``modules`` at the end."""
        for i in modules:
            if len(modules) > 1:
                self.joint_fit([j for j in modules if j != i])
            self.find(i, max(1, self.o.steps // 3))
        return self.joint_fit(modules)


def _sdr_flops(n: int, m: int, c: int, slices: int = 10) -> float:
    """Covariance, whitening and slice covariances (2 n m^2 each per pass) and the m^3 factorisations."""
    return 2.0 * n * m * m * (2 + c) + (10 + slices * c) * m**3


def _moment_flops(n: int, m: int, d: int, c: int, iterations: int = 4, oversample: int = 8) -> float:
    """The span's subspace iteration (6 contractions of n x m by m x L per column and round, signal and
    null) and the matrices in the d-dimensional space (2 (2 + d) products of n x d by n x d per column)."""
    L = min(m, d + oversample)
    return iterations * c * 6 * 2.0 * n * m * L * 2 + c * 2 * (2 + d) * 2.0 * n * d * d


def _nystrom_flops(Z: torch.Tensor, rows_predicted: int, fit: AdditiveNystrom, c: int) -> float:
    """Kernel columns, the normal equations 2 n (J M)^2, their solve (J M)^3 / 3, and the predictions."""
    J, n, d = Z.shape
    JM = sum(C.shape[0] for C in fit.centres)
    per_entry = 3 * d + 2
    fit_cost = n * JM * per_entry + 2.0 * n * JM * JM + 2.0 * n * JM * c + JM**3 / 3
    return fit_cost + rows_predicted * JM * (per_entry + 2 * c)


def _combinations(d: int, b: int, gen: torch.Generator, cap: int = _MAX_GROUPS) -> torch.Tensor:
    """(J, b) index sets: every b of the d moment directions (b = 1: each one), or ``cap`` of them drawn
    at random when there are more. The moments cannot tell which directions form one module (module
    docstring of :mod:`.moments`); screening by the kernel objective does."""
    if b == 1:
        return torch.arange(d)[:, None]
    if math.comb(d, b) <= cap:
        return torch.combinations(torch.arange(d), b)
    return torch.stack([torch.randperm(d, generator=gen)[:b] for _ in range(cap)])


def _orthonormal_span(A: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis (m, r) of the row space of A (d, m), r its numerical rank."""
    _, s, vt = torch.linalg.svd(A, full_matrices=False)
    return vt[s > rtol * s[0]].T


def _adam_step(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, lr: float,
    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
) -> None:  # fmt: skip
    """One Adam step (Kingma & Ba 2015) in place, in the operation order of torch.optim.Adam's CPU path.

    Written out because constructing a torch.optim optimiser imports torch._dynamo on first use, measured
    at 10-13 s of a 2-core CPU: most of a default estimator fit at small n.
    """
    b1, b2 = betas
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


def _unit_rows(V: torch.Tensor) -> torch.Tensor:
    return V / V.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _total_steps(o: _Options) -> int:
    if o.strategy == "independent":
        return o.steps
    return o.n_modules * (o.steps + o.passes * max(1, o.steps // 3))


def kernel_projections(
    X,
    y,
    n_modules: int,
    module_dim: int = 1,
    kernel: str | Callable = "rbf",
    strategy: str = "deflation",
    *,
    steps: int = 100,
    batch_size: int = 512,
    lr: float | None = None,
    restarts: int = 4,
    n_candidates: int = 32,
    init: str = "moments",
    passes: int = 3,
    bandwidth: float | None = 0.5,
    jitter: float = 1e-2,
    n_centres: int | None = None,
    ridge: float = 1e-3,
    in_span: bool = True,
    generator: torch.Generator | int | None = None,
    device=None,
    progress: bool | None = None,
    return_info: bool = False,
):
    """Module projections U (K, b, in_dim), unit-norm rows, minimising the kernel objective (module doc).

    Parameters
    ----------
    X : (n, in_dim) inputs (array or tensor), standardised; or (n, in_dim, *features), where a module's
        input is the mixture sum_j U_ij X[:, j] of feature vectors (e.g. image slots), flattened for the
        kernel (needs init="random").
    y : (n,) or (n, c) targets (centred here; the objective sums over the c columns).
    n_modules : K.
    module_dim : b.
    kernel : "rbf" | "laplace" | "arccos" | "ntk" (:mod:`.kernels`; ntk uses a width-64 one-hidden-layer ReLU
        network drawn from ``generator``) or a callable k(Z1 (..., B, b), Z2) -> (..., B, B).
    strategy : "independent" (the paper's K random restarts) or "deflation" (each module on the residual).
    steps : Adam steps per module (deflation; each backfitting pass adds steps // 3 per module) or in all
        (independent).
    batch_size : B, the minibatch (n >= B).
    lr : Adam learning rate (an angle per step); None: 0.01 from moment starts of one-dimensional modules,
        0.05 otherwise.
    restarts : R starts optimised together per deflation step.
    n_candidates : random candidates screened.
    init : "moments", "spectral" or "random" starts (module docstring).
    passes : deflation backfitting rounds.
    bandwidth : rbf / laplace bandwidth, or None for the median heuristic on each batch.
    jitter : ridge relative to the kernel's mean diagonal.
    n_centres : Nystrom centres (default min(1000, 100 b)).
    ridge : Nystrom ridge (per sample).
    in_span : with init="spectral", search for the modules inside the spectral span only (module
        docstring); False searches all of R^in_dim, which finds a module the span misses but loses the
        modules to minibatch noise at large in_dim.
    generator : torch.Generator or int seed (every random choice comes from it).
    device : None (X's device), "auto", "cpu", "cuda".
    progress : None (a progress bar on a terminal), True, False.
    return_info : also return a :class:`KernelRuleInfo`.

    Returns
    -------
    torch.Tensor or tuple
        U (K, b, in_dim), or (U, info) with ``return_info=True``.

    Raises
    ------
    InvalidValue, InvalidType
        Bad input (NaN/inf, module_dim > in_dim, n_modules < 1, n < batch_size, ...), before any work.

    Notes
    -----
    Cost: steps x restarts x O(B^3) per module plus O(n m^2) for the spectral start; memory
    O(restarts B^2 + n K c).

    Examples
    --------
    ::

        task = SineTask(m=16, k=4, generator=0)
        X, y = task.sample(4000, generator=1)
        U = kernel_projections(X, y, n_modules=4, generator=0)      # (4, 1, 16)
        recovery_score(U, task.projections)                          # ~1 when the modules are found
    """
    X, Y = as_data(X, y)
    opt = _check_options(
        X, n_modules=n_modules, module_dim=module_dim, kernel=kernel, strategy=strategy, steps=steps,
        batch_size=batch_size, lr=lr, restarts=restarts, n_candidates=n_candidates, init=init, passes=passes,
        bandwidth=bandwidth, jitter=jitter, n_centres=n_centres, ridge=ridge, in_span=in_span,
        progress=progress,
    )  # fmt: skip
    gen = as_generator(generator)
    dev = resolve_device(device, default=X.device)
    if not isinstance(return_info, bool):
        raise InvalidType(f"return_info must be a bool, got {return_info!r}")

    t0 = time.perf_counter()
    Y = Y - Y.mean(0)
    with _progress(opt.progress, _total_steps(opt), f"kernel rule ({opt.strategy})") as advance:
        rule = _Rule(X, Y, opt, gen, dev, advance)
        U = rule.independent() if opt.strategy == "independent" else rule.deflation()
    U = U.detach()
    if not return_info:
        return U
    explained = rule.explained() if opt.strategy == "deflation" else None
    info = KernelRuleInfo(
        strategy=opt.strategy,
        kernel=rule.kernel.name,
        init=rule.init_used,
        objective=rule.objective.copy(),
        explained=explained,
        spectrum=rule.spectrum,
        steps=rule.steps_taken,
        seconds=time.perf_counter() - t0,
        flops=rule.flops,
        moment_signal=None if rule.moments is None else rule.moments.n_signal,
        options={k: v for k, v in vars(opt).items() if k not in ("kernel", "progress")} | {"lr": rule.lr},
    )
    return U, info


__all__ = ["kernel_projections", "KernelRuleInfo", "STRATEGIES", "INITS"]
