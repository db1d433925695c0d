"""Where chunks of jobs run: ``local`` (this process, or ``jobs`` worker processes here) or ``ray`` (tasks on
a Ray cluster).

A backend only maps chunks to results: :meth:`Backend.map` takes the schedule's chunks in the order they
should start and yields each one's :class:`Outcome` as it finishes. Every backend calls the same
:func:`execute_chunk`, on one torch and one BLAS thread, so a chunk gives the same numbers wherever it ran and
whatever ran beside it. Only the driver (the process that called the runner) writes results.

Ray is optional (``pip install 'modscale[ray]'``) and imported only when the ``ray`` backend is chosen. The
cluster is ``address`` (``--ray-address``), else the ``RAY_ADDRESS`` environment variable, else a local Ray
instance started for the sweep and stopped after it. An address that cannot be reached is reported within
:data:`CONNECT_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from modscale._checks import check_int
from modscale.errors import InvalidValue, UsageError, WorkerDied
from modscale.experiments._pool import one_thread, reference, run_tasks
from modscale.experiments.experiment import Context, Experiment, Job
from modscale.experiments.schedule import Chunk

BACKENDS = ("local", "ray")
"""Where chunks run: worker processes on this machine, or Ray tasks."""
CONNECT_TIMEOUT_S = 20.0
_PROBE_TIMEOUT_S = 5.0


# ----------------------------------------------------------------------------------------------- devices


def check_device(device: str) -> str:
    """``device`` must be ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise InvalidValue(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def device_and_label(device: str, accelerated: bool = True) -> tuple[str, str]:
    """(torch device, label to record) for ``device`` here. ``auto`` is CUDA when present, else the CPU.

    A non-accelerated experiment (numpy) always runs on ``cpu`` and never imports torch.
    """
    check_device(device)
    if not accelerated or device == "cpu":
        return "cpu", "cpu"
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu", "cpu"
        device = "cuda"
    if not torch.cuda.is_available():
        raise InvalidValue(
            f"device {device!r} was requested but CUDA is not available here; use --device auto or cpu"
        )
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise InvalidValue(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device, f"cuda:{index} ({torch.cuda.get_device_name(index)})"


# ----------------------------------------------------------------------------------------------- one chunk


@dataclasses.dataclass(frozen=True)
class ChunkResult:
    """What running one chunk gave: one metrics dict per job (in order), its wall time and device."""

    jobs: list[Job]
    metrics: list[dict[str, Any]]
    wall_s: float
    device: str


def execute_chunk(experiment: Experiment, jobs: Sequence[Job], tier: str, device: str) -> ChunkResult:
    """Run one chunk here on one torch/BLAS thread (:func:`~modscale.experiments._pool.one_thread`): resolve
    the device, time ``experiment.run`` and check what it returned."""
    torch_device, label = device_and_label(device, experiment.accelerated)
    ctx = Context(device=torch_device, tier=tier, experiment=experiment.name)
    with one_thread():
        start = time.perf_counter()
        out = list(experiment.run(list(jobs), ctx))
        wall = time.perf_counter() - start
    if len(out) != len(jobs) or not all(isinstance(m, Mapping) for m in out):
        raise RuntimeError(
            f"experiment {experiment.name!r}: run returned {len(out)} results for {len(jobs)} "
            "jobs; it must return one metrics dict per job, in order"
        )
    return ChunkResult(list(jobs), [dict(m) for m in out], wall, label)


# ----------------------------------------------------------------------------------------------- backends


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished chunk: its :class:`ChunkResult`, or the exception it raised (and that exception's traceback
    where it was raised, for the report of a bug)."""

    chunk: Chunk
    result: ChunkResult | None = None
    error: BaseException | None = None
    traceback: str = ""


class Backend:
    """Runs chunks and yields their outcomes as they finish. Use as a context manager.

    ``workers``: how many chunks run at once (what a plan prices the wall time for).
    """

    name = "backend"
    workers = 1

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def check(self, experiment: Experiment, device: str) -> None:
        """Raise before any work if ``experiment`` cannot run on ``device`` here."""

    def describe(self) -> str:
        return self.name

    def map(self, chunks: Sequence[Chunk], device: str) -> Iterator[Outcome]:
        """Run ``chunks``, starting them in the given order; yield each :class:`Outcome` as it finishes.
        Closing the iterator early stops what still runs."""
        raise NotImplementedError


class LocalBackend(Backend):
    """Chunks on this machine: ``jobs = 1`` in this process, one after another; ``jobs > 1`` in that many
    worker processes (:mod:`modscale.experiments._pool`), each taking the next chunk when it is free."""

    name = "local"

    def __init__(self, jobs: int = 1):
        self.workers = check_int("jobs", jobs, low=1)

    def describe(self) -> str:
        return f"local, {self.workers} worker process(es)" if self.workers > 1 else "local"

    def check(self, experiment: Experiment, device: str) -> None:
        device_and_label(device, experiment.accelerated)
        if self.workers > 1:
            reference(experiment)  # one that cannot reach a worker is refused before any work

    def map(self, chunks: Sequence[Chunk], device: str) -> Iterator[Outcome]:
        if self.workers == 1:
            for chunk in chunks:
                try:
                    result = execute_chunk(chunk.experiment, chunk.jobs, chunk.tier, device)
                except Exception as exc:  # noqa: BLE001 - the runner decides: stop, or keep going
                    yield Outcome(chunk, error=exc, traceback=traceback.format_exc())
                else:
                    yield Outcome(chunk, result)
            return
        refs = {}

        def message(chunk: Chunk) -> tuple:
            name = chunk.experiment.name
            if name not in refs:
                refs[name] = reference(chunk.experiment)
            return refs[name], list(chunk.jobs), chunk.tier, device

        for chunk, result, error, text in run_tasks(chunks, message, Chunk.describe, self.workers):
            yield Outcome(chunk, result, error, text)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("the ray backend needs Ray: pip install 'modscale[ray]'") from None
    return ray


def _probe(address: str) -> None:
    """Fail fast (and clearly) when nothing listens at ``address``; Ray itself would retry for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidValue(f"Ray address must be host:port or ray://host:port, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot reach a Ray cluster at {address}: {reason}. Start one there (ray start "
            "--head) or drop --ray-address/RAY_ADDRESS to use a local Ray instance"
        ) from None


class RayBackend(Backend):
    """Chunks as Ray tasks (one CPU each; a ``gpu_fraction`` of a GPU when the cluster has GPUs).

    ``address``: a cluster to join; None reads ``RAY_ADDRESS``, and without it a local instance with
    ``num_cpus`` CPUs (default: all) is started and stopped.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.init_kwargs = dict(init_kwargs or {})
        self._ray = None
        self._gpus = 0.0

    def describe(self) -> str:
        return f"ray ({self.address})" if self.address else "ray (local instance)"

    def __enter__(self) -> RayBackend:
        ray = _import_ray()
        if ray.is_initialized():  # joined by the caller already: use it, leave it running
            self._ray, self._owned = ray, False
        else:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
                **self.init_kwargs,
            }
            if self.address:
                _probe(self.address)
                kwargs["address"] = self.address
            else:
                kwargs["address"] = "local"
                kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 1
            self._init(ray, kwargs)
            self._ray, self._owned = ray, True
        resources = ray.cluster_resources()
        self._gpus = float(resources.get("GPU", 0.0))
        self.workers = max(1, int(resources.get("CPU", 1)))
        return self

    def _init(self, ray, kwargs: dict[str, Any]) -> None:
        error: list[BaseException] = []

        def target() -> None:
            try:
                ray.init(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                error.append(exc)

        if kwargs["address"] == "local":
            target()  # starting our own instance cannot hang on a network; keep it on the main thread
        else:
            thread = threading.Thread(target=target, daemon=True, name="modscale-ray-init")
            thread.start()
            thread.join(CONNECT_TIMEOUT_S)
            if thread.is_alive():
                raise UsageError(
                    f"no Ray cluster answered at {kwargs['address']} within "
                    f"{CONNECT_TIMEOUT_S:.0f} s (something listens there, but not Ray's GCS?)"
                )
        if error:
            exc = error[0]
            raise UsageError(f"could not start or join Ray ({kwargs['address']}): {exc}") from exc

    def __exit__(self, *exc: object) -> None:
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray = None

    def check(self, experiment: Experiment, device: str) -> None:
        check_device(device)
        if experiment.accelerated and device.startswith("cuda") and self._gpus <= 0:
            raise InvalidValue(f"device {device!r} was requested but the Ray cluster has no GPUs")

    def _gpu_share(self, experiment: Experiment, device: str) -> float:
        if experiment.accelerated and device != "cpu" and self._gpus > 0:
            return experiment.gpu_fraction
        return 0.0

    def map(self, chunks: Sequence[Chunk], device: str) -> Iterator[Outcome]:
        ray = self._ray
        if ray is None:
            raise RuntimeError("RayBackend.map needs an entered backend (use it as a context manager)")
        # A task with no GPU share sees no GPU (Ray hides them), so "auto" resolves to the CPU there.
        remote = ray.remote(execute_chunk)
        refs, tasks = {}, {}
        for chunk in chunks:  # submitted in the schedule's order: Ray starts them about in that order
            e = chunk.experiment
            if e.name not in refs:
                _pickle_plugin_by_value(ray, e)
                refs[e.name] = ray.put(e)
            task = remote.options(num_cpus=1, num_gpus=self._gpu_share(e, device), max_retries=0)
            tasks[task.remote(refs[e.name], list(chunk.jobs), chunk.tier, device)] = chunk
        try:
            while tasks:
                ready, _ = ray.wait(list(tasks), num_returns=1)
                for ref in ready:
                    chunk = tasks.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task's error or a dead worker
                        yield Outcome(chunk, error=exc, traceback=str(exc))
                    else:
                        yield Outcome(chunk, result)
        finally:
            for ref in tasks:  # an error or an interrupt: stop what has not finished
                ray.cancel(ref, force=True)


def _pickle_plugin_by_value(ray, experiment: Experiment) -> None:
    """Experiments from plugin files are not importable on Ray workers: ship their module's code along."""
    from modscale.experiments.registry import PLUGIN_PREFIX

    module_name = getattr(experiment.run, "__module__", "") or ""
    if module_name.startswith(PLUGIN_PREFIX) and module_name in sys.modules:
        ray.cloudpickle.register_pickle_by_value(sys.modules[module_name])


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def make_backend(
    name: str = "local",
    *,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    jobs: int | None = None,
) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``), not yet entered. ``jobs``: worker processes of
    the local backend (None: 1); Ray runs one chunk per CPU of its cluster and takes no ``jobs``."""
    if name not in BACKENDS:
        raise InvalidValue(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "local":
        if ray_address:
            raise InvalidValue("--ray-address needs --backend ray")
        return LocalBackend(1 if jobs is None else jobs)
    if jobs is not None:
        raise InvalidValue("--jobs applies to the local backend; Ray runs one chunk per CPU of its cluster")
    _import_ray()
    return RayBackend(address=ray_address, num_cpus=ray_num_cpus)


__all__ = [
    "BACKENDS",
    "CONNECT_TIMEOUT_S",
    "Backend",
    "LocalBackend",
    "RayBackend",
    "ChunkResult",
    "Outcome",
    "WorkerDied",
    "available_cores",
    "execute_chunk",
    "make_backend",
    "check_device",
    "device_and_label",
]
