"""Shared test settings: single-threaded BLAS and torch, so that results and run times do not depend on
how busy the machine is (a 2-core machine running two-threaded BLAS under load can be 20x slower)."""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _single_threaded():
    import torch

    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
