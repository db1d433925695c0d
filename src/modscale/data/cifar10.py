"""CIFAR-10 from local files: the offline JPEG npz copy or the official ``cifar-10-batches-py`` folder.

    load_cifar10(data_dir=None, cache_dir=None) -> Cifar10Arrays(x_train, y_train, x_test, y_test)

Images are uint8 in NHWC order, ``(N, 32, 32, 3)`` (row, column, RGB channel), labels uint8 ``(N,)`` in
0..9 in the standard class order :data:`CIFAR10_CLASSES`; the standard split has 50,000 training and
10,000 test images. Loading never downloads (:mod:`modscale.data.fetch` does, when asked).

Where the data is looked for (:func:`locate_cifar10`), first match wins:

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the ``MODSCALE_DATA`` environment variable;
3. the data home's ``cifar10`` folder, where ``modscale data fetch cifar10`` puts the official archive
   (:func:`data_home`: ``$MODSCALE_CACHE``, else the platform's user cache folder,
   ``$XDG_CACHE_HOME/modscale`` or ``~/.cache/modscale`` on Linux);
4. ``../shared/data/cifar10`` next to the checkout, i.e. the folder ``shared`` beside the repository root
   (found from this file's location for an editable install, then from the current directory): the offline
   copy for machines without internet.

A folder is recognised by its content: ``train.npz`` and ``test.npz`` (the offline copy), or the official
``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` files, either in the folder itself or in its
``cifar-10-batches-py`` subfolder.

Offline npz format (``np.savez_compressed``; read with ``allow_pickle=False``): ``jpeg`` uint8, all images'
JPEG files concatenated; ``offsets`` int64 of length N+1, image i is ``jpeg[offsets[i]:offsets[i+1]]``;
``labels`` uint8 (N,). Each JPEG is decoded once with Pillow to RGB 32 x 32 (its header is checked before
decoding, so an oversized image cannot exhaust memory). The decoded arrays (about 184 MB) are cached in the
same data home, ``<home>/cifar10/decoded-<hash>.npz``, where ``<hash>`` is the SHA-256 of the two source
files, so a changed source gets a new cache file. The cache file stores the SHA-256 of the decoded arrays;
every load recomputes it (about 0.15 s) and a mismatch, or an unreadable cache file, emits a
:class:`CacheWarning` and rebuilds the cache. The cache directory is the ``cache_dir`` argument, else the
data home; files are written atomically (temporary file, then rename), so concurrent processes never read a
half-written cache.

Official format: six Python pickles, each a dict with ``data`` (uint8, (n, 3072): the 1024 red, then green,
then blue pixels of a 32 x 32 image in row-major order) and ``labels`` (n ints). Unpickling can run arbitrary
code, so these files go through :class:`RestrictedUnpickler`, which resolves only the few numpy callables an
array needs (array reconstruction, dtype, scalar, frombuffer) and a latin-1-only ``_codecs.encode``; any other
global (``os.system``, ``builtins.eval``, ``numpy.load``, ...) raises :class:`~modscale.errors.InvalidValue`
before it is called. Containers (dict, list, tuple), bytes, str, int, float, bool and None need no global.
The archive's ``batches.meta`` (read the same way) states the batch size, ``num_cases_per_batch`` (10,000 in
the official archive); the count check holds the batches to it: five training batches and one test batch of
that size, each split balanced over the classes. Without ``batches.meta`` the standard 10,000 is assumed.

Errors (all :class:`~modscale.errors.InvalidValue`, raised before any decoding): no data found (the message
lists the places searched and says where to put the files); a missing or unreadable file; a corrupt npz; a
missing key; wrong dtype, shape or count (with ``check_counts=True``, the default, the standard 50,000 /
10,000 images with 5,000 / 1,000 per class); labels outside 0..9; an undecodable or non-32 x 32 JPEG.

Example::

    data = load_cifar10()                        # the first folder found, decoded once then cached
    data.x_train.shape, data.y_train.dtype       # (50000, 32, 32, 3), uint8
    x_train, y_train, x_test, y_test = data      # also unpacks as a tuple
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import platformdirs

from modscale.errors import InvalidType, InvalidValue

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""The ten class names, in label order."""
N_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)  # NHWC: rows, columns, RGB
STANDARD_COUNTS = {"train": 50_000, "test": 10_000}
DATA_ENV = "MODSCALE_DATA"
"""The environment variable naming a folder that holds CIFAR-10."""
CACHE_ENV = "MODSCALE_CACHE"
"""The environment variable that moves the data home."""
DEFAULT_RELATIVE_DIR = Path("..") / "shared" / "data" / "cifar10"
NPZ_FILES = {"train": "train.npz", "test": "test.npz"}
OFFICIAL_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
OFFICIAL_SUBDIR = "cifar-10-batches-py"
OFFICIAL_META = "batches.meta"
HOME_SUBDIR = "cifar10"  # <data home>/cifar10: the fetched archive's folder and the decode cache
FETCH_COMMAND = "modscale data fetch cifar10"
"""The command that downloads CIFAR-10, as error messages name it."""
_CACHE_VERSION = 1  # bump when the cache layout changes; part of the cache file name


class Cifar10Arrays(NamedTuple):
    """The four CIFAR-10 arrays: images uint8 (N, 32, 32, 3) NHWC, labels uint8 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class CacheWarning(UserWarning):
    """A cache file of decoded images was unreadable or failed its checksum (it is rebuilt), or could not
    be written (the data is still returned)."""


# ---------------------------------------------------------------------------------------------------------
# Locations


def _repo_root_candidates() -> list[Path]:
    # src/modscale/data/cifar10.py -> parents[3] is the repository root of an editable install.
    return [Path(__file__).resolve().parents[3], Path.cwd()]


def _layout(folder: Path) -> tuple[str, Path] | None:
    """("npz" | "official", folder holding the files) when ``folder`` holds CIFAR-10, else None."""
    if all((folder / name).is_file() for name in NPZ_FILES.values()):
        return "npz", folder
    for candidate in (folder, folder / OFFICIAL_SUBDIR):
        if all((candidate / name).is_file() for names in OFFICIAL_FILES.values() for name in names):
            return "official", candidate
    return None


MANIFEST = ".modscale-manifest.json"  # written by a fetch beside the files it extracted: their sizes


def write_manifest(folder: Path) -> None:
    """Record every file's size in ``folder/MANIFEST`` (a fetch's extraction), for :func:`damage`."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"sizes": sizes}, indent=1) + "\n")


def damage(folder: Path) -> str | None:
    """What is wrong with a fetched copy: a file its manifest lists that is missing or has another size.
    None when every file is as extracted, or when ``folder`` has no manifest (a copy modscale did not
    fetch: only its layout is checked)."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text())["sizes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    problems = []
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != size:
            problems.append(f"{name} has {path.stat().st_size:,} of {size:,} bytes")
    return "; ".join(problems) or None


def _expected_content() -> str:
    return (
        f"expected {' and '.join(NPZ_FILES.values())} (the offline JPEG copy) or the official "
        f"{OFFICIAL_SUBDIR} files ({', '.join(OFFICIAL_FILES['train'][:1])} .. data_batch_5, test_batch)"
    )


class Found(NamedTuple):
    """Where CIFAR-10 was found: its layout (``"npz"`` or ``"official"``), the folder holding the files and
    which rule of the lookup order found it (``"data_dir"``, ``"$MODSCALE_DATA"``, ``"data home"``,
    ``"checkout"``)."""

    layout: str
    folder: Path
    source: str


def data_home() -> Path:
    """The one folder modscale keeps data in: ``$MODSCALE_CACHE``, else the platform's user cache folder
    (``platformdirs.user_cache_dir("modscale")``: ``$XDG_CACHE_HOME/modscale``, else ``~/.cache/modscale`` on
    Linux; ``~/Library/Caches/modscale`` on macOS). Fetched data sets go to ``<home>/<name>``, decoded-image
    caches beside them, partial downloads to ``<home>/downloads``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(platformdirs.user_cache_dir("modscale", appauthor=False))


def default_cache_dir() -> Path:
    """Where decoded images are cached: the data home (:func:`data_home`)."""
    return data_home()


def default_fetch_dir() -> Path:
    """Where ``modscale data fetch cifar10`` puts the archive's folder by default: the first place the lookup
    reads that a user can name, ``$MODSCALE_DATA`` when set, else ``<data home>/cifar10``."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return data_home() / HOME_SUBDIR


def _explicit_layout(name: str, value: Any) -> Found:
    if not isinstance(value, str | os.PathLike):
        raise InvalidType(f"{name} must be a path, got {type(value).__name__}")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise InvalidValue(
            f"{name} {str(folder)!r} is not a folder; {_expected_content()}, or run "
            f"`{FETCH_COMMAND} --dir {folder}` to download them there"
        )
    found = _layout(folder)
    if found is None:
        raise InvalidValue(
            f"{name} {str(folder)!r} holds no CIFAR-10 data: {_expected_content()}; run "
            f"`{FETCH_COMMAND} --dir {folder}` to download them there"
        )
    return Found(*found, name)


def _default_places() -> list[tuple[str, Path]]:
    """The folders searched when neither ``data_dir`` nor ``$MODSCALE_DATA`` is given, in order."""
    places = [("data home", data_home() / HOME_SUBDIR)]
    for root in _repo_root_candidates():
        folder = (root / DEFAULT_RELATIVE_DIR).resolve()
        if all(folder != p for _, p in places):
            places.append(("checkout", folder))
    return places


def find_cifar10(data_dir: str | os.PathLike | None = None) -> Found:
    """Find CIFAR-10 on disk (see the module docstring for the order) and say which rule found it.

    An explicit ``data_dir`` or ``$MODSCALE_DATA`` that does not hold the data raises at once rather than
    falling back silently; when nothing is found the message lists every folder searched and how to fetch.
    """
    if data_dir is not None:
        return _explicit_layout("data_dir", data_dir)
    if os.environ.get(DATA_ENV):
        return _explicit_layout(f"${DATA_ENV}", os.environ[DATA_ENV])
    places = _default_places()
    for source, folder in places:
        found = _layout(folder) if folder.is_dir() else None
        if found is not None:
            return Found(*found, source)
    raise InvalidValue(
        "CIFAR-10 data not found (searched: " + ", ".join(str(p) for _, p in places) + "). "
        f"Run `{FETCH_COMMAND}` to download the official archive (163 MB) into {places[0][1]}, or point "
        f"--data-dir or {DATA_ENV}=<folder> at a copy ({DEFAULT_RELATIVE_DIR} next to the checkout is also "
        f"read); {_expected_content()}."
    )


def locate_cifar10(data_dir: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Find CIFAR-10 on disk; returns ``(layout, folder)`` with layout ``"npz"`` or ``"official"``.

    Order: ``data_dir``, then ``$MODSCALE_DATA``, then ``<data home>/cifar10``, then
    ``../shared/data/cifar10`` beside the repository root (from the package location, then from the current
    directory). :func:`find_cifar10` also says which of them found it.
    """
    found = find_cifar10(data_dir)
    return found.layout, found.folder


# ---------------------------------------------------------------------------------------------------------
# Validation shared by both formats


def _check_counts(split: str, y: np.ndarray, source: str, expected: int | None = None) -> None:
    """``expected`` images (default: the standard 50,000 training / 10,000 test), balanced over the 10
    classes."""
    expected = STANDARD_COUNTS[split] if expected is None else expected
    if y.size != expected:
        raise InvalidValue(
            f"{source}: the {split} split must have {expected} images, got {y.size} "
            "(pass check_counts=False for a subset)"
        )
    per_class = np.bincount(y, minlength=N_CLASSES)
    if (per_class != expected // N_CLASSES).any():
        raise InvalidValue(
            f"{source}: the {split} split must have {expected // N_CLASSES} images per class, "
            f"got {per_class.tolist()} (pass check_counts=False for a subset)"
        )


def _labels_uint8(raw: Any, source: str) -> np.ndarray:
    y = np.asarray(raw)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise InvalidValue(f"{source}: labels must be a 1-D sequence of integers, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= N_CLASSES):
        raise InvalidValue(f"{source}: labels must be in 0..9, found {int(y.min())}..{int(y.max())}")
    return y.astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Offline npz (JPEG bytes + offsets)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(jpeg bytes, offsets, labels) of one npz, validated; nothing decoded yet."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed on any error
            missing = [key for key in ("jpeg", "offsets", "labels") if key not in z.files]
            if missing:
                raise InvalidValue(f"{path}: missing array(s) {missing}; found {sorted(z.files)}")
            jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    except InvalidValue:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise InvalidValue(f"{path} is not a readable npz file (corrupt or truncated?): {err}") from None
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise InvalidValue(f"{path}: 'jpeg' must be a 1-D uint8 array, got {jpeg.dtype} {jpeg.shape}")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.ndim != 1 or offsets.size < 2:
        raise InvalidValue(
            f"{path}: 'offsets' must be a 1-D integer array of length N+1, got {offsets.shape}"
        )
    n = offsets.size - 1
    if offsets[0] != 0 or offsets[-1] != jpeg.size or (np.diff(offsets) <= 0).any():
        raise InvalidValue(
            f"{path}: 'offsets' must rise strictly from 0 to len(jpeg) = {jpeg.size}, "
            f"got {int(offsets[0])} .. {int(offsets[-1])}"
        )
    y = _labels_uint8(labels, f"{path} 'labels'")
    if y.size != n:
        raise InvalidValue(f"{path}: {n} images (offsets) but {y.size} labels")
    return jpeg, offsets.astype(np.int64), y


def _decode_jpegs(jpeg: np.ndarray, offsets: np.ndarray, source: Path) -> np.ndarray:
    """Decode every JPEG to uint8 (N, 32, 32, 3); a bad image raises naming its index."""
    from PIL import Image, UnidentifiedImageError

    n = offsets.size - 1
    out = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
    buffer = jpeg.tobytes()
    for i in range(n):  # decoding is per image by nature (Pillow); done once, then cached
        try:
            with Image.open(io.BytesIO(buffer[offsets[i] : offsets[i + 1]])) as im:
                if im.size != IMAGE_SHAPE[:2]:  # header only: nothing decoded yet
                    raise InvalidValue(f"{source}: image {i} is {im.size[0]}x{im.size[1]}, expected 32x32")
                out[i] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            if isinstance(err, InvalidValue):
                raise
            raise InvalidValue(f"{source}: image {i} is not a decodable JPEG ({err})") from None
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _arrays_sha256(arrays: Cifar10Arrays) -> str:
    """SHA-256 over dtype, shape and bytes of the four arrays, in field order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()


def _read_cache(path: Path, source_sha: str) -> Cifar10Arrays | None:
    """The cached arrays if the file is intact and belongs to ``source_sha``; else None, with a warning."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = Cifar10Arrays(*(z[name] for name in Cifar10Arrays._fields))
            stored, stored_source = str(z["sha256"]), str(z["source_sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"cache file {path} is unreadable ({err}); rebuilding it", CacheWarning, stacklevel=3)
        return None
    if stored_source != source_sha or _arrays_sha256(arrays) != stored:
        warnings.warn(f"cache file {path} failed its checksum; rebuilding it", CacheWarning, stacklevel=3)
        return None
    return arrays


def _write_cache(path: Path, arrays: Cifar10Arrays, source_sha: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays._asdict(), sha256=np.array(_arrays_sha256(arrays)),
                     source_sha256=np.array(source_sha))  # fmt: skip
        os.replace(tmp, path)  # atomic: readers see the old file or the complete new one
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"could not write the cache file {path} ({err}); continuing without it",
                      CacheWarning, stacklevel=3)  # fmt: skip


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold an exclusive advisory lock on ``path`` (created if missing) inside the block, so that processes
    that miss the same cache at once (the workers of ``modscale run --jobs N``) decode it once: the first
    decodes and writes, the others wait and read. A no-op where ``fcntl`` is missing or the folder is not
    writable (the cache write then warns as before)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_npz(folder: Path, cache_dir: Path | None, check_counts: bool) -> Cifar10Arrays:
    paths = {split: folder / name for split, name in NPZ_FILES.items()}
    try:
        source_sha = hashlib.sha256("".join(_sha256_file(p) for p in paths.values()).encode()).hexdigest()
    except OSError as err:
        raise InvalidValue(f"cannot read the CIFAR-10 files in {folder}: {err}") from None
    if cache_dir is None:
        return _decode_npz(paths, check_counts)
    # The cache is keyed by the source's hash: a hit means this exact source was validated and decoded.
    cache_file = cache_dir / "cifar10" / f"decoded-v{_CACHE_VERSION}-{source_sha[:16]}.npz"
    with _exclusive(cache_file.with_name(cache_file.name + ".lock")):
        cached = _read_cache(cache_file, source_sha) if cache_file.exists() else None
        if cached is not None:
            if check_counts:
                _check_counts("train", cached.y_train, str(paths["train"]))
                _check_counts("test", cached.y_test, str(paths["test"]))
            return cached
        arrays = _decode_npz(paths, check_counts)
        _write_cache(cache_file, arrays, source_sha)
    return arrays


def _decode_npz(paths: dict[str, Path], check_counts: bool) -> Cifar10Arrays:
    raw = {split: _read_npz(path) for split, path in paths.items()}  # validate both before decoding
    if check_counts:  # counts are known before decoding: fail fast
        for split, (_, _, y) in raw.items():
            _check_counts(split, y, str(paths[split]))
    return Cifar10Arrays(
        _decode_jpegs(raw["train"][0], raw["train"][1], paths["train"]), raw["train"][2],
        _decode_jpegs(raw["test"][0], raw["test"][1], paths["test"]), raw["test"][2],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Official cifar-10-batches-py (pickles) through a restricted unpickler


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, restricted to the latin-1 codec."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise InvalidValue(f"pickle asked for codec {encoding!r}; only latin-1 is allowed")
    if not isinstance(text, str):
        raise InvalidValue(f"pickle asked to encode a {type(text).__name__}; only str is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # Resolve numpy's reconstruction callables from live objects rather than by module path: numpy 2 moved
    # numpy.core to numpy._core, and pickles written by either name must load without touching the other.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.arange(2).__reduce_ex__(5)[0]
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array-building callables (see the module docstring).

    ``find_class`` is the only way a pickle reaches Python callables, so refusing every other name there
    means a malicious file raises before any of its code runs.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise InvalidValue(
                f"refusing to unpickle global {module}.{name}: CIFAR-10 batch files may only contain numpy "
                "arrays, lists, dicts, bytes, str and numbers"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise InvalidValue("refusing to unpickle a persistent id: not part of the CIFAR-10 format")


def restricted_load(path: str | os.PathLike) -> Any:
    """Unpickle one file with :class:`RestrictedUnpickler` (``encoding="bytes"``, as CIFAR's site advises)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except InvalidValue as err:
        raise InvalidValue(f"{path}: {err}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:
        raise InvalidValue(f"{path} is not a readable CIFAR-10 pickle (corrupt?): {err}") from None


def _read_official_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise InvalidValue(f"{path}: expected a dict, got {type(batch).__name__}")
    batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
    missing = [key for key in ("data", "labels") if key not in batch]
    if missing:
        raise InvalidValue(f"{path}: missing key(s) {missing}; found {sorted(map(str, batch))}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InvalidValue(f"{path}: 'data' must be a uint8 array of shape (n, 3072), got {shown}")
    y = _labels_uint8(batch["labels"], f"{path} 'labels'")
    if y.size != data.shape[0]:
        raise InvalidValue(f"{path}: {data.shape[0]} images but {y.size} labels")
    # Rows are channel-major (1024 R, 1024 G, 1024 B): (n, 3, 32, 32) -> NHWC.
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, y


def _declared_batch_size(folder: Path) -> int | None:
    """``num_cases_per_batch`` from the folder's ``batches.meta`` (None when the file is absent)."""
    path = folder / OFFICIAL_META
    if not path.is_file():
        return None
    meta = restricted_load(path)
    if isinstance(meta, dict):
        meta = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in meta.items()}
        size = meta.get("num_cases_per_batch")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0 and size % N_CLASSES == 0:
            return size
    raise InvalidValue(
        f"{path}: expected a dict whose 'num_cases_per_batch' is a positive multiple of {N_CLASSES}"
    )


def _load_official(folder: Path, check_counts: bool) -> Cifar10Arrays:
    per_batch = _declared_batch_size(folder) if check_counts else None
    out = {}
    for split, names in OFFICIAL_FILES.items():
        parts = [_read_official_batch(folder / name) for name in names]
        if per_batch is not None:
            for name, (_, y) in zip(names, parts, strict=True):
                if y.size != per_batch:
                    raise InvalidValue(
                        f"{folder / name}: {y.size} images, but {OFFICIAL_META} says every batch has "
                        f"{per_batch} (pass check_counts=False for a subset)"
                    )
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if y.size == 0:
            raise InvalidValue(f"{folder}: the {split} split has no images")
        if check_counts:
            expected = None if per_batch is None else per_batch * len(names)
            _check_counts(split, y, f"{folder} ({split} split)", expected)
        out[split] = (x, y)
    return Cifar10Arrays(*out["train"], *out["test"])


# ---------------------------------------------------------------------------------------------------------


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    use_cache: bool = True,
    check_counts: bool = True,
) -> Cifar10Arrays:
    """Load CIFAR-10 from local files as uint8 NHWC images and uint8 labels.

    Parameters
    ----------
    data_dir : folder with ``train.npz``/``test.npz`` or the official batches (see :func:`locate_cifar10`
        for the fallbacks: ``$MODSCALE_DATA``, the data home, ``../shared/data/cifar10`` beside the
        checkout).
    cache_dir : where decoded npz images are cached (default: the data home, :func:`data_home`).
    use_cache : False decodes the JPEGs every time and writes nothing.
    check_counts : require the standard split (50,000 / 10,000 images, balanced classes; for the official
        format, the batch size its ``batches.meta`` states).

    Returns
    -------
    Cifar10Arrays
        ``(x_train (50000, 32, 32, 3), y_train (50000,), x_test (10000, 32, 32, 3), y_test (10000,))``, all
        uint8. The arrays are fresh copies the caller may modify.

    Examples
    --------
    ::

        x_train, y_train, x_test, y_test = load_cifar10("path/to/cifar10", cache_dir="/tmp/cache")
    """
    if not isinstance(use_cache, bool):
        raise InvalidType(f"use_cache must be True or False, got {use_cache!r}")
    if not isinstance(check_counts, bool):
        raise InvalidType(f"check_counts must be True or False, got {check_counts!r}")
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise InvalidType(f"cache_dir must be a path, got {type(cache_dir).__name__}")
    layout, folder = locate_cifar10(data_dir)
    if layout == "official":
        return _load_official(folder, check_counts)
    cache = (
        (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
        if use_cache
        else None
    )
    return _load_npz(folder, cache, check_counts)


__all__ = [
    "load_cifar10",
    "locate_cifar10",
    "find_cifar10",
    "Found",
    "data_home",
    "default_cache_dir",
    "default_fetch_dir",
    "restricted_load",
    "RestrictedUnpickler",
    "Cifar10Arrays",
    "CacheWarning",
    "CIFAR10_CLASSES",
    "DATA_ENV",
    "CACHE_ENV",
    "FETCH_COMMAND",
]
