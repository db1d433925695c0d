"""``modscale fit data.csv --target y --out model/``: a modular estimator on a CSV file, and what it learned.

Writes to the output folder: ``model.pkl`` (the fitted estimator, ``pickle.load`` gives it back),
``modules.csv`` (one row per module coordinate and, for the linear term, one per output: the regression
target, or every class's logit; variance share, top features, offset and the projection in the original
feature units), ``modules.png`` (each module's shape function over the data's density,
:func:`modscale.plots.plot_modules`) and ``summary.json`` (task, columns, n_modules, the score on the
training rows and a ``--cv``-fold cross-validated score: the training score alone flatters a model that
overfits). Every column must hold numbers; a column with text or missing values is one error naming it
(exit 2), and nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pickle
from pathlib import Path

import numpy as np

from modscale.errors import InvalidValue

_MISSING = {"", "na", "nan", "null", "none", "?"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a modular estimator on a CSV file; writes the model, a module table and a figure",
        description="Fit ModularRegressor (or ModularClassifier) with its defaults on a CSV file with a "
        "header row. Example: modscale fit data.csv --target y --out model/",
    )
    p.add_argument("csv", type=Path, help="CSV file with a header row; every column numeric")
    p.add_argument("--target", required=True, help="name of the target column")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument(
        "--task",
        choices=("auto", "regression", "classification"),
        default="auto",
        help="auto (default): classification when the target holds text or at most 20 distinct integers",
    )
    p.add_argument("--n-modules", default="auto", help="number of modules or 'auto' (default)")
    p.add_argument(
        "--cv", type=int, default=5,
        help="folds of the cross-validated score (default 5; stratified for classes, shuffled with the "
        "seed); 0 skips it",
    )  # fmt: skip
    p.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.set_defaults(handler=run)


def read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X (n, m) float64, y (n,) raw strings, feature names); one error for bad input."""
    if not path.is_file():
        raise InvalidValue(f"{path}: no such file")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise InvalidValue(f"{path}: needs a header row and at least one data row, got {len(rows)} rows")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise InvalidValue(f"{path}: no column {target!r}; columns are {header}")
    body = rows[1:]
    short = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if short:
        raise InvalidValue(f"{path}: line {short[0]} has a different number of fields than the header")
    t = header.index(target)
    features = [h for i, h in enumerate(header) if i != t]
    if not features:
        raise InvalidValue(f"{path}: no feature columns besides the target {target!r}")
    bad: list[str] = []
    X = np.empty((len(body), len(features)))
    for j, col in enumerate(i for i in range(len(header)) if i != t):
        for r, row in enumerate(body):
            cell = row[col].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                kind = "a missing value" if cell.lower() in _MISSING else f"{cell!r}"
                bad.append(f"{header[col]!r} (line {r + 2}: {kind})")
                break
            X[r, j] = value
    if bad:
        raise InvalidValue(
            f"{path}: every feature column must hold finite numbers with no missing values; not so in "
            + ", ".join(bad)
        )
    y = np.array([row[t].strip() for row in body])
    if any(v.lower() in _MISSING for v in y):
        raise InvalidValue(f"{path}: the target column {target!r} has missing values")
    return X, y, features


def _task(y: np.ndarray, task: str) -> tuple[str, np.ndarray]:
    try:
        numeric = y.astype(np.float64)
    except ValueError:
        numeric = None
    if task == "regression":
        if numeric is None or not np.isfinite(numeric).all():
            raise InvalidValue("--task regression needs a numeric target column")
        return task, numeric
    if task == "auto":
        integer = numeric is not None and np.all(numeric == np.round(numeric))
        task = (
            "classification"
            if numeric is None or (integer and len(np.unique(numeric)) <= 20)
            else "regression"
        )
        if task == "regression":
            return task, numeric
    return "classification", y if numeric is None else numeric


def run(args: argparse.Namespace) -> int:
    from modscale.estimators import ModularClassifier, ModularRegressor
    from modscale.plots import plot_modules

    if args.cv < 0 or args.cv == 1:
        raise InvalidValue(f"--cv must be 0 (no cross-validation) or >= 2 folds, got {args.cv}")
    X, y_raw, features = read_csv(args.csv, args.target)
    task, y = _task(y_raw, args.task)
    K = args.n_modules if args.n_modules == "auto" else _int("--n-modules", args.n_modules)
    cls = ModularRegressor if task == "regression" else ModularClassifier
    est = cls(n_modules=K, device=args.device, random_state=args.random_state)
    cv = _cross_validate(est, X, y, task, args.cv, args.random_state)
    est.fit(X, y)

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "model.pkl").open("wb") as fh:
        pickle.dump(est, fh)
    with (args.out / "modules.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["module", "kind", "row", "variance_share", "top_features", "offset",
                    *[f"projection[{f}]" for f in features]])  # fmt: skip
        for row in module_rows(est, features):
            w.writerow(row)
    fig = plot_modules(est.shape_functions(feature_names=features), title=f"{args.csv.name}: {args.target}")
    fig.savefig(args.out / "modules.png", dpi=120)
    summary = dict(
        task=task, target=args.target, features=features, n_samples=len(y), n_modules=int(est.n_modules_),
        score="R^2" if task == "regression" else "accuracy", train_score=float(est.score(X, y)),
        cv_score=cv,
    )  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    held_out = (
        f"{cv['folds']}-fold cross-validated {cv['mean']:.3f} ± {cv['sd']:.3f}, "
        if cv.get("mean") is not None
        else f"no cross-validation ({cv['why']}), "
    )
    print(
        f"{task}: {len(y)} rows, {len(features)} features, {est.n_modules_} modules; {summary['score']} "
        f"{held_out}training {summary['train_score']:.3f}; wrote model.pkl, modules.csv, modules.png, "
        f"summary.json to {args.out}"
    )
    return 0


def _cross_validate(est, X: np.ndarray, y: np.ndarray, task: str, folds: int, seed: int) -> dict:
    """Score of ``est`` on ``folds`` held-out folds (shuffled with ``seed``; stratified for classes).
    Fewer folds where the rarest class has fewer members; none (with why) where that leaves < 2."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    if folds == 0:
        return dict(folds=0, why="--cv 0")
    if task == "classification":
        folds = min(folds, int(np.unique(y, return_counts=True)[1].min()))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed) if folds >= 2 else None
    else:
        folds = min(folds, len(y))
        splitter = KFold(folds, shuffle=True, random_state=seed) if folds >= 2 else None
    if splitter is None:
        return dict(folds=0, why="a class has a single row")
    scores = [
        float(clone(est).fit(X[tr], y[tr]).score(X[te], y[te])) for tr, te in splitter.split(X, y)
    ]  # fmt: skip
    sd = float(np.std(scores, ddof=1))
    return dict(folds=folds, mean=float(np.mean(scores)), sd=sd, scores=scores, seed=seed)


def module_rows(est, features: list[str]) -> list[list]:
    """The rows of modules.csv: each module's b projection rows (row ``z0``, ``z1``, ...) and the linear
    term's rows, one per output (``y`` or ``y0, y1, ...``; a classifier's ``logit <class>``), each with the
    projection in the original feature units; a module's offset makes z = projection @ x + offset."""
    rows = []
    outputs = est.output_names_
    for d in est.describe_modules(features):
        top = "; ".join(f"{name} {v:+.3f}" for name, v in d["top_features"])
        labels = [f"z{j}" for j in range(len(d["projection"]))] if d["kind"] == "module" else outputs
        offsets = d["offset"] if d["offset"] is not None else [""] * len(labels)
        for label, proj, off in zip(labels, d["projection"], offsets, strict=True):
            off = off if off == "" else f"{off:.6g}"
            rows.append([d["module"], d["kind"], label, f"{d['variance_share']:.4f}", top, off,
                         *np.round(proj, 6)])  # fmt: skip
    return rows


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidValue(f"{name} must be 'auto' or an integer, got {value!r}") from None


__all__ = ["add_parsers", "module_rows", "read_csv", "run"]
