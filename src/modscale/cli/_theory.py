"""``modscale theory``: closed-form losses and sample complexity on the command line, and the theory figures.

Every option that takes numbers takes several; the command evaluates the whole grid (their cartesian
product) in one vectorised call and prints one row per point.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from modscale.errors import InvalidValue


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "theory",
        help="closed-form train/test loss or samples needed; --figures writes the theory figures",
        description="Closed-form train/test loss (or, with --eps, samples needed) of the paper's linear "
        "model, on a grid of n, p, m (and k, b for --modular). "
        "Example: modscale theory --n 1000 --p 500 --m 4",
    )
    nums = {"type": float, "nargs": "+", "metavar": "X"}
    p.add_argument("--n", **nums, default=[1000.0], help="samples (default 1000)")
    p.add_argument("--p", **nums, default=[500.0], help="learned features / parameters (default 500)")
    p.add_argument("--m", **nums, default=[4.0], help="input dimension (default 4)")
    p.add_argument("--modular", action="store_true", help="the modular model (k modules, module dim b)")
    p.add_argument("--k", **nums, default=[4.0], help="modules, with --modular (default 4)")
    p.add_argument("--b", **nums, default=[1.0], help="module input dimension, with --modular (default 1)")
    p.add_argument("--eps", **nums, default=None, help="print samples needed to reach these test losses")
    p.add_argument("--min-over-p", action="store_true", help="with --eps: minimise samples over p")
    p.add_argument("--family", choices=("exp", "power"), default="exp", help="spectrum family (default exp)")
    p.add_argument("--c", type=float, default=None, help="spectrum scale c (default 1.15)")
    p.add_argument("--omega", type=float, default=None, help="exp family: a = omega^-m (default 2)")
    p.add_argument("--s", type=float, default=None, help="power family: a = s/m (default 1)")
    p.add_argument("--noise", type=float, default=0.0, help="label-noise variance (default 0)")
    p.add_argument("--outputs", type=float, default=1.0, help="outputs sharing theta: n -> outputs*n")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument(
        "--figures", metavar="DIR", default=None, help="write the theory figures (PNG, PDF) to DIR"
    )
    p.set_defaults(handler=run)


def _spectrum_kwargs(args: argparse.Namespace) -> dict:
    kw: dict = {"family": args.family}
    for key in ("c", "omega", "s"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    return kw


def run(args: argparse.Namespace) -> int:
    from modscale import theory

    if args.figures is not None:
        return _figures(Path(args.figures))
    if args.min_over_p and args.eps is None:
        raise InvalidValue("--min-over-p needs --eps (it minimises the samples needed over p)")
    kw = _spectrum_kwargs(args)
    axes: dict[str, list[float]] = {"m": args.m}
    if args.modular:
        axes |= {"k": args.k, "b": args.b}
    if args.eps is not None:
        axes["eps"] = args.eps
        if not args.min_over_p:
            axes["p"] = args.p
    else:
        axes |= {"n": args.n, "p": args.p}
    names = list(axes)
    rows = list(itertools.product(*axes.values()))
    cols = {name: np.array([r[i] for r in rows]) for i, name in enumerate(names)}
    common = {"noise": args.noise, "n_outputs": args.outputs}
    if args.eps is not None:
        p = cols.get("p")
        if args.modular:
            n_star = theory.sample_complexity(
                cols["eps"], cols["m"], p=p, k=cols["k"], b=cols["b"], **kw, **common
            )
        else:
            n_star = theory.sample_complexity(cols["eps"], cols["m"], p=p, **kw, **common)
        results = {"n_star": n_star}
    else:
        if args.modular:
            train, test = theory.modular_losses(cols["n"], cols["p"], cols["k"], cols["b"], **kw, **common)
        else:
            lam = theory.spectrum(cols["m"], **kw)
            train, test = theory.monolithic_losses(cols["n"], cols["p"], lam, **common)
        results = {"train": train, "test": test}
    model = "modular" if args.modular else "monolithic"
    _print(model, cols, results, as_json=args.json)
    return 0


def _print(model: str, cols: dict, results: dict, *, as_json: bool) -> None:
    n_rows = len(next(iter(cols.values())))
    if as_json:
        for i in range(n_rows):
            row = {"model": model} | {k: float(v[i]) for k, v in cols.items()}
            row |= {k: (float(v[i]) if np.isfinite(v[i]) else None) for k, v in results.items()}
            print(json.dumps(row))
        return
    header = [*cols, *results]
    table = [[_fmt(v[i]) for v in (*cols.values(), *results.values())] for i in range(n_rows)]
    widths = [max(len(h), *(len(r[j]) for r in table)) for j, h in enumerate(header)]
    print(f"# {model} model (+inf test = interpolation threshold; inf samples = unreachable)")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def _fmt(x: float) -> str:
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if float(x).is_integer() and abs(x) < 1e7:
        return str(int(x))
    return f"{x:.4g}"


THEORY_EXPERIMENTS = ("theory_loss_trends", "theory_samples_vs_m")


def _figures(out: Path) -> int:
    """The theory figures: the registered theory experiments (small tier) stored in ``out`` and drawn from
    there, so the figures are the same pure functions of results that ``modscale plot`` draws."""
    from modscale import experiments, results
    from modscale.plots import render, save

    for name in THEORY_EXPERIMENTS:
        experiments.run_sweep(name, out, tier="small")
    records = [r for r in results.load(out / "results.jsonl").records if r.experiment in THEORY_EXPERIMENTS]
    for output in render(records):
        for path in save(output, out):
            print(path)
    print(f"theory figures written to {out}/", file=sys.stderr)
    return 0
