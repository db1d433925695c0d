"""``modscale theory``: numbers on the command line, one-line errors with exit 2, and the figures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from modscale.cli import main
from modscale.theory import modular_losses, monolithic_losses, sample_complexity, spectrum


def test_prints_train_and_test(capsys) -> None:
    assert main(["theory", "--n", "1000", "--p", "500", "--m", "4", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    train, test = monolithic_losses(1000, 500, spectrum(4))
    assert row["train"] == pytest.approx(float(train)) and row["test"] == pytest.approx(float(test))


def test_grid_is_the_cartesian_product(capsys) -> None:
    assert main(["theory", "--n", "100", "1000", "--p", "50", "5000", "--m", "2", "9", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8
    for r in rows:
        train, test = monolithic_losses(r["n"], r["p"], spectrum(r["m"]))
        assert r["test"] == pytest.approx(float(test)) and r["train"] == pytest.approx(float(train))


def test_table_marks_the_threshold(capsys) -> None:
    assert main(["theory", "--n", "1000", "--p", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].split()[-1] == "inf"


def test_modular_and_sample_complexity(capsys) -> None:
    main(
        [
            "theory",
            "--modular",
            "--k",
            "4",
            "--b",
            "1",
            "--m",
            "2",
            "9",
            "--n",
            "1000",
            "--p",
            "400",
            "--json",
        ]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["test"] == rows[1]["test"] == pytest.approx(float(modular_losses(1000, 400, 4, 1)[1]))
    main(["theory", "--eps", "0.4", "--m", "3", "--family", "power", "--min-over-p", "--json"])
    row = json.loads(capsys.readouterr().out)
    assert row["n_star"] == pytest.approx(float(sample_complexity(0.4, 3, family="power")))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["theory", "--n", "0"], "n must be positive"),
        (["theory", "--p", "-3"], "p must be >= 1"),
        (["theory", "--m", "0.5"], "m must be >= 1"),
        (["theory", "--eps", "0"], "eps must be positive"),
        (["theory", "--family", "gauss"], "invalid choice: 'gauss'"),
        (["theory", "--n", "abc"], "invalid float value"),
        (["theory", "--min-over-p"], "--min-over-p needs --eps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    # argparse's own complaints name the subcommand once ("modscale theory: error: ..."), ours the program
    assert lines[0].startswith(("modscale: error: ", "modscale theory: error: "))
    assert lines[0].count("modscale") == 1


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "modscale", "theory", "--n", "300", "--p", "30", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert np.isfinite(json.loads(out.stdout)["test"])
    bad = subprocess.run(
        [sys.executable, "-m", "modscale", "theory", "--n", "-1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_figures_are_written(tmp_path) -> None:
    assert main(["theory", "--figures", str(tmp_path)]) == 0
    for name in ("loss_trends", "theoretical_m_vs_n"):
        for ext in ("png", "pdf"):
            path = tmp_path / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 10_000
