"""What an experiment is: a typed config schema, a grid of configs x seeds per tier, and a ``run`` entry.

An experiment's runs are its grid's configs, each at seeds 0..S-1 (a :class:`Job` is one config at one seed).
The runner hands ``run`` a *chunk* of jobs at once, so an experiment can train them as one stacked model
(several configs x seeds of equal shape in one set of kernels) or vectorise them (the closed-form theory),
or run an adaptive search per job (sample complexity by bisection: many trainings inside one run). Which
jobs may share a chunk is the experiment's ``stack_key``; ``run`` returns one metrics dict per job, in order.

Tiers: ``smoke`` (seconds; the tests run it), ``small`` (minutes on a 2-core CPU; ``modscale reproduce``),
``paper`` (the paper's scale; a GPU or a Ray cluster).

Example (a complete experiment)::

    def run(jobs, ctx):
        return [{"y": job.config["a"] * job.seed} for job in jobs]

    EXPERIMENTS = (Experiment(
        name="toy", description="y = a * seed", params=(Param("a", float, 1.0, "slope"),),
        tiers={"smoke": Tier(grid(a=[1.0, 2.0]), seeds=2), "small": Tier(grid(a=[1.0, 2.0, 3.0]), seeds=3),
               "paper": Tier(grid(a=[1.0, 2.0, 3.0]), seeds=10)},
        run=run, stack_key=lambda config: "all", accelerated=False),)
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import numbers
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from modscale._checks import check_int
from modscale.errors import InvalidType, InvalidValue
from modscale.results import config_hash

TIERS = ("smoke", "small", "paper")
"""Every experiment's sizes: seconds (the tests), minutes on a 2-core CPU (make run), the paper's."""
_TYPE_NAMES = {int: "int", float: "float", bool: "bool (true/false)", str: "str"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One config key: its type (int, float, bool or str), default, meaning and allowed values.

    ``low``/``high`` bound numbers (inclusive); ``choices`` lists the allowed values.
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPE_NAMES:
            raise InvalidType(f"Param {self.name!r}: type must be int, float, bool or str, got {self.type!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise InvalidValue(f"Param name must be an identifier, got {self.name!r}")
        object.__setattr__(self, "default", self.coerce(self.default))

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES[self.type]

    def describe(self) -> str:
        """``name: type = default`` and the allowed values, for ``modscale list``."""
        allowed = ""
        if self.choices is not None:
            allowed = " one of " + "|".join(str(c) for c in self.choices)
        elif self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{self.low:g} <= "
            hi = "" if self.high is None else f" <= {self.high:g}"
            allowed = f" ({lo}{self.name}{hi})"
        return f"{self.name}: {self.type_name} = {self.default!r}{allowed}  {self.help}".rstrip()

    def coerce(self, value: Any) -> Any:
        """``value`` as this param's type; ``InvalidType``/``InvalidValue`` naming the key otherwise."""
        expected = f"config key {self.name!r} expects {self.type_name}"
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise InvalidType(f"{expected}, got {value!r}")
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidType(f"{expected}, got {value!r}")
            if not isinstance(value, numbers.Integral):
                if not (math.isfinite(value) and float(value).is_integer()):
                    raise InvalidType(f"{expected}, got {value!r}")
            value = int(value)
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidType(f"{expected}, got {value!r}")
            value = float(value)
            if math.isnan(value):
                raise InvalidValue(f"config key {self.name!r} must not be NaN")
            if math.isinf(value):  # no experiment has a use for it; it would fail inside a run
                raise InvalidValue(f"config key {self.name!r} must be finite, got {value!r}")
        elif not isinstance(value, str):
            raise InvalidType(f"{expected}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise InvalidValue(
                f"config key {self.name!r} must be one of "
                f"{', '.join(repr(c) for c in self.choices)}, got {value!r}"
            )
        if self.low is not None and value < self.low:
            raise InvalidValue(f"config key {self.name!r} must be >= {self.low:g}, got {value!r}")
        if self.high is not None and value > self.high:
            raise InvalidValue(f"config key {self.name!r} must be <= {self.high:g}, got {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """The value written on the command line as ``key=text``."""
        expected = f"config key {self.name!r} expects {self.type_name}, got {text!r}"
        text = text.strip()
        if self.type is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise InvalidType(expected)
        if self.type is str:
            return self.coerce(text)
        try:
            number = float(text)
        except ValueError:
            raise InvalidType(expected) from None
        if self.type is int:
            if not (math.isfinite(number) and number.is_integer()):
                raise InvalidType(expected)
            # int(text) keeps exactness beyond 2**53; "1e4" goes through the float.
            return self.coerce(int(text) if re.fullmatch(r"[+-]?\d+", text) else int(number))
        return self.coerce(number)


@dataclasses.dataclass(frozen=True)
class Tier:
    """A tier's grid: partial configs (the schema's defaults fill in the rest) and how many seeds each."""

    configs: tuple[dict[str, Any], ...]
    seeds: int = 1
    note: str = ""

    def __init__(self, configs: Sequence[Mapping[str, Any]], seeds: int = 1, note: str = ""):
        seeds = check_int("Tier seeds", seeds, low=1)
        object.__setattr__(self, "configs", tuple(dict(c) for c in configs))
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "note", note)


def grid(**axes: Any) -> list[dict[str, Any]]:
    """The Cartesian product of the given axes (a scalar is an axis of one value), in row-major order.

    ``grid(m=[2, 3], k=4)`` -> ``[{"m": 2, "k": 4}, {"m": 3, "k": 4}]``; concatenate grids with ``+``.
    """
    names = list(axes)
    values = [v if isinstance(v, list | tuple | range) else [v] for v in axes.values()]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: a full config (every key, declared types) at one seed."""

    config: dict[str, Any]
    seed: int
    config_hash: str

    @classmethod
    def make(cls, config: Mapping[str, Any], seed: int) -> Job:
        return cls(dict(config), int(seed), config_hash(config))


@dataclasses.dataclass(frozen=True)
class Context:
    """What ``run`` needs besides the jobs: the torch device to use, the tier and the experiment's name."""

    device: str
    tier: str
    experiment: str


RunFn = Callable[[Sequence[Job], Context], Sequence[Mapping[str, Any]]]


def _takes_tier(cost: Callable) -> bool:
    """Whether ``cost`` accepts (config, tier) rather than (config)."""
    try:
        inspect.signature(cost).bind({}, "small")
    except TypeError:
        return False
    return True


def _default_stack_key(config: Mapping[str, Any]) -> Hashable:
    return config_hash(config)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    - ``params``: the typed config schema (``--set key=value`` is checked against it).
    - ``tiers``: a :class:`Tier` for each of ``smoke``, ``small`` and ``paper``.
    - ``run(jobs, ctx)``: runs a chunk of jobs, returns one metrics dict (JSON numbers, lists, strings) per
      job, in order. Results must depend on each job's config and seed alone, not on what else is in the
      chunk (beyond float round-off of stacked kernels), so every backend gives the same numbers.
    - ``stack_key(config)``: jobs whose configs give equal keys may share a chunk (default: the seeds of one
      config); ``max_chunk`` caps a chunk's size.
    - ``accelerated``: ``run`` uses torch on ``ctx.device`` (False: numpy on the CPU; the device is "cpu").
      ``gpu_fraction``: the share of a GPU one chunk asks Ray for when the cluster has GPUs.
    - ``revision``: bump it when a change makes stored runs stale; runs of another revision are rerun and are
      not shown.
    - ``check(config)``: raises ``InvalidValue`` for combinations of keys that are not allowed.
    - ``paper``: which figure or table of the paper it reproduces (empty when it is our own addition).
    - ``cost(config)`` or ``cost(config, tier)``: a rough estimate of one run's seconds on a 2-core CPU
      (tiers may train longer than the config says); plans and progress ETAs scale it by a factor measured
      on the machine (:mod:`modscale.experiments.calibration`; default: one second
      per run).
    - ``probe(device_label)``: optional, about a second of the experiment's own work timed here, returning
      (measured / estimated seconds, what was timed); used to calibrate ``cost`` when no run is stored.
    - ``data``: the data sets its runs read from disk (``"cifar10"``); ``modscale reproduce`` fetches a
      missing one when asked to, and otherwise skips the experiment with the reason.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    tiers: Mapping[str, Tier]
    run: RunFn
    stack_key: Callable[[Mapping[str, Any]], Hashable] = _default_stack_key
    max_chunk: int = 64
    accelerated: bool = True
    gpu_fraction: float = 0.25
    revision: int = 1
    check: Callable[[dict[str, Any]], None] | None = None
    paper: str = ""
    cost: Callable[[Mapping[str, Any]], float] | None = None
    probe: Callable[[str], tuple[float, str]] | None = None
    data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise InvalidValue(f"experiment name must be lower_snake_case, got {self.name!r}")
        missing = [t for t in TIERS if t not in self.tiers]
        extra = [t for t in self.tiers if t not in TIERS]
        if missing or extra:
            raise InvalidValue(f"experiment {self.name!r} must declare exactly the tiers {TIERS}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise InvalidValue(f"experiment {self.name!r} declares a config key twice")
        if self.max_chunk < 1:
            raise InvalidValue(f"experiment {self.name!r}: max_chunk must be >= 1")
        if not 0 < self.gpu_fraction <= 1:
            raise InvalidValue(f"experiment {self.name!r}: gpu_fraction must be in (0, 1]")
        for tier in TIERS:  # a declared grid that does not validate is a bug: fail at import, not at run
            for config in self.tiers[tier].configs:
                self.config(config)

    @property
    def schema(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def config(self, partial: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The full config: defaults, then ``partial``, every value checked against the schema."""
        schema = self.schema
        partial = dict(partial or {})
        unknown = [k for k in partial if k not in schema]
        if unknown:
            raise InvalidValue(
                f"experiment {self.name!r} has no config key {unknown[0]!r}; valid keys: "
                f"{', '.join(schema) or '(none)'}"
            )
        full = {p.name: p.coerce(partial[p.name]) if p.name in partial else p.default for p in self.params}
        if self.check is not None:
            self.check(full)
        return full

    def parse_overrides(self, items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, list[Any]]:
        """``--set`` overrides as {key: [values]}: ``key=value`` fixes a key, ``key=v1,v2`` sweeps it."""
        if not items:
            return {}
        schema = self.schema
        out: dict[str, list[Any]] = {}
        pairs: list[tuple[str, Any]]
        if isinstance(items, Mapping):
            pairs = list(items.items())
        else:
            pairs = []
            for item in items:
                key, sep, text = str(item).partition("=")
                if not sep or not key.strip():
                    raise InvalidValue(f"--set expects key=value, got {item!r}")
                pairs.append((key.strip(), text))
        for key, value in pairs:
            if key not in schema:
                raise InvalidValue(
                    f"experiment {self.name!r} has no config key {key!r}; valid keys: "
                    f"{', '.join(schema) or '(none)'}"
                )
            param = schema[key]
            if isinstance(value, str):
                parts = [value] if param.type is str and "," not in value else value.split(",")
                values = [param.parse(v) for v in parts]
            elif isinstance(value, list | tuple):
                values = [param.coerce(v) for v in value]
            else:
                values = [param.coerce(value)]
            out[key] = list(dict.fromkeys(values))
        return out

    def jobs(
        self, tier: str, seeds: int | None = None, overrides: Sequence[str] | Mapping[str, Any] | None = None
    ) -> list[Job]:
        """Every job of ``tier``: its grid with ``overrides`` applied, each config at seeds 0..seeds-1."""
        if tier not in TIERS:
            raise InvalidValue(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
        declared = self.tiers[tier]
        if seeds is None:
            seeds = declared.seeds
        seeds = check_int("seeds", seeds, low=1)
        fixed = self.parse_overrides(overrides)
        configs: dict[str, dict[str, Any]] = {}
        for base in declared.configs:
            for combo in itertools.product(*fixed.values()) if fixed else [()]:
                config = self.config({**base, **dict(zip(fixed, combo, strict=True))})
                configs.setdefault(config_hash(config), config)
        return [Job.make(c, s) for c in configs.values() for s in range(seeds)]

    def chunks(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """``jobs`` in chunks of equal ``stack_key``, at most ``max_chunk`` each, in first-seen order."""
        groups: dict[Hashable, list[Job]] = {}
        for job in jobs:
            groups.setdefault(self.stack_key(job.config), []).append(job)
        out: list[list[Job]] = []
        for members in groups.values():
            # Equal sizes rather than max_chunk + remainder: stacked replicas share the chunk's wall time.
            n = math.ceil(len(members) / self.max_chunk)
            size = math.ceil(len(members) / n)
            out.extend(members[i : i + size] for i in range(0, len(members), size))
        return out

    def run_cost(self, config: Mapping[str, Any], tier: str = "small") -> float:
        """Estimated seconds of one run of ``config`` at ``tier`` on a 2-core CPU (one second without
        ``cost``); ``cost`` receives the tier when it takes a second argument."""
        if self.cost is None:
            return 1.0
        if _takes_tier(self.cost):
            return float(self.cost(config, tier))
        return float(self.cost(config))

    def estimate(self, jobs: Sequence[Job], tier: str = "small") -> float:
        """Estimated seconds of ``jobs`` at ``tier`` on a 2-core CPU (:meth:`run_cost` summed)."""
        return float(sum(self.run_cost(j.config, tier) for j in jobs))

    def describe(self) -> str:
        """A multi-line description for ``modscale list --verbose``."""
        lines = [f"{self.name}: {self.description}"]
        if self.paper:
            lines.append(f"  paper: {self.paper}")
        for tier in TIERS:
            t = self.tiers[tier]
            lines.append(
                f"  {tier}: {len(t.configs)} configs x {t.seeds} seeds" + (f" ({t.note})" if t.note else "")
            )
        lines.extend("  --set " + p.describe() for p in self.params)
        return "\n".join(lines)


__all__ = ["TIERS", "Param", "Tier", "grid", "Job", "Context", "Experiment"]
