"""``modscale data list | fetch``: where the data sets are, and the download of the one that can be fetched.

- ``data list``: each data set, where it was found (and by which rule of the lookup order) or that it is
  missing, and its size on disk;
- ``data fetch cifar10 [--dir DIR]``: the official CIFAR-10 python archive, downloaded with a progress bar
  (bytes, rate, ETA; plain lines when stderr is not a terminal), resumed after an interruption, verified
  against its pinned checksum and extracted safely into DIR (default: ``$MODSCALE_DATA``, else
  ``<data home>/cifar10``). ``--url URL --sha256 HEX`` (or ``--md5``) downloads from a mirror.

No network, no answer, a checksum mismatch or an unsafe archive: one line on stderr saying what happened and
what to do, exit status 2, nothing left in DIR (see :mod:`modscale.data.fetch`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from modscale.data import (
    DATA_ENV,
    Archive,
    DownloadProgress,
    data_home,
    default_fetch_dir,
    fetch,
    fetch_cifar10,
    find_cifar10,
)
from modscale.data.cifar10 import OFFICIAL_SUBDIR, damage
from modscale.data.fetch import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, archive_size
from modscale.errors import FetchError, InvalidValue

DATASETS = ("cifar10",)
PLAIN_EVERY_S = 10.0


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainDownloadProgress(DownloadProgress):
    """A line at most every 10 s: bytes so far, rate and ETA (for logs, where a bar would be noise)."""

    def __init__(self, stream=None, every_s: float = PLAIN_EVERY_S):
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.total = None
        self.done = 0

    def start(self, total: int | None, done: int) -> None:
        self.total, self.first, self.done = total, done, done
        self.t0 = self.last = time.monotonic()
        if done:
            print(f"resuming after {_mb(done)}", file=self.stream, flush=True)

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.done - self.first) / elapsed
        text = f"{_mb(self.done)}" + (f" of {_mb(self.total)}" if self.total else "") + f", {_mb(rate)}/s"
        if self.total and rate > 0:
            text += f", ETA {_clock((self.total - self.done) / rate)}"
        return "downloaded " + text

    def advance(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(self._line(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.total is not None or self.done:
            print(self._line(), file=self.stream, flush=True)


class BarDownloadProgress(DownloadProgress):
    """A rich bar with bytes, transfer rate and time remaining."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = None

    def start(self, total: int | None, done: int) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("download", total=total, completed=done)
        else:  # a resumed request after a dropped connection
            self.bar.update(self.task, total=total, completed=done)

    def advance(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    def finish(self) -> None:
        if self.task is not None:
            self.bar.stop()


def make_download_progress(quiet: bool = False) -> DownloadProgress:
    if quiet:
        return DownloadProgress()
    return BarDownloadProgress() if sys.stderr.isatty() else PlainDownloadProgress()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="where the data sets are; fetch CIFAR-10")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    data_sub.required = True

    q = data_sub.add_parser("list", help="each data set: where it was found (or missing) and its size")
    q.add_argument("--data-dir", default=None, metavar="DIR", help="look here first, as experiments would")
    q.set_defaults(handler=cmd_list)

    q = data_sub.add_parser(
        "fetch",
        help=f"download, verify and extract a data set (CIFAR-10: {archive_size()} from its home page)",
    )
    q.add_argument("name", choices=DATASETS, metavar="NAME", help="data set: cifar10")
    q.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help=f"where to put it (default: ${DATA_ENV} if set, else <data home>/cifar10)",
    )
    q.add_argument("--url", default=None, help="download from this URL instead (a mirror); needs a checksum")
    q.add_argument("--sha256", default=None, metavar="HEX", help="the SHA-256 the --url file must have")
    q.add_argument("--md5", default=None, metavar="HEX", help="the MD5 the --url file must have")
    q.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the server to answer (default: {DEFAULT_TIMEOUT_S:g})",
    )
    q.add_argument(
        "--retries",
        type=_count,
        default=DEFAULT_RETRIES,
        metavar="N",
        help=f"resume a dropped connection up to N times (default: {DEFAULT_RETRIES})",
    )
    q.add_argument("--quiet", action="store_true", help="no progress output")
    q.set_defaults(handler=cmd_fetch)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cmd_list(args: argparse.Namespace) -> int:
    print(f"data home: {data_home()}")
    fetched = default_fetch_dir() / OFFICIAL_SUBDIR
    broken = damage(fetched) if args.data_dir is None else None
    if broken is not None:
        print(f"cifar10  damaged: {fetched}: {broken}; `modscale data fetch cifar10` replaces it")
        return 0
    try:
        found = find_cifar10(args.data_dir)
    except InvalidValue as err:
        print(f"cifar10  missing: {err}")
        return 0
    layout = "offline JPEG npz copy" if found.layout == "npz" else "official python batches"
    size = _folder_bytes(found.folder) if found.layout == "official" else sum(
        (found.folder / name).stat().st_size for name in ("train.npz", "test.npz")
    )  # fmt: skip
    print(f"cifar10  {found.folder}  ({layout}, {_mb(size)}; found by {found.source})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    if args.url is None and (args.sha256 or args.md5):
        raise InvalidValue("--sha256 and --md5 go with --url; the official archive's checksum is pinned")
    if args.url is not None and not (args.sha256 or args.md5):
        raise InvalidValue("--url needs --sha256 HEX or --md5 HEX: a download is always verified")
    if args.url is not None:  # a bad URL or checksum is refused before anything is printed or fetched
        Archive(args.url, fetch.CIFAR10_ARCHIVE.filename, sha256=args.sha256, md5=args.md5)
    dest = Path(args.dir).expanduser() if args.dir else default_fetch_dir()
    broken = damage(dest / OFFICIAL_SUBDIR)
    if broken is not None and not args.quiet:
        print(f"{dest / OFFICIAL_SUBDIR} is damaged ({broken}); fetching it again", file=sys.stderr)
    if dest.is_dir() and broken is None:
        with contextlib.suppress(InvalidValue):
            found = find_cifar10(dest)
            print(f"cifar10: already in {found.folder}; nothing downloaded")
            return 0
    url = args.url or fetch.CIFAR10_ARCHIVE.url
    size = archive_size() if args.url is None else "size unknown"
    if not args.quiet:
        print(f"downloading CIFAR-10 ({size}) from {url} into {dest}", file=sys.stderr, flush=True)
    folder = fetch_cifar10(  # the official source when --url is not given
        dest,
        url=args.url,
        sha256=args.sha256,
        md5=args.md5,
        timeout=args.timeout,
        retries=args.retries,
        progress=make_download_progress(args.quiet),
        waiting=_say_waiting,
    )
    print(f"cifar10: {folder}")
    return 0


def _say_waiting(pid: int | None) -> None:
    who = f"process {pid}" if pid else "another process"
    print(
        f"another fetch into this data home is running ({who}); waiting for it to finish "
        "(Ctrl-C stops waiting and leaves its download alone)",
        file=sys.stderr,
        flush=True,
    )


def ensure_data(names, *, fetch_missing: bool, quiet: bool = False) -> dict[str, str]:
    """Make sure the data sets ``names`` are on disk; returns ``{name: reason}`` for those that are not.

    A data set found anywhere in the lookup order is left alone (nothing is fetched). A missing one is
    fetched into :func:`~modscale.data.default_fetch_dir` when ``fetch_missing`` (saying what is downloaded,
    how big and where to); when that fails (no network, a bad file) or is not asked for, the reason is one
    line ending in the command that fixes it.
    """
    missing = {}
    for name in dict.fromkeys(names):
        if name != "cifar10":  # pragma: no cover - every registered data set is listed in DATASETS
            raise InvalidValue(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
        broken = damage(default_fetch_dir() / OFFICIAL_SUBDIR)
        try:
            if broken is None:
                find_cifar10()
                continue
            not_found = f"the fetched copy in {default_fetch_dir() / OFFICIAL_SUBDIR} is damaged ({broken})"
        except InvalidValue as err:
            not_found = str(err)  # where it looked, and the command that fetches it
        if not fetch_missing:
            missing[name] = f"{not_found} (`modscale reproduce --fetch-data` fetches it too)"
            continue
        dest = default_fetch_dir()
        archive = fetch.CIFAR10_ARCHIVE
        if not quiet:
            print(
                f"CIFAR-10 not found: downloading the official archive {archive.filename} ({archive_size()}) "
                f"from {archive.url} into {dest}",
                file=sys.stderr,
                flush=True,
            )
        try:
            folder = fetch_cifar10(dest, progress=make_download_progress(quiet), waiting=_say_waiting)
        except (FetchError, InvalidValue) as err:
            missing[name] = f"CIFAR-10 could not be fetched: {err}"
            continue
        if not quiet:
            print(f"CIFAR-10 is in {folder}", file=sys.stderr, flush=True)
    return missing


__all__ = [
    "add_parsers",
    "ensure_data",
    "make_download_progress",
    "PlainDownloadProgress",
    "BarDownloadProgress",
]
