"""Which code made a record: the git commit of the checkout, marked when dirty, else a hash of the source."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from modscale._provenance import PACKAGE, code_version, source_hash
from modscale.experiments import registry, run_sweep
from modscale.results import load, make_record

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git checkout holding a package folder with two modules, committed."""
    package = tmp_path / "repo" / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub").mkdir()
    (package / "sub" / "b.py").write_text("y = 2\n")
    root = tmp_path / "repo"
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return root, package


def test_a_clean_checkout_is_its_commit(repo):
    root, package = repo
    assert code_version(package) == _git(root, "rev-parse", "HEAD")


def test_local_changes_are_marked_with_the_hash_of_the_changed_source(repo):
    root, package = repo
    (package / "a.py").write_text("x = 3\n")
    version = code_version(package)
    assert version == f"{_git(root, 'rev-parse', 'HEAD')}+dirty.{source_hash(package)[:12]}"


def test_an_untracked_copy_inside_a_checkout_is_not_that_checkout(repo):
    root, package = repo
    installed = root / ".venv" / "site-packages" / "pkg"  # a virtual environment inside the project
    shutil.copytree(package, installed)
    assert code_version(installed) == f"src.{source_hash(installed)[:16]}"


def test_without_git_the_source_hash_changes_with_any_file_and_name(repo, tmp_path):
    _, package = repo
    copy = tmp_path / "installed" / "pkg"
    shutil.copytree(package, copy)
    before = source_hash(copy)
    assert code_version(copy) == f"src.{before[:16]}"
    (copy / "a.py").write_text("x = 1 \n")  # one byte more
    assert source_hash(copy) != before
    (copy / "a.py").write_text("x = 1\n")
    assert source_hash(copy) == before  # content, not time stamps
    (copy / "a.py").rename(copy / "c.py")
    assert source_hash(copy) != before  # a file's name counts too


def test_every_stored_run_says_which_code_made_it(tmp_path):
    assert make_record("e", {}, 0, {}, wall_s=0.0, device="cpu").commit == code_version(PACKAGE)
    assert make_record("e", {}, 0, {}, wall_s=0.0, device="cpu", commit="abc").commit == "abc"
    run_sweep(registry.get("theory_check"), tmp_path, tier="smoke")
    records = load(tmp_path).records
    assert records and {r.commit for r in records} == {code_version(PACKAGE)}
