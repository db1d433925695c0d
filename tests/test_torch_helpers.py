"""modscale._torch: seeds to CPU generators and device names to devices, shared by every torch package."""

from __future__ import annotations

import pytest
import torch

from modscale._torch import as_generator, as_generators, resolve_device
from modscale.errors import InvalidType, InvalidValue


def test_seeds_give_the_same_stream_and_none_is_seed_zero() -> None:
    a = torch.rand(3, generator=as_generator(7))
    b = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(2, generator=as_generator(None)), torch.rand(2, generator=as_generator(0)))
    g = torch.Generator()
    assert as_generator(g) is g


def test_one_per_replica_or_shared() -> None:
    gens = as_generators([1, 2, 3], 3)
    assert [torch.rand(1, generator=g).item() for g in gens] == [
        torch.rand(1, generator=torch.Generator().manual_seed(s)).item() for s in (1, 2, 3)
    ]
    shared = as_generators(5, 4)
    assert len(shared) == 4 and all(g is shared[0] for g in shared)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: as_generator(-1), InvalidValue, "seed must be >= 0"),
        (lambda: as_generator(1.5), InvalidType, "must be a torch.Generator, an int seed or None"),
        (lambda: as_generator(True), InvalidType, "must be a torch.Generator"),
        (lambda: as_generators([1, 2], 3), InvalidValue, "one entry per replica"),
        (lambda: as_generators([1, "x"], 2), InvalidType, r"generator\[1\]"),
        (lambda: resolve_device("gpu7"), InvalidValue, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (lambda: resolve_device(3), InvalidType, "device must be"),
    ],
)
def test_bad_input(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(None, default=torch.device("meta")) == torch.device("meta")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidValue, match="CUDA is not available"):
            resolve_device("cuda")


def _flushing() -> bool:
    return (torch.tensor([1e-39], dtype=torch.float32) * 1.5).item() == 0.0


def test_flush_denormals_inside_and_restores_the_callers_setting() -> None:
    from modscale._torch import flush_denormals

    assert not _flushing()
    with flush_denormals("cpu"):
        assert _flushing()
    assert not _flushing()
    torch.set_flush_denormal(True)
    try:
        with flush_denormals("cpu"):
            assert _flushing()
        assert _flushing()  # a caller who had it on keeps it on
    finally:
        torch.set_flush_denormal(False)
    with flush_denormals("meta"):  # not a CPU: untouched
        assert not _flushing()


def test_training_flushes_denormals_and_restores() -> None:
    from modscale.models import MLP
    from modscale.training import train

    seen = []
    X, y = torch.randn(32, 3), torch.randn(32, 1)
    train(MLP(3, 4, 1), (X, y), steps=3, eval_every=1, callback=lambda model, step: seen.append(_flushing()))
    assert seen == [True] * 4 and not _flushing()
