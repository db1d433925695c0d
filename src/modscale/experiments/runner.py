"""The sweep runner: plan an experiment's jobs at a tier, skip what is stored, run the rest, store each chunk.

``run_sweep("theory_loss_trends", "results/", tier="small")`` is the whole story for one experiment;
:func:`plan` + :func:`execute` run several experiments on one backend (``modscale reproduce``).

Order of work (nothing is written before every check has passed):
1. plan: the experiment's grid at the tier with ``overrides`` applied, each config at seeds 0..S-1;
   a bad name, tier, key or value raises here;
2. the backend is entered (a Ray cluster joined or started) and checks the device;
3. the store is opened (``DIR/results.jsonl``, locked), the runs already stored are skipped;
4. the remaining jobs are chunked (the experiment's ``stack_key``) and run; each chunk's records are written
   and fsynced as soon as it finishes, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modscale.errors import InvalidValue, UsageError
from modscale.experiments import registry
from modscale.experiments.backends import Backend, check_device, make_backend
from modscale.experiments.calibration import estimate
from modscale.experiments.experiment import Experiment, Job
from modscale.results import Record, ResultsStore, ResultsWarning, make_record


@dataclasses.dataclass(frozen=True)
class Plan:
    """An experiment's jobs at one tier (overrides and seed count applied)."""

    experiment: Experiment
    tier: str
    jobs: list[Job]

    def pending(self, done: set[tuple]) -> list[Job]:
        """The jobs whose runs are not in ``done`` (a set of :attr:`Record.key`)."""
        e = self.experiment
        return [j for j in self.jobs if (e.name, e.revision, j.config_hash, j.seed) not in done]


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

    ``cost`` arguments are the experiments' estimates of seconds (:meth:`Experiment.estimate`): an ETA is
    the remaining estimate scaled by how long the estimate done so far actually took.
    """

    def start(self, total: int, stored: int, cost: float = 0.0) -> None:
        """``total`` runs to do now (estimated ``cost`` seconds), ``stored`` already in the store."""

    def experiment(self, name: str, todo: int, stored: int, cost: float = 0.0) -> None:
        """An experiment starts with ``todo`` runs to do (``stored`` skipped)."""

    def chunk(self, name: str, runs: int, wall_s: float, cost: float = 0.0) -> None:
        """A chunk of ``runs`` runs of ``name`` (estimated ``cost``) finished in ``wall_s`` and was stored."""

    def finish(self) -> None:
        """The sweep is over (or stopped by an error)."""


@dataclasses.dataclass
class Summary:
    """What a sweep did, per experiment: runs in the plan, skipped (already stored), run now, seconds."""

    out: Path
    planned: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    ran: dict[str, int] = dataclasses.field(default_factory=dict)
    wall_s: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    tracebacks: dict[str, str] = dataclasses.field(default_factory=dict)  # of the errors, for bug reports

    @property
    def results_path(self) -> Path:
        return self.out / "results.jsonl"


def _records(experiment: Experiment, tier: str, result, seconds: float) -> list[Record]:
    n = len(result.jobs)
    return [
        make_record(
            experiment.name,
            job.config,
            job.seed,
            metrics,
            wall_s=seconds / n,
            device=result.device,
            revision=experiment.revision,
            tier=tier,
            chunk_size=n,
        )
        for job, metrics in zip(result.jobs, result.metrics, strict=True)
    ]


def execute(
    plans: Sequence[Plan],
    out: str | os.PathLike,
    backend: Backend | str = "local",
    *,
    device: str = "auto",
    progress: Progress | None = None,
    ray_address: str | None = None,
    keep_going: bool = False,
) -> Summary:
    """Run every plan's pending jobs on ``backend`` and store them in ``out``/results.jsonl.

    ``keep_going``: an experiment that raises is recorded in :attr:`Summary.errors` and the next one runs
    (``modscale reproduce``); otherwise the error propagates after everything finished so far is stored.
    """
    check_device(device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidValue(f"--out {out} exists and is not a directory")
    if isinstance(backend, str):
        backend = make_backend(backend, ray_address=ray_address)
    progress = progress or Progress()
    summary = Summary(out)
    with backend:
        for p in plans:
            backend.check(p.experiment, device)
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
            done = {r.key for r in loaded.records}
            todo = []
            for p in plans:  # a job in two plans runs once: the first plan takes it
                jobs = p.pending(done)
                done |= {(p.experiment.name, p.experiment.revision, j.config_hash, j.seed) for j in jobs}
                todo.append((p, jobs))
            # the ETA prices runs as `--plan` does: estimates scaled by this machine's measured factor
            # (a probe, when nothing is stored, only where someone watches the progress)
            lines = estimate(plans, loaded.records, device, probe=type(progress) is not Progress)
            factors = {line.name: line.calibration.factor for line in lines if line.todo}
            progress.start(
                sum(len(t) for _, t in todo),
                sum(len(p.jobs) - len(t) for p, t in todo),
                sum(line.estimate_s for line in lines),
            )
            for p, jobs in todo:
                name = p.experiment.name
                summary.planned[name] = summary.planned.get(name, 0) + len(p.jobs)
                summary.skipped[name] = summary.skipped.get(name, 0) + len(p.jobs) - len(jobs)
                summary.ran.setdefault(name, 0)
                summary.wall_s.setdefault(name, 0.0)
                factor = factors.get(name, 1.0)
                progress.experiment(
                    name, len(jobs), len(p.jobs) - len(jobs), factor * p.experiment.estimate(jobs, p.tier)
                )
                if not jobs:
                    continue
                try:
                    _run_plan(p, jobs, backend, store, device, progress, summary, factor)
                except Exception as exc:
                    if not keep_going:
                        raise
                    summary.errors[name] = f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, UsageError):  # a bug, not bad input: keep where it happened
                        summary.tracebacks[name] = traceback.format_exc()
        finally:
            progress.finish()
            store.close()  # also when opening or loading failed: releases the lock and the file
    return summary


def _run_plan(
    p: Plan,
    jobs: list[Job],
    backend: Backend,
    store: ResultsStore,
    device: str,
    progress: Progress,
    summary: Summary,
    factor: float = 1.0,
) -> None:
    experiment = p.experiment
    chunks = experiment.chunks(jobs)
    start = time.perf_counter()
    for result in backend.map(experiment, chunks, p.tier, device):
        store.append(_records(experiment, p.tier, result, result.wall_s))
        summary.ran[experiment.name] += len(result.jobs)
        cost = factor * experiment.estimate(result.jobs, p.tier)
        progress.chunk(experiment.name, len(result.jobs), result.wall_s, cost)
    summary.wall_s[experiment.name] += time.perf_counter() - start


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
) -> Summary:
    """Run one experiment's sweep at ``tier`` into ``out``; resumes where an earlier run stopped.

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
