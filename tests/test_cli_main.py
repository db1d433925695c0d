"""Behaviour of the ``modscale`` command as a whole (not of one subcommand)."""

from __future__ import annotations

import subprocess
import sys


def test_a_closed_pipe_is_not_an_error() -> None:
    """``modscale list -v | head -1``: the reader leaves early; no traceback, exit status 0."""
    with subprocess.Popen(
        [sys.executable, "-m", "modscale", "list", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
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
