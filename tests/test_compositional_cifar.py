"""modscale.tasks.cifar: the held-out tuples, composite construction, fixed sets, batch sources, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modscale.data import Cifar10Arrays, load_cifar10, locate_cifar10
from modscale.errors import InvalidType, InvalidValue
from modscale.tasks import cifar as cifar_module
from modscale.tasks.cifar import CompositionalCIFAR, TuplePermutation, composite_accuracy


def fake_data(per_class_train: int = 12, per_class_test: int = 6, seed: int = 0, coded: bool = False):
    """Small CIFAR-shaped arrays. ``coded``: every pixel of a class-c image is 20 c + 10 (+ small jitter)."""
    rng = np.random.default_rng(seed)

    def split(per_class):
        y = np.tile(np.arange(10), per_class).astype(np.uint8)
        if coded:
            x = (20 * y + 10)[:, None, None, None] + rng.integers(-3, 4, size=(len(y), 32, 32, 3))
            return x.astype(np.uint8), y
        return rng.integers(0, 256, size=(len(y), 32, 32, 3), dtype=np.uint8), y

    return Cifar10Arrays(*split(per_class_train), *split(per_class_test))


def decode_coded(task: CompositionalCIFAR):
    """An oracle for coded data: the class of each slot from one raw pixel (red, top-left corner)."""

    def predict(X):
        corner = X.view(X.shape[0], 3, 32, task.k, 32)[:, 0, 0, :, 0]  # (n, k), normalised red values
        raw = corner * task.std[0] + task.mean[0]
        cls = ((raw - 10) / 20).round().clamp(0, 9).long()
        return torch.nn.functional.one_hot(cls, 10).float()

    return predict


@pytest.fixture(scope="module")
def data():
    return fake_data()


# ---------------------------------------------------------------------------------------------------------
# The seeded permutation and the held-out tuples


@pytest.mark.parametrize("n", [1, 2, 7, 10, 100, 1000, 10_000, 12_345])
def test_permutation_is_a_bijection_with_its_inverse(n):
    perm = TuplePermutation(n, torch.Generator().manual_seed(3))
    c = torch.arange(n)
    y = perm(c)
    assert torch.equal(torch.sort(y).values, c)
    assert torch.equal(perm.inverse(y), c)


def test_permutation_depends_on_the_seed_and_looks_random():
    a = TuplePermutation(10_000, torch.Generator().manual_seed(0))(torch.arange(10_000))
    b = TuplePermutation(10_000, torch.Generator().manual_seed(1))(torch.arange(10_000))
    assert not torch.equal(a, b)
    # Rank correlation of pi(c) with c: ~N(0, 1/n) for a random permutation (|r| < 5 sd = 0.05).
    r = np.corrcoef(np.arange(10_000), a.numpy())[0, 1]
    assert abs(r) < 0.05


@pytest.mark.parametrize("k", [2, 3, 4])
def test_exactly_the_stated_fraction_is_held_out(data, k):
    task = CompositionalCIFAR(k, data=data, generator=0)
    codes = torch.arange(10**k)
    labels = (codes.unsqueeze(-1) // 10 ** torch.arange(k)) % 10
    held = task.is_held_out(labels)
    assert int(held.sum()) == round(0.2 * 10**k) == task.n_holdout
    other = CompositionalCIFAR(k, data=data, generator=1).is_held_out(labels)
    assert not torch.equal(held, other)  # the split is seeded


def test_seen_and_unseen_samples_respect_the_split(data):
    task = CompositionalCIFAR(3, data=data, generator=0)
    seen = task.sample_tuples(5000, "seen", generator=1)
    unseen = task.sample_tuples(2000, "unseen", generator=2)
    assert not task.is_held_out(seen).any()
    assert task.is_held_out(unseen).all()


def test_seen_tuples_are_uniform_over_the_allowed_tuples(data):
    """Second route: the empirical frequency of every allowed tuple against 1 / (N - H), chi-square."""
    task = CompositionalCIFAR(2, data=data, generator=4)
    n = 80_000
    codes = task.labels_to_codes(task.sample_tuples(n, "seen", generator=5))
    counts = np.bincount(codes.numpy(), minlength=100)
    allowed = ~task.is_held_out((torch.arange(100).unsqueeze(-1) // torch.tensor([1, 10])) % 10).numpy()
    assert (counts[~allowed] == 0).all() and (counts[allowed] > 0).all()
    expected = n / allowed.sum()
    chi2 = ((counts[allowed] - expected) ** 2 / expected).sum()
    dof = allowed.sum() - 1  # 79: mean 79, sd 12.6; 5 sd above the mean is a clear failure
    assert chi2 < dof + 5 * math.sqrt(2 * dof)


@pytest.mark.parametrize("k", [2, 3])
def test_slot_marginals_exact_vs_monte_carlo(data, k):
    task = CompositionalCIFAR(k, data=data, generator=7)
    exact = task.slot_marginals()
    assert exact.shape == (k, 10)
    np.testing.assert_allclose(exact.sum(1), 1.0)
    labels = task.sample_tuples(200_000, "seen", generator=8).numpy()
    mc = np.stack([np.bincount(labels[:, j], minlength=10) for j in range(k)]) / len(labels)
    np.testing.assert_allclose(mc, exact, atol=5 * math.sqrt(0.1 * 0.9 / len(labels)))


def test_k1_has_no_holdout(data):
    task = CompositionalCIFAR(1, data=data, generator=0)
    assert task.n_holdout == 0
    np.testing.assert_allclose(task.slot_marginals(), np.full((1, 10), 0.1))
    with pytest.raises(InvalidValue, match="k = 1 has no combinations"):
        task.test_indices("unseen")


# ---------------------------------------------------------------------------------------------------------
# Composite construction


def test_images_have_the_slot_class(data):
    task = CompositionalCIFAR(4, data=data, generator=0)
    labels = task.sample_tuples(500, generator=1)
    for split, y in (("train", data.y_train), ("test", data.y_test)):
        idx = task.sample_images(labels, split, generator=2)
        np.testing.assert_array_equal(y[idx.numpy()], labels.numpy())
        assert torch.equal(task.labels(idx, split), labels)


def test_images_are_uniform_within_a_class(data):
    task = CompositionalCIFAR(1, data=data, generator=0)
    labels = torch.full((60_000, 1), 3)
    idx = task.sample_images(labels, "train", generator=1).numpy().ravel()
    counts = np.bincount(idx, minlength=len(data.y_train))[data.y_train == 3]  # 12 images of class 3
    expected = 60_000 / 12
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert (counts > 0).all() and chi2 < 11 + 5 * math.sqrt(22)


@pytest.mark.parametrize("split", ["train", "test"])
def test_compose_equals_normalised_concatenation(data, split):
    """Second route: slot images transposed to CHW, normalised, concatenated along the width."""
    k = 3
    task = CompositionalCIFAR(k, data=data, generator=0)
    idx = task.sample_images(task.sample_tuples(20, generator=1), split, generator=2)
    X = task.compose(idx, split)
    assert X.shape == (20, 3, 32, 96) and X.dtype == torch.float32
    images = data.x_train if split == "train" else data.x_test
    mean, std = task.mean.reshape(1, 3, 1, 1), task.std.reshape(1, 3, 1, 1)
    slots = [(images[idx[:, j].numpy()].transpose(0, 3, 1, 2) - mean) / std for j in range(k)]
    np.testing.assert_allclose(X.numpy(), np.concatenate(slots, axis=-1), rtol=1e-5, atol=1e-5)


def test_normalisation_statistics_are_those_of_the_train_split(data):
    task = CompositionalCIFAR(2, data=data, generator=0)
    pixels = data.x_train.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(task.mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(task.std, pixels.std(0), rtol=1e-10)


def test_noise_is_gaussian_with_the_stated_level_and_seeded(data):
    task = CompositionalCIFAR(2, n_test=200, data=data, generator=0)
    idx = task.test_indices("seen")
    clean = task.compose(idx, "test")
    noisy = task.compose(idx, "test", noise=0.5, generator=3)
    diff = (noisy - clean).double()
    assert abs(diff.mean().item()) < 0.005 and abs(diff.std().item() - 0.5) < 0.005
    torch.testing.assert_close(task.compose(idx, "test", noise=0.5, generator=3), noisy)
    assert not torch.equal(task.compose(idx, "test", noise=0.5, generator=4), noisy)


def test_sample_returns_composites_and_labels(data):
    task = CompositionalCIFAR(4, data=data, generator=0)
    X, Y = task.sample(16, generator=1)
    assert X.shape == (16, 3, 32, 128) and Y.shape == (16, 4) and Y.dtype == torch.int64
    X2, Y2 = task.sample(16, generator=1)
    assert torch.equal(X, X2) and torch.equal(Y, Y2)
    _, Yu = task.sample(16, generator=1, split="test", which="unseen")
    assert task.is_held_out(Yu).all()


# ---------------------------------------------------------------------------------------------------------
# Fixed sets and batch sources


def test_fixed_training_sets_are_nested_and_seeded(data):
    big = CompositionalCIFAR(3, n_train=2500, data=data, generator=5).train_indices
    small = CompositionalCIFAR(3, n_train=1100, data=data, generator=5).train_indices
    assert big.shape == (2500, 3) and torch.equal(big[:1100], small)
    other = CompositionalCIFAR(3, n_train=1100, data=data, generator=6).train_indices
    assert not torch.equal(small, other)


def test_training_rows_are_nested_seen_and_follow_their_chunk_seeds(data):
    task = CompositionalCIFAR(3, data=data, generator=0)
    big = task.training_rows(2500, lambda c: 40 + c)
    assert big.shape == (2500, 3) and torch.equal(task.training_rows(1100, lambda c: 40 + c), big[:1100])
    assert not task.is_held_out(task.labels(big, "train")).any()  # seen combinations only
    # chunk c (rows 1024 c ...) comes from chunk_seed(c) alone: change chunk 1's seed, chunk 0 stays
    other = task.training_rows(2500, lambda c: 40 + c if c != 1 else 7)
    assert torch.equal(other[:1024], big[:1024]) and not torch.equal(other[1024:2048], big[1024:2048])
    assert torch.equal(other[2048:], big[2048:])
    # the fixed training set is the same draw with the task's own chunk seeds
    fixed = CompositionalCIFAR(3, n_train=1100, data=data, generator=0)
    assert torch.equal(fixed.train_indices, fixed.training_rows(1100, lambda c: fixed._seeds["train"] + c))


def test_replica_batch_source_gives_each_replica_its_own_epochs(data):
    task = CompositionalCIFAR(2, data=data, generator=0)
    rows = torch.stack([task.training_rows(50, lambda c, s=s: 10 * s + c) for s in (7, 3)])  # (S=2, 50, k)
    both = task.replica_batch_source(rows, 16, [lambda e: 100 + e, lambda e: 200 + e])
    alone = task.replica_batch_source(rows[1:], 16, [lambda e: 200 + e])
    per_replica = [[], []]
    for step in range(2 * 4):  # two epochs of 16, 16, 16, 2
        (X2, Y2), (X1, Y1) = both(step, None), alone(step, None)
        assert X2.shape == (2, [16, 16, 16, 2][step % 4], 3, 32, 64) and Y2.shape == X2.shape[:2] + (2,)
        assert torch.equal(X2[1], X1[0]) and torch.equal(Y2[1], Y1[0])  # independent of the stack
        for s in range(2):
            per_replica[s].append(X2[s])
    for s in range(2):  # every row of replica s exactly once per epoch, in a new order each epoch
        keys = torch.sort(task.compose(rows[s]).flatten(1).sum(1)).values
        for epoch in (per_replica[s][:4], per_replica[s][4:]):
            torch.testing.assert_close(torch.sort(torch.cat(epoch).flatten(1).sum(1)).values, keys)
        assert not torch.equal(per_replica[s][0], per_replica[s][4])
    # epoch e's order is randperm(n) from epoch_seeds[s](e): a second route to batch 0 of epoch 1
    order = torch.randperm(50, generator=torch.Generator().manual_seed(101))[:16]
    torch.testing.assert_close(per_replica[0][4], task.compose(rows[0][order]))


def test_replica_batch_source_bad_input(data):
    task = CompositionalCIFAR(2, data=data, generator=0)
    rows = task.training_rows(20, lambda c: c)[None]  # (1, 20, 2)
    with pytest.raises(InvalidValue, match="rows must be an integer tensor"):
        task.replica_batch_source(rows.float(), 4, [lambda e: e])
    with pytest.raises(InvalidValue, match="rows must have shape"):
        task.replica_batch_source(torch.zeros(1, 20, 3, dtype=torch.long), 4, [lambda e: e])
    with pytest.raises(InvalidValue, match="epoch_seeds must hold one callable"):
        task.replica_batch_source(rows, 4, [lambda e: e, lambda e: e])
    with pytest.raises(InvalidValue, match="batch_size"):
        task.replica_batch_source(rows, 0, [lambda e: e])
    with pytest.raises(InvalidType, match="chunk_seed"):
        task.training_rows(20, 3)
    with pytest.raises(InvalidValue, match="n must be >= 1"):
        task.training_rows(0, lambda c: c)


def test_fixed_test_sets(data):
    task = CompositionalCIFAR(3, n_test=700, data=data, generator=0)
    seen, unseen = task.test_indices("seen"), task.test_indices("unseen")
    assert seen.shape == unseen.shape == (700, 3)
    assert not task.is_held_out(task.labels(seen, "test")).any()
    assert task.is_held_out(task.labels(unseen, "test")).all()
    assert torch.equal(task.test_indices("seen"), seen)  # fixed


def test_train_set_materialises_the_fixed_indices(data):
    task = CompositionalCIFAR(2, n_train=50, data=data, generator=0)
    X, Y = task.train_set()
    assert X.shape == (50, 3, 32, 64)
    torch.testing.assert_close(X, task.compose(task.train_indices))
    assert torch.equal(Y, task.labels(task.train_indices))
    with pytest.raises(InvalidValue, match="no fixed training set"):
        _ = CompositionalCIFAR(2, data=data).train_indices


def test_batch_source_epochs_cover_the_fixed_set_once(data):
    task = CompositionalCIFAR(2, n_train=50, data=data, generator=0)
    X, _ = task.train_set()
    source = task.batch_source(16)  # 4 batches per epoch: 16, 16, 16, 2
    gen = torch.Generator().manual_seed(0)
    epochs = [[source(4 * e + b, gen) for b in range(4)] for e in range(2)]
    assert [len(b[0]) for b in epochs[0]] == [16, 16, 16, 2]
    keys = torch.sort(X.flatten(1).sum(1)).values  # one number per composite
    for batches in epochs:
        Xe = torch.cat([b[0] for b in batches])
        torch.testing.assert_close(torch.sort(Xe.flatten(1).sum(1)).values, keys)
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])  # reshuffled
    again = task.batch_source(16)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(again(0, gen)[0], epochs[0][0][0])  # seeded by the trainer's generator


def test_batch_source_reused_follows_the_new_generator(data):
    """A second training run with the same source starts from its own generator's order, whatever the
    first run left cached (here: it stopped inside epoch 0)."""
    task = CompositionalCIFAR(2, n_train=50, data=data, generator=0)
    source = task.batch_source(16)
    first = source(0, torch.Generator().manual_seed(0))[1]
    second = source(0, torch.Generator().manual_seed(1))[1]
    fresh = task.batch_source(16)(0, torch.Generator().manual_seed(1))[1]
    assert torch.equal(second, fresh) and not torch.equal(first, second)


def test_batch_source_on_the_fly(data):
    task = CompositionalCIFAR(3, data=data, generator=0)
    source = task.batch_source(8)
    gen = torch.Generator().manual_seed(0)
    X0, Y0 = source(0, gen)
    X1, _ = source(1, gen)
    assert X0.shape == (8, 3, 32, 96) and Y0.shape == (8, 3) and not torch.equal(X0, X1)


def test_batch_source_drives_the_trainer(data):
    from modscale.models.image import ImageModularNet, slot_cross_entropy
    from modscale.training import train

    task = CompositionalCIFAR(2, n_train=40, data=fake_data(coded=True), generator=0)
    net = ImageModularNet(2, 2, channels=(4,), hidden=8, n_replicas=2, generator=[0, 1])
    hist = train(
        net, task.batch_source(10), steps=8, lr=1e-3, device="cpu", generator=0,
        loss=lambda out, y: slot_cross_entropy(out, y, "none"),
    )  # fmt: skip
    assert np.isfinite(np.asarray(hist.as_dict()["train"], dtype=float)).all()


# ---------------------------------------------------------------------------------------------------------
# Metrics and evaluation


def test_composite_accuracy_by_hand():
    logits = torch.zeros(3, 2, 10)
    logits[0, 0, 1] = logits[0, 1, 2] = 1  # predicts (1, 2)
    logits[1, 0, 1] = logits[1, 1, 5] = 1  # predicts (1, 5)
    logits[2, 0, 7] = logits[2, 1, 2] = 1  # predicts (7, 2)
    labels = torch.tensor([[1, 2], [1, 2], [1, 2]])
    m = composite_accuracy(logits, labels)
    assert m["per_slot_accuracy"] == pytest.approx(4 / 6)
    assert m["all_correct_accuracy"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(m["slot_accuracy"], [2 / 3, 2 / 3])
    flat = composite_accuracy(logits.reshape(3, 20), labels)  # (n, 10 k) logits
    assert flat["per_slot_accuracy"] == m["per_slot_accuracy"]
    two = composite_accuracy(logits[:2].reshape(2, 20), labels[:2])  # flat, n = k: still (n, 10 k)
    assert two["per_slot_accuracy"] == pytest.approx(3 / 4)
    one = composite_accuracy(logits[:1, :1].reshape(1, 10), labels[:1, :1])  # k = 1, n = 1
    assert one["per_slot_accuracy"] == 1.0
    stacked = composite_accuracy(torch.stack([logits, torch.zeros(3, 2, 10)]), labels)
    np.testing.assert_allclose(stacked["per_slot_accuracy"], [4 / 6, 0.0])
    with pytest.raises(InvalidValue, match="logits must have shape"):
        composite_accuracy(torch.zeros(3, 3, 10), labels)


def test_evaluate_oracle_constant_and_noise():
    coded = fake_data(coded=True)
    task = CompositionalCIFAR(3, n_test=600, data=coded, generator=0)
    oracle = decode_coded(task)
    for which in ("seen", "unseen"):
        m = task.evaluate(oracle, which)
        assert m["per_slot_accuracy"] == 1.0 and m["all_correct_accuracy"] == 1.0 and m["n"] == 600
    # Second route for a constant predictor: the frequency of class 0 per slot in the fixed test labels.
    Y = task.labels(task.test_indices("seen"), "test")
    zero = task.evaluate(lambda X: torch.zeros(len(X), 3, 10).index_fill_(-1, torch.tensor([0]), 1.0))
    assert zero["per_slot_accuracy"] == pytest.approx((Y == 0).double().mean().item())
    np.testing.assert_allclose(zero["slot_accuracy"], (Y == 0).double().mean(0).numpy())
    # Noise of 1 std (about 57 grey levels here) swamps the one-pixel read-out (classes are 20 levels apart).
    noisy = task.evaluate(oracle, "seen", noise=1.0)
    assert noisy["per_slot_accuracy"] < 0.5 and noisy["noise"] == 1.0
    again = task.evaluate(oracle, "seen", noise=1.0)  # the default noise seed is fixed
    assert again["per_slot_accuracy"] == noisy["per_slot_accuracy"]
    other = task.evaluate(oracle, "seen", noise=1.0, generator=123)
    assert other["per_slot_accuracy"] != noisy["per_slot_accuracy"]
    flat = task.evaluate(lambda X: oracle(X).flatten(1), batch_size=597)  # (B, 10 k); last batch: B = k
    assert flat["per_slot_accuracy"] == 1.0 and flat["n"] == 600


def test_evaluate_stacked_predictions():
    coded = fake_data(coded=True)
    task = CompositionalCIFAR(2, n_test=300, data=coded, generator=0)
    oracle = decode_coded(task)
    m = task.evaluate(lambda X: torch.stack([oracle(X), torch.zeros(len(X), 2, 10)]), batch_size=64)
    assert m["per_slot_accuracy"].shape == (2,) and m["per_slot_accuracy"][0] == 1.0
    assert m["slot_accuracy"].shape == (2, 2)


# ---------------------------------------------------------------------------------------------------------
# Bad input: raised before the data is loaded


@pytest.fixture
def no_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(cifar_module, "load_cifar10", fail)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, InvalidValue, "k must be >= 1"),
        ({"k": 19}, InvalidValue, "k must be <= 18"),
        ({"k": "4"}, InvalidType, "k must be an integer"),
        ({"k": 2, "n_train": 0}, InvalidValue, "n_train"),
        ({"k": 2, "n_test": 0}, InvalidValue, "n_test"),
        ({"k": 2, "holdout_fraction": 1.0}, InvalidValue, "holdout_fraction"),
        ({"k": 2, "holdout_fraction": -0.1}, InvalidValue, "holdout_fraction"),
        ({"k": 2, "holdout_fraction": "0.2"}, InvalidType, "holdout_fraction"),
        ({"k": 2, "generator": "seed"}, InvalidType, "generator"),
        ({"k": 2, "generator": -1}, InvalidValue, "generator"),
        ({"k": 2, "device": "tpu"}, InvalidValue, "device"),
        ({"k": 2, "data": (1, 2, 3, 4)}, InvalidType, "data must be a Cifar10Arrays"),
    ],
)
def test_bad_arguments_fail_before_loading(no_loading, kwargs, error, match):
    with pytest.raises(error, match=match):
        CompositionalCIFAR(**kwargs)


def test_cuda_requested_without_cuda(no_loading):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InvalidValue, match="CUDA is not available"):
        CompositionalCIFAR(2, device="cuda")


@pytest.mark.parametrize("noise", [-0.1, float("nan"), float("inf")])
def test_bad_noise(data, noise):
    task = CompositionalCIFAR(2, n_test=10, data=data)
    with pytest.raises(InvalidValue, match="noise"):
        task.evaluate(lambda X: torch.zeros(len(X), 2, 10), noise=noise)
    with pytest.raises(InvalidValue, match="noise"):
        task.sample(4, noise=noise)


def test_other_bad_calls(data):
    task = CompositionalCIFAR(2, n_test=10, data=data, holdout_fraction=0.0)
    with pytest.raises(InvalidValue, match="holdout_fraction = 0.0"):
        task.evaluate(lambda X: torch.zeros(len(X), 2, 10), which="unseen")
    with pytest.raises(InvalidValue, match="which"):
        task.test_indices("ood")
    with pytest.raises(InvalidValue, match=r"indices must be an integer tensor of shape \(n, k=2\)"):
        task.compose(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(InvalidValue, match="split"):
        task.compose(torch.zeros(4, 2, dtype=torch.long), "valid")
    with pytest.raises(InvalidValue, match=r"indices must lie in \[0, 60\) for the test split"):
        task.compose(torch.full((4, 2), 60), "test")
    with pytest.raises(InvalidValue, match="indices must be an integer tensor"):
        task.compose(torch.zeros(4, 2))
    with pytest.raises(InvalidValue, match="predict must return"):
        task.evaluate(lambda X: torch.zeros(len(X), 3, 10))
    with pytest.raises(InvalidType, match="predict must be callable"):
        task.evaluate("model")
    with pytest.raises(InvalidValue, match="batch_size"):
        task.batch_source(0)


def test_data_missing_a_class_is_refused():
    d = fake_data()
    keep = d.y_test != 4
    with pytest.raises(InvalidValue, match="every class"):
        CompositionalCIFAR(2, data=Cifar10Arrays(d.x_train, d.y_train, d.x_test[keep], d.y_test[keep]))


# ---------------------------------------------------------------------------------------------------------
# The real data


@pytest.fixture(scope="module")
def real_task(tmp_path_factory):
    try:
        locate_cifar10()
    except InvalidValue as err:
        pytest.skip(f"CIFAR-10 not available: {err}")
    cache = tmp_path_factory.getbasetemp() / "modscale-cache"  # shared with tests/test_cifar_data.py
    return CompositionalCIFAR(4, n_train=2000, n_test=1000, data=load_cifar10(cache_dir=cache), generator=0)


def test_real_composites_are_normalised(real_task):
    X, Y = real_task.sample(2000, generator=1)
    per_channel = X.transpose(0, 1).reshape(3, -1).double()
    np.testing.assert_allclose(per_channel.mean(1).numpy(), 0.0, atol=0.02)
    np.testing.assert_allclose(per_channel.std(1).numpy(), 1.0, atol=0.02)
    assert not real_task.is_held_out(Y).any()
    # JPEG copy's README: channel means match the original CIFAR-10 to 4 decimals.
    np.testing.assert_allclose(real_task.mean / 255, [0.4914, 0.4822, 0.4465], atol=5e-4)


def test_tabulated_and_on_the_fly_tuples_agree(data):
    """k <= 6 samples through a table of pi^{-1}; larger k evaluates pi^{-1} per draw: same tuples."""
    task = CompositionalCIFAR(3, data=data, generator=2)
    assert task._table is not None
    tabulated = task.sample_tuples(3000, "seen", generator=9)
    task._table = None
    assert torch.equal(task.sample_tuples(3000, "seen", generator=9), tabulated)


def test_large_k_without_a_table(data):
    task = CompositionalCIFAR(8, n_test=50, data=data, generator=0)
    assert task._table is None and task.n_holdout == 20_000_000
    X, Y = task.sample(6, generator=1)
    assert X.shape == (6, 3, 32, 256) and not task.is_held_out(Y).any()
    assert task.is_held_out(task.labels(task.test_indices("unseen"), "test")).all()


def test_data_with_wrong_layout_is_refused():
    d = fake_data()
    nchw = np.ascontiguousarray(d.x_train.transpose(0, 3, 1, 2))
    with pytest.raises(InvalidValue, match=r"need uint8 images \(N, 32, 32, 3\)"):
        CompositionalCIFAR(2, data=Cifar10Arrays(nchw, d.y_train, d.x_test, d.y_test))
    with pytest.raises(InvalidValue, match="labels must be a non-empty array of integers in 0..9"):
        CompositionalCIFAR(2, data=Cifar10Arrays(d.x_train, d.y_train + 10, d.x_test, d.y_test))
