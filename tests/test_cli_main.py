"""Behaviour of the ``modscale`` command as a whole (not of one subcommand)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modscale.errors import InvalidValue


def test_a_closed_pipe_is_not_an_error() -> None:
    """``modscale ... | head -1``: the reader leaves early; no traceback, exit status 0."""
    many = [str(n) for n in range(100, 5100)]  # ~400 kB of output, far beyond a pipe's buffer
    argv = [sys.executable, "-m", "modscale", "theory", "--p", "50", "--json", "--n", *many]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.readline()
        proc.stdout.close()  # the reader goes away while the command still has lines to write
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_version_and_no_command() -> None:
    out = subprocess.run([sys.executable, "-m", "modscale", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("modscale ")
    bare = subprocess.run([sys.executable, "-m", "modscale"], capture_output=True, text=True)
    assert bare.returncode == 2 and len(bare.stderr.strip().splitlines()) == 1


def test_data_dir_is_checked_then_handed_to_the_experiments(tmp_path, monkeypatch, capsys) -> None:
    from modscale.cli import main
    from modscale.data import DATA_ENV, locate_cifar10

    monkeypatch.delenv(DATA_ENV, raising=False)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", "theory_check", "--tier", "smoke", "--data-dir", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.npz" in err[0] and not out.exists()

    try:
        _, real = locate_cifar10()  # the data next to the checkout
    except InvalidValue:
        pytest.skip("CIFAR-10 is not next to the checkout")
    monkeypatch.setenv(DATA_ENV, "")  # restored after the test; main sets it
    assert main(["run", "theory_check", "--tier", "smoke", "--data-dir", str(real), "--out", str(out)]) == 0
    assert os.environ[DATA_ENV] == str(real.resolve())
