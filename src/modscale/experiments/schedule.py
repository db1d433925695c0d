"""A sweep's schedule: every plan's pending jobs in chunks, each priced here, in the order they start.

One pass over the plans and the stored records builds it, and both ``--plan`` (which prints it) and the runner
(which runs it) use the same object, so what a plan says is what a run does:

1. pending: each plan's jobs whose runs are not stored (a job in two plans runs once, in the first);
2. chunks: the pending jobs grouped by the experiment's ``stack_key`` (:meth:`Experiment.chunks`);
3. prices: each chunk's estimated seconds (:meth:`Experiment.estimate`) times the experiment's calibration
   factor on this machine (:mod:`modscale.experiments.calibration`);
4. order: with more than one worker, longest chunk first (the LPT rule of list scheduling: a long chunk never
   starts last and leaves the other workers idle); with one worker, plan order (experiment by experiment).

:func:`makespan` is the wall time of that order on ``workers`` workers, each taking the next chunk as soon as
it is free; Graham (1969) bounds LPT within 4/3 of the best possible order.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

from modscale.experiments.calibration import UNCALIBRATED, Calibration, calibrate
from modscale.experiments.experiment import Experiment, Job
from modscale.results import Record


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Jobs of one experiment that run together (one stacked model or one vectorised call).

    ``index`` numbers the chunks of a schedule in plan order; ``seconds`` is the calibrated estimate.
    """

    experiment: Experiment
    tier: str
    jobs: tuple[Job, ...]
    seconds: float = 0.0
    index: int = 0

    def describe(self) -> str:
        """``name chunk i (r runs)`` for messages."""
        return f"{self.experiment.name} chunk {self.index + 1} ({len(self.jobs)} run(s))"


@dataclasses.dataclass(frozen=True)
class PlanLine:
    """One plan of a schedule: runs in the plan, already stored, to do, their calibrated seconds (summed over
    chunks: one worker's time) and the calibration behind them."""

    name: str
    device: str
    planned: int
    stored: int
    todo: int
    estimate_s: float
    calibration: Calibration


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What a sweep will do: a :class:`PlanLine` per plan and every chunk to run, in the order they start."""

    lines: tuple[PlanLine, ...]
    chunks: tuple[Chunk, ...]
    workers: int

    @property
    def todo(self) -> int:
        return sum(line.todo for line in self.lines)

    @property
    def stored(self) -> int:
        return sum(line.stored for line in self.lines)

    @property
    def compute_s(self) -> float:
        """Estimated seconds of all chunks one after another (one worker)."""
        return sum(c.seconds for c in self.chunks)

    @property
    def wall_s(self) -> float:
        """Estimated wall seconds on :attr:`workers` workers (:func:`makespan` of the chunks in order)."""
        return makespan([c.seconds for c in self.chunks], self.workers)


def makespan(seconds: Sequence[float], workers: int) -> float:
    """Wall time of tasks taking ``seconds`` each, started in the given order, each on the first free of
    ``workers`` workers (list scheduling).

    >>> makespan([3, 2, 2, 1], 2)
    4.0
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    free = [0.0] * min(workers, max(len(seconds), 1))  # when each worker is next free (a heap)
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + float(s))
    return max(free)


def build(
    plans,
    records: Sequence[Record],
    device: str = "auto",
    *,
    workers: int = 1,
    probe: bool = True,
) -> Schedule:
    """The :class:`Schedule` of ``plans`` (:class:`modscale.experiments.Plan`) against the stored
    ``records``, priced for ``device`` here and ordered for ``workers`` workers.

    Runs nothing but the calibration probes (``probe=False``: none), writes nothing; an experiment with
    nothing to do is not calibrated.
    """
    from modscale.experiments import registry
    from modscale.experiments.backends import device_and_label

    everyone = registry.all_experiments()
    done = {r.key for r in records}
    lines: list[PlanLine] = []
    chunks: list[Chunk] = []
    for p in plans:
        e: Experiment = p.experiment
        jobs = [j for j in p.jobs if (e.name, e.revision, j.config_hash, j.seed) not in done]
        done |= {(e.name, e.revision, j.config_hash, j.seed) for j in jobs}
        _, label = device_and_label(device, e.accelerated)
        cal = calibrate(e, records, label, everyone, probe=probe) if jobs else UNCALIBRATED
        priced = [
            Chunk(e, p.tier, tuple(c), cal.seconds(e.estimate(c, p.tier)), len(chunks) + i)
            for i, c in enumerate(e.chunks(jobs))
        ]
        chunks.extend(priced)
        lines.append(
            PlanLine(
                e.name,
                label,
                len(p.jobs),
                len(p.jobs) - len(jobs),
                len(jobs),
                sum(c.seconds for c in priced),
                cal,
            )
        )
    if workers > 1:  # longest first; equal estimates keep plan order (sorted is stable)
        chunks.sort(key=lambda c: -c.seconds)
    return Schedule(tuple(lines), tuple(chunks), workers)


__all__ = ["Chunk", "PlanLine", "Schedule", "build", "makespan"]
