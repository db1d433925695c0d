"""Which code made a stored number: the git commit of modscale's checkout, or a hash of its source.

Every record of the results store carries it (``commit``), so a figure, a verdict or a calibration can tell
runs made by different code apart even when the package version did not change:

- ``<40 hex digits>``: the commit of the git checkout the package was imported from, with its sources clean;
- ``<commit>+dirty.<12 hex>``: that commit with local changes to the package's files (the hex is the hash
  below, so two different dirty states differ);
- ``src.<16 hex>``: no git checkout (an installed wheel): the first hex digits of a SHA-256 over the
  package's ``.py`` files, by path and content.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def source_hash(package: Path = PACKAGE) -> str:
    """SHA-256 (hex) over the ``.py`` files under ``package``: each file's relative path, then its bytes."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(package: Path = PACKAGE) -> str:
    """The commit (or source hash) of the code running now, as described in the module docstring; computed
    once per process (and package folder)."""
    return _code_version(Path(package).resolve())


@functools.cache
def _code_version(package: Path) -> str:
    commit = _git("rev-parse", "HEAD", cwd=package)
    # the package's files must be tracked there: an installed copy inside some other checkout (a virtual
    # environment in a project folder) is not that checkout's code
    tracked = _git("ls-files", "--", ".", cwd=package)
    if commit and len(commit) == 40 and tracked:
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", cwd=package)
        if changed == "":
            return commit
        if changed is not None:
            return f"{commit}+dirty.{source_hash(package)[:12]}"
    return f"src.{source_hash(package)[:16]}"


__all__ = ["code_version", "source_hash"]
