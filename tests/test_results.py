"""modscale.results: durable appends, torn lines, compatibility across versions, hashing."""

from __future__ import annotations

import json
import math

import pytest

from modscale import __version__
from modscale.errors import InvalidType, InvalidValue
from modscale.results import (
    FORMAT,
    Record,
    ResultsStore,
    ResultsWarning,
    StoreBusy,
    config_hash,
    load,
    make_record,
)


def _rec(seed: int, a: int = 1, **metrics) -> Record:
    metrics = metrics or {"loss": seed / 10}
    return make_record("exp", {"a": a, "b": "x"}, seed, metrics, wall_s=0.5, device="cpu")


def test_record_has_the_required_keys_and_round_trips(tmp_path):
    with ResultsStore(tmp_path) as store:
        assert store.append([_rec(0), _rec(1, loss=float("inf"), curve=[1.0, float("nan")])]) == 2
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    obj = json.loads(lines[0])
    for key in ("experiment", "config", "config_hash", "seed", "metrics", "wall_s", "device", "version"):
        assert key in obj
    assert obj["version"] == __version__ and obj["format"] == FORMAT
    loaded = load(tmp_path)
    assert [r.seed for r in loaded.records] == [0, 1]
    assert loaded.records[1].metrics["loss"] == math.inf
    assert math.isnan(loaded.records[1].metrics["curve"][1])
    assert loaded.records[0].config_hash == config_hash({"a": 1, "b": "x"})


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": 2.0}) == config_hash({"b": 2.0, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash({"a": 1.0}) != config_hash({"a": 1})  # types are part of a config
    assert len(config_hash({})) == 16


def test_numpy_values_are_stored_as_plain_json(tmp_path):
    np = pytest.importorskip("numpy")
    r = make_record(
        "exp",
        {"a": np.int64(3)},
        np.int64(2),
        {"v": np.float32(0.5), "arr": np.arange(3)},
        wall_s=np.float64(1.0),
        device="cpu",
    )
    assert r.config == {"a": 3} and r.seed == 2 and r.metrics == {"v": 0.5, "arr": [0, 1, 2]}
    assert r.config_hash == config_hash({"a": 3})
    with pytest.raises(InvalidType, match="results must hold"):
        make_record("exp", {}, 0, {"bad": object()}, wall_s=0.0, device="cpu")


def test_appends_accumulate_across_opens(tmp_path):
    for seed in range(3):
        with ResultsStore(tmp_path) as store:
            store.append([_rec(seed)])
    assert [r.seed for r in load(tmp_path).records] == [0, 1, 2]


def test_append_needs_an_open_store(tmp_path):
    with pytest.raises(RuntimeError, match="open store"):
        ResultsStore(tmp_path).append([_rec(0)])


def test_torn_last_line_is_ignored_with_a_warning_then_cut_by_the_next_writer(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.append([_rec(0), _rec(1)])
    path = tmp_path / "results.jsonl"
    full = _rec(2).to_json()
    with open(path, "ab") as f:
        f.write(full[: len(full) // 2].encode())  # a write cut off by a kill
    with pytest.warns(ResultsWarning, match="torn last line"):
        loaded = load(tmp_path)
    assert [r.seed for r in loaded.records] == [0, 1] and loaded.torn
    with pytest.warns(ResultsWarning, match="removed a torn last line"):
        store = ResultsStore(tmp_path)
        store.open()
    store.append([_rec(2)])
    store.close()
    assert path.read_bytes().endswith(b"\n")
    assert [r.seed for r in load(tmp_path).records] == [0, 1, 2]


def test_torn_line_without_any_complete_line(tmp_path):
    (tmp_path / "results.jsonl").write_bytes(b'{"experiment": "ex')
    with pytest.warns(ResultsWarning):
        with ResultsStore(tmp_path) as store:
            store.append([_rec(0)])
    assert [r.seed for r in load(tmp_path).records] == [0]


def test_records_of_other_versions_read_what_is_compatible_and_say_what_is_skipped(tmp_path):
    good_old = json.loads(_rec(0).to_json()) | {"version": "0.0.1"}
    newer_format = json.loads(_rec(1).to_json()) | {"version": "9.0.0", "format": FORMAT + 1}
    no_metrics = {k: v for k, v in json.loads(_rec(2).to_json()).items() if k != "metrics"}
    no_metrics["version"] = "0.0.1"
    bad_hash = json.loads(_rec(3).to_json()) | {"config_hash": "0" * 16}
    bad_type = json.loads(_rec(4).to_json()) | {"seed": "four"}
    extra_key = json.loads(_rec(5).to_json()) | {"from_the_future": 1}
    lines = [good_old, newer_format, no_metrics, bad_hash, bad_type, extra_key]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json at all\n" + _rec(0).to_json() + "\n"
    (tmp_path / "results.jsonl").write_text(text)
    with pytest.warns(ResultsWarning, match="skipped"):
        loaded = load(tmp_path)
    assert [r.seed for r in loaded.records] == [0, 5]  # the second seed-0 line is a duplicate
    assert loaded.records[0].version == "0.0.1"
    reasons = {s.line: s.reason for s in loaded.skipped}
    assert "newer" in reasons[2] and "missing key(s) metrics" in reasons[3]
    assert "config_hash" in reasons[4] and "'seed'" in reasons[5]
    assert "not valid JSON" in reasons[7] and "duplicate" in reasons[8]
    notes = "\n".join(loaded.notes())
    assert "written by modscale 9.0.0" in notes and "read 1 record(s) written by modscale 0.0.1" in notes
    assert not loaded.torn


def test_a_second_writer_is_refused(tmp_path):
    with ResultsStore(tmp_path):
        with pytest.raises(StoreBusy, match="another modscale process"):
            with ResultsStore(tmp_path):
                pass
    with ResultsStore(tmp_path):  # the lock is released on close
        pass


def test_missing_file_holds_no_records(tmp_path):
    loaded = load(tmp_path / "nothing")
    assert loaded.records == [] and loaded.skipped == []


def test_out_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        ResultsStore(tmp_path / "f").open()


def test_out_path_inside_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InvalidValue, match="cannot write the results file .*Not a directory"):
        ResultsStore(tmp_path / "f" / "sub").open()
