"""``modscale fit``: a CSV in, the model, module table, figure and summary out; bad CSVs exit 2."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_val_score

from modscale.cli import main


def _write(path, X, y, header=("a", "b", "c", "y")):
    rows = [",".join(header)] + [",".join(str(v) for v in (*x, t)) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def test_fit_writes_model_table_and_figure(tmp_path):
    g = np.random.default_rng(0)
    X = g.normal(size=(200, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    _write(tmp_path / "d.csv", X, y)
    out = tmp_path / "model"
    assert main(["fit", str(tmp_path / "d.csv"), "--target", "y", "--out", str(out), "--device", "cpu"]) == 0
    est = pickle.loads((out / "model.pkl").read_bytes())
    np.testing.assert_allclose(est.predict(X), est.predict(X.copy()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["features"] == ["a", "b", "c"]
    table = list(csv.reader((out / "modules.csv").read_text().splitlines()))
    assert table[0][:7] == [
        "module",
        "kind",
        "row",
        "variance_share",
        "top_features",
        "offset",
        "projection[a]",
    ]
    assert len(table) == 1 + summary["n_modules"] + 1  # modules (b = 1) and the linear term
    assert (out / "modules.png").stat().st_size > 1000
    # the cross-validated score: 5 folds by default, the same number as cross_val_score (second route)
    cv = summary["cv_score"]
    assert cv["folds"] == 5 and len(cv["scores"]) == 5 and cv["mean"] < summary["train_score"]
    again = cross_val_score(
        clone(est), X, y, cv=KFold(5, shuffle=True, random_state=0)
    )  # fmt: skip
    np.testing.assert_allclose(cv["scores"], again, rtol=1e-12)
    # a module's row: z = projection @ x + offset is what transform gives
    mod = table[1]
    proj, offset = np.array(mod[6:], dtype=float), float(mod[5])
    np.testing.assert_allclose(X @ proj + offset, est.transform(X)[:, int(mod[0])], atol=1e-4)


def test_fit_writes_every_class_linear_term_and_skips_cv_on_request(tmp_path, capsys):
    g = np.random.default_rng(1)
    X = g.normal(size=(240, 3))
    labels = np.array(["low", "mid", "high"])[np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.5, 0.5])]
    _write(tmp_path / "c.csv", X, labels)
    out = tmp_path / "clf"
    args = [
        "fit",
        str(tmp_path / "c.csv"),
        "--target",
        "y",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--cv",
        "0",
    ]
    assert main([*args, "--n-modules", "2"]) == 0
    assert "no cross-validation (--cv 0)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["cv_score"] == {"folds": 0, "why": "--cv 0"}
    table = list(csv.reader((out / "modules.csv").read_text().splitlines()))[1:]
    linear = [r for r in table if r[1] == "linear"]
    assert [r[2] for r in linear] == ["logit high", "logit low", "logit mid"]  # every class, not class 0's
    est = pickle.loads((out / "model.pkl").read_bytes())
    W = est.model_.W[0].detach().numpy().T / est.x_scale_  # (C, m) in the original units
    np.testing.assert_allclose(np.array([r[6:] for r in linear], dtype=float), W, atol=1e-6)
    assert main([*args[:-1], "1"]) == 2
    assert "--cv must be 0 (no cross-validation) or >= 2 folds, got 1" in capsys.readouterr().err


def test_text_or_missing_column_is_one_error_and_exit_2(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,3\n4,,6\n7,8,9\n")
    assert main(["fit", str(tmp_path / "d.csv"), "--target", "y", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'b' (line 3: a missing value)" in err[0]
    (tmp_path / "e.csv").write_text("a,b,y\n1,red,3\n4,5,6\n")
    assert main(["fit", str(tmp_path / "e.csv"), "--target", "y", "--out", str(tmp_path / "m")]) == 2
    assert "'b' (line 2: 'red')" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "e.csv"), "--target", "z", "--out", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()
