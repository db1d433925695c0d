"""The Compositional CIFAR-10 experiments: end to end at smoke tier on the real data, figures from the stored
records, the pieces (per-seed samples, stacked batches, kernel features, projection alignment) and bad input.

The real-data tests are skipped only where CIFAR-10 is absent; they share the decoded-image cache of
tests/test_cifar_data.py (one decode per test session).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modscale import cli
from modscale.data import Cifar10Arrays
from modscale.errors import InvalidValue
from modscale.experiments import Context, Job, get, run_sweep
from modscale.experiments import cifar_training as ct
from modscale.models.image import ImageModularNet
from modscale.plots import render, save
from modscale.results import load
from modscale.tasks.cifar import CompositionalCIFAR

EXPERIMENTS = ("cifar_accuracy_vs_k", "cifar_n_sweep", "cifar_epochs")
METHODS = ("monolithic", "modular-random", "modular-kernel", "modular-true")


@pytest.fixture(autouse=True)
def _fresh_caches():
    ct._arrays.cache_clear()
    ct._task.cache_clear()
    yield
    ct._arrays.cache_clear()
    ct._task.cache_clear()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    if not ct.data_available():
        pytest.skip("CIFAR-10 not available")
    return tmp_path_factory.getbasetemp() / "modscale-cache"  # shared with tests/test_cifar_data.py


@pytest.fixture(scope="module")
def smoke_results(cache_dir, tmp_path_factory):
    """The smoke tier of cifar_accuracy_vs_k, run once into a results directory."""
    out = tmp_path_factory.mktemp("cifar-smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODSCALE_CACHE", str(cache_dir))
        summary = run_sweep("cifar_accuracy_vs_k", out, tier="smoke", device="cpu")
    return out, summary


def fake_data(per_class_train: int = 8, per_class_test: int = 4, seed: int = 0) -> Cifar10Arrays:
    rng = np.random.default_rng(seed)

    def split(per_class):
        y = np.tile(np.arange(10), per_class).astype(np.uint8)
        return rng.integers(0, 256, size=(len(y), 32, 32, 3), dtype=np.uint8), y

    return Cifar10Arrays(*split(per_class_train), *split(per_class_test))


# ---------------------------------------------------------------------------------------------------------
# End to end on the real data


@pytest.mark.slow
def test_smoke_tier_stores_every_run_with_its_metrics(smoke_results):
    out, summary = smoke_results
    exp = get("cifar_accuracy_vs_k")
    records = [r for r in load(out).records if r.experiment == exp.name]
    assert len(records) == len(exp.jobs("smoke")) == 16
    assert {r.config["method"] for r in records} == set(METHODS)
    for r in records:
        m = r.metrics
        for key in ("accuracy", "all_correct", "noise_accuracy", "noise_all_correct", "train_loss"):
            assert 0 <= m[key] <= (1 if "loss" not in key else 100), (key, m[key])
        assert len(m["slot_accuracy"]) == r.config["k"]
        assert math.isclose(np.mean(m["slot_accuracy"]), m["accuracy"], rel_tol=1e-9)
        assert m["all_correct"] <= min(m["slot_accuracy"]) + 1e-12  # all correct implies each slot correct
        assert ("ood_accuracy" in m) == (r.config["k"] >= 2)  # k = 1 has no combinations to hold out
        assert ("purity_end" in m) == (r.config["method"] != "monolithic")
        assert r.device == "cpu" and r.wall_s > 0 and m["train_s"] > 0
        assert m["steps"] == math.ceil(r.config["n_train"] / r.config["batch_size"])
    # the monolith is sized to the modular network's parameter count (within 1%)
    for k in (1, 2):
        counts = {r.config["method"]: r.metrics["n_params"] for r in records if r.config["k"] == k}
        assert abs(counts["monolithic"] / counts["modular-random"] - 1) < 0.01
        assert counts["modular-random"] == counts["modular-kernel"] == counts["modular-true"]
    for r in records:  # purity lies in [1/k, 1]; with one slot every projection is that slot
        if r.config["method"] != "monolithic":
            assert 1 / r.config["k"] - 1e-9 <= r.metrics["purity_start"] <= 1 + 1e-9
            assert r.config["k"] > 1 or r.metrics["purity_start"] == pytest.approx(1.0)
        if r.config["method"] == "modular-true":
            assert r.metrics["purity_start"] == pytest.approx(1.0) and r.metrics["coverage_start"] == 1.0


@pytest.mark.slow
def test_kernel_rule_on_slot_mixtures_finds_slots(cache_dir, monkeypatch):
    """k = 2: the rule's projections read one slot each (purity near 1), where random unit vectors in R^2
    have purity 0.5 + 1/pi = 0.82 on average (docs/cifar.md: the ridge that makes this so)."""
    monkeypatch.setenv("MODSCALE_CACHE", str(cache_dir))
    config = get("cifar_accuracy_vs_k").config(
        {"k": 2, "kernel_samples": 512, "kernel_steps": 40, "kernel_strategy": "independent"}
    )
    task = ct.build_task(config, "cpu")
    rows = ct.training_rows(task, config["n_train"], 0, seed=0)
    W = ct.kernel_slot_projections(task, rows, config, seed=0, device="cpu")
    assert W.shape == (2, 2)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(2))
    assert ct.projection_alignment(W[None])["purity"][0] > 0.9


@pytest.mark.slow
def test_rerun_skips_what_is_stored(smoke_results, cache_dir):
    out, _ = smoke_results
    summary = run_sweep("cifar_accuracy_vs_k", out, tier="smoke", device="cpu")
    assert summary.ran["cifar_accuracy_vs_k"] == 0 and summary.skipped["cifar_accuracy_vs_k"] == 16


@pytest.mark.slow
def test_figures_render_from_the_stored_records(smoke_results, tmp_path):
    out, _ = smoke_results
    outputs = {o.name: o for o in render(load(out).records)}
    assert {"cifar_accuracy_vs_k", "cifar_robustness"} <= set(outputs)
    acc = outputs["cifar_accuracy_vs_k"]
    assert "2 seeds" in acc.caption
    rows = {(c.quantity, c.at): c for c in acc.comparisons}
    assert rows[("accuracy, monolithic", "k=1")].paper == pytest.approx(
        0.529
    )  # the paper's value beside ours
    assert rows[("accuracy, modular-kernel", "k=2")].n_seeds == 2
    table = outputs["cifar_robustness"]
    assert "k = 2" in table.caption  # the smoke tier has no k = 4: the table falls back to the largest k
    assert {c.quantity for c in table.comparisons} >= {f"unseen combinations (OOD), {m}" for m in METHODS}
    for o in outputs.values():
        assert all(p.stat().st_size > 0 for p in save(o, tmp_path, formats=("png",)))


@pytest.mark.slow
def test_n_sweep_and_epochs_run_and_draw(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MODSCALE_CACHE", str(cache_dir))
    for name in ("cifar_n_sweep", "cifar_epochs"):
        run_sweep(name, tmp_path, tier="smoke", device="cpu", overrides={"method": "monolithic"})
    records = load(tmp_path).records
    by = {name: [r for r in records if r.experiment == name] for name in ("cifar_n_sweep", "cifar_epochs")}
    assert sorted(r.config["n_train"] for r in by["cifar_n_sweep"]) == [64, 128]
    steps = {r.config["epochs"]: r.metrics["steps"] for r in by["cifar_epochs"]}
    assert steps[2] == 2 * steps[1]
    names = {o.name for o in render(records)}
    assert {"cifar_n_sweep", "cifar_epochs"} <= names


@pytest.fixture(scope="module")
def generated_copy(tmp_path_factory) -> Path:
    """A CIFAR-10 copy in the official layout with generated pixels (6 batches of 100 images, balanced):
    what needs the data's format but not its pictures runs without the real data set."""
    folder = tmp_path_factory.mktemp("generated-cifar") / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ):
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(100)],
                 b"data": rng.integers(0, 256, size=(100, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(100)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": 100, b"num_vis": 3072, b"label_names": [b"c%d" % i for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


@pytest.mark.slow
def test_a_seed_gives_the_same_numbers_alone_and_in_a_stack(generated_copy, tmp_path, monkeypatch):
    """Needs CIFAR-10's format, not its pictures: runs on the generated copy wherever the tests run."""
    monkeypatch.setenv("MODSCALE_DATA", str(generated_copy))
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "cache"))
    exp = get("cifar_accuracy_vs_k")
    config = exp.config({"k": 2, "method": "modular-random", "n_train": 64, "n_test": 32, "batch_size": 32})
    ctx = Context("cpu", "smoke", exp.name)
    alone = ct.run([Job.make(config, 1)], ctx)[0]
    stacked = ct.run([Job.make(config, 0), Job.make(config, 1)], ctx)[1]
    for key in ("accuracy", "ood_accuracy", "noise_accuracy", "train_loss", "purity_end"):
        assert stacked[key] == pytest.approx(alone[key], abs=1e-4), key


# ---------------------------------------------------------------------------------------------------------
# The pieces (fake data: fast)


@pytest.fixture(scope="module")
def task():
    return CompositionalCIFAR(3, n_test=20, data=fake_data(), generator=0)


def test_training_rows_are_nested_seen_and_seed_specific(task):
    big = ct.training_rows(task, 1500, split_seed=0, seed=4)
    assert torch.equal(ct.training_rows(task, 100, split_seed=0, seed=4), big[:100])
    assert not torch.equal(ct.training_rows(task, 100, split_seed=0, seed=5), big[:100])
    assert not task.is_held_out(task.labels(big, "train")).any()  # only seen combinations


def test_stacked_batches_give_each_replica_its_own_epochs(task):
    rows = torch.stack([ct.training_rows(task, 50, 0, s) for s in (7, 3)])  # (S=2, n=50, k)
    both = ct.replica_batches(task, rows, 16, seeds=[7, 3], split_seed=0)
    alone = ct.replica_batches(task, rows[1:], 16, seeds=[3], split_seed=0)
    seen = []
    for step in range(2 * 4):  # two epochs of ceil(50 / 16) = 4 batches
        (X2, Y2), (X1, Y1) = both(step, None), alone(step, None)
        assert X2.shape[:2] == Y2.shape[:2] and X2.shape[0] == 2 and X2.shape[2:] == (3, 32, 96)
        torch.testing.assert_close(X2[1], X1[0])  # replica 3's batches do not depend on the stack
        assert torch.equal(Y2[1], Y1[0])
        seen.append(Y2[0])
    labels = task.labels(rows[0], "train")
    for epoch in (seen[:4], seen[4:]):  # every row exactly once per epoch: the label multisets agree
        got = torch.cat(epoch)
        assert got.shape == labels.shape
        assert torch.equal(torch.sort(got.flatten()).values, torch.sort(labels.flatten()).values)


def test_slot_features_mix_exactly_like_the_module_inputs(task):
    """Second route: pooling the network's own mixture z_i = sum_j w_ij x_j equals mixing pooled slots."""
    rows = ct.training_rows(task, 12, 0, 0)
    W = torch.randn(2, task.k, generator=torch.Generator().manual_seed(1))  # K = 2 modules
    net = ImageModularNet(task.k, 2)
    net.set_projections(W)
    z = net.module_inputs(task.compose(rows))[0]  # (K, n, 3, 32, 32)
    for pool in (1, 4, 8):
        direct = F.avg_pool2d(z.reshape(-1, 3, 32, 32), pool).reshape(2, 12, -1)  # (K, n, D)
        feats = ct.slot_features(task, rows, pool)  # (n, k, D)
        torch.testing.assert_close(torch.einsum("ij,njd->ind", W, feats), direct, atol=1e-5, rtol=1e-5)


def test_projection_alignment_bounds():
    eye = torch.eye(4).expand(2, 4, 4)
    a = ct.projection_alignment(eye)
    np.testing.assert_allclose(a["purity"], 1.0)
    np.testing.assert_allclose(a["coverage"], 1.0)
    uniform = ct.projection_alignment(torch.ones(1, 4, 4))
    np.testing.assert_allclose(uniform["purity"], 0.25)
    same = ct.projection_alignment(torch.tensor([[[1.0, 0.0], [-2.0, 0.1]]]))  # both read slot 0
    np.testing.assert_allclose(same["coverage"], 0.5)
    np.testing.assert_allclose(same["purity"], (1 + 4 / 4.01) / 2)


# ---------------------------------------------------------------------------------------------------------
# Bad input: one clear error before any training


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"k": 0}, "'k' must be >= 1"),
        ({"noise": -0.1}, "'noise' must be >= 0"),
        ({"noise_levels": "0.1 -1"}, "noise level must be finite and >= 0"),
        ({"noise_levels": "0.1,x"}, "space-separated numbers"),
        ({"channels": "16 0"}, "'channels'"),
        ({"lr": 0.0}, "'lr' must be > 0"),
        ({"method": "modular-kernel", "kernel_batch": 512, "kernel_samples": 256}, "kernel_batch"),
        ({"method": "mixture"}, "must be one of"),
    ],
)
def test_bad_config_is_one_clear_error(override, match):
    with pytest.raises(InvalidValue, match=match):
        get("cifar_accuracy_vs_k").jobs("smoke", overrides=override)


def test_cli_bad_k_exits_2_and_writes_nothing(tmp_path, capsys):
    code = cli.main(["run", "cifar_accuracy_vs_k", "--tier", "smoke", "--set", "k=0", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'k' must be >= 1" in err[0]
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_data_folder_fails_before_training(tmp_path, monkeypatch, damage):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    if damage == "corrupt":
        for name in ("train.npz", "test.npz"):
            (folder / name).write_bytes(b"PK\x03\x04 this is not a zip archive")
    monkeypatch.setenv("MODSCALE_DATA", str(folder))
    monkeypatch.setenv("MODSCALE_CACHE", str(tmp_path / "cache"))

    def no_training(*args, **kwargs):
        raise AssertionError("training started despite bad data")

    monkeypatch.setattr(ct, "train", no_training)
    match = "not a readable npz" if damage == "corrupt" else "holds no CIFAR-10 data"
    with pytest.raises(InvalidValue, match=match):
        run_sweep("cifar_accuracy_vs_k", tmp_path / "out", tier="smoke", device="cpu")
    stored = tmp_path / "out" / "results.jsonl"
    assert not stored.exists() or stored.read_text() == ""


def test_paper_tier_is_sized_for_a_gpu():
    for name in EXPERIMENTS:
        exp = get(name)
        for job in exp.jobs("paper"):
            c = job.config
            assert c["n_test"] == 10_000 and c["channels"] == "16 32" and c["batch_size"] == 64
        assert exp.accelerated  # runs on --device auto: CUDA when present
    ks = {j.config["k"] for j in get("cifar_accuracy_vs_k").jobs("paper")}
    assert ks == set(range(1, 9))
    small = get("cifar_accuracy_vs_k").jobs("small")
    assert {j.config["k"] for j in small} == {1, 2, 4} and max(j.seed for j in small) + 1 >= 3
