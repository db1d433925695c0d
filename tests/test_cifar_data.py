"""modscale.data.cifar10: locations, npz decoding and caching, the official format, restricted unpickling."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modscale.data import (
    CacheWarning,
    Cifar10Arrays,
    data_home,
    default_cache_dir,
    default_fetch_dir,
    find_cifar10,
    load_cifar10,
    locate_cifar10,
    restricted_load,
)
from modscale.data import cifar10 as cifar_module
from modscale.errors import InvalidType, InvalidValue

# Published per-channel means of the original CIFAR-10 training pixels (on [0, 1]); the JPEG copy's README
# says its means match them to 4 decimals.
ORIGINAL_TRAIN_MEANS = np.array([0.4914, 0.4822, 0.4465])


def smooth_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 32, 32, 3) images smooth enough that JPEG keeps them within a few levels."""
    coarse = rng.integers(30, 226, size=(n, 4, 4, 3)).astype(np.float64)
    x = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    return x.round().astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray, blobs: list[bytes] | None = None) -> None:
    blobs = blobs if blobs is not None else [jpeg_bytes(im) for im in images]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    jpeg = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    np.savez_compressed(path, jpeg=jpeg, offsets=offsets, labels=labels.astype(np.uint8))


def fake_npz_folder(folder: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Cifar10Arrays:
    """A small offline-format folder; returns the source images (before JPEG) and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs = smooth_images(n_train, rng), smooth_images(n_test, rng)
    ys = np.arange(n_train) % 10, np.arange(n_test) % 10
    write_npz(folder / "train.npz", xs[0], ys[0])
    write_npz(folder / "test.npz", xs[1], ys[1])
    return Cifar10Arrays(xs[0], ys[0].astype(np.uint8), xs[1], ys[1].astype(np.uint8))


def official_rows(x: np.ndarray) -> np.ndarray:
    """NHWC images -> the official (n, 3072) channel-major rows."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))


def fake_official_folder(folder: Path, per_batch: int = 6, seed: int = 0, protocol: int = 2) -> Cifar10Arrays:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, names in cifar_module.OFFICIAL_FILES.items():
        xs, ys = [], []
        for name in names:
            x = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 10, size=per_batch)
            # Python 2 pickles load with bytes keys under encoding="bytes"; use them as the original does.
            batch = {b"batch_label": name.encode(), b"labels": y.tolist(), b"data": official_rows(x),
                     b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
            (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
            xs.append(x)
            ys.append(y.astype(np.uint8))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return Cifar10Arrays(*out["train"], *out["test"])


# ---------------------------------------------------------------------------------------------------------
# The real offline copy (skipped only where the data is absent)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    try:
        locate_cifar10()
    except InvalidValue as err:
        pytest.skip(f"CIFAR-10 not available: {err}")
    # One cache directory per test session, shared with tests/test_compositional_cifar.py: decode once.
    cache = tmp_path_factory.getbasetemp() / "modscale-cache"
    return load_cifar10(cache_dir=cache), cache


def test_real_data_shapes_counts_and_statistics(real):
    data, _ = real
    assert [a.shape for a in data] == [(50000, 32, 32, 3), (50000,), (10000, 32, 32, 3), (10000,)]
    assert all(a.dtype == np.uint8 for a in data)
    assert np.bincount(data.y_train).tolist() == [5000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    # README: images go round-robin over classes.
    assert data.y_train[:20].tolist() == list(range(10)) * 2
    means = data.x_train.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(means, ORIGINAL_TRAIN_MEANS, atol=5e-4)


def test_real_data_cache_roundtrip(real):
    data, cache = real
    files = list((cache / "cifar10").glob("decoded-*.npz"))
    assert len(files) == 1
    again = load_cifar10(cache_dir=cache)
    for a, b in zip(data, again, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# npz decoding and the cache, on small fake folders


def test_npz_decoding_matches_source_images(tmp_path):
    src = fake_npz_folder(tmp_path / "data")
    data = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    np.testing.assert_array_equal(data.y_train, src.y_train)
    np.testing.assert_array_equal(data.y_test, src.y_test)
    # Second route: JPEG is lossy, but quality-95 blocks stay within a few levels of the source.
    err = np.abs(data.x_train.astype(int) - src.x_train.astype(int))
    assert err.mean() < 2.0 and err.max() < 40
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_test.shape == (20, 32, 32, 3)


def test_cache_is_written_reused_and_keyed_by_source(tmp_path):
    fake_npz_folder(tmp_path / "data")
    first = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    (cache_file,) = (tmp_path / "cache" / "cifar10").glob("decoded-*.npz")
    # Make decoding impossible: a second load must come from the cache.
    mtime = cache_file.stat().st_mtime_ns
    second = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    assert cache_file.stat().st_mtime_ns == mtime
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    # A different source gets its own cache file.
    fake_npz_folder(tmp_path / "data", seed=1)
    load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    assert len(list((tmp_path / "cache" / "cifar10").glob("decoded-*.npz"))) == 2


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    fake_npz_folder(tmp_path / "data")
    load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)

    def boom(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(cifar_module, "_decode_jpegs", boom)
    load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)


def test_tampered_cache_is_rebuilt_with_a_warning(tmp_path):
    fake_npz_folder(tmp_path / "data")
    good = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    (cache_file,) = (tmp_path / "cache" / "cifar10").glob("decoded-*.npz")
    with np.load(cache_file) as z:
        content = {name: z[name] for name in z.files}
    content["x_train"] = content["x_train"].copy()
    content["x_train"][0, 0, 0, 0] ^= 1  # one bit flipped, stored checksum kept
    np.savez(cache_file, **content)
    with pytest.warns(CacheWarning, match="checksum"):
        rebuilt = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    np.testing.assert_array_equal(rebuilt.x_train, good.x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is clean again
        load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)


def test_truncated_cache_is_rebuilt_with_a_warning(tmp_path):
    fake_npz_folder(tmp_path / "data")
    good = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    (cache_file,) = (tmp_path / "cache" / "cifar10").glob("decoded-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    with pytest.warns(CacheWarning, match="unreadable"):
        rebuilt = load_cifar10(tmp_path / "data", tmp_path / "cache", check_counts=False)
    np.testing.assert_array_equal(rebuilt.x_test, good.x_test)


def test_use_cache_false_writes_nothing(tmp_path, monkeypatch):
    fake_npz_folder(tmp_path / "data")
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "envcache"))
    load_cifar10(tmp_path / "data", use_cache=False, check_counts=False)
    assert not (tmp_path / "envcache").exists()


def test_cache_dir_precedence(tmp_path, monkeypatch):
    fake_npz_folder(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MODSCALE_CACHE", raising=False)
    load_cifar10(tmp_path / "data", check_counts=False)
    assert list((tmp_path / "xdg" / "modscale" / "cifar10").glob("decoded-*.npz"))
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "env"))
    load_cifar10(tmp_path / "data", check_counts=False)
    assert list((tmp_path / "env" / "cifar10").glob("decoded-*.npz"))
    load_cifar10(tmp_path / "data", tmp_path / "arg", check_counts=False)
    assert list((tmp_path / "arg" / "cifar10").glob("decoded-*.npz"))


def test_unwritable_cache_warns_and_still_returns(tmp_path):
    fake_npz_folder(tmp_path / "data")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(CacheWarning, match="could not write"):
        data = load_cifar10(tmp_path / "data", blocker, check_counts=False)
    assert data.x_train.shape == (40, 32, 32, 3)


# ---------------------------------------------------------------------------------------------------------
# Locations and missing data


def test_location_order_argument_then_env(tmp_path, monkeypatch):
    fake_npz_folder(tmp_path / "a")
    fake_official_folder(tmp_path / "b" / "cifar-10-batches-py", per_batch=2)
    monkeypatch.setenv("MODSCALE_DATA", str(tmp_path / "b"))
    assert locate_cifar10(tmp_path / "a") == ("npz", tmp_path / "a")
    assert locate_cifar10() == ("official", tmp_path / "b" / "cifar-10-batches-py")


def test_default_location_is_shared_folder_beside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("MODSCALE_DATA", raising=False)
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "home"))  # an empty data home
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    fake_npz_folder(tmp_path / "shared" / "data" / "cifar10")
    monkeypatch.setattr(cifar_module, "_repo_root_candidates", lambda: [checkout])
    assert locate_cifar10() == ("npz", (tmp_path / "shared" / "data" / "cifar10").resolve())


def test_package_root_candidate_is_the_repository_root():
    root = cifar_module._repo_root_candidates()[0]
    assert (root / "pyproject.toml").is_file() and (root / "src" / "modscale").is_dir()


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MODSCALE_DATA", raising=False)
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "home"))
    monkeypatch.setattr(cifar_module, "_repo_root_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(InvalidValue, match="MODSCALE_DATA") as err:
        load_cifar10()
    message = str(err.value)
    assert "shared/data/cifar10" in message and "train.npz" in message
    assert "modscale data fetch cifar10" in message and str(tmp_path / "home" / "cifar10") in message


def test_lookup_order_data_dir_env_home_checkout(tmp_path, monkeypatch):
    """--data-dir, then MODSCALE_DATA, then the data home, then the copy beside the checkout."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    fake_npz_folder(tmp_path / "shared" / "data" / "cifar10")
    fake_official_folder(tmp_path / "home" / "cifar10" / "cifar-10-batches-py", per_batch=2)
    fake_npz_folder(tmp_path / "env")
    fake_npz_folder(tmp_path / "arg")
    monkeypatch.setattr(cifar_module, "_repo_root_candidates", lambda: [checkout])
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "home"))
    monkeypatch.setenv("MODSCALE_DATA", str(tmp_path / "env"))
    assert find_cifar10(tmp_path / "arg") == ("npz", tmp_path / "arg", "data_dir")
    assert find_cifar10() == ("npz", tmp_path / "env", "$MODSCALE_DATA")
    monkeypatch.delenv("MODSCALE_DATA")
    home = tmp_path / "home" / "cifar10" / "cifar-10-batches-py"
    assert find_cifar10() == ("official", home, "data home")
    (home / "test_batch").unlink()  # an incomplete home copy is passed over, not used
    assert find_cifar10() == ("npz", (tmp_path / "shared" / "data" / "cifar10").resolve(), "checkout")


def test_data_home_is_the_platform_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MODSCALE_CACHE", raising=False)
    monkeypatch.delenv("MODSCALE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert data_home() == tmp_path / "xdg" / "modscale"
    assert default_cache_dir() == data_home()
    assert default_fetch_dir() == data_home() / "cifar10"
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "mine"))
    assert data_home() == tmp_path / "mine"
    monkeypatch.setenv("MODSCALE_DATA", str(tmp_path / "there"))
    assert default_fetch_dir() == tmp_path / "there"  # fetch fills the folder the lookup reads first


def test_missing_data_message_from_the_command_line(tmp_path):
    """The error a user sees in a fresh process when nothing is found (no monkeypatching)."""
    env = {**os.environ, "MODSCALE_DATA": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    code = "from modscale.data import load_cifar10; load_cifar10()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "InvalidValue" in out.stderr and "holds no CIFAR-10 data" in out.stderr


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidType, match="data_dir"):
        load_cifar10(data_dir=123)
    with pytest.raises(InvalidValue, match="not a folder"):
        load_cifar10(data_dir=tmp_path / "absent")
    with pytest.raises(InvalidType, match="use_cache"):
        load_cifar10(tmp_path, use_cache="yes")
    with pytest.raises(InvalidType, match="cache_dir"):
        load_cifar10(tmp_path, cache_dir=3.5)


# ---------------------------------------------------------------------------------------------------------
# Corrupt or malformed npz: one clear error, before decoding


def test_truncated_npz(tmp_path):
    fake_npz_folder(tmp_path)
    raw = (tmp_path / "train.npz").read_bytes()
    (tmp_path / "train.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidValue, match="train.npz is not a readable npz"):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


def test_npz_missing_key(tmp_path):
    fake_npz_folder(tmp_path)
    np.savez(tmp_path / "test.npz", jpeg=np.zeros(3, np.uint8), labels=np.zeros(1, np.uint8))
    with pytest.raises(InvalidValue, match=r"missing array\(s\) \['offsets'\]"):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda z: z.update(offsets=z["offsets"][::-1].copy()), "offsets"),
        (lambda z: z.update(offsets=z["offsets"][:-1].copy()), "offsets"),
        (lambda z: z.update(labels=z["labels"][:-1].copy()), "labels"),
        (lambda z: z.update(labels=z["labels"] + 5), "0..9"),
        (lambda z: z.update(jpeg=z["jpeg"].astype(np.int16)), "uint8"),
    ],
    ids=["offsets-reversed", "offsets-short", "labels-short", "labels-range", "jpeg-dtype"],
)
def test_npz_wrong_shapes_or_counts(tmp_path, change, match):
    fake_npz_folder(tmp_path)
    with np.load(tmp_path / "train.npz") as z:
        content = {name: z[name] for name in z.files}
    change(content)
    np.savez(tmp_path / "train.npz", **content)
    with pytest.raises(InvalidValue, match=match):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


def test_standard_counts_are_checked_before_decoding(tmp_path, monkeypatch):
    fake_npz_folder(tmp_path)
    monkeypatch.setattr(cifar_module, "_decode_jpegs", lambda *a: pytest.fail("decoded before counting"))
    with pytest.raises(InvalidValue, match="must have 50000 images, got 40"):
        load_cifar10(tmp_path, use_cache=False)


def test_bad_jpeg_names_the_image(tmp_path):
    rng = np.random.default_rng(0)
    images = smooth_images(4, rng)
    blobs = [jpeg_bytes(im) for im in images]
    blobs[2] = b"\xff\xd8 not a jpeg at all"
    write_npz(tmp_path / "train.npz", images, np.arange(4), blobs)
    write_npz(tmp_path / "test.npz", images, np.arange(4))
    with pytest.raises(InvalidValue, match="image 2 is not a decodable JPEG"):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


def test_wrong_image_size_names_the_image(tmp_path):
    rng = np.random.default_rng(0)
    images = smooth_images(3, rng)
    blobs = [jpeg_bytes(im) for im in images]
    blobs[1] = jpeg_bytes(np.zeros((64, 32, 3), np.uint8))
    write_npz(tmp_path / "train.npz", images, np.arange(3))
    write_npz(tmp_path / "test.npz", images, np.arange(3), blobs)
    with pytest.raises(InvalidValue, match="image 1 is 32x64, expected 32x32"):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


def test_npz_with_pickled_object_array_is_refused(tmp_path):
    """np.load runs with allow_pickle=False: an object array in the npz is an error, not code."""
    fake_npz_folder(tmp_path)
    with np.load(tmp_path / "train.npz") as z:
        content = {name: z[name] for name in z.files}
    content["labels"] = np.array([{"x": 1}] * 40, dtype=object)
    np.savez(tmp_path / "train.npz", **content)
    with pytest.raises(InvalidValue, match="train.npz"):
        load_cifar10(tmp_path, use_cache=False, check_counts=False)


# ---------------------------------------------------------------------------------------------------------
# Official cifar-10-batches-py through the restricted unpickler


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_folder_roundtrip(tmp_path, protocol):
    src = fake_official_folder(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = load_cifar10(tmp_path, check_counts=False)  # finds the cifar-10-batches-py subfolder
    for a, b in zip(data, src, strict=True):
        np.testing.assert_array_equal(a, b)
    assert data.x_train.shape == (30, 32, 32, 3) and data.x_test.shape == (6, 32, 32, 3)


def test_official_channel_order(tmp_path):
    """Rows are 1024 red, 1024 green, 1024 blue values: a pure-red row must decode as red pixels."""
    folder = tmp_path / "b"
    fake_official_folder(folder, per_batch=1)
    row = np.zeros((1, 3072), np.uint8)
    row[0, :1024] = 200  # red plane
    row[0, 1024 + 5] = 7  # green, row 0, column 5
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": row, b"labels": [3]}, protocol=2))
    data = load_cifar10(folder, check_counts=False)
    assert (data.x_test[0, :, :, 0] == 200).all()
    assert data.x_test[0, 0, 5, 1] == 7 and data.x_test[0, :, :, 1].sum() == 7
    assert (data.x_test[0, :, :, 2] == 0).all() and data.y_test.tolist() == [3]


def test_official_python2_style_names_load(tmp_path):
    """The real files name numpy.core.multiarray (numpy 1.x); the allow-list maps it without importing it."""
    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [1, 2]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in blob
    (tmp_path / "batch").write_bytes(blob)
    out = restricted_load(tmp_path / "batch")
    np.testing.assert_array_equal(out[b"data"], np.arange(6).reshape(2, 3))


def test_official_wrong_counts(tmp_path):
    fake_official_folder(tmp_path, per_batch=2)
    with pytest.raises(InvalidValue, match="must have 50000 images, got 10"):
        load_cifar10(tmp_path)


def write_meta(folder: Path, per_batch: int) -> None:
    names = [c.encode() for c in cifar_module.CIFAR10_CLASSES]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def balanced_official_folder(folder: Path, per_batch: int) -> None:
    fake_official_folder(folder, per_batch=per_batch)
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ):
        batch = restricted_load(folder / name)
        batch[b"labels"] = [i % 10 for i in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_official_counts_follow_batches_meta(tmp_path):
    """The archive's batches.meta states its batch size; the counts and class balance are held to it."""
    balanced_official_folder(tmp_path, per_batch=20)
    with pytest.raises(InvalidValue, match="must have 50000 images, got 100"):
        load_cifar10(tmp_path)  # no batches.meta: the standard size
    write_meta(tmp_path, 20)
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (100, 32, 32, 3) and np.bincount(data.y_test).tolist() == [2] * 10
    write_meta(tmp_path, 10_000)  # the official archive's value
    with pytest.raises(InvalidValue, match="20 images, but batches.meta says every batch has 10000"):
        load_cifar10(tmp_path)
    write_meta(tmp_path, 20)
    batch = restricted_load(tmp_path / "test_batch")
    batch[b"labels"] = [0] * 20
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(InvalidValue, match="2 images per class"):
        load_cifar10(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"num_cases_per_batch": 7}, protocol=2))
    with pytest.raises(InvalidValue, match="positive multiple of 10"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({b"labels": [1]}, "missing key"),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [1, 2]}, r"\(n, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "2 images but 1 labels"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "0..9"),
        ([1, 2, 3], "expected a dict"),
    ],
    ids=["no-data", "width", "dtype", "count", "label-range", "not-dict"],
)
def test_official_malformed_batches(tmp_path, batch, match):
    fake_official_folder(tmp_path, per_batch=2)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(InvalidValue, match=match):
        load_cifar10(tmp_path, check_counts=False)


def test_truncated_pickle(tmp_path):
    fake_official_folder(tmp_path, per_batch=2)
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[:-40])
    with pytest.raises(InvalidValue, match="test_batch"):
        load_cifar10(tmp_path, check_counts=False)


class _Evil:
    """Pickles to ``call(*args)``: what a malicious batch file would contain."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _evil_payloads(marker: Path) -> dict[str, object]:
    import builtins
    import subprocess as sp

    shell = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": _Evil(os.system, shell),
        "builtins.exec": _Evil(builtins.exec, write),
        "builtins.eval": _Evil(builtins.eval, write),
        "subprocess.Popen": _Evil(sp.Popen, ["touch", str(marker)]),
        "numpy.load": _Evil(np.load, str(marker)),
        "nested-in-dict": {b"data": _Evil(os.system, shell), b"labels": [1]},
        "inside-labels-list": {b"labels": [_Evil(os.system, shell)]},
    }


@pytest.mark.parametrize(
    "name",
    ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen", "numpy.load", "nested-in-dict",
     "inside-labels-list"],
)  # fmt: skip
def test_malicious_pickle_raises_and_runs_no_code(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _evil_payloads(marker)[name]
    blob = pickle.dumps(payload, protocol=2)
    folder = tmp_path / "cifar-10-batches-py"
    fake_official_folder(folder, per_batch=1)
    (folder / "data_batch_2").write_bytes(blob)
    with pytest.raises(InvalidValue, match="refusing to unpickle global"):
        load_cifar10(tmp_path, check_counts=False)
    assert not marker.exists()


def test_the_malicious_pickle_is_real(tmp_path):
    """Control for the test above: the same bytes do run code under the ordinary unpickler."""
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_evil_payloads(marker)["os.system"], protocol=2)
    pickle.loads(blob)  # noqa: S301 - deliberately unsafe, to show the payload is live
    assert marker.exists()


def test_codecs_encode_is_latin1_only(tmp_path):
    import codecs

    blob = pickle.dumps(_Evil(codecs.encode, "abc", "rot13"), protocol=2)
    assert b"_codecs\nencode" in blob
    (tmp_path / "f").write_bytes(blob)
    with pytest.raises(InvalidValue, match="only latin-1"):
        restricted_load(tmp_path / "f")
