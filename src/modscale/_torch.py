"""Torch helpers shared by every torch-using package: seeds -> CPU generators, device names -> devices.

Randomness is always passed in (a generator or an int seed); None means seed 0, so a run without one is
still reproducible. Generators live on the CPU: every draw in modscale happens there and moves to the
device afterwards, so a seed gives the same numbers on every machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import numbers
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator, Sequence

import torch

from modscale.errors import InvalidType, InvalidValue

GeneratorLike = torch.Generator | int | None


def as_generator(generator: GeneratorLike, name: str = "generator") -> torch.Generator:
    """A CPU ``torch.Generator`` from a generator (returned as is), an int seed >= 0, or None (seed 0)."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise InvalidValue(f"{name} must be a CPU torch.Generator, got one on {generator.device}")
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        if generator < 0:
            raise InvalidValue(f"{name} seed must be >= 0, got {generator}")
        return torch.Generator().manual_seed(int(generator))
    kind = type(generator).__name__
    raise InvalidType(f"{name} must be a torch.Generator, an int seed or None, got {kind}")


def as_generators(
    generator: GeneratorLike | Sequence[GeneratorLike], S: int, name: str = "generator"
) -> list[torch.Generator]:
    """S CPU generators: one generator/seed/None shared by all S replicas (drawn from in replica order), or
    a sequence of S of them, one per replica."""
    if isinstance(generator, Sequence) and not isinstance(generator, str | bytes):
        if len(generator) != S:
            raise InvalidValue(f"{name} must have one entry per replica (S = {S}), got {len(generator)}")
        return [as_generator(g, f"{name}[{i}]") for i, g in enumerate(generator)]
    return [as_generator(generator, name)] * S


def resolve_device(device: str | torch.device | None, default: torch.device | None = None) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; a name (``cpu``, ``cuda``, ``cuda:N``) or a
    torch.device as given; None: ``default`` (the CPU when no default is given)."""
    if device is None:
        return default if default is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        kind = type(device).__name__
        raise InvalidType(f"device must be 'auto', a device name or a torch.device, got {kind}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InvalidValue(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValue(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def _flushing() -> bool:
    """Whether the CPU flushes denormal floats to zero now (torch offers a setter but no getter)."""
    return (torch.tensor([1e-39], dtype=torch.float32) * 1.5).item() == 0.0


@contextlib.contextmanager
def flush_denormals(device: torch.device | str = "cpu") -> Iterator[None]:
    """Treat denormal floats (|x| < 1.2e-38 in float32) as zero on the CPU inside the block, then restore.

    Arithmetic on denormals is ~100x slower on x86 CPUs, and training produces them (Adam's moments of
    parameters whose gradients are tiny or zero, RBF kernel entries of distant points): a Compositional
    CIFAR-10 stack was measured 2x slower without this, with identical accuracies. Values that small never
    change a loss or a kernel solve at float32 precision. No effect on GPUs (they flush by default).
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = _flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed blocks of up to 32 MB instead of returning them to the system.

    Why: a training step allocates and frees activations of a few MB each. By default glibc serves such
    blocks with mmap and unmaps them on free, so every step page-faults its activations in afresh; on a
    2-core CPU that made elementwise kernels (ReLU, bias adds) 5-8x slower than on warm memory and cost
    a third of the step time of the stacked sine networks (benchmarks/bench_stacked.py, measured with
    MALLOC_MMAP_THRESHOLD_ before and after). Raising the mmap and trim thresholds keeps the freed
    memory in the heap for the next step; the process keeps up to ~1 GB more memory it no longer uses.
    Called once per process by the trainer; a no-op (False) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        )
    )


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot build kernels in this process, or None when it can.

    Its default backend (inductor) writes C++ (CPU) or Triton (CUDA) kernels and compiles them at run time,
    which needs a C++ compiler and the Python headers; without them the first call of a compiled model fails
    deep inside torch. Checked up front so that training can fall back to eager execution with a warning.
    """
    compiler = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    if not compiler:
        return "no C++ compiler was found (g++, c++ or clang++ on PATH, or $CXX)"
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.exists(os.path.join(include, "Python.h")):
        return f"the Python headers are missing (no {os.path.join(include, 'Python.h')})"
    return None


__all__ = [
    "compile_unavailable",
    "GeneratorLike",
    "as_generator",
    "as_generators",
    "resolve_device",
    "flush_denormals",
    "keep_freed_memory",
]
