"""DESIGN section 6: the dependency directions between modscale's packages, checked on the source.

Each package lists the modscale packages it may import. A package that appears later is checked as soon as
its directory exists; an unknown top-level module fails the test until it is given a rule here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "modscale"

BASE = {"errors", "_checks", "_torch", "_provenance", "_files", "__init__"}  # leaves any package may use
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_provenance": set(),
    "_files": set(),
    "_checks": {"errors"},
    "_torch": {"errors"},
    "__init__": set(),  # lazily re-exports subpackages through importlib only
    "__main__": {"cli"},
    "paper": set(),
    "theory": set(),
    "data": set(),
    "tasks": {"data"},
    "models": set(),
    "rules": set(),
    "training": set(),
    "results": set(),
    "estimators": {"models", "rules", "training"},
    "experiments": {
        "theory",
        "data",
        "tasks",
        "models",
        "rules",
        "training",
        "results",
        "paper",
        "estimators",
    },
    "plots": {"theory", "results", "paper"},
    "cli": {
        "theory",
        "data",
        "tasks",
        "models",
        "rules",
        "training",
        "results",
        "paper",
        "estimators",
        "experiments",
        "plots",
    },
}
NO_TORCH = {"theory", "results", "paper", "plots", "errors", "_checks", "_provenance", "_files"}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Fully qualified names imported by one file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("modscale", *path.relative_to(SRC).parent.parts))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{alias.name}" for alias in node.names)
    return names


def _modscale_units(names: set[str]) -> set[str]:
    """The top-level modscale modules named (``from modscale import __version__`` names none)."""
    units = {n.split(".")[1] for n in names if n.startswith("modscale.")}
    return {u for u in units if (SRC / f"{u}.py").exists() or (SRC / u).is_dir()}


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_dependency_directions(path: Path) -> None:
    unit = _unit(path)
    assert unit in ALLOWED, f"{unit} has no dependency rule in tests/test_layout.py"
    imported = _modscale_units(_imports(path)) - {unit}
    forbidden = imported - ALLOWED[unit] - BASE
    assert not forbidden, f"{path.relative_to(SRC)} ({unit}) imports {sorted(forbidden)}"
    if unit in NO_TORCH:
        torchy = {n for n in _imports(path) if n.split(".")[0] == "torch" or n.startswith("modscale._torch")}
        assert not torchy, f"{path.relative_to(SRC)} must not import torch, imports {sorted(torchy)}"


def test_rules_know_no_nn_module() -> None:
    """DESIGN section 4: the learning rule takes tensors and returns projections; it knows no nn.Module."""
    for path in (SRC / "rules").rglob("*.py"):
        text = path.read_text()
        assert "nn.Module" not in text and "torch.nn import Module" not in text, path


def test_theory_import_does_not_load_torch() -> None:
    code = "import sys, modscale.theory; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
