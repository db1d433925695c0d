"""How long a sweep will take here: the experiments' cost estimates calibrated on this machine.

Every experiment may declare ``cost(config)``, a rough estimate of one run's seconds on a 2-core CPU. Machines
differ (two 2-core CPU kinds differ 2.5x) and the estimates are rough, so a plan and the progress ETA scale
each experiment's estimate by a factor measured here, from the most direct evidence there is:

1. ``runs``: the stored runs of this experiment (of its current revision) on this kind of device (CPU or
   CUDA) in the results store
   being planned into: factor = sum(wall_s) / sum(cost(config)) over them (runs from this host when
   there are any, else from every host). This is the sweep's own work timed on the machine that did it.
2. ``other``: no run of this experiment is stored, but runs of others of its family are (experiments that
   share its probe, hence its cost model: the three CIFAR experiments): their pooled factor.
3. ``probe``: nothing is stored, and the experiment has a probe (``Experiment.probe``): a short timed
   piece of its own work (the CIFAR networks time a few training steps against the 1 ms per slot image of
   their estimate). A probe takes about a second.
4. ``none``: the experiment's own estimate, uncalibrated.

The factor multiplies the whole estimate; where an estimate's shape is wrong (it grows with the wrong
power of n) no factor fixes it, which is why stored runs of the same experiment come first.
benchmarks/README.md states how far the calibrated plan was from the measured time of real sweeps.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Callable, Sequence

from modscale.experiments.experiment import Experiment
from modscale.results import Record

SOURCES = ("runs", "other", "probe", "none")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """measured seconds = ``factor`` x estimated seconds; ``source`` one of SOURCES; ``detail`` in words."""

    factor: float
    source: str
    detail: str

    def seconds(self, estimate: float) -> float:
        return self.factor * estimate


UNCALIBRATED = Calibration(1.0, "none", "the experiment's own estimate (2-core CPU), uncalibrated")


def device_kind(label: str) -> str:
    """``cpu`` or ``cuda`` from a stored device label such as ``cuda:0 (NVIDIA H200)``."""
    return "cuda" if label.startswith("cuda") else "cpu"


def _factor(records: Sequence[Record], cost_of: Callable[[Record], float | None]) -> tuple[float, int] | None:
    wall = cost = 0.0
    n = 0
    for r in records:
        c = cost_of(r)
        if c is None or not (c > 0 and math.isfinite(c)) or not math.isfinite(r.wall_s):
            continue
        wall, cost, n = wall + r.wall_s, cost + c, n + 1
    if n == 0 or cost <= 0 or wall <= 0:
        return None
    return wall / cost, n


def _cost_function(experiments: dict[str, Experiment]) -> Callable[[Record], float | None]:
    def cost_of(r: Record) -> float | None:
        e = experiments.get(r.experiment)
        if e is None or e.cost is None:
            return None
        try:
            return e.run_cost(e.config(r.config), r.tier or "small")
        except (ValueError, TypeError, KeyError):  # a stale config: no evidence
            return None

    return cost_of


def _pick_host(records: list[Record]) -> tuple[list[Record], str]:
    here = socket.gethostname()
    mine = [r for r in records if r.host == here]
    if mine:
        return mine, "this host"
    hosts = sorted({r.host for r in records if r.host})
    return records, "host " + ", ".join(hosts[:2]) + (
        " ..." if len(hosts) > 2 else ""
    ) if hosts else "any host"


def calibrate(
    experiment: Experiment,
    records: Sequence[Record],
    device_label: str,
    experiments: Sequence[Experiment] = (),
    *,
    probe: bool = True,
) -> Calibration:
    """The :class:`Calibration` of ``experiment`` on ``device_label`` (as stored: ``cpu``, ``cuda:0 (...)``).

    ``records``: the stored runs of the results store being planned into; ``experiments``: every registered
    experiment (to price the other experiments' runs); ``probe``: allow a timed probe when nothing is stored.
    """
    if experiment.cost is None:
        return Calibration(1.0, "none", "no cost estimate: one second per run")
    kind = device_kind(device_label)
    by_name = {e.name: e for e in experiments}
    by_name[experiment.name] = experiment
    cost_of = _cost_function(by_name)
    same_kind = [r for r in records if device_kind(r.device) == kind]
    # runs of another revision ran other code: their times say little about this one's
    own = [r for r in same_kind if r.experiment == experiment.name and r.revision == experiment.revision]
    if own:
        chosen, where = _pick_host(own)
        measured = _factor(chosen, cost_of)
        if measured is not None:
            factor, n = measured
            return Calibration(factor, "runs", f"{n} stored run(s) of this experiment on {kind}, {where}")
    # Only experiments that share this one's probe share its cost model's units (the CIFAR experiments);
    # the others' estimates are each their own (seconds per run measured once), so they do not pool.
    family = {
        e.name for e in by_name.values() if experiment.probe is not None and e.probe is experiment.probe
    }
    others = [r for r in same_kind if r.experiment != experiment.name and r.experiment in family]
    if others:
        chosen, where = _pick_host(others)
        measured = _factor(chosen, cost_of)
        if measured is not None:
            factor, n = measured
            names = len({r.experiment for r in chosen})
            return Calibration(
                factor, "other", f"{n} stored run(s) of {names} other experiment(s) on {kind}, {where}"
            )
    if probe and experiment.probe is not None:
        factor, what = _probe(experiment.probe, device_label)
        return Calibration(factor, "probe", what)
    return UNCALIBRATED


_PROBED: dict[tuple[Callable, str], tuple[float, str]] = {}


def _probe(probe: Callable[[str], tuple[float, str]], device_label: str) -> tuple[float, str]:
    """A probe's answer, timed once per process and device (the experiments of a family share one)."""
    key = (probe, device_label)
    if key not in _PROBED:
        from modscale.experiments._pool import one_thread

        with one_thread():  # as every chunk runs (modscale.experiments.backends.execute_chunk)
            _PROBED[key] = probe(device_label)
    return _PROBED[key]


__all__ = ["Calibration", "calibrate", "device_kind", "SOURCES", "UNCALIBRATED"]
