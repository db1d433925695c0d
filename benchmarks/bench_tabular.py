"""ModularRegressor / ModularClassifier against what users pick instead, on the same splits in one run.

Peers (``pip install -e ".[bench]"``; never runtime dependencies): projection pursuit regression
(``projection-pursuit``, skpp), InterpretML's EBM (``interpret-core``), scikit-learn's MLP (64, 64) with
early stopping, HistGradientBoosting, and Ridge / LogisticRegression. Every estimator is default-constructed
(as a new user would try it) with ``random_state`` = the split's seed; the MLP, Ridge and logistic regression
see standardised features (a StandardScaler in a pipeline), the trees, projection pursuit (which scored
R^2 -0.71 on diabetes split 0 with them) and the modular estimators the raw ones. Fits run one at a time
on one CPU thread. Two ablations of ours justify defaults: ``modular_linear_off`` (no linear term) and
``modular_random`` (random projections instead of the kernel rule); "gap to best peer" compares the
default ModularRegressor / Classifier with the best peer's mean.

Data (nothing is downloaded):

- planted additive index models y = sum_i g_i(U_i x) + 0.1 eps, x ~ N(0, I_m), U_i random orthonormal
  b x m blocks, ridge functions g from ``RIDGE_1D`` / ``RIDGE_2D``: m = 10, 20, 50 at b = 1 and m = 20
  at b = 2, and modscale's SineTask(m=16, k=4); the task is fixed (seed 0), each split draws its own
  ``--n`` training and 4000 test samples (seed = split);
- every real data set that ships inside the installed packages and has at least 200 rows and 3 features:
  scikit-learn's diabetes, breast cancer, wine (178 rows, kept: the issue's table has it), digits, iris
  (150, kept likewise), and statsmodels' fair (affairs), star98 (share of pupils above the national
  median) and anes96 (party identification, 7 classes); 25 % test rows, stratified for classes,
  split seed = split index. Too small or not tabular (skipped): statsmodels' longley, stackloss,
  spector, cpunish, copper, committee, scotland, statecrime (< 60 rows), heart, ccard (< 75),
  engel (1 feature), the time series (co2, nile, sunspots, macrodata, elnino, ...) and randhie
  (20,190 rows of a count target; EBM alone would take hours here).

Results go to ``--out`` (JSON lines, one per fit; a rerun skips what is there) and the table is printed from
that file: test R^2 (regression) or accuracy (classification), mean +- SD over splits, and mean fit
seconds. ``--speed`` instead times the issue's goal: a default ModularRegressor against MLPRegressor(64, 64)
with early stopping on the same data (n = 4000, m = 20, K = 4), alternating, and ends with

    ratio=<modular seconds / MLP seconds, median over rounds> modular_s=<median> mlp_s=<median>

    python benchmarks/bench_tabular.py --out bench_tabular.jsonl            # everything (about an hour)
    python benchmarks/bench_tabular.py --data diabetes wine --estimators modular ridge
    python benchmarks/bench_tabular.py --speed --rounds 3
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from modscale._provenance import code_version  # noqa: E402
from modscale.estimators import ModularClassifier, ModularRegressor  # noqa: E402
from modscale.tasks import SineTask  # noqa: E402

RIDGE_1D = (
    lambda z: np.sin(2 * z[..., 0]),
    lambda z: z[..., 0] ** 2 / 2,
    lambda z: np.tanh(2 * z[..., 0]),
    lambda z: np.cos(1.5 * z[..., 0]),
    lambda z: np.abs(z[..., 0]),
)
RIDGE_2D = (
    lambda z: np.sin(z[..., 0]) * np.cos(z[..., 1]),
    lambda z: z[..., 0] * z[..., 1],
    lambda z: np.exp(-(z[..., 0] ** 2 + z[..., 1] ** 2) / 2) * 2,
)


# data -------------------------------------------------------------------------------------------------------
def index_task(m: int, k: int, b: int):
    """A planted additive index model: (sample(n, seed) -> (X, y), projections (k, b, m))."""
    g = np.random.default_rng(0)
    Q = np.linalg.qr(g.normal(size=(m, k * b)))[0]  # orthonormal columns: k blocks of b directions
    U = Q.T.reshape(k, b, m)
    fns = RIDGE_1D if b == 1 else RIDGE_2D

    def sample(n: int, seed: int):
        r = np.random.default_rng(1000 + seed)
        X = r.normal(size=(n, m))
        Z = np.einsum("kbm,nm->knb", U, X)
        y = sum(fns[i % len(fns)](Z[i]) for i in range(k)) + 0.1 * r.normal(size=n)
        return X, y

    return sample


def even_task(m: int):
    """Three even ridge functions (|z|, z^2 / 2, cos 1.5 z): no first-order (linear) content at all."""
    g = np.random.default_rng(0)
    U = np.linalg.qr(g.normal(size=(m, 3)))[0].T  # (3, m) orthonormal
    fns = (np.abs, lambda z: z**2 / 2, lambda z: np.cos(1.5 * z))

    def sample(n: int, seed: int):
        r = np.random.default_rng(1000 + seed)
        X = r.normal(size=(n, m))
        Z = X @ U.T  # (n, 3)
        y = sum(f(Z[:, i]) for i, f in enumerate(fns)) + 0.1 * r.normal(size=n)
        return X, y

    return sample


def correlated_task(m: int, k: int):
    """Correlated, non-Gaussian inputs: x = A s with s i.i.d. uniform (half the coordinates) or Laplace (the
    others), both of unit variance, and A a random mixing whose covariance A A^T has condition number ~ 10;
    y = sum_i g_i(u_i^T x) + 0.1 eps with u_i of unit output variance (u_i^T A A^T u_i = 1), g as RIDGE_1D."""
    g = np.random.default_rng(0)
    Q1, Q2 = (np.linalg.qr(g.normal(size=(m, m)))[0] for _ in range(2))
    A = Q1 @ np.diag(np.geomspace(1.0, np.sqrt(10.0), m)) @ Q2  # (m, m)
    # u_i = A^{-T} q_i, q_i orthonormal: u_i^T x = q_i^T s, unit variance, mutually uncorrelated
    Qk = np.linalg.qr(g.normal(size=(m, k)))[0]  # (m, k)
    U = np.linalg.solve(A.T, Qk).T  # (k, m)

    def sample(n: int, seed: int):
        r = np.random.default_rng(1000 + seed)
        h = m // 2
        s = np.concatenate(
            [
                r.uniform(-np.sqrt(3), np.sqrt(3), size=(n, h)),
                r.laplace(scale=1 / np.sqrt(2), size=(n, m - h)),
            ],
            axis=1,
        )  # (n, m), unit variance
        X = s @ A.T
        Z = X @ U.T  # (n, k)
        y = sum(RIDGE_1D[i % len(RIDGE_1D)](Z[:, i : i + 1]) for i in range(k)) + 0.1 * r.normal(size=n)
        return X, y

    return sample


def sine_task(m: int, k: int):
    task = SineTask(m, k, generator=0)

    def sample(n: int, seed: int):
        X, y = task.sample(n, generator=1000 + seed)
        return X.numpy().astype(np.float64), y.numpy().ravel().astype(np.float64)

    return sample


PLANTED_K = {  # k of each planted task, for n_modules=planted
    "sine m=16 k=4": 4, "index m=10 k=3 b=1": 3, "index m=20 k=4 b=1": 4, "index m=50 k=4 b=1": 4,
    "index m=20 k=3 b=2": 3, "even m=20 k=3": 3, "correlated m=20 k=4": 4,
}  # fmt: skip
PLANTED_B = {"index m=20 k=3 b=2": 2}  # module_dim=planted: b of the planted modules (1 elsewhere)
SYNTHETIC = {
    "sine m=16 k=4": sine_task(16, 4),
    "index m=10 k=3 b=1": index_task(10, 3, 1),
    "index m=20 k=4 b=1": index_task(20, 4, 1),
    "index m=50 k=4 b=1": index_task(50, 4, 1),
    "index m=20 k=3 b=2": index_task(20, 3, 2),
    "even m=20 k=3": even_task(20),
    "correlated m=20 k=4": correlated_task(20, 4),
}


def _sklearn(name):
    from sklearn import datasets

    return lambda: getattr(datasets, f"load_{name}")(return_X_y=True)


def _statsmodels(name):
    def load():
        import statsmodels.api as sm

        d = getattr(sm.datasets, name).load_pandas()
        if name == "star98":  # share of pupils above the national median in maths
            y = d.endog["NABOVE"] / (d.endog["NABOVE"] + d.endog["NBELOW"])
            return d.exog.to_numpy(np.float64), y.to_numpy(np.float64)
        return d.exog.to_numpy(np.float64), d.endog.to_numpy(np.float64).ravel()

    return load


REAL = {  # name: (loader, "regression" | "classification")
    "diabetes": (_sklearn("diabetes"), "regression"),
    "fair": (_statsmodels("fair"), "regression"),
    "star98": (_statsmodels("star98"), "regression"),
    "breast cancer": (_sklearn("breast_cancer"), "classification"),
    "wine": (_sklearn("wine"), "classification"),
    "digits": (_sklearn("digits"), "classification"),
    "iris": (_sklearn("iris"), "classification"),
    "anes96": (_statsmodels("anes96"), "classification"),
}


def kind_of(data: str) -> str:
    return "regression" if data in SYNTHETIC else REAL[data][1]


def split(data: str, seed: int, n: int):
    if data in SYNTHETIC:
        X, y = SYNTHETIC[data](n, seed)
        Xt, yt = SYNTHETIC[data](4000, 10_000 + seed)
        return X, y, Xt, yt
    load, kind = REAL[data]
    X, y = load()
    if kind == "classification":  # integer labels 0..C-1 (EBM returns float labels as strings)
        y = np.unique(y, return_inverse=True)[1]
    strat = y if kind == "classification" else None
    X, Xt, y, yt = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=strat)
    return X, y, Xt, yt


# estimators -------------------------------------------------------------------------------------------------
def modular_options(name: str, data: str | None = None) -> dict:
    """Keywords of a modular estimator name: "modular", the two ablations, or a variant written
    ``modular[key=value,...]`` (values as Python literals; ``n_modules=planted`` and ``module_dim=planted``
    are the planted task's k and b),
    e.g. ``"modular[early_stopping=False,n_modules=planted]"``."""
    fixed = {"modular": {}, "modular_linear_off": dict(linear_term=False),
             "modular_random": dict(projection_init="random")}  # fmt: skip
    if name in fixed:
        return fixed[name]
    if not (name.startswith("modular[") and name.endswith("]")):
        raise ValueError(f"unknown estimator {name!r}; known: {ESTIMATORS} or modular[key=value,...]")
    options = {}
    for item in filter(None, name[len("modular[") : -1].split(",")):
        key, _, value = item.partition("=")
        if key in ("n_modules", "module_dim") and value == "planted":
            if data not in PLANTED_K:
                return {"n_modules": None}  # no planted k: not run
            options[key] = PLANTED_K[data] if key == "n_modules" else PLANTED_B.get(data, 1)
            continue
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"estimator {name!r}: {item!r} is not key=<Python literal>") from err
    return options


def make(name: str, kind: str, seed: int, data: str | None = None):
    """The estimator ``name`` for ``kind``, or None where the peer has no such estimator."""
    reg = kind == "regression"
    if name.startswith("modular"):
        options = modular_options(name, data)
        if options.get("n_modules", "auto") is None:
            return None
        cls = ModularRegressor if reg else ModularClassifier
        return cls(device="cpu", random_state=seed, **options)
    if name == "ppr":
        if not reg:
            return None
        from skpp import ProjectionPursuitRegressor

        return ProjectionPursuitRegressor(random_state=seed)  # default; standardised inputs scored worse
    if name == "ebm":
        from interpret.glassbox import ExplainableBoostingClassifier, ExplainableBoostingRegressor

        cls = ExplainableBoostingRegressor if reg else ExplainableBoostingClassifier
        return cls(random_state=seed, n_jobs=1)
    if name == "mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPRegressor if reg else MLPClassifier
        return make_pipeline(
            StandardScaler(), cls(hidden_layer_sizes=(64, 64), early_stopping=True, random_state=seed)
        )
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        cls = HistGradientBoostingRegressor if reg else HistGradientBoostingClassifier
        return cls(random_state=seed)
    if name == "ridge":
        from sklearn.linear_model import LogisticRegression, RidgeCV

        return make_pipeline(StandardScaler(), RidgeCV() if reg else LogisticRegression(max_iter=1000))
    raise ValueError(f"unknown estimator {name!r}")


ESTIMATORS = ("modular", "ppr", "ebm", "mlp", "hgb", "ridge", "modular_linear_off", "modular_random")
LABELS = {
    "modular": "Modular (ours)",
    "modular_linear_off": "Modular, linear_term=False",
    "modular_random": "Modular, random projections",
    "ppr": "projection pursuit",
    "ebm": "EBM",
    "mlp": "MLP (64, 64)",
    "hgb": "HistGradientBoosting",
    "ridge": "Ridge / Logistic",
}


def run_one(data: str, est_name: str, seed: int, n: int) -> dict | None:
    kind = kind_of(data)
    est = make(est_name, kind, seed, data)
    if est is None:
        return None
    X, y, Xt, yt = split(data, seed, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a peer's default budget is the peer's
        t0 = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - t0
    score = float(est.score(Xt, yt))  # R^2 or accuracy
    row = dict(data=data, estimator=est_name, split=seed, score=score, seconds=seconds, n_train=len(y),
               n=task_n(data, n), **stamp(est_name), params=_params(est))  # fmt: skip
    inner = est[-1] if hasattr(est, "steps") else est
    if est_name.startswith("modular"):
        row["n_modules"] = int(inner.n_modules_)
    return row


def task_n(data: str, n: int) -> int | None:
    """The ``--n`` that a data set's rows depend on: planted tasks only (real data have their own size)."""
    return n if data in SYNTHETIC else None


def stamp(est_name: str) -> dict:
    """What code made a row: modscale's commit (a dirty hash where the checkout has local changes) for our
    estimators, the peer's package version for the others, and the shared libraries' versions."""
    import sklearn

    row = dict(torch=torch.__version__, sklearn=sklearn.__version__)
    if est_name.startswith("modular"):
        row["commit"] = code_version()
    else:
        package = {"ppr": "projection-pursuit", "ebm": "interpret-core"}.get(est_name, "scikit-learn")
        row["commit"] = f"{package} {importlib.metadata.version(package)}"
    return row


def _params(est) -> dict:
    """The estimator's non-default parameters as strings (the final step of a pipeline)."""
    inner = est[-1] if hasattr(est, "steps") else est
    changed = inner.get_params(deep=False)
    defaults = type(inner)().get_params(deep=False)
    return {k: repr(v) for k, v in changed.items() if repr(v) != repr(defaults.get(k))}


def row_key(row: dict) -> tuple:
    """The "already done" key: data set, estimator, split, --n for planted tasks, and the code (commit)."""
    return (row["data"], row["estimator"], row["split"], row.get("n"), row.get("commit"))


# the table --------------------------------------------------------------------------------------------------
def newest(rows: list[dict], n: int) -> list[dict]:
    """The rows a table reports: planted tasks at ``n`` only, and of several rows for one (data set,
    estimator, split) the last one written (the newest code's)."""
    latest = {}
    for r in rows:
        if r.get("n", n if r["data"] in SYNTHETIC else None) == task_n(r["data"], n):
            latest[(r["data"], r["estimator"], r["split"])] = r
    return list(latest.values())


def table(rows: list[dict], datasets: list[str], estimators: list[str], n: int = 2000) -> str:
    """Markdown: one line per data set, mean +- SD of the score and mean fit seconds per estimator (rows
    chosen by :func:`newest`); then the code that made them."""
    rows = newest(rows, n)
    head = "| data | metric | " + " | ".join(LABELS.get(e, e) for e in estimators) + " | gap to best peer |"
    lines = [head, "|" + "---|" * (len(estimators) + 3)]
    for d in datasets:
        cells, means = [], {}
        for e in estimators:
            v = [r for r in rows if r["data"] == d and r["estimator"] == e]
            if not v:
                cells.append("-")
                continue
            s = np.array([r["score"] for r in v])
            t = np.mean([r["seconds"] for r in v])
            sd = s.std(ddof=1) if len(s) > 1 else float("nan")
            means[e] = s.mean()
            cells.append(f"{s.mean():.3f} ± {sd:.3f} ({len(s)}), {t:.1f} s")
        peers = [means[e] for e in means if not e.startswith("modular")]
        best = max(means, key=means.get) if means else None  # bold: the best of all columns
        if best is not None:
            i = estimators.index(best)
            cells[i] = "**" + cells[i].replace(", ", "**, ", 1)
        gap = f"{means['modular'] - max(peers):+.3f}" if "modular" in means and peers else "-"
        metric = "R^2" if kind_of(d) == "regression" else "accuracy"
        lines.append(f"| {d} | {metric} | " + " | ".join(cells) + f" | {gap} |")
    made = sorted(
        {r.get("commit", "unstamped") for r in rows if r["data"] in datasets and r["estimator"] in estimators}
    )
    lines.append(f"\nRows made by: {', '.join(made)}; planted tasks at n = {n}.")
    return "\n".join(lines)


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# the speed goal ---------------------------------------------------------------------------------------------
def speed(rounds: int) -> int:
    from sklearn.neural_network import MLPRegressor

    sample = index_task(20, 4, 1)
    X, y = sample(4000, 0)
    Xt, yt = sample(4000, 1)
    ModularRegressor(device="cpu", n_modules=1, max_steps=5).fit(X[:300], y[:300])  # imports, once
    mod, mlp, modk = [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        a = MLPRegressor(hidden_layer_sizes=(64, 64), early_stopping=True, random_state=r).fit(X, y)
        mlp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        e = ModularRegressor(device="cpu", random_state=r).fit(X, y)
        mod.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        f = ModularRegressor(device="cpu", random_state=r, n_modules=4).fit(X, y)
        modk.append(time.perf_counter() - t0)
        print(
            f"round {r}: MLP {mlp[-1]:.2f} s (R^2 {a.score(Xt, yt):.3f}); modular default {mod[-1]:.2f} s "
            f"(R^2 {e.score(Xt, yt):.3f}, K = {e.n_modules_}); modular n_modules=4 {modk[-1]:.2f} s "
            f"(R^2 {f.score(Xt, yt):.3f})",
            flush=True,
        )
    ratio = np.median(np.array(mod) / np.array(mlp))
    ratio_k = np.median(np.array(modk) / np.array(mlp))
    print(f"ratio (n_modules=4) {ratio_k:.2f}")
    print(f"ratio={ratio:.3f} modular_s={np.median(mod):.3f} mlp_s={np.median(mlp):.3f}")
    return 0


def _estimator_name(name: str) -> str:
    if name not in ESTIMATORS:
        try:
            modular_options(name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[*SYNTHETIC, *REAL], help="data sets (default all)")
    parser.add_argument(
        "--estimators", nargs="+", default=list(ESTIMATORS), type=_estimator_name,
        help=f"any of {', '.join(ESTIMATORS)}, or a variant modular[key=value,...] (default: the named ones)",
    )  # fmt: skip
    parser.add_argument("--splits", type=int, default=5, help="splits (seeds 0..splits-1)")
    parser.add_argument("--n", type=int, default=2000, help="training samples of the planted tasks")
    parser.add_argument("--out", type=Path, default=Path("bench_tabular.jsonl"))
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and stop")
    parser.add_argument("--speed", action="store_true", help="the fit-time goal instead (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="for --speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.speed:
        return speed(args.rounds)
    unknown = [d for d in args.data if d not in SYNTHETIC and d not in REAL]
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; known: {[*SYNTHETIC, *REAL]}")
    rows = load_rows(args.out)
    done = {row_key(r) for r in rows}
    if not args.table_only:
        for d in args.data:
            for seed in range(args.splits):
                for e in args.estimators:
                    if (d, e, seed, task_n(d, args.n), stamp(e)["commit"]) in done:
                        continue
                    row = run_one(d, e, seed, args.n)
                    if row is None:
                        continue
                    rows.append(row)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(
                        f"{d:<22} {e:<8} split {seed}: {row['score']:.4f}  {row['seconds']:.1f} s", flush=True
                    )
    print(table([r for r in rows if r["split"] < args.splits], args.data, args.estimators, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
