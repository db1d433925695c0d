"""The Ray backend: same results as the local one, only the driver writes, clear errors without Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modscale.errors import UsageError
from modscale.experiments import RayBackend, execute, make_backend, plan, registry
from modscale.results import load

PLUGIN = Path(__file__).with_name("_sweep_experiments.py")


@pytest.fixture
def probe():
    module = registry.import_plugin(str(PLUGIN))
    registry.register(module.EXPERIMENTS[0], replace=True)
    yield module
    registry.unregister("sweep_probe")


@pytest.mark.ray
def test_local_and_ray_give_the_same_results(probe, tmp_path, monkeypatch):
    """A small sweep both ways; the Ray run uses a local instance (2 CPUs) it starts and stops."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    plans = [plan("sweep_probe", "smoke", 2, {"a": [0, 1, 2, 3]}), plan("theory_check", "smoke")]
    local = execute(plans, tmp_path / "local", "local")
    backend = RayBackend(num_cpus=2, init_kwargs={"object_store_memory": 100 * 2**20})
    remote = execute(plans, tmp_path / "ray", backend)
    assert not ray.is_initialized()  # the instance it started is stopped again
    assert remote.ran == local.ran == {"sweep_probe": 8, "theory_check": 4}

    a = {r.key: r for r in load(tmp_path / "local").records}
    b = {r.key: r for r in load(tmp_path / "ray").records}
    assert a.keys() == b.keys() and len(a) == 12
    for key, ra in a.items():
        rb = b[key]
        assert rb.device == "cpu" and rb.chunk_size == ra.chunk_size
        ma, mb = dict(ra.metrics), dict(rb.metrics)
        pid_a, pid_b = ma.pop("worker_pid", None), mb.pop("worker_pid", None)
        if pid_a is not None:  # the probe ran in this process locally and in Ray's workers remotely
            assert pid_a == os.getpid() and pid_b != os.getpid()
        for name, value in ma.items():
            assert mb[name] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, name)
    # Only the driver writes: one line per run, nothing else next to the results.
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["results.jsonl"]
    assert len((tmp_path / "ray" / "results.jsonl").read_text().splitlines()) == 12


def test_gpu_share_only_for_accelerated_experiments_when_the_cluster_has_gpus(probe):
    backend = RayBackend(num_cpus=1)
    accelerated = registry.get("sweep_probe").__class__(
        **{**registry.get("sweep_probe").__dict__, "accelerated": True, "gpu_fraction": 0.5}
    )
    cpu_only = registry.get("sweep_probe")
    backend._gpus = 0.0
    assert backend._gpu_share(accelerated, "auto") == 0.0
    backend._gpus = 2.0
    assert backend._gpu_share(accelerated, "auto") == 0.5 and backend._gpu_share(accelerated, "cuda") == 0.5
    assert backend._gpu_share(accelerated, "cpu") == 0.0 and backend._gpu_share(cpu_only, "auto") == 0.0
    backend._gpus = 0.0
    with pytest.raises(ValueError, match="the Ray cluster has no GPUs"):
        backend.check(accelerated, "cuda")


def test_missing_ray_is_a_clear_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'modscale\[ray\]'"):
        make_backend("ray")


@pytest.mark.ray
@pytest.mark.slow
def test_an_address_where_something_else_listens_fails_within_30_s(tmp_path):
    """Not Ray's GCS on the other end: Ray itself would retry for minutes; we stop within 30 s."""
    pytest.importorskip("ray")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        code = (
            "from modscale.experiments import run_sweep; "
            f"run_sweep('theory_check', {str(tmp_path / 'out')!r}, tier='smoke', backend='ray', "
            f"ray_address={address!r})"
        )
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
    assert proc.returncode != 0 and elapsed < 30, (elapsed, proc.stderr[-2000:])
    assert f"no Ray cluster answered at {address}" in proc.stderr
    assert not (tmp_path / "out").exists()
