"""Fault injection: fetches killed, run twice at once, served badly or starved of disk; stores and reports
written through faults. Every case ends in success or one clear line, nothing corrupt is left behind, and
the same command run again completes.

Servers listen on 127.0.0.1 only (the guard of test_data_fetch refuses any other address in this process;
the child processes are given loopback URLs alone). Every loop is bounded in count and every child in time.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import importlib
import io
import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_data_fetch import _loopback_only  # noqa: F401 - the autouse guard: loopback only, empty data home

from modscale import cli
from modscale.data import Archive, load_cifar10
from modscale.data import cifar10 as cifar_module
from modscale.data import fetch as fetch_module
from modscale.data.fetch import download, extract_into
from modscale.errors import FetchError
from modscale.results import ResultsStore, StoreWriteError, load, make_record

PER_BATCH = 40
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CHILD_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------------------------
# A CIFAR-shaped archive that compresses well (pixels 0/1), so a part file is smaller than one batch


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for name in BATCHES:
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(PER_BATCH)],
                 b"data": rng.integers(0, 2, size=(PER_BATCH, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(PER_BATCH)]}  # fmt: skip
        files[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    meta = {b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072,
            b"label_names": [c.encode() for c in cifar_module.CIFAR10_CLASSES]}  # fmt: skip
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    return files


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = _targz(_files())
SHA = hashlib.sha256(ARCHIVE).hexdigest()
BATCH_BYTES = len(_files()["cifar-10-batches-py/data_batch_1"])


# ---------------------------------------------------------------------------------------------------------
# A server whose next responses misbehave as told


class BadServer:
    """Serves ARCHIVE at /a.tar.gz (ETag, byte ranges). ``faults`` is a list consumed one per request:
    "wrong-start", "long-length", "short-length", "early-close", "reset", "trickle", "redirect-same",
    "redirect-scheme"; None serves correctly. ``rate`` (bytes/s) slows every body down."""

    def __init__(self, body: bytes = ARCHIVE, rate: float | None = None):
        self.body, self.faults, self.rate, self.requests = body, [], rate, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, data: bytes) -> None:
                if server.rate is None:
                    self.wfile.write(data)
                    return
                step = max(1, int(server.rate / 20))
                for i in range(0, len(data), step):  # bounded: len / step writes
                    self.wfile.write(data[i : i + step])
                    self.wfile.flush()
                    time.sleep(0.05)

            def do_GET(self):
                fault = server.faults.pop(0) if server.faults else None
                server.requests.append((self.path, self.headers.get("Range"), fault))
                body, etag = server.body, '"v1"'
                if self.path == "/moved":
                    self.path = "/a.tar.gz"
                elif fault == "redirect-same":
                    self.send_response(302)
                    self.send_header("Location", "/moved")
                    self.end_headers()
                    return
                elif fault == "redirect-scheme":
                    self.send_response(302)
                    self.send_header("Location", f"ftp://127.0.0.1:{self.server.server_address[1]}/a.tar.gz")
                    self.end_headers()
                    return
                if self.path != "/a.tar.gz":
                    self.send_error(404)
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and self.headers.get("If-Range", etag) == etag:
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                if fault == "wrong-start" and start:
                    self.send_response(206)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                    self.end_headers()
                    self._send(body)
                    return
                self.send_response(206 if start else 200)
                self.send_header("ETag", etag)
                rest = body[start:]
                if fault == "long-length":
                    self.send_header("Content-Length", str(len(rest) + 1000))
                elif fault == "short-length":
                    self.send_header("Content-Length", str(len(rest) - 1000))
                elif fault != "early-close":
                    self.send_header("Content-Length", str(len(rest)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if fault in ("early-close", "reset", "trickle"):
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    if fault == "trickle":
                        time.sleep(1.0)  # longer than the client's timeout, then nothing more
                    if fault == "reset":  # RST instead of FIN: SO_LINGER with a zero timeout
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    self.close_connection = True
                    return
                self._send(rest)
                if fault == "long-length":
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/a.tar.gz"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = BadServer()
    yield s
    s.close()


def _parts(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "home" / "downloads").glob("*.part"))


def _complete(folder: Path) -> bool:
    data = load_cifar10(folder, use_cache=False)  # the restricted unpickler and the balance check
    return len(data.y_train) == 200 and len(data.y_test) == 40


def _fetch_argv(url: str, dest: Path) -> list[str]:
    return ["data", "fetch", "cifar10", "--url", url, "--sha256", SHA, "--dir", str(dest), "--quiet"]


# ---------------------------------------------------------------------------------------------------------
# Servers that misbehave


@pytest.mark.parametrize("fault", ["long-length", "early-close", "reset", "trickle"])
def test_a_body_cut_short_is_resumed_within_the_call(server, tmp_path, fault):
    server.faults = [fault]
    archive = Archive(server.url, "a.tar.gz", sha256=SHA, size=len(ARCHIVE))  # the official size is pinned
    path = download(archive, timeout=0.5, retries=2)
    assert path.read_bytes() == ARCHIVE
    assert [r[1] for r in server.requests][1] is not None  # the second request asked for the rest (Range)


def test_a_206_from_the_wrong_byte_restarts_from_zero(server, tmp_path):
    server.faults = ["early-close", "wrong-start"]
    archive = Archive(server.url, "a.tar.gz", sha256=SHA, size=len(ARCHIVE))
    path = download(archive, timeout=5, retries=3)
    assert path.read_bytes() == ARCHIVE
    ranges = [r[1] for r in server.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[2] is None  # then from zero, whole


def test_a_416_for_a_part_longer_than_the_file_restarts(server, tmp_path):
    archive = Archive(server.url, "a.tar.gz", sha256=SHA)
    part = fetch_module.downloads_dir() / f"{archive.filename}.{archive.key}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE + b"junk")  # longer than the file: not a prefix of it
    path = download(archive, timeout=5, retries=2)
    assert path.read_bytes() == ARCHIVE
    assert server.requests[0][1] == f"bytes={len(ARCHIVE) + 4}-" and server.requests[1][1] is None


def test_a_content_length_short_of_the_body_fails_once_then_completes(server, tmp_path, capsys):
    server.faults = ["short-length"]  # a mirror: no size pinned, so only the checksum can tell
    dest = tmp_path / "data"
    assert cli.main(_fetch_argv(server.url, dest)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed verification" in err[0]
    assert not dest.exists() and not _parts(tmp_path)  # nothing corrupt kept
    assert cli.main(_fetch_argv(server.url, dest)) == 0
    assert _complete(dest / "cifar-10-batches-py")


def test_redirects_keep_their_scheme(server, tmp_path, capsys):
    server.faults = ["redirect-same"]
    dest = tmp_path / "data"
    assert cli.main(_fetch_argv(server.url, dest)) == 0
    assert [r[0] for r in server.requests] == ["/a.tar.gz", "/moved"]
    server.faults = ["redirect-scheme"]
    other = tmp_path / "other"
    assert cli.main(_fetch_argv(server.url, other)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only redirects that keep http:// are followed" in err[0]
    assert not other.exists() and not _parts(tmp_path)


def test_an_archive_of_100000_tiny_members_is_refused_before_extracting(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for i in range(100_000):
            tar.addfile(tarfile.TarInfo(f"cifar-10-batches-py/f{i}"), io.BytesIO(b""))
    path = tmp_path / "many.tar.gz"
    path.write_bytes(buf.getvalue())
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match=r"more than 1,000 members"):
        extract_into(path, dest, "many.tar.gz")
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------------------
# Child processes: killed, run twice at once, starved of disk


def _child(code: str, tmp_path: Path, **env) -> subprocess.Popen:
    full = dict(os.environ, MODSCALE_CACHE=str(tmp_path / "home"), no_proxy="127.0.0.1", **env)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        full.pop(var, None)
    full.pop("MODSCALE_DATA", None)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _cli_child(argv: list[str], tmp_path: Path, fsize: int | None = None) -> subprocess.Popen:
    limit = (
        f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))"
        if fsize
        else "pass"
    )
    return _child(f"{limit}\nimport sys\nfrom modscale import cli\nsys.exit(cli.main({argv!r}))", tmp_path)


def _wait(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    return proc.returncode, out, err


def test_two_fetches_at_once_one_downloads_the_other_waits(tmp_path):
    slow = BadServer(rate=len(ARCHIVE) / 1.5)  # about 1.5 s per download
    try:
        dest = tmp_path / "data"
        argv = _fetch_argv(slow.url, dest)[:-1]  # not --quiet: the waiting message is printed
        first = _cli_child(argv, tmp_path)
        time.sleep(0.5)
        second = _cli_child(argv, tmp_path)
        (rc1, _, err1), (rc2, _, err2) = _wait(first), _wait(second)
    finally:
        slow.close()
    assert rc1 == 0 and rc2 == 0, (err1, err2)
    # whichever took the lock first downloaded; the other said whom it waited for (not both, not neither)
    waited = [err for err in (err1, err2) if "waiting for it to finish" in err]
    assert len(waited) == 1
    holder = first if waited[0] is err2 else second
    assert f"process {holder.pid}" in waited[0]
    assert len([r for r in slow.requests if r[1] is None]) == 1  # one download from byte 0
    assert _complete(dest / "cifar-10-batches-py")
    assert not list(dest.glob(".extract-*")) and not _parts(tmp_path)


def test_kill_9_at_random_points_then_the_same_command_completes(tmp_path):
    slow = BadServer(rate=len(ARCHIVE) / 0.6)
    rng = random.Random(0)
    dest = tmp_path / "data"
    argv = _fetch_argv(slow.url, dest)
    try:
        for delay in [rng.uniform(0.3, 1.6) for _ in range(5)]:  # download, verification, extraction, rename
            proc = _cli_child(argv, tmp_path)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=CHILD_TIMEOUT_S)
            target = dest / "cifar-10-batches-py"
            if target.exists():  # whatever moment it died at, a copy in place is a complete one
                assert _complete(target)
        rc, _, err = _wait(_cli_child(argv, tmp_path))
    finally:
        slow.close()
    assert rc == 0, err
    assert _complete(dest / "cifar-10-batches-py")
    assert not list(dest.glob(".extract-*")) and not _parts(tmp_path)  # stale folders cleaned


def test_a_full_disk_during_the_download_then_a_rerun_resumes(server, tmp_path):
    dest = tmp_path / "data"
    rc, _, err = _wait(_cli_child(_fetch_argv(server.url, dest), tmp_path, fsize=len(ARCHIVE) // 2))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "cannot write the download" in lines[0], err
    assert not dest.exists()
    kept = _parts(tmp_path)
    assert len(kept) == 1 and 0 < kept[0].stat().st_size <= len(ARCHIVE) // 2
    size = kept[0].stat().st_size
    rc, _, err = _wait(_cli_child(_fetch_argv(server.url, dest), tmp_path))
    assert rc == 0, err
    assert server.requests[-1][1] == f"bytes={size}-"  # resumed from what the full disk let through
    assert _complete(dest / "cifar-10-batches-py") and not _parts(tmp_path)


def test_a_full_disk_during_extraction_leaves_nothing_then_a_rerun_completes(server, tmp_path):
    assert len(ARCHIVE) < BATCH_BYTES  # the part fits under the limit, a batch does not
    dest = tmp_path / "data"
    rc, _, err = _wait(
        _cli_child(_fetch_argv(server.url, dest), tmp_path, fsize=(len(ARCHIVE) + BATCH_BYTES) // 2)
    )
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and f"cannot extract into {dest}" in lines[0], err
    assert not dest.exists() or not any(dest.iterdir())
    rc, _, err = _wait(_cli_child(_fetch_argv(server.url, dest), tmp_path))
    assert rc == 0, err
    assert _complete(dest / "cifar-10-batches-py")


def test_a_full_disk_during_a_results_append_keeps_the_store_as_it_was(tmp_path):
    code = """
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from modscale.results import ResultsStore, StoreWriteError, make_record
        def rec(i, pad):
            return make_record("faults", {{"i": i, "pad": pad}}, i, {{"loss": 0.5}}, wall_s=0.0, device="cpu")
        out = sys.argv[1] if len(sys.argv) > 1 else {out!r}
        with ResultsStore(out) as store:
            store.append([rec(0, "x")])
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            try:
                store.append([rec(i, "y" * 300) for i in range(1, 40)])
            except StoreWriteError as err:
                print(err)
                sys.exit(3)
    """.format(out=str(tmp_path / "store"))
    rc, out, err = _wait(_child(code, tmp_path))
    assert rc == 3, err
    assert "cannot write 39 run(s)" in out and "the store is as it was before them" in out
    loaded = load(tmp_path / "store")  # one run: the failed batch is not there, not even torn
    assert len(loaded.records) == 1 and not loaded.skipped and not loaded.torn
    with ResultsStore(tmp_path / "store") as store:  # the rerun appends
        store.append(
            [
                make_record("faults", {"i": i, "pad": "y"}, i, {"loss": 0.5}, wall_s=0.0, device="cpu")
                for i in range(1, 40)
            ]
        )
    assert len(load(tmp_path / "store").records) == 40


def test_store_write_error_in_process_cuts_the_batch_back(tmp_path, monkeypatch):
    with ResultsStore(tmp_path / "s") as store:
        store.append([make_record("faults", {"i": 0}, 0, {"loss": 0.5}, wall_s=0.0, device="cpu")])
        size = store.path.stat().st_size
        real = os.write
        calls = []

        def half_then_full(fd, data):  # the first write lands half, the second finds the disk full
            calls.append(len(data))
            if len(calls) == 1:
                return real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(StoreWriteError, match="No space left on device"):
            store.append(
                [
                    make_record("faults", {"i": i}, i, {"loss": 0.5}, wall_s=0.0, device="cpu")
                    for i in range(1, 5)
                ]
            )
        monkeypatch.setattr(os, "write", real)
        assert store.path.stat().st_size == size
        store.append([make_record("faults", {"i": 9}, 9, {"loss": 0.5}, wall_s=0.0, device="cpu")])
    assert [r.config["i"] for r in load(tmp_path / "s").records] == [0, 9]


# ---------------------------------------------------------------------------------------------------------
# A copy damaged after extraction; reports and figures killed while being written


@pytest.mark.parametrize("harm", ["truncate", "delete"])
def test_a_damaged_copy_is_reported_by_list_and_repaired_by_fetch(server, tmp_path, capsys, harm):
    dest = cifar_module.default_fetch_dir()
    assert cli.main(_fetch_argv(server.url, dest)) == 0
    batch = dest / "cifar-10-batches-py" / "data_batch_3"
    if harm == "truncate":
        batch.write_bytes(batch.read_bytes()[:100])
    else:
        batch.unlink()
    capsys.readouterr()
    assert cli.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    said = "data_batch_3 has 100 of" if harm == "truncate" else "data_batch_3 is missing"
    assert "cifar10  damaged:" in out and said in out and "modscale data fetch cifar10" in out
    assert cli.main(_fetch_argv(server.url, dest)) == 0
    assert _complete(dest / "cifar-10-batches-py")
    assert cli.main(["data", "list"]) == 0
    assert "cifar10  damaged" not in capsys.readouterr().out


def test_a_report_or_figure_killed_while_written_keeps_the_last_complete_file(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_module = importlib.import_module("modscale.plots.figure")
    report_module = importlib.import_module("modscale.plots.report")

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    output = figure_module.FigureOutput("faults", fig, caption="a line")
    (png,) = figure_module.save(output, tmp_path / "figs", formats=("png",))
    before = png.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process stops between writing the temporary file and the rename

    monkeypatch.setattr(figure_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        figure_module.save(output, tmp_path / "figs", formats=("png",))
    assert png.read_bytes() == before and sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "faults.png"
    ]
    monkeypatch.undo()
    plt.close(fig)

    path = report_module.write_report([], tmp_path / "r.html", outputs=[], images={})
    text = path.read_text()
    monkeypatch.setattr(report_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        report_module.write_report([], path, outputs=[], images={}, source="again")
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "r.html"
    ]
    monkeypatch.undo()
    assert "again" in report_module.write_report([], path, outputs=[], images={}, source="again").read_text()


def test_a_lock_left_by_a_killed_fetch_does_not_block(tmp_path):
    """flock goes with the process: after the holder is killed with SIGKILL the next fetch takes the lock
    at once and never calls ``waiting``; while it lives, ``waiting`` is told its pid."""
    code = """
        import sys, time
        from modscale.data import fetch
        with fetch.fetch_lock():
            print("held", flush=True)
            time.sleep(30)
    """
    holder = _child(code, tmp_path)
    assert holder.stdout.readline().strip() == "held"
    told = []

    def waiting(pid):
        told.append(pid)
        holder.send_signal(signal.SIGKILL)  # the holder dies while we wait

    with fetch_module.fetch_lock(waiting=waiting):
        pass
    holder.communicate(timeout=CHILD_TIMEOUT_S)
    assert told == [holder.pid]
    with fetch_module.fetch_lock(waiting=told.append):
        pass
    assert told == [holder.pid]  # the second time nobody held it
