"""``modscale data fetch | list`` and ``reproduce --fetch-data`` against an HTTP server on 127.0.0.1.

The server is started here and serves a small archive in the official CIFAR-10 layout built here (six
batches of 40 images and ``batches.meta``: 240 images). A guard fails any test that connects anywhere but
the loopback address.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modscale import cli
from modscale.data import Archive, fetch_cifar10, find_cifar10, load_cifar10
from modscale.data import cifar10 as cifar_module
from modscale.data import fetch as fetch_module
from modscale.errors import FetchError
from modscale.experiments import cifar_training as ct
from modscale.results import load

PER_BATCH = 40  # 5 training batches + 1 test batch: 240 images
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# ---------------------------------------------------------------------------------------------------------
# Fixtures: no traffic beyond 127.0.0.1, an empty data home, no proxies


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch, tmp_path):
    original = socket.socket.connect

    def connect(self, address):
        if (
            self.family != socket.AF_UNIX
        ):  # local sockets (the worker processes' fork server) stay on the host
            host = address[0] if isinstance(address, tuple) else address
            assert host in LOOPBACK, f"a test tried to connect to {address!r}; only 127.0.0.1 is allowed"
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("MODSCALE_DATA", raising=False)
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "home"))  # the data home: empty
    monkeypatch.setattr(cifar_module, "_repo_root_candidates", lambda: [tmp_path / "no-checkout"])
    ct._arrays.cache_clear()
    ct._task.cache_clear()
    yield
    ct._arrays.cache_clear()
    ct._task.cache_clear()


def test_the_guard_refuses_other_addresses():
    with socket.socket() as sock, pytest.raises(AssertionError, match="only 127.0.0.1"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed


# ---------------------------------------------------------------------------------------------------------
# Archives in the official layout


def _batch(rng: np.random.Generator, name: str) -> bytes:
    rows = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(PER_BATCH)]  # balanced, as the official splits are
    batch = {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
             b"filenames": [f"{name}_{i}.png".encode() for i in range(PER_BATCH)]}  # fmt: skip
    return pickle.dumps(batch, protocol=2)


def official_files(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files = {f"cifar-10-batches-py/{name}": _batch(rng, name) for name in BATCHES}
    meta = {b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072,
            b"label_names": [c.encode() for c in cifar_module.CIFAR10_CLASSES]}  # fmt: skip
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    files["cifar-10-batches-py/readme.html"] = b"<html>test archive</html>"
    return files


def targz(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive() -> bytes:
    return targz(official_files())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# The server


class Server:
    """Serves ``body`` at /cifar-10-python.tar.gz with ETag and byte ranges; ``drop_after`` bytes into the
    next full (non-range) response it closes the connection; every request's headers are logged."""

    def __init__(self, body: bytes):
        self.body, self.drop_after, self.requests = body, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.requests.append(dict(self.headers))
                if self.path != "/cifar-10-python.tar.gz":
                    self.send_error(404)
                    return
                body, etag = server.body, f'"{sha256(server.body)[:16]}"'
                start, status = 0, 200
                ranged = self.headers.get("Range")
                if ranged and self.headers.get("If-Range", etag) == etag:
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if status == 200 and server.drop_after is not None:
                    cut, server.drop_after = server.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the server goes away mid-file
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archive):
    s = Server(archive)
    yield s
    s.close()


def parts(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "home" / "downloads").glob("*.part"))


# ---------------------------------------------------------------------------------------------------------
# A full fetch, and a smoke CIFAR run on it


def test_full_fetch_from_the_command_line(server, archive, tmp_path, capsys):
    dest = tmp_path / "data"
    argv = ["data", "fetch", "cifar10", "--url", server.url, "--sha256", sha256(archive), "--dir", str(dest)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"cifar10: {dest / 'cifar-10-batches-py'}"
    assert f"from {server.url} into {dest}" in captured.err
    assert re.search(r"downloaded (\d+\.\d) MB of \1 MB, [\d.]+ MB/s", captured.err)  # bytes and rate
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py"]  # no temporary folder left
    assert parts(tmp_path) == []  # the download is deleted once extracted
    data = load_cifar10(dest)
    assert [a.shape for a in data] == [(200, 32, 32, 3), (200,), (40, 32, 32, 3), (40,)]
    # The pixels are the archive's, channel-major rows turned into NHWC.
    rows = pickle.loads(official_files()["cifar-10-batches-py/test_batch"], encoding="bytes")[b"data"]
    np.testing.assert_array_equal(data.x_test, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))

    assert cli.main(argv) == 0  # a second fetch finds the copy and downloads nothing
    assert "already in" in capsys.readouterr().out and len(server.requests) == 1


def test_data_list_says_where_and_how_big(server, archive, tmp_path, capsys):
    assert cli.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "cifar10  missing: CIFAR-10 data not found" in out and "modscale data fetch cifar10" in out
    fetch_cifar10(url=server.url, sha256=sha256(archive))  # into the data home
    assert cli.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    home = tmp_path / "home" / "cifar10" / "cifar-10-batches-py"
    size = sum(p.stat().st_size for p in home.iterdir())
    assert f"cifar10  {home}  (official python batches, {size / 2**20:.1f} MB; found by data home)" in out


# ---------------------------------------------------------------------------------------------------------
# Interrupted downloads resume


def test_dropped_connection_is_resumed_with_a_range_request(server, archive, tmp_path):
    server.drop_after = len(archive) // 3
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="interrupted.*run the same command again to resume") as err:
        fetch_cifar10(dest, url=server.url, sha256=sha256(archive), retries=0)
    assert "\n" not in str(err.value)
    assert not dest.exists()  # nothing in DIR; the part file waits in the data home
    (part,) = parts(tmp_path)
    assert part.read_bytes() == archive[: len(archive) // 3]

    folder = fetch_cifar10(dest, url=server.url, sha256=sha256(archive), retries=0)
    assert server.requests[-1]["Range"] == f"bytes={len(archive) // 3}-"
    assert server.requests[-1]["If-Range"] == f'"{sha256(archive)[:16]}"'
    assert len(load_cifar10(folder.parent).y_train) == 200 and parts(tmp_path) == []


def test_a_drop_is_retried_within_one_call(server, archive, tmp_path):
    server.drop_after = 1000
    fetch_cifar10(tmp_path / "data", url=server.url, sha256=sha256(archive), retries=2)
    assert [r.get("Range") for r in server.requests] == [None, "bytes=1000-"]


def test_a_changed_file_restarts_from_zero(server, archive, tmp_path):
    server.drop_after = 1000
    with pytest.raises(FetchError, match="interrupted"):
        fetch_cifar10(tmp_path / "data", url=server.url, sha256=sha256(archive), retries=0)
    old = server.body
    server.body = targz(official_files(seed=1))  # the server now has another version: If-Range fails
    with pytest.raises(FetchError, match="failed verification"):
        fetch_cifar10(tmp_path / "data", url=server.url, sha256=sha256(old), retries=0)
    assert server.requests[-1]["Range"] == "bytes=1000-"  # asked for the rest, got the whole new file
    assert parts(tmp_path) == [] and not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------------------
# Failures: one line, exit 2, nothing left in DIR


def test_checksum_mismatch_leaves_nothing(server, tmp_path, capsys):
    dest = tmp_path / "data"
    wrong = "0" * 64
    argv = ["data", "fetch", "cifar10", "--url", server.url, "--sha256", wrong, "--dir", str(dest), "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed verification (its SHA-256 is" in err[0] and "was deleted" in err[0]
    assert not dest.exists() and parts(tmp_path) == []


def test_md5_is_checked_too(server, archive, tmp_path):
    with pytest.raises(FetchError, match="its MD5 is"):
        fetch_cifar10(tmp_path / "data", url=server.url, md5="0" * 32)
    fetch_cifar10(tmp_path / "data", url=server.url, md5=hashlib.md5(archive).hexdigest())


def test_pinned_official_checksum_and_size():
    official = fetch_module.CIFAR10_ARCHIVE
    assert official.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert official.md5 == "c58f30108f718f92721af3b95e74349a"  # as the dataset's page publishes it
    assert len(official.sha256) == 64 and official.size == 170_498_071


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([_member("cifar-10-batches-py/../../evil", tarfile.REGTYPE)], r"leaves the folder \(\.\.\)"),
        ([_member("/tmp/evil", tarfile.REGTYPE)], "an absolute path"),
        ([_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd")], "a link to '/etc/passwd'"),
        ([_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "cifar-10-batches-py/test_batch")], "a link"),
        ([_member("cifar-10-batches-py/dev", tarfile.CHRTYPE)], "not a regular file or folder"),
        ([_member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE)], "not a regular file or folder"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_members_refuse_the_archive(tmp_path, extra, match):
    data = targz(official_files(), extra)
    s = Server(data)
    try:
        dest = tmp_path / "x" / "data"
        with pytest.raises(FetchError, match=match):
            fetch_cifar10(dest, url=s.url, sha256=sha256(data))
    finally:
        s.close()
    assert not dest.exists() and not (tmp_path / "evil").exists() and parts(tmp_path) == []


def test_unsafe_member_from_the_command_line_into_an_existing_folder(tmp_path, capsys):
    data = targz(official_files(), [_member("../evil", tarfile.REGTYPE)])
    s = Server(data)
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mine.txt").write_text("kept")
    try:
        argv = ["data", "fetch", "cifar10", "--url", s.url, "--sha256", sha256(data), "--dir", str(dest)]
        assert cli.main([*argv, "--quiet"]) == 2
    finally:
        s.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to extract member '../evil'" in err[0]
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]  # the folder is as it was


def test_batches_go_through_the_restricted_unpickler(tmp_path):
    """A batch that would run code when unpickled is refused before anything is put in place."""

    class Evil:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    files = official_files()
    files["cifar-10-batches-py/data_batch_2"] = pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2)
    data = targz(files)
    s = Server(data)
    try:
        refused = r"not CIFAR-10: cifar-10-batches-py/data_batch_2: refusing to unpickle global \w+\.eval"
        with pytest.raises(FetchError, match=refused):
            fetch_cifar10(tmp_path / "data", url=s.url, sha256=sha256(data))
    finally:
        s.close()
    assert not (tmp_path / "data").exists()


def test_an_archive_without_the_batches_is_refused(tmp_path):
    data = targz({"cifar-10-batches-py/readme.html": b"only this"})
    s = Server(data)
    try:
        with pytest.raises(FetchError, match="holds no cifar-10-batches-py folder with data_batch_1"):
            fetch_cifar10(tmp_path / "data", url=s.url, sha256=sha256(data))
    finally:
        s.close()
    assert not (tmp_path / "data").exists()


def test_offline_is_one_line_and_exit_2(tmp_path, capsys):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "data"
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    argv = ["data", "fetch", "cifar10", "--url", url, "--md5", "0" * 32, "--dir", str(dest), "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach 127.0.0.1:{port}" in err[0] and "Nothing was written" in err[0]
    assert not dest.exists() and not (tmp_path / "home" / "downloads").exists()


def test_a_server_that_does_not_answer_times_out(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections complete in the kernel; nothing ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz"
        t0 = time.monotonic()
        with pytest.raises(FetchError, match="did not answer within 1 s"):
            fetch_cifar10(tmp_path / "data", url=url, md5="0" * 32, timeout=1.0)
        assert time.monotonic() - t0 < 10
    assert not (tmp_path / "data").exists()


def test_http_errors_are_one_sentence(server, tmp_path):
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetch_cifar10(tmp_path / "data", url=server.url.replace(".tar.gz", ".zip"), md5="0" * 32)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "http://127.0.0.1:1/a.tar.gz"], "--url needs --sha256 HEX or --md5 HEX"),
        (["--sha256", "0" * 64], "--sha256 and --md5 go with --url"),
        (["--url", "ftp://127.0.0.1/a.tar.gz", "--md5", "0" * 32], "must start with http:// or https://"),
        (["--url", "http://127.0.0.1:1/a", "--sha256", "abc"], "sha256 must be 64 hexadecimal digits"),
        (["--timeout", "0"], "expected a number of seconds > 0"),
        (["--retries", "-1"], "expected an integer >= 0"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(tmp_path, capsys, argv, message):
    dest = tmp_path / "data"
    assert cli.main(["data", "fetch", "cifar10", "--dir", str(dest), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not dest.exists()


def test_library_arguments():
    with pytest.raises(ValueError, match="needs a checksum"):
        Archive("http://127.0.0.1/a.tar.gz", "a.tar.gz")
    with pytest.raises(ValueError, match="timeout must be"):
        fetch_cifar10(url="http://127.0.0.1/a.tar.gz", md5="0" * 32, timeout=0)
    with pytest.raises(TypeError, match="dest must be a path"):
        fetch_cifar10(3)


# ---------------------------------------------------------------------------------------------------------
# `modscale reproduce`: fetch a missing data set once, or skip what needs it


@pytest.mark.slow
def test_reproduce_fetches_missing_data_once_and_runs_cifar(server, archive, tmp_path, monkeypatch, capsys):
    """`make run` on a machine without a copy: the archive is fetched into the data home, then the smoke
    tier of a CIFAR experiment trains on it; a second run finds the copy and downloads nothing."""
    local = Archive(server.url, "cifar-10-python.tar.gz", sha256=sha256(archive), size=len(archive))
    monkeypatch.setattr(fetch_module, "CIFAR10_ARCHIVE", local)  # the official source, moved to loopback
    out = tmp_path / "out"
    argv = ["reproduce", "--only", "cifar_epochs", "--tier", "smoke", "--device", "cpu", "--out", str(out)]
    assert cli.main([*argv, "--fetch-data", "--plan"]) == 0  # a plan fetches nothing
    assert server.requests == []
    assert cli.main([*argv, "--fetch-data"]) == 0
    err = capsys.readouterr().err
    home = tmp_path / "home" / "cifar10"
    assert re.search(
        rf"downloading the official archive cifar-10-python.tar.gz \(\d\.\d MB\) from {server.url} "
        rf"into {home}\n",
        err,
    )
    assert find_cifar10().source == "data home" and len(server.requests) == 1
    records = load(out).records
    assert len(records) == 6 and {r.experiment for r in records} == {"cifar_epochs"}
    assert all(0.0 <= r.metrics["accuracy"] <= 1.0 for r in records)
    assert cli.main([*argv, "--fetch-data"]) == 0  # found now: no second download
    assert len(server.requests) == 1 and "downloading" not in capsys.readouterr().err


def test_reproduce_offline_skips_cifar_and_still_reports(tmp_path, monkeypatch, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setattr(fetch_module, "CIFAR10_ARCHIVE", Archive(url, "cifar-10-python.tar.gz", md5="0" * 32))
    out = tmp_path / "out"
    only = "theory_check,cifar_epochs,cifar_n_sweep"
    argv = ["reproduce", "--only", only, "--tier", "smoke", "--quiet", "--out", str(out), "--fetch-data"]
    assert cli.main(argv) == 3
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    skipped = [line for line in lines if ": skipped: " in line]
    assert [line.split(":")[0] for line in skipped] == ["cifar_epochs", "cifar_n_sweep"]
    assert all(
        f"cannot reach 127.0.0.1:{port}" in line and "modscale data fetch cifar10" in line for line in skipped
    )
    assert any(line.startswith("theory_check: ") and "run now" in line for line in lines)
    assert (out / "report.html").is_file() and (out / "summary.txt").is_file()
    assert list((out / "figures").glob("*.png"))
    assert (
        "skipped cifar_epochs, cifar_n_sweep: CIFAR-10 could not be fetched"
        in (out / "summary.txt").read_text()
    )
    assert not (tmp_path / "home" / "cifar10").exists()

    argv.remove("--fetch-data")  # not asked to fetch: skipped with the command that fixes it
    assert cli.main(argv) == 3
    skipped = [line for line in capsys.readouterr().out.splitlines() if ": skipped: " in line]
    assert len(skipped) == 2 and all("Run `modscale data fetch cifar10`" in line for line in skipped)
