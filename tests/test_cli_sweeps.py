"""``modscale list | run | reproduce | plot | report``: outputs, exit codes, nothing written on bad input."""

from __future__ import annotations

import argparse
import io
import json
import socket

import pytest

from modscale import cli
from modscale.cli import _sweeps
from modscale.results import load


@pytest.fixture
def main(monkeypatch):
    """``modscale`` with the sweep commands, whether or not the command table registers them yet."""
    original = cli.build_parser

    def build():
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "reproduce" not in sub.choices:
            _sweeps.add_parsers(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main


def test_list_names_every_experiment(main, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("theory_loss_trends", "theory_samples_vs_m", "theory_check"):
        assert name in out
    assert main(["list", "-v", "theory_check"]) == 0
    out = capsys.readouterr().out
    assert "--set draws: int = 20" in out and "smoke: 2 configs x 2 seeds" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope"], "unknown experiment 'nope'; valid names: "),
        (["run", "theory_check", "--set", "n=abc"], "config key 'n' expects int, got 'abc'"),
        (["run", "theory_check", "--set", "zz=1"], "has no config key 'zz'; valid keys: n, p, m"),
        (["run", "theory_check", "--set", "n=100", "p=100"], "p must differ from n by more than 1"),
        (["run", "theory_check", "--tier", "huge"], "invalid choice: 'huge'"),
        (["run", "theory_check", "--seeds", "0"], "expected a positive integer"),
        (["run", "theory_check", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["run", "theory_check", "--ray-address", "1.2.3.4:5"], "--ray-address needs --backend ray"),
        (["reproduce", "--only", "theory_check,nope"], "unknown experiment 'nope'"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_write_nothing(main, capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_out_below_a_file_is_a_usage_error(main, capsys, tmp_path):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" / "o"
    assert main(["run", "theory_check", "--tier", "smoke", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write the results file" in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_experiment_lists_every_valid_name(main, capsys, tmp_path):
    from modscale.experiments import names

    assert main(["run", "nope", "--out", str(tmp_path / "out")]) == 2
    listed = capsys.readouterr().err.strip().split("valid names: ")[1].split(", ")
    assert listed == sorted(names()) and "theory_check" in listed


def test_unreachable_ray_address_is_a_quick_usage_error(main, capsys, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    argv = [
        "run",
        "theory_check",
        "--tier",
        "smoke",
        "--backend",
        "ray",
        "--ray-address",
        f"127.0.0.1:{port}",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in capsys.readouterr().err
    assert not out.exists()


def test_run_then_rerun_resumes(main, capsys, tmp_path):
    argv = ["run", "theory_loss_trends", "--tier", "smoke", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    n = len(load(tmp_path).records)
    assert (
        f"theory_loss_trends: {n} run(s): {n} run now" in out and f"results: {tmp_path}/results.jsonl" in out
    )
    assert main([*argv, "--set", "c=1.0,1.15"]) == 0  # c=1.15 is the default: those runs are stored
    out = capsys.readouterr().out
    assert f"{2 * n} run(s): {n} run now" in out and f"{n} already stored" in out


def test_plot_and_report(main, capsys, tmp_path):
    assert main(["run", "theory_samples_vs_m", "--tier", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "figures" / f"theoretical_m_vs_n.{f}") for f in ("png", "pdf")]
    assert (tmp_path / "figures" / "theoretical_m_vs_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figures" / "theoretical_m_vs_n.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r" / "page.html")]) == 0
    assert (tmp_path / "r" / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["plot", str(tmp_path), "--formats", "png,gif"]) == 2
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no results in" in capsys.readouterr().err


def test_plot_reports_what_it_skipped(main, capsys, tmp_path):
    assert main(["run", "theory_samples_vs_m", "--tier", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(json.dumps({"experiment": "gone", "version": "0.0.1"}) + "\n")
        f.write('{"experiment": "theory_sam')  # torn by a kill
    capsys.readouterr()
    assert main(["plot", str(tmp_path), "--formats", "png"]) == 0
    err = capsys.readouterr().err
    assert "ignored a torn last line" in err and "written by modscale 0.0.1" in err


def test_reproduce_writes_results_figures_summary_and_report(main, capsys, tmp_path):
    argv = [
        "reproduce",
        "--tier",
        "smoke",
        "--out",
        str(tmp_path),
        "--only",
        "theory_loss_trends,theory_check",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    for line in (
        f"results: {tmp_path}/results.jsonl",
        f"figures: {tmp_path}/figures",
        f"report:  {tmp_path}/report.html",
        f"summary: {tmp_path}/summary.txt",
    ):
        assert line in captured.out
    assert "theory_check: 4 run(s) to do" in captured.err and "done " in captured.err  # plain progress lines
    for stem in ("loss_trends", "theory_check"):
        assert (tmp_path / "figures" / f"{stem}.png").exists() and (
            tmp_path / "figures" / f"{stem}.pdf"
        ).exists()
    summary = (tmp_path / "summary.txt").read_text()
    assert "theory_check: 4 runs (2 configs)" in summary and "paper 2.85" in summary
    assert main(argv) == 0  # resumable: everything is stored, nothing runs again
    assert "4 already stored" in capsys.readouterr().out


def test_plain_progress_prints_an_eta():
    stream = io.StringIO()
    p = _sweeps.PlainProgress(stream, every_s=0.0)
    p.start(10, 2, cost=10.0)
    p.experiment("a", 10, 2, cost=10.0)
    p.chunk("a", 5, 0.1, cost=5.0)
    p.chunk("a", 5, 0.1, cost=5.0)
    p.finish()
    lines = stream.getvalue().splitlines()
    assert (
        lines[0] == "10 run(s) to do, 2 already stored, about 0:10 here"  # the calibrated estimate
        and lines[1] == "a: 10 run(s) to do, 2 already stored"
    )
    assert lines[2].startswith("[5/10] a: 5/10 runs, elapsed 0:00, ETA 0:0")
    assert lines[-1].startswith("done 10/10 run(s) in ")


def test_bar_progress_on_a_terminal_ends_full():
    bar = _sweeps.BarProgress()
    bar.bar.console.file = io.StringIO()
    bar.start(3, 1, cost=0.3)
    bar.experiment("a", 3, 1, cost=0.3)
    for _ in range(3):
        bar.chunk("a", 1, 0.01, cost=0.1)
    bar.finish()
    task = bar.bar.tasks[0]
    assert task.finished and task.fields["runs"] == "3/3 runs" and task.description == "done"
