"""The results store: one JSON object per finished run, appended durably to ``DIR/results.jsonl``.

A sweep is many runs (one experiment config x one seed each). Every finished run becomes one line::

    {"experiment": "theory_loss_trends", "config": {...}, "config_hash": "3f2a...", "seed": 0,
     "metrics": {"train": 0.41, "test": 1.02}, "wall_s": 0.003, "device": "cpu", "version": "0.1.0",
     "format": 1, "revision": 1, "tier": "small", "chunk_size": 240, "finished": "2025-01-01T12:00:00Z",
     "host": "node-1", "commit": "7939e3d..."}

``commit`` says which code made the numbers (:mod:`modscale._provenance`: the git commit of the checkout,
marked when it had local changes, or a hash of the installed package's source); records written before it
existed read as ``""``.

Durability: a batch of lines is written, flushed and ``fsync``-ed before the runs count as stored, so a sweep
killed at any instant (SIGKILL included) loses at most the runs in flight and never stores one twice: a rerun
skips every ``(experiment, revision, config_hash, seed)`` already present. A kill in the middle of a write
leaves a torn last line; readers ignore it with a warning and the next writer cuts it off before appending.

Compatibility: a record is read when it has the keys above with the right types, a store ``format`` this
version knows (<= :data:`FORMAT`) and a ``config_hash`` that matches its config. Records written by another
modscale ``version`` are read as they are; whatever is skipped is reported with its reason
(:attr:`Loaded.skipped`). Whether a record still fits its experiment's current config schema and revision
is decided by the experiment layer, which says so too.

Non-finite metric values (the closed-form test loss is +inf at the interpolation threshold) are written as
Python's ``json`` writes them (``Infinity``, ``NaN``) and read back exactly.

Only one process writes a store at a time (an exclusive ``flock``; the Ray backend's workers never write).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import numbers
import os
import socket
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modscale import __version__
from modscale._files import fsync_dir as _fsync_dir
from modscale._provenance import code_version
from modscale.errors import InvalidType, InvalidValue, UsageError

try:  # POSIX advisory locks; elsewhere the single-writer rule is the user's to keep.
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
"""The store format this version writes and the newest it reads."""
FILENAME = "results.jsonl"
"""The store's file inside its folder."""
REQUIRED = ("experiment", "config", "config_hash", "seed", "metrics", "wall_s", "device", "version")


class ResultsWarning(UserWarning):
    """Something in a results file was ignored (a torn last line, an unreadable or incompatible record)."""


class StoreBusy(UsageError):
    """Another process holds the store's write lock."""


class StoreWriteError(UsageError):
    """A batch could not be written (disk full, file size limit, I/O error); the store was cut back to what
    it held before the batch, so nothing of it counts as stored and a rerun resumes."""


# ----------------------------------------------------------------------------------------------- hashing


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into JSON's types (float, int, list, dict)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy array or scalar
        return _plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise InvalidType(f"results must hold numbers, strings, lists and dicts, got {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that hashing uses: sorted keys, no spaces, exact float repr."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``config``.

    Configs are stored with every key filled in (defaults included) and values of their declared types, so
    equal configs hash equally whichever way they were written on the command line.
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Record:
    """One finished run: an experiment's config at one seed, and what it measured.

    ``wall_s`` is the run's share of the wall time of the chunk it ran in (``chunk_size`` runs are often
    trained as one stacked model), so the sum of ``wall_s`` over a sweep is its compute time.
    """

    experiment: str
    config: dict[str, Any]
    config_hash: str
    seed: int
    metrics: dict[str, Any]
    wall_s: float
    device: str
    version: str = __version__
    format: int = FORMAT
    revision: int = 1
    tier: str = ""
    chunk_size: int = 1
    finished: str = ""
    host: str = ""
    commit: str = ""

    @property
    def key(self) -> tuple[str, int, str, int]:
        """What makes a run unique: a rerun skips a run whose key is stored."""
        return (self.experiment, self.revision, self.config_hash, self.seed)

    def to_json(self) -> str:
        return json.dumps(_plain(dataclasses.asdict(self)), separators=(",", ":"))


def make_record(
    experiment: str,
    config: Mapping[str, Any],
    seed: int,
    metrics: Mapping[str, Any],
    *,
    wall_s: float,
    device: str,
    revision: int = 1,
    tier: str = "",
    chunk_size: int = 1,
    commit: str | None = None,
) -> Record:
    """A :class:`Record` stamped with the config hash, this version, the time, the host and the code's commit
    (``commit``; None: the running code's, :func:`modscale._provenance.code_version`)."""
    return Record(
        experiment=experiment,
        config=_plain(dict(config)),
        config_hash=config_hash(config),
        seed=int(seed),
        metrics=_plain(dict(metrics)),
        wall_s=float(wall_s),
        device=str(device),
        revision=int(revision),
        tier=tier,
        chunk_size=int(chunk_size),
        finished=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        host=socket.gethostname(),
        commit=code_version() if commit is None else str(commit),
    )


_TYPES: dict[str, tuple[type, ...]] = {
    "experiment": (str,),
    "config": (dict,),
    "config_hash": (str,),
    "seed": (int,),
    "metrics": (dict,),
    "wall_s": (int, float),
    "device": (str,),
    "version": (str,),
    "format": (int,),
    "revision": (int,),
    "tier": (str,),
    "chunk_size": (int,),
    "finished": (str,),
    "host": (str,),
    "commit": (str,),
}


def parse_record(obj: Any) -> Record:
    """The :class:`Record` in one decoded line; ``ValueError`` saying why when it is not a compatible one."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object but {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    fmt = obj.get("format", FORMAT)
    if isinstance(fmt, int) and fmt > FORMAT:
        raise ValueError(f"store format {fmt} is newer than this modscale's ({FORMAT})")
    fields = {f.name for f in dataclasses.fields(Record)}
    values = {k: v for k, v in obj.items() if k in fields}
    for key, value in values.items():
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool):
            raise ValueError(f"key {key!r} holds {type(value).__name__}")
    if config_hash(values["config"]) != values["config_hash"]:
        raise ValueError("config_hash does not match its config")
    values["wall_s"] = float(values["wall_s"])
    return Record(**values)


# ----------------------------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A line of a results file that was not read, and why."""

    line: int
    reason: str
    version: str = ""


@dataclasses.dataclass
class Loaded:
    """The records of a results file, what was skipped and whether the last line was torn."""

    records: list[Record]
    skipped: list[Skipped]
    torn: bool = False

    def versions(self) -> Counter:
        """How many records each modscale version wrote."""
        return Counter(r.version for r in self.records)

    def notes(self) -> list[str]:
        """Human sentences on what was skipped or came from other versions (empty when nothing did)."""
        out = []
        if self.torn:
            out.append("ignored a torn last line (a run cut off while being written; it is rerun)")
        reasons = Counter((s.reason, s.version) for s in self.skipped if s.line >= 0)
        for (reason, version), count in sorted(reasons.items()):
            who = f" (written by modscale {version})" if version else ""
            out.append(f"skipped {count} record(s){who}: {reason}")
        for version, count in sorted(self.versions().items()):
            if version != __version__:
                out.append(f"read {count} record(s) written by modscale {version} (this is {__version__})")
        return out


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    data = path.read_bytes()
    if not data:
        return
    parts = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        parts = parts[:-1]
    for i, raw in enumerate(parts):
        yield i + 1, raw, (not complete and i == len(parts) - 1)


def load(path: str | os.PathLike, *, warn: bool = True) -> Loaded:
    """Every compatible record of a results file (a ``results.jsonl`` or the folder holding one).

    A torn last line (a write cut off by a kill) is ignored with a :class:`ResultsWarning`. Other unreadable
    or incompatible lines are skipped; when ``warn`` one warning summarises them. A duplicate of a stored
    key keeps the first copy. A missing file holds no records.
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".jsonl":
        path = path / FILENAME
    records: list[Record] = []
    skipped: list[Skipped] = []
    torn = False
    seen: set[tuple] = set()
    if not path.exists():
        return Loaded(records, skipped)
    for number, raw, last_unterminated in _lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if last_unterminated:
                torn = True
            else:
                skipped.append(Skipped(number, "not valid JSON"))
            continue
        try:
            record = parse_record(obj)
        except ValueError as exc:
            version = obj.get("version", "") if isinstance(obj, dict) else ""
            skipped.append(Skipped(number, str(exc), version if isinstance(version, str) else ""))
            continue
        if record.key in seen:
            skipped.append(Skipped(number, "duplicate of a run stored earlier in the file"))
            continue
        seen.add(record.key)
        records.append(record)
    loaded = Loaded(records, skipped, torn)
    if warn and torn:
        warnings.warn(
            f"{path}: ignored a torn last line (a run cut off while being written)",
            ResultsWarning,
            stacklevel=2,
        )
    if warn and skipped:
        warnings.warn(
            f"{path}: " + "; ".join(n for n in loaded.notes() if n.startswith("skipped")),
            ResultsWarning,
            stacklevel=2,
        )
    return loaded


# ----------------------------------------------------------------------------------------------- writing


class ResultsStore:
    """The writer of ``DIR/results.jsonl``: durable appends under an exclusive lock.

    Use as a context manager (``with ResultsStore(out) as store: store.append(records)``). Opening creates
    ``DIR`` if needed, takes the lock (:class:`StoreBusy` when another process holds it) and cuts off a torn
    last line left by a killed writer, so the next record starts on a line of its own.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self._file = None

    def __enter__(self) -> ResultsStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._file is not None:
            return
        if self.directory.exists() and not self.directory.is_dir():
            raise InvalidValue(f"output directory {self.directory} exists and is not a directory")
        created = not self.path.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "ab+")  # noqa: SIM115 - held open for the life of the store
        except OSError as err:  # a parent that is a file, no permission, a read-only file system...
            reason = err.strerror or type(err).__name__
            raise InvalidValue(f"cannot write the results file {self.path}: {reason}") from None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise StoreBusy(
                    f"{self.path} is being written by another modscale process; wait for it to "
                    "finish or choose another --out"
                ) from None
        self._file = f
        try:
            self._cut_torn_tail()
            if created:
                _fsync_dir(self.directory)
        except BaseException:
            self.close()  # a store that failed to open holds no lock
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None

    def _cut_torn_tail(self) -> None:
        f = self._file
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Find the last complete line; everything after it is a write cut off by a kill.
        block = 1 << 16
        end = size
        cut = 0
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            end = start
        msg = f"{self.path}: removed a torn last line ({size - cut} bytes) left by an interrupted write"
        warnings.warn(msg, ResultsWarning, stacklevel=3)
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())

    def append(self, records: Iterable[Record]) -> int:
        """Write ``records`` as lines, flush and fsync; only then are they stored. Returns how many."""
        if self._file is None:
            raise RuntimeError("ResultsStore.append needs an open store (use it as a context manager)")
        lines = [r.to_json() + "\n" for r in records]
        if not lines:
            return 0
        # unbuffered writes on the descriptor: after a failure no buffer holds bytes to flush later
        self._file.flush()
        fd = self._file.fileno()
        before = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview("".join(lines).encode())
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)  # the batch is not stored at all, not a torn part of it
                os.fsync(fd)
            raise StoreWriteError(
                f"cannot write {len(lines)} run(s) to {self.path}: {err.strerror or err}; the store is as it "
                "was before them. Free space (or raise the file size limit) and run the same command again: "
                "the sweep resumes"
            ) from None
        return len(lines)

    def load(self, *, warn: bool = True) -> Loaded:
        """The records stored so far (see :func:`load`)."""
        return load(self.path, warn=warn)


# ----------------------------------------------------------------------------------------------- summaries


def group(records: Sequence[Record], *keys: str) -> dict[tuple, list[Record]]:
    """Records grouped by the values of config ``keys`` (insertion-ordered)."""
    out: dict[tuple, list[Record]] = {}
    for r in records:
        out.setdefault(tuple(r.config.get(k) for k in keys), []).append(r)
    return out


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values``."""
    return [float(v) for v in values if isinstance(v, numbers.Real) and math.isfinite(v)]


__all__ = [
    "FORMAT",
    "FILENAME",
    "Record",
    "ResultsStore",
    "ResultsWarning",
    "StoreBusy",
    "StoreWriteError",
    "Loaded",
    "Skipped",
    "config_hash",
    "canonical_json",
    "make_record",
    "parse_record",
    "load",
    "group",
    "finite",
]
