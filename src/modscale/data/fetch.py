"""Fetch the official CIFAR-10 python archive: download (resumable), verify, extract safely, put in place.

    fetch_cifar10(dest=None) -> Path of the ``cifar-10-batches-py`` folder

Source: ``cifar-10-python.tar.gz`` from the dataset's home page (:data:`CIFAR10_ARCHIVE`), 170,498,071 bytes,
its MD5 as the page publishes it and its SHA-256 pinned here; ``url`` with ``sha256`` or ``md5`` overrides the
source (a mirror; the tests serve a small archive in the same layout on 127.0.0.1).

Steps, each finished before the next starts, so a failure leaves the destination as it was:

1. Download into ``<data home>/downloads/<name>.<key>.part`` (never into the destination), printing nothing
   itself: ``progress`` receives the byte counts. An interrupted download keeps its part file; the next
   call asks the server for the rest (HTTP ``Range: bytes=<size>-``, with ``If-Range`` naming the version
   the part came from, so a changed file restarts from zero). A connection dropped mid-file is resumed the
   same way up to ``retries`` times within one call.
2. Verify the size and checksum of the whole file. A mismatch deletes the part file and raises.
3. Check every archive member before extracting anything: only regular files and folders, relative paths
   without ``..``, no links or devices, at most :data:`MAX_EXTRACTED_BYTES` in all. One bad member refuses
   the whole archive.
4. Extract into a temporary folder inside the destination and read every batch through the restricted
   unpickler with the count check (:func:`modscale.data.cifar10.load_cifar10`): the files are CIFAR-10
   before they are put in place.
5. Rename the folder into place (atomic on one file system), delete the temporary folder and the part file.

Errors are :class:`~modscale.errors.FetchError` (no network, no answer within ``timeout`` seconds, an HTTP
error, a checksum mismatch, an unsafe archive): one sentence saying what happened and what to do. Nothing is
left in the destination (a destination folder this call created is removed again); only a partial download
that can be resumed is kept, in the data home.

Example::

    folder = fetch_cifar10()                    # <data home>/cifar10/cifar-10-batches-py
    load_cifar10(folder.parent)                 # or simply load_cifar10(): the data home is searched
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from modscale._files import fsync_dir as _fsync_dir
from modscale.data.cifar10 import (
    FETCH_COMMAND,
    OFFICIAL_SUBDIR,
    _layout,
    damage,
    data_home,
    default_fetch_dir,
    load_cifar10,
    write_manifest,
)
from modscale.errors import FetchError, InvalidType, InvalidValue

CHUNK = 1 << 16
MAX_EXTRACTED_BYTES = 1 << 30  # the official archive unpacks to 178 MB; anything far larger is refused
MAX_MEMBERS = 1000  # the official archive has 8 members; a flood of tiny ones is refused before extracting
LOCK_POLL_S = 0.5  # how often a second fetch looks whether the first has finished
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class Archive:
    """A downloadable archive: where it is, its file name, and what it must hash to.

    ``size`` (bytes) is checked when known; at least one of ``sha256`` and ``md5`` is required.
    """

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https"):
            raise InvalidValue(f"the download URL must start with http:// or https://, got {self.url!r}")
        if self.sha256 is None and self.md5 is None:
            raise InvalidValue("a download needs a checksum to verify: give sha256 or md5")
        for name, value, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if value is not None and (
                len(value) != length or any(c not in "0123456789abcdef" for c in value.lower())
            ):
                raise InvalidValue(f"{name} must be {length} hexadecimal digits, got {value!r}")

    @property
    def key(self) -> str:
        """Names the part file: a part is resumed only by a download of the same URL and checksum."""
        text = f"{self.url}\n{self.sha256 or ''}\n{self.md5 or ''}".lower()
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# The dataset's home page (https://www.cs.toronto.edu/~kriz/cifar.html) publishes the MD5; the SHA-256 and the
# size are those of the same file as other public loaders pin it (Keras' cifar10.load_data), and both are
# checked.
CIFAR10_ARCHIVE = Archive(
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    filename="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    md5="c58f30108f718f92721af3b95e74349a",
    size=170_498_071,
)
"""The official CIFAR-10 python archive: its address, file name, checksums and size."""


class DownloadProgress:
    """Receives a download's progress; the default shows nothing. The CLI draws a bar (bytes, rate, ETA)."""

    def start(self, total: int | None, done: int) -> None:
        """A request is answered: ``total`` bytes in all (None when unknown), ``done`` already on disk."""

    def advance(self, done: int) -> None:
        """``done`` bytes are on disk now."""

    def finish(self) -> None:
        """The download is over (complete or not)."""


def downloads_dir() -> Path:
    """Partial downloads: ``<data home>/downloads``."""
    return data_home() / "downloads"


# --------------------------------------------------------------------------------------------- download


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class _Dropped(Exception):
    """The connection ended before the whole file arrived (resumable)."""


class _Unreachable(Exception):
    """The request got no answer: refused, unreachable, no DNS, or silent for ``timeout`` seconds."""


class _SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the scheme the request used (never https -> http, never ftp or file)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl).scheme
        if new != old:
            raise FetchError(
                f"{_host(req.full_url)} redirected the download from {old}:// to {newurl!r}; only redirects "
                f"that keep {old}:// are followed. Give the final URL with --url if you trust it"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameSchemeRedirects)


def _request(archive: Archive, start: int, validator: str | None, timeout: float):
    headers = {"User-Agent": "modscale (https://pypi.org/project/modscale)", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator
    return _OPENER.open(urllib.request.Request(archive.url, headers=headers), timeout=timeout)


def _content_range_total(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a ``Content-Range: bytes a-b/total`` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first = span.split("-")[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


def _download_once(archive: Archive, part: Path, meta: Path, timeout: float, progress: DownloadProgress):
    """One request: append what the server sends to ``part``. Returns when the file is complete; raises
    :class:`_Dropped` when the connection ends early, FetchError for anything that retrying cannot fix."""
    start = part.stat().st_size if part.exists() else 0
    validator = None
    if start and meta.exists():
        with contextlib.suppress(OSError, ValueError):
            validator = json.loads(meta.read_text()).get("validator")
    try:
        response = _request(archive, start, validator, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing after `start`: the part may be the whole file already
            _, total = _content_range_total(err.headers.get("Content-Range"))
            err.close()
            if total == start:
                return
            part.unlink()  # longer than the file: not a prefix of it
            raise _Dropped("the partial download did not match the file; starting again") from None
        err.close()
        raise FetchError(
            f"{_host(archive.url)} answered HTTP {err.code} {err.reason} for {archive.url}; check the URL "
            "(--url) or try again later"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Unreachable(err) from None
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            first, total = _content_range_total(response.headers.get("Content-Range"))
            if first != start:  # not the rest of our part: it cannot be trusted to continue it
                response.close()
                part.unlink()
                raise _Dropped(
                    f"{_host(archive.url)} sent a range from byte {first}, asked from {start}; starting again"
                )
            mode = "ab"
        elif status == 200:
            start, total, mode = 0, length, "wb"  # the whole file (a fresh start, or If-Range said changed)
        else:
            raise FetchError(f"{_host(archive.url)} answered HTTP {status} for {archive.url}")
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        part.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"url": archive.url, "validator": validator}))
        progress.start(total, start)
        done = start
        with open(part, mode) as f:
            while True:
                try:
                    block = response.read1(CHUNK)  # what has arrived: a stall keeps it
                except (http.client.HTTPException, OSError) as err:  # reset, timeout, short read
                    raise _Dropped(
                        f"the connection broke after {done:,} bytes ({type(err).__name__})"
                    ) from None
                if not block:
                    break
                try:
                    f.write(block)
                    f.flush()
                except OSError as err:  # a full disk or a file size limit: retrying cannot help
                    raise FetchError(
                        f"cannot write the download to {part}: {err.strerror or err}; the bytes written so "
                        "far are kept there. Free space and run the same command again to resume"
                    ) from None
                done += len(block)
                progress.advance(done)
            f.flush()
            os.fsync(f.fileno())  # what was received survives a crash of the machine, and is resumed
        expected = total if total is not None else archive.size
        if expected is not None and done < expected:  # a clean close short of the size: resume, not verify
            raise _Dropped(f"the connection ended after {done:,} of {expected:,} bytes")


def _connect_error(archive: Archive, err: BaseException, timeout: float, part: Path) -> FetchError:
    reason = getattr(err, "reason", err)
    if isinstance(reason, TimeoutError | socket.timeout):
        what = f"{_host(archive.url)} did not answer within {timeout:g} s"
    else:
        what = f"cannot reach {_host(archive.url)} ({reason})"
    kept = part.stat().st_size if part.exists() else 0
    written = (
        f"the {kept:,} bytes received so far are kept in {part} and the next run resumes from there"
        if kept
        else "nothing was written"
    )
    return FetchError(
        f"{what}, no network? {written[0].upper()}{written[1:]}. Connect and run `{FETCH_COMMAND}` again, or "
        "point --data-dir or MODSCALE_DATA at an existing copy"
    )


def download(
    archive: Archive,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    progress: DownloadProgress | None = None,
) -> Path:
    """Download ``archive`` into :func:`downloads_dir` (resuming a part file) and verify it; returns the
    verified file (the caller deletes it when done). See the module docstring."""
    progress = progress or DownloadProgress()
    part = downloads_dir() / f"{archive.filename}.{archive.key}.part"
    meta = part.with_suffix(".json")
    attempt = 0
    try:
        while True:
            try:
                _download_once(archive, part, meta, timeout, progress)
                break
            except _Dropped as dropped:
                attempt += 1
                if attempt > retries:
                    kept = part.stat().st_size if part.exists() else 0
                    raise FetchError(
                        f"the download from {_host(archive.url)} was interrupted: {dropped}; the {kept:,} "
                        f"bytes received are kept in {part}: run the same command again to resume"
                    ) from None
                time.sleep(min(2.0, 0.25 * attempt))
            except _Unreachable as unreachable:
                # Refused, unreachable or silent at connect time. With bytes already here the server answered
                # before, so it is worth asking again; otherwise fail at once (offline).
                if part.exists() and part.stat().st_size:
                    attempt += 1
                    if attempt <= retries:
                        time.sleep(min(2.0, 0.25 * attempt))
                        continue
                raise _connect_error(archive, unreachable.args[0], timeout, part) from None
    finally:
        progress.finish()
    _verify(archive, part)
    with contextlib.suppress(OSError):
        meta.unlink()
    return part


def _verify(archive: Archive, path: Path) -> None:
    size = path.stat().st_size
    problem = None
    if archive.size is not None and size != archive.size:
        problem = f"it has {size:,} bytes, expected {archive.size:,}"
    else:
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                sha.update(block)
                md5.update(block)
        for name, expected, got in (("SHA-256", archive.sha256, sha), ("MD5", archive.md5, md5)):
            if expected is not None and got.hexdigest() != expected.lower():
                problem = f"its {name} is {got.hexdigest()}, expected {expected.lower()}"
                break
    if problem is not None:
        path.unlink()
        raise FetchError(
            f"the file downloaded from {archive.url} failed verification ({problem}) and was deleted; "
            "nothing was put in place. Run the command again; if it fails again, the source serves another "
            "file: use the official URL or give the mirror's own checksum (--sha256 or --md5)"
        )


# --------------------------------------------------------------------------------------------- extraction


def check_members(tar: tarfile.TarFile, source: str) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, after refusing the archive if any member is unsafe to extract.

    Allowed: regular files and folders with relative paths that stay inside the destination; refused:
    absolute paths, ``..`` components, symbolic and hard links, devices, FIFOs, and archives that unpack to
    more than :data:`MAX_EXTRACTED_BYTES` or hold more than :data:`MAX_MEMBERS` members.
    """
    members, total = [], 0
    for m in tar:
        name = m.name
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or Path(name).is_absolute() or (parts and ":" in parts[0]):
            raise FetchError(f"{source}: refusing to extract member {name!r}: an absolute path")
        if ".." in parts or ".." in name.replace("\\", "/").split("/"):
            raise FetchError(
                f"{source}: refusing to extract member {name!r}: its path leaves the folder (..)"
            )
        if m.issym() or m.islnk():
            raise FetchError(f"{source}: refusing to extract member {name!r}: a link to {m.linkname!r}")
        if not (m.isfile() or m.isdir()):
            raise FetchError(f"{source}: refusing to extract member {name!r}: not a regular file or folder")
        total += m.size
        if total > MAX_EXTRACTED_BYTES:
            raise FetchError(
                f"{source}: refusing to extract: it unpacks to more than {MAX_EXTRACTED_BYTES:,} bytes"
            )
        members.append(m)
        if len(members) > MAX_MEMBERS:
            raise FetchError(f"{source}: refusing to extract: it has more than {MAX_MEMBERS:,} members")
    return members


def extract_into(archive_path: Path, dest: Path, source: str) -> Path:
    """Extract a verified CIFAR-10 archive and put its ``cifar-10-batches-py`` folder into ``dest``.

    Nothing appears in ``dest`` unless every member was safe and every batch loaded; on any error the
    temporary folder is removed (and ``dest`` too when this call created it).
    """
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".extract-*"):  # left by a fetch killed mid-extraction (callers hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive_path, "r:*") as tar:
                members = check_members(tar, source)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the library's own checks as well
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - older 3.11 patch releases; check_members has refused the rest
                    tar.extractall(tmp, members=members)  # noqa: S202
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise FetchError(
                    f"cannot extract into {dest}: {err.strerror}; nothing was put in place. Free space (or "
                    "fix the folder's permissions) and run the same command again"
                ) from None
            raise FetchError(f"{source} is not a readable tar.gz archive ({err})") from None
        except (tarfile.TarError, EOFError, ValueError) as err:
            raise FetchError(f"{source} is not a readable tar.gz archive ({err})") from None
        extracted = tmp / OFFICIAL_SUBDIR
        if not extracted.is_dir() or _layout(extracted) is None:
            raise FetchError(
                f"{source} holds no {OFFICIAL_SUBDIR} folder with data_batch_1 .. data_batch_5 and test_batch"
            )
        try:
            load_cifar10(extracted, use_cache=False)  # the restricted unpickler and the count check
        except InvalidValue as err:
            where = str(err).replace(str(extracted), OFFICIAL_SUBDIR)  # the temporary folder is gone by then
            raise FetchError(f"{source}: the extracted files are not CIFAR-10: {where}") from None
        target = dest / OFFICIAL_SUBDIR
        write_manifest(extracted)  # so that a copy damaged later is recognised and repaired
        _fsync_tree(extracted)  # the files are on disk before the rename makes them the copy
        try:
            os.replace(extracted, target)  # atomic; fails if a non-empty folder is already there
            _fsync_dir(dest)
        except OSError as err:
            raise FetchError(f"cannot put the data in place at {target} ({err})") from None
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only when empty: after a failure, nothing is left in a folder we created


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


# --------------------------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def fetch_lock(waiting=None):
    """One fetch per data home at a time: an exclusive ``flock`` on a lock file in the system's temporary
    folder named after the data home's path (so a fetch that fails offline writes nothing in the data home).

    A second fetch waits until the first ends (the lock goes with the process, so a fetch killed with
    SIGKILL frees it), calling ``waiting(pid)`` once with the holder's process id; it then finds the data
    in place and downloads nothing. Without ``fcntl`` (not POSIX) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX only
        yield
        return
    home = hashlib.sha256(str(data_home().resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"modscale-fetch-{home}.lock", "a+") as f:
        told = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and waiting is not None:
                    f.seek(0)
                    holder = f.read().strip()
                    waiting(int(holder) if holder.isdigit() else None)
                told = True
                time.sleep(LOCK_POLL_S)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()  # closing the file releases the lock


# --------------------------------------------------------------------------------------------- fetch


def fetch_cifar10(
    dest: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    progress: DownloadProgress | None = None,
    waiting=None,
) -> Path:
    """Download, verify and extract CIFAR-10 into ``dest`` (default :func:`default_fetch_dir`); returns the
    ``cifar-10-batches-py`` folder.

    ``url`` with ``sha256`` and/or ``md5`` replaces the official source (a mirror). When ``dest`` already
    holds CIFAR-10 (either layout), nothing is downloaded and the folder holding the files is returned.
    One fetch per data home runs at a time (:func:`fetch_lock`); ``waiting(pid)`` is called once when this
    one waits for another.
    Raises :class:`~modscale.errors.FetchError` as the module docstring says.
    """
    if dest is not None and not isinstance(dest, str | os.PathLike):
        raise InvalidType(f"dest must be a path, got {type(dest).__name__}")
    if url is None:
        if sha256 is not None or md5 is not None:
            raise InvalidValue("a checksum (sha256, md5) goes with a url; the official one is pinned")
        archive = CIFAR10_ARCHIVE
    else:
        if not isinstance(url, str):
            raise InvalidType(f"url must be a str, got {type(url).__name__}")
        name = Path(urllib.parse.urlsplit(url).path).name or CIFAR10_ARCHIVE.filename
        archive = Archive(url, name, sha256=sha256, md5=md5)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidValue(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidValue(f"retries must be an integer >= 0, got {retries!r}")
    dest = Path(dest).expanduser() if dest is not None else default_fetch_dir()
    with fetch_lock(waiting):
        return _fetch_locked(archive, dest, timeout, retries, progress)


def _fetch_locked(archive: Archive, dest: Path, timeout: float, retries: int, progress) -> Path:
    if dest.exists() and not dest.is_dir():
        raise InvalidValue(f"{dest} exists and is not a folder")
    if damage(dest / OFFICIAL_SUBDIR) is not None:  # a copy this module extracted, damaged since: replaced
        shutil.rmtree(dest / OFFICIAL_SUBDIR)
    if dest.exists() and not dest.is_dir():
        raise InvalidValue(f"{dest} exists and is not a folder")
    if dest.is_dir() and _layout(dest) is not None:
        return _layout(dest)[1]  # already there: nothing is downloaded
    if (dest / OFFICIAL_SUBDIR).exists():
        raise InvalidValue(
            f"{dest / OFFICIAL_SUBDIR} exists but is not a complete CIFAR-10 folder; move it away and fetch "
            "again"
        )
    path = download(archive, timeout=timeout, retries=retries, progress=progress)
    try:
        return extract_into(path, dest, archive.url)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # verified and extracted, or refused: either way not worth keeping


def archive_size(archive: Archive | None = None) -> str:
    """The archive's size for messages: "163 MB" (MiB, as the dataset page counts)."""
    archive = archive or CIFAR10_ARCHIVE
    if not archive.size:
        return "size unknown"
    mb = archive.size / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


__all__ = [
    "fetch_cifar10",
    "download",
    "extract_into",
    "check_members",
    "Archive",
    "CIFAR10_ARCHIVE",
    "DownloadProgress",
    "downloads_dir",
    "MAX_EXTRACTED_BYTES",
    "MAX_MEMBERS",
    "fetch_lock",
]
