"""Shared test settings: deterministic, single-threaded torch so results do not depend on the machine load."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        yield
        return
    torch.set_num_threads(1)
    yield
