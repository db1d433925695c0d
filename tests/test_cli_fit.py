"""``modscale fit``: a CSV in, the model, module table, figure and summary out; bad CSVs exit 2."""

from __future__ import annotations

import json
import pickle

import numpy as np

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
    table = (out / "modules.csv").read_text().splitlines()
    assert table[0].startswith("module,kind,variance_share,top_features,projection[a]")
    assert len(table) == 1 + summary["n_modules"] + 1  # modules and the linear term
    assert (out / "modules.png").stat().st_size > 1000


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
