"""The sweep runner: plan an experiment's jobs at a tier, skip what is stored, run the rest, store each chunk.

``run_sweep("theory_loss_trends", "results/", tier="small")`` is the whole story for one experiment;
:func:`plan` + :func:`execute` run several experiments on one backend (``modscale reproduce``).

Order of work (nothing is written before every check has passed):
1. plan: the experiment's grid at the tier with ``overrides`` applied, each config at seeds 0..S-1;
   a bad name, tier, key or value raises here;
2. the backend is entered (a Ray cluster joined or started) and checks the device and the experiments;
3. the store is opened (``DIR/results.jsonl``, locked) and read; one pass builds the schedule
   (:mod:`modscale.experiments.schedule`): the jobs not stored yet, in chunks, priced and ordered;
4. the backend runs the chunks; this loop, the only writer, stores each chunk's records (written and fsynced
   as one append) as soon as it finishes, so a killed sweep resumes where it stopped.

Ctrl-C or SIGTERM stops the workers and leaves every finished chunk stored, never half a record: a signal
that arrives while a chunk is being written takes effect once it is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modscale.errors import Interrupted, InvalidValue, UsageError
from modscale.experiments import registry, schedule
from modscale.experiments.backends import Backend, ChunkResult, Outcome, check_device, make_backend
from modscale.experiments.experiment import Experiment, Job
from modscale.results import Record, ResultsStore, ResultsWarning, make_record


@dataclasses.dataclass(frozen=True)
class Plan:
    """An experiment's jobs at one tier (overrides and seed count applied)."""

    experiment: Experiment
    tier: str
    jobs: list[Job]


def plan(
    experiment: str | Experiment,
    tier: str = "small",
    seeds: int | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> Plan:
    """The :class:`Plan` of ``experiment`` (a name or an object) at ``tier``; bad input raises here."""
    experiment = registry.get(experiment)
    return Plan(experiment, tier, experiment.jobs(tier, seeds, overrides))


class Progress:
    """Receives a sweep's progress; the default does nothing. The CLI draws a bar or prints lines.

    ``cost`` arguments are calibrated estimates of seconds (:mod:`modscale.experiments.schedule`): an ETA is
    the remaining estimate scaled by how long the estimate done so far actually took.
    """

    def start(self, total: int, stored: int, cost: float = 0.0, wall_s: float | None = None) -> None:
        """``total`` runs to do now, ``stored`` already in the store; ``cost``: their estimated seconds on one
        worker, ``wall_s``: the estimated wall time on the backend's workers (None: ``cost``)."""

    def experiment(self, name: str, todo: int, stored: int, cost: float = 0.0) -> None:
        """An experiment of the sweep has ``todo`` runs to do (``stored`` skipped), ``cost`` estimated
        seconds of one worker; called for every experiment before the first chunk starts."""

    def chunk(self, name: str, runs: int, wall_s: float, cost: float = 0.0) -> None:
        """A chunk of ``runs`` runs of ``name`` (estimated ``cost``) finished in ``wall_s`` and was stored."""

    def failed(self, name: str, runs: int, message: str) -> None:
        """A chunk of ``runs`` runs of ``name`` failed with ``message``; nothing of it was stored."""

    def finish(self) -> None:
        """The sweep is over (or stopped by an error)."""


@dataclasses.dataclass
class Summary:
    """What a sweep did, per experiment: runs in the plan, skipped (already stored), run now, the seconds
    its chunks took (summed: with several workers, more than the wall time), errors."""

    out: Path
    planned: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ran: dict[str, int] = dataclasses.field(default_factory=dict)
    wall_s: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # the first error of each experiment
    failed_chunks: dict[str, int] = dataclasses.field(default_factory=dict)
    tracebacks: dict[str, str] = dataclasses.field(default_factory=dict)  # of the errors, for bug reports
    elapsed_s: float = 0.0  # the whole sweep's wall time
    workers: int = 1

    @property
    def results_path(self) -> Path:
        return self.out / "results.jsonl"


def _records(experiment: Experiment, tier: str, result: ChunkResult) -> list[Record]:
    n = len(result.jobs)
    return [
        make_record(
            experiment.name,
            job.config,
            job.seed,
            metrics,
            wall_s=result.wall_s / n,
            device=result.device,
            revision=experiment.revision,
            tier=tier,
            chunk_size=n,
        )
        for job, metrics in zip(result.jobs, result.metrics, strict=True)
    ]


class _Signals:
    """SIGINT and SIGTERM raise :class:`~modscale.errors.Interrupted` in the main thread, except inside
    :meth:`deferred`, where they wait until the block ends (a chunk's records are written whole)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.critical = False
        self.before: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.critical:
            self.pending = signum
            return
        raise Interrupted(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.before[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.before.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending is not None:
            raise Interrupted(self.pending)


def execute(
    plans: Sequence[Plan],
    out: str | os.PathLike,
    backend: Backend | str = "local",
    *,
    device: str = "auto",
    progress: Progress | None = None,
    ray_address: str | None = None,
    keep_going: bool = False,
    jobs: int | None = None,
) -> Summary:
    """Run every plan's pending jobs on ``backend`` and store them in ``out``/results.jsonl.

    ``jobs``: worker processes of the ``local`` backend (None: 1, in this process; the CLI's ``--jobs``
    defaults to the cores this process may use). ``keep_going``: a chunk that fails (raises, or its worker
    dies) is recorded in :attr:`Summary.errors` and the other chunks run; otherwise the sweep stops at the
    first failure, keeps everything finished so far and raises it.
    """
    check_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidValue(f"--out {out} exists and is not a directory")
    if isinstance(backend, str):
        backend = make_backend(backend, ray_address=ray_address, jobs=jobs)
    elif jobs is not None:
        raise InvalidValue("jobs goes to the backend (LocalBackend(jobs)) when a backend object is given")
    progress = progress or Progress()
    summary = Summary(out)
    started = time.perf_counter()
    with _Signals() as signals, backend:
        for p in plans:
            backend.check(p.experiment, device)
        summary.workers = backend.workers
        store = ResultsStore(out)
        try:
            # Only the store's own notes are caught here (a torn tail cut off, records skipped): they go into
            # the summary instead of stderr. Warnings raised by experiments while they run are left alone.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResultsWarning)
                store.open()
                loaded = store.load()
            summary.notes.extend(str(w.message) for w in caught if "torn" in str(w.message))
            summary.notes.extend(loaded.notes())
            # the ETA prices runs as `--plan` does (a probe, when nothing is stored, only where someone
            # watches the progress)
            sched = schedule.build(
                plans, loaded.records, device, workers=backend.workers, probe=type(progress) is not Progress
            )
            for line in sched.lines:
                summary.planned[line.name] = summary.planned.get(line.name, 0) + line.planned
                summary.skipped[line.name] = summary.skipped.get(line.name, 0) + line.stored
                summary.ran.setdefault(line.name, 0)
                summary.wall_s.setdefault(line.name, 0.0)
            progress.start(sched.todo, sched.stored, sched.compute_s, sched.wall_s)
            for line in sched.lines:
                progress.experiment(line.name, line.todo, line.stored, line.estimate_s)
            outcomes = backend.map(sched.chunks, device)
            try:
                for outcome in outcomes:
                    _store(outcome, store, signals, progress, summary, keep_going)
            finally:
                outcomes.close()  # an error or an interrupt: stops the workers still running
        finally:
            summary.elapsed_s = time.perf_counter() - started
            progress.finish()
            store.close()  # also when opening or loading failed: releases the lock and the file
    return summary


def _store(
    outcome: Outcome,
    store: ResultsStore,
    signals: _Signals,
    progress: Progress,
    summary: Summary,
    keep_going: bool,
) -> None:
    chunk = outcome.chunk
    name = chunk.experiment.name
    if outcome.error is not None:
        error = outcome.error
        summary.failed_chunks[name] = summary.failed_chunks.get(name, 0) + 1
        summary.errors.setdefault(name, f"{type(error).__name__}: {error}")
        if outcome.traceback and not isinstance(error, UsageError):  # a bug: keep where it happened
            summary.tracebacks.setdefault(name, outcome.traceback)
        progress.failed(name, len(chunk.jobs), f"{chunk.describe()} failed: {type(error).__name__}: {error}")
        if not keep_going:
            if error.__traceback__ is None and outcome.traceback:  # raised in another process
                error.add_note(f"raised in a worker process:\n{outcome.traceback}")
            raise error
        return
    result = outcome.result
    with signals.deferred():
        store.append(_records(chunk.experiment, chunk.tier, result))
    summary.ran[name] += len(result.jobs)
    summary.wall_s[name] += result.wall_s
    progress.chunk(name, len(result.jobs), result.wall_s, chunk.seconds)


def run_sweep(
    experiment: str | Experiment,
    out: str | os.PathLike,
    *,
    tier: str = "small",
    seeds: int | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    backend: Backend | str = "local",
    device: str = "auto",
    ray_address: str | None = None,
    progress: Progress | None = None,
    jobs: int | None = None,
) -> Summary:
    """Run one experiment's sweep at ``tier`` into ``out``; resumes where an earlier run stopped.
    ``jobs``: worker processes of the local backend (None: 1, in this process).

    >>> summary = run_sweep("theory_loss_trends", "results", tier="smoke")  # doctest: +SKIP
    >>> summary.ran, summary.skipped  # doctest: +SKIP
    """
    return execute(
        [plan(experiment, tier, seeds, overrides)],
        out,
        backend,
        device=device,
        progress=progress,
        ray_address=ray_address,
        jobs=jobs,
    )


def current(records: Sequence[Record]) -> tuple[list[Record], list[str]]:
    """The records that fit a registered experiment as it is now, and a sentence per kind of misfit.

    A record is kept when its experiment is registered, its revision is the experiment's and its config is
    valid under the experiment's current schema (the stored config has every key, so a key added or removed
    since makes it stale). Figures and the report show only kept records; the notes say what was left out.
    """
    kept: list[Record] = []
    misfits: dict[str, int] = {}
    for r in records:
        try:
            experiment = registry.get(r.experiment)
        except InvalidValue:
            reason = f"experiment {r.experiment!r} is not registered here"
        else:
            if r.revision != experiment.revision:
                reason = (
                    f"{r.experiment}: revision {r.revision} is stale (now {experiment.revision}); "
                    "rerun to refresh"
                )
            else:
                try:
                    if experiment.config(r.config) == r.config:
                        kept.append(r)
                        continue
                    reason = f"{r.experiment}: config lacks keys added since it was stored"
                except (InvalidValue, TypeError) as exc:
                    reason = f"{r.experiment}: config no longer valid ({exc})"
        misfits[reason] = misfits.get(reason, 0) + 1
    notes = [f"left out {n} record(s): {reason}" for reason, n in misfits.items()]
    return kept, notes


__all__ = ["Plan", "plan", "execute", "run_sweep", "Progress", "Summary", "current"]
