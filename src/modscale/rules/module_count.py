"""Choosing the number of modules K when the true k is unknown (DESIGN section 4).

Criterion: held-out explained variance of the deflation's additive model. A random ``validation_fraction``
of the rows is set aside; deflation adds modules one at a time on the rest, each addition followed by one
backfitting pass over all modules so far (without it the first modules can be mixtures of true ones, and
the curve then keeps falling past k), and after module j the additive Nystrom model
y ~ sum_{i<=j} f_i(U_i x), fitted jointly, is scored on the held-out rows by its unexplained fraction

    u_j = |Y_val - sum_{i<=j} f_i(X_val U_i^T)|^2 / |Y_val|^2      (u_0 = 1; Y centred on the training mean).

A real module lowers u by roughly its share of the variance (1/k for k equal modules); a module fitted to
what is left once all real ones are found only fits noise, and its held-out gain u_{j-1} - u_j is about 0
or negative. The choice is the number of modules before the first one whose gain is below ``tol``
(default 0.02 of the variance), at least 1. The search stops there; with K the answer it costs about
(K + 1) greedy steps and (K + 1)(K + 2) / 2 backfitting steps (of steps // 3 Adam steps each). If every
gain up to ``max_modules`` is >= tol the choice is ``max_modules`` and the evidence says that the curve
had not levelled off.
"""

from __future__ import annotations

import math
import numbers

import torch

from modscale._torch import as_generator, resolve_device
from modscale.errors import InvalidValue
from modscale.rules._inputs import as_data
from modscale.rules.projections import _check_options, _Rule


def choose_n_modules(
    X,
    y,
    max_modules: int,
    module_dim: int = 1,
    *,
    tol: float = 0.02,
    validation_fraction: float = 0.2,
    generator: torch.Generator | int | None = None,
    device=None,
    **rule_options,
) -> tuple[int, dict]:
    """Pick K <= ``max_modules`` by held-out explained variance (module docstring); returns (K, evidence).

    ``rule_options`` are :func:`kernel_projections` keywords (kernel, steps, batch_size, lr, restarts,
    n_candidates, init, bandwidth, jitter, n_centres, ridge); the search runs deflation with one
    backfitting pass after every added module. ``evidence`` holds: n_modules, unexplained (u_0..u_J),
    gains, tol, criterion (a sentence), levelled_off (bool), projections (J, b, m) found along the way.

    Example::

        K, ev = choose_n_modules(X, y, max_modules=8, generator=0)
        ev["unexplained"]        # e.g. [1.0, 0.74, 0.49, 0.26, 0.03, 0.03]: K = 4
    """
    X, Y = as_data(X, y)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (0 < tol < 1):
        raise InvalidValue(f"tol must lie in (0, 1) (a fraction of the variance), got {tol!r}")
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, numbers.Real)
        or not (0 < validation_fraction < 1)
    ):
        raise InvalidValue(f"validation_fraction must lie in (0, 1), got {validation_fraction!r}")
    unknown = set(rule_options) - {
        "kernel", "steps", "batch_size", "lr", "restarts", "n_candidates", "init", "bandwidth", "jitter",
        "n_centres", "ridge", "in_span", "progress",
    }  # fmt: skip
    if unknown:
        raise InvalidValue(f"unknown rule option(s) {sorted(unknown)} for choose_n_modules")
    n = X.shape[0]
    n_val = max(1, int(round(validation_fraction * n)))
    defaults = dict(
        kernel="rbf", steps=100, batch_size=512, lr=None, restarts=4, n_candidates=32, init="moments",
        bandwidth=0.5, jitter=1e-2, n_centres=None, ridge=1e-3, in_span=True, progress=None,
    )  # fmt: skip
    defaults.update(rule_options)
    opt = _check_options(
        X[: n - n_val],
        n_modules=max_modules,
        module_dim=module_dim,
        strategy="deflation",
        passes=0,
        **defaults,
    )
    gen = as_generator(generator)
    dev = resolve_device(device, default=X.device)

    perm = torch.randperm(n, generator=gen)
    val, train = perm[:n_val], perm[n_val:]
    mean = Y[train].mean(0)
    Xv, Yv = X[val].to(dev), (Y[val] - mean).to(dev)
    rule = _Rule(X[train], Y[train] - mean, opt, gen, dev, lambda k=1: None)
    total = float(Yv.pow(2).sum().clamp_min(1e-30))
    unexplained, gains = [1.0], []
    choice = None
    for j in range(opt.n_modules):
        rule.find(j, opt.steps)  # module j on what modules < j leave unexplained
        fit = rule.backfit(list(range(j + 1)))  # then all j + 1 re-found and refitted jointly
        with torch.no_grad():
            U = torch.stack(rule.U[: j + 1])
            pred = fit(torch.einsum("jbm,nm...->jnb...", U, Xv).flatten(2))
        u = float((Yv - pred).pow(2).sum()) / total
        gains.append(unexplained[-1] - u)
        unexplained.append(u)
        if gains[-1] < tol:
            choice = max(1, j)
            break
    levelled = choice is not None
    if choice is None:
        choice = opt.n_modules
    found = torch.stack([u for u in rule.U if u is not None])
    evidence = {
        "n_modules": choice,
        "unexplained": unexplained,
        "gains": gains,
        "tol": float(tol),
        "levelled_off": levelled,
        "criterion": (
            f"smallest K such that module K+1 explains less than {tol:g} of the held-out variance "
            f"({n_val} held-out rows)"
            + ("" if levelled else f"; not reached up to max_modules = {opt.n_modules}, so K = max_modules")
        ),
        "projections": found,
    }
    if not all(math.isfinite(v) for v in unexplained):  # pragma: no cover - finite inputs give finite fits
        raise InvalidValue("non-finite held-out loss while choosing n_modules")
    return choice, evidence


__all__ = ["choose_n_modules"]
