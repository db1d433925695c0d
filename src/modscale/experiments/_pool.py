"""Worker processes of the local backend: N persistent processes, each running one chunk at a time.

Why processes, and how they start: the chunks are Python-heavy (the small sine networks spend their time in
per-operation dispatch), so threads would share one interpreter lock. Workers start by ``forkserver`` where
the platform has it (Linux, macOS), else ``spawn``; never by a plain ``fork`` of the parent, whose torch may
already hold threads and locks that a child would inherit half-taken. The fork server imports torch and the
built-in experiments once (:data:`PRELOAD`), so each worker starts in milliseconds instead of seconds.

What a worker inherits from the parent is made explicit: its environment (``MODSCALE_DATA``, plugins in
``MODSCALE_EXPERIMENTS``) and ``sys.path`` are the parent's at the time the pool starts, not the fork
server's. It runs every chunk on one torch thread and one BLAS thread (:func:`one_thread`), as the parent does
with ``--jobs 1``, so a chunk stores the same numbers whichever process ran it.

Faults: a worker ignores Ctrl-C (the parent stops it); it dies with the parent (Linux: ``PR_SET_PDEATHSIG``);
a worker that dies mid-chunk (a segfault, the out-of-memory killer) fails that chunk with :class:`WorkerDied`
and is replaced for the chunks that follow.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from modscale.errors import InvalidValue, WorkerDied

# Imported once by the fork server; their import is most of a worker's start-up otherwise (~2-3 s each).
PRELOAD = ("torch", "numpy", "scipy.linalg", "modscale.experiments", "modscale.training", "modscale.rules")
_STOP_GRACE_S = 5.0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch and the BLAS libraries (numpy's, through threadpoolctl) on one thread inside the block.

    Why: a chunk's numbers must not depend on how many chunks run beside it; the reduction order of torch's
    CPU convolutions and matrix products changes with the thread count (CIFAR accuracies moved by up to 11%
    relative between one and two threads), so every chunk runs on exactly one. Parallelism comes from running
    chunks side by side (``--jobs``).
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (its type is kept for the parent), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn, environ: dict[str, str], path: list[str]) -> None:
    """A worker's life: take (experiment reference, jobs, tier, device), send back (True, result) or (False,
    exception, traceback text); stop at None or when the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    from modscale.experiments.backends import execute_chunk

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        ref, jobs, tier, device = message
        try:
            experiment = resolve(ref)
            reply: tuple = (True, execute_chunk(experiment, jobs, tier, device))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
            reply = (False, _portable(exc), traceback.format_exc())
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - a result that does not pickle: say so, not die
            error = RuntimeError(f"the chunk's result could not be sent back: {type(exc).__name__}: {exc}")
            conn.send((False, error, traceback.format_exc()))


def reference(experiment) -> tuple[str, Any]:
    """How a worker finds ``experiment``: the module the registry found it in (built in, a plugin, an entry
    point) and its name, else the pickled object (its functions must then be importable by name)."""
    from modscale.experiments import registry

    where = registry.source(experiment)
    if where is not None:
        return ("source", (where, experiment.name))
    try:
        return ("pickle", pickle.dumps(experiment))
    except Exception as exc:  # noqa: BLE001 - lambdas, local functions, unpicklable defaults
        raise InvalidValue(
            f"experiment {experiment.name!r} cannot be sent to a worker process ({exc}); register it from a "
            "module (MODSCALE_EXPERIMENTS or an entry point) or run it with --jobs 1 (jobs=1)"
        ) from None


def resolve(ref: tuple[str, Any]):
    kind, value = ref
    if kind == "source":
        if value not in _RESOLVED:  # each source imported once per worker
            from modscale.experiments import registry

            where, name = value
            found = [e for e in registry.load_source(where) if e.name == name]
            if not found:
                raise InvalidValue(f"experiment {name!r} is no longer defined in {where}")
            _RESOLVED[value] = found[0]
        return _RESOLVED[value]
    return pickle.loads(value)


_RESOLVED: dict[tuple[str, str], Any] = {}


def context():
    """The multiprocessing context workers start from: the fork server (torch and modscale preloaded) where
    the platform has one, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        from modscale.experiments.registry import _builtin_modules

        # takes effect only when the server first starts
        ctx.set_forkserver_preload([*PRELOAD, *_builtin_modules()])
        return ctx
    return multiprocessing.get_context("spawn")


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_serve, args=(child, dict(os.environ), list(sys.path)), daemon=True, name="modscale-worker"
        )
        self.process.start()
        child.close()
        self.task: Any = None

    def stop(self, grace_s: float) -> None:
        """Ask an idle worker to stop; a busy or stuck one is terminated, then killed."""
        if self.task is None and self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.process.join(grace_s)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death(process, what: str) -> WorkerDied:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (the out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
        why = f"killed by {name}{oom}"
    else:
        why = f"exited with status {code}"
    return WorkerDied(f"the worker process running {what} died: {why}; a rerun runs that chunk again")


def run_tasks(
    tasks: Sequence[Any], message: Callable[[Any], tuple], describe: Callable[[Any], str], workers: int
) -> Iterator[tuple[Any, Any, BaseException | None, str]]:
    """Run ``tasks`` in order on up to ``workers`` worker processes; yield (task, result, error, traceback)
    as each finishes. ``message(task)`` is what a worker receives: (experiment reference, jobs, tier, device).

    Closing the iterator early (an error in the caller, Ctrl-C) terminates the workers still busy.
    """
    ctx = context()
    queue = list(tasks)[::-1]  # pop() takes the next in order
    pool: list[_Worker | None] = [_Worker(ctx) for _ in range(min(workers, len(queue)))]
    clean = False
    try:
        while True:
            for i, w in enumerate(pool):
                if queue and (w is None or w.task is None):
                    if w is None:  # replaces one that died
                        w = pool[i] = _Worker(ctx)
                    w.task = queue.pop()
                    w.conn.send(message(w.task))
            busy = [w for w in pool if w is not None and w.task is not None]
            if not busy:
                break
            waits = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            ready = multiprocessing.connection.wait(waits)
            for i, w in enumerate(pool):
                if w is None or w.task is None or (w.conn not in ready and w.process.sentinel not in ready):
                    continue
                task, w.task = w.task, None
                reply = None
                with contextlib.suppress(EOFError, OSError):
                    if w.conn.poll():
                        reply = w.conn.recv()
                if reply is None:  # the process is gone without an answer
                    w.process.join(_STOP_GRACE_S)
                    died = _death(w.process, describe(task))
                    w.stop(0.1)
                    pool[i] = None
                    yield task, None, died, ""
                elif reply[0]:
                    yield task, reply[1], None, ""
                else:
                    yield task, None, reply[1], reply[2]
        clean = True
    finally:
        for w in pool:
            if w is not None:
                w.stop(_STOP_GRACE_S if clean else 1.0)


__all__ = ["WorkerDied", "one_thread", "run_tasks", "reference", "resolve", "PRELOAD"]
