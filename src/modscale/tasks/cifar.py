"""Compositional CIFAR-10 (DESIGN section 2; PAPER.md "Known experimental facts"): k images side by side.

    X = [x_1 | x_2 | ... | x_k] in R^{3 x 32 x 32k} (normalised per channel),  Y = (y_1, .., y_k) in {0..9}^k

Slot j holds a CIFAR-10 image of class y_j; the network must name every slot's class. Training composites
use the CIFAR training split, test composites the test split.

Combinatorial out-of-distribution split (k >= 2). Class k-tuples are coded c = sum_j y_j 10^j in [0, N),
N = 10^k. A seeded pseudo-random permutation pi of [0, N) (a balanced Feistel network with cycle-walking,
:class:`TuplePermutation`) holds out exactly H = round(holdout_fraction * N) tuples, those with pi(c) < H.
Training composites and the in-distribution ("seen") test set only use the other N - H tuples; the "unseen"
test set only the held-out ones. Membership and sampling cost O(batch) whatever k is, so k = 8 (10^8 tuples)
needs no table; for k <= 6 the tuples of all 10^k ranks are tabulated once (at most 6 MB) and sampling is
one gather (identical tuples either way).
For k = 1 there are no combinations: nothing is held out and the unseen set does not exist.

How a composite is drawn (by tensor indexing, no per-sample Python loop):

1. its class tuple uniformly from the allowed tuples: c = pi^{-1}(r) with r uniform in [H, N) (seen) or in
   [0, H) (unseen), then y_j = floor(c / 10^j) mod 10;
2. for every slot an image uniformly among the split's images of class y_j.

Per-slot marginals of the training distribution are therefore P(y_j = v) = (N/10 - h_j(v)) / (N - H), where
h_j(v) counts held-out tuples with y_j = v (:meth:`CompositionalCIFAR.slot_marginals` computes them exactly
for k <= 6). The held-out set is a uniformly random subset, so h_j(v) ~ H/10 and the marginals are 1/10 up to
a hypergeometric fluctuation: standard deviation about 0.016 at k = 2, 0.0016 at k = 4 (relative to 0.1);
all k-1-slot sub-combinations stay present in training. Slots are exchangeable: no slot is favoured.

Normalisation: per-channel mean and standard deviation of all training-split pixels (exact, from integer
sums), x -> (x - mean) / std.

Noise robustness: :meth:`CompositionalCIFAR.evaluate` with ``noise=sigma`` adds sigma * N(0, 1) to every
normalised test pixel (sigma is in units of the per-channel pixel standard deviation). Our stated levels are
:data:`NOISE_LEVELS` = 0.1, 0.2, 0.5, 1.0; the paper does not give its level (our choice, PAPER.md).

Metrics (:func:`composite_accuracy`): per-slot accuracy averaged over slots and samples (the paper's
"accuracy"), all-correct accuracy (every slot right) and each slot's accuracy; :meth:`evaluate` reports them
on the seen or the unseen test combinations.

Training data, two ways:

- a fixed training set of ``n_train`` composites (the n-sweep; the paper's single epoch):
  :attr:`train_indices` (n_train, k) image indices, materialised by :meth:`train_set` or streamed in shuffled
  epochs by :meth:`batch_source`. Rows are drawn in chunks of 1024 from per-chunk seeds, so training sets are
  nested: the first n rows of the set for n_train = 5000 are the set for n_train = n (same generator).
- on the fly: :meth:`sample` or :meth:`batch_source` without ``n_train``, fresh composites every batch.

For a sweep that trains S seeds as one stacked model, each seed its own sample and batch order:
:meth:`training_rows` draws a sample the same nested way from seeds the caller gives (chunk c from
``chunk_seed(c)``), and :meth:`replica_batch_source` walks each replica's own rows in its own seeded epochs,
returning (S, B, ...) batches.

Test sets are fixed and seeded the same way: ``n_test`` composites of seen and of unseen tuples.

Example::

    task = CompositionalCIFAR(4, n_train=5000, generator=0)   # loads CIFAR-10 (modscale.data)
    X, Y = task.sample(256, generator=1)                       # (256, 3, 32, 128) float32, (256, 4) int64
    source = task.batch_source(128)                            # for modscale.training.train(model, source)
    metrics = task.evaluate(model, which="unseen", noise=0.2)  # {"per_slot_accuracy": ..., ...}
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from modscale._checks import check_choice, check_int
from modscale._torch import as_generator, resolve_device
from modscale.data.cifar10 import N_CLASSES, Cifar10Arrays, load_cifar10
from modscale.errors import InvalidType, InvalidValue

NOISE_LEVELS = (0.1, 0.2, 0.5, 1.0)
"""Standard deviations of the Gaussian noise on normalised pixels that the experiments evaluate at."""
WHICH = ("seen", "unseen")
SPLITS = ("train", "test")
MAX_K = 18  # class tuples are coded in int64: 10^18 < 2^63
TABLE_MAX_K = 6  # tabulate the tuples of all 10^k ranks up to 10^6 of them (6 MB)
CHUNK = 1024  # rows of a fixed set drawn per seeded chunk (nested sets)
_M32 = 0xFFFFFFFF
_FEISTEL_ROUNDS = 8


def _draw_seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=gen).item())


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise InvalidType(f"noise must be a number (a standard deviation), got {noise!r}")
    if not math.isfinite(noise) or noise < 0:
        raise InvalidValue(f"noise must be a finite standard deviation >= 0, got {noise}")
    return float(noise)


# ---------------------------------------------------------------------------------------------------------
# The held-out tuples: a seeded permutation of [0, N), evaluated on demand


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (multiply-xorshift); int64 arithmetic that never exceeds 2^59."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


class TuplePermutation:
    """A seeded pseudo-random permutation pi of [0, n), computed elementwise on int64 tensors.

    A balanced Feistel network on 2w bits (2^{2w} >= n, w >= 1) with ``_FEISTEL_ROUNDS`` rounds keyed by
    ``keys`` is a permutation of [0, 2^{2w}) for any round function; cycle-walking (apply it again while the
    value is >= n) restricts it to a permutation of [0, n). Since 2^{2w} < 4n, a walk takes fewer than 4
    applications on average. Memory is O(len(c)) whatever n is.
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n = int(n)
        self.w = max(1, math.ceil(max(self.n - 1, 1).bit_length() / 2))
        self._mask = (1 << self.w) - 1
        self._keys = torch.randint(0, 2**32, (_FEISTEL_ROUNDS,), generator=generator).tolist()

    def _round(self, x: torch.Tensor, key: int) -> torch.Tensor:
        return _hash32((x ^ key) & _M32) & self._mask

    def _encrypt(self, v: torch.Tensor) -> torch.Tensor:
        L, R = v >> self.w, v & self._mask
        for key in self._keys:
            L, R = R, L ^ self._round(R, key)
        return (L << self.w) | R

    def _decrypt(self, v: torch.Tensor) -> torch.Tensor:
        L, R = v >> self.w, v & self._mask
        for key in reversed(self._keys):
            L, R = R ^ self._round(L, key), L
        return (L << self.w) | R

    def _walk(self, c: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        y = step(c)
        outside = y >= self.n
        while bool(outside.any()):
            y[outside] = step(y[outside])
            outside = y >= self.n
        return y

    def __call__(self, c: torch.Tensor) -> torch.Tensor:
        """pi(c) for int64 c in [0, n)."""
        return self._walk(c, self._encrypt)

    def inverse(self, r: torch.Tensor) -> torch.Tensor:
        """pi^{-1}(r) for int64 r in [0, n)."""
        return self._walk(r, self._decrypt)


# ---------------------------------------------------------------------------------------------------------
# Metrics


def _metrics(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Metrics of predicted classes pred (n, k) or (S, n, k) against labels (n, k) or (S, n, k)."""
    stacked = pred.dim() == 3
    correct = pred == labels.to(pred.device)  # (..., n, k)
    slot = correct.double().mean(-2)  # (..., k)
    out = {
        "per_slot_accuracy": slot.mean(-1),
        "all_correct_accuracy": correct.all(-1).double().mean(-1),
        "slot_accuracy": slot,
    }
    out = {key: (v.cpu().numpy() if stacked or v.dim() else float(v)) for key, v in out.items()}
    out["n"] = int(labels.shape[-2])
    return out


def _as_slots(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (..., k, 10) from (..., k, 10) or flat (..., 10 k) ones. For k > 1 the last axis tells them
    apart (10 k vs 10) whatever the batch size; for k = 1 a flat (n, 10) or (..., n, 10) with n != 1."""
    flat = logits.dim() >= 2 and logits.shape[-1] == k * N_CLASSES
    if k == 1:
        flat = flat and (logits.dim() == 2 or logits.shape[-2] != 1)
    return logits.reshape(*logits.shape[:-1], k, N_CLASSES) if flat else logits


def composite_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy of composite predictions; the paper's number is ``per_slot_accuracy``.

        per_slot_accuracy    = mean over samples i and slots j of 1[argmax_c logits_ijc = y_ij]
        all_correct_accuracy = mean over samples i of prod_j 1[argmax_c logits_ijc = y_ij]
        slot_accuracy        = for each slot j, the mean over samples

    logits: (n, k, C) or (S, n, k, C) (S stacked replicas); (..., k C) is read as k blocks of C = 10.
    labels: (n, k) integer class ids, shared by all replicas, or (S, n, k). Returns floats and a (k,) array,
    or (S,) and (S, k) arrays for stacked logits, and ``n``.

    Example::

        composite_accuracy(torch.tensor([[[0.9, 0.1], [0.2, 0.8]]]), torch.tensor([[0, 0]]))
        # {'per_slot_accuracy': 0.5, 'all_correct_accuracy': 0.0, 'slot_accuracy': array([1., 0.]), 'n': 1}
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise InvalidType("logits and labels must be torch.Tensors")
    if labels.dim() not in (2, 3) or labels.is_floating_point():
        raise InvalidValue(
            f"labels must be integer class ids of shape (n, k) or (S, n, k), got {labels.shape}"
        )
    k = labels.shape[-1]
    logits = _as_slots(logits, k)
    if logits.dim() not in (3, 4) or logits.shape[-2] != k or logits.shape[-3] != labels.shape[-2]:
        raise InvalidValue(
            f"logits must have shape (n, k, C) or (S, n, k, C) matching labels {tuple(labels.shape)}, "
            f"got {tuple(logits.shape)}"
        )
    if labels.dim() == 3 and (logits.dim() != 4 or labels.shape[0] != logits.shape[0]):
        raise InvalidValue(f"labels (S, n, k) need logits (S, n, k, C), got {tuple(logits.shape)}")
    return _metrics(logits.argmax(-1), labels)


# ---------------------------------------------------------------------------------------------------------


class CompositionalCIFAR:
    """Composites of k CIFAR-10 images with a combinatorial hold-out of class tuples (module docstring).

    Parameters
    ----------
    k : number of images per composite (1..18; the paper uses 1..8).
    n_train : size of the fixed training set, or None for on-the-fly training batches only.
    holdout_fraction : fraction of the 10^k class tuples never seen in training (k >= 2; ignored at k = 1).
    n_test : size of each fixed test set (seen and unseen combinations).
    data : :class:`~modscale.data.Cifar10Arrays` to use instead of loading (e.g. a subset); must hold every
        class in both splits.
    data_dir : passed to :func:`~modscale.data.load_cifar10` when ``data`` is None.
    cache_dir : passed to :func:`~modscale.data.load_cifar10` when ``data`` is None.
    generator : torch.Generator, int seed or None (seed 0): the held-out tuples, the fixed training set and
        the fixed test sets all derive from it.
    device : where images are stored and composites built: "cpu" (default), "cuda", "auto".
    """

    def __init__(
        self,
        k: int,
        n_train: int | None = None,
        *,
        holdout_fraction: float = 0.2,
        n_test: int = 10_000,
        data: Cifar10Arrays | None = None,
        data_dir=None,
        cache_dir=None,
        generator: torch.Generator | int | None = None,
        device: str | torch.device = "cpu",
    ):
        # Every argument is checked before the data is touched.
        self.k = check_int("k", k, low=1, high=MAX_K)
        self.n_train = None if n_train is None else check_int("n_train", n_train, low=1)
        self.n_test = check_int("n_test", n_test, low=1)
        if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, numbers.Real):
            raise InvalidType(f"holdout_fraction must be a number in [0, 1), got {holdout_fraction!r}")
        if not 0 <= holdout_fraction < 1:
            raise InvalidValue(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        self.holdout_fraction = float(holdout_fraction)
        self.device = resolve_device(device)
        gen = as_generator(generator)
        if data is not None and not isinstance(data, Cifar10Arrays):
            raise InvalidType(
                f"data must be a Cifar10Arrays (from load_cifar10) or None, got {type(data).__name__}"
            )
        self.n_tuples = N_CLASSES**self.k
        self.n_holdout = round(self.holdout_fraction * self.n_tuples) if self.k >= 2 else 0
        if self.n_holdout >= self.n_tuples:
            raise InvalidValue(f"holdout_fraction {holdout_fraction} leaves no class tuple for training")

        self._perm = TuplePermutation(self.n_tuples, gen)
        self._seeds = {name: _draw_seed(gen) for name in ("train", "seen", "unseen", "noise")}
        if data is None:
            data = load_cifar10(data_dir, cache_dir)
        self._set_data(data)
        # For k <= TABLE_MAX_K, the class tuple of every rank r (pi^{-1}(r), decoded) is tabulated once, so
        # sampling is one gather; larger k evaluates pi^{-1} on the fly. Both give identical tuples.
        self._table = None
        if self.k <= TABLE_MAX_K:
            ranks = torch.arange(self.n_tuples, dtype=torch.int64)
            self._table = self._codes_to_labels(self._perm.inverse(ranks)).to(torch.uint8)  # (N, k)
        self._fixed: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"CompositionalCIFAR(k={self.k}, n_train={self.n_train}, "
            f"holdout_fraction={self.holdout_fraction}, n_test={self.n_test}, device='{self.device}')"
        )

    # data -----------------------------------------------------------------------------------------------
    def _set_data(self, data: Cifar10Arrays) -> None:
        self._images, self._labels, self._by_class = {}, {}, {}
        for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) or y.shape != x.shape[:1]:
                raise InvalidValue(
                    f"data {split}: need uint8 images (N, 32, 32, 3) and N labels, got {x.shape}, {y.shape}"
                )
            if not np.issubdtype(y.dtype, np.integer) or y.size == 0 or y.min() < 0 or y.max() >= N_CLASSES:
                raise InvalidValue(f"data {split} labels must be a non-empty array of integers in 0..9")
            counts = np.bincount(y, minlength=N_CLASSES)
            if (counts == 0).any():
                raise InvalidValue(f"data {split} split must hold every class 0..9, counts {counts.tolist()}")
            if split == "train":
                mean, std = self._channel_moments(x)
                self.mean, self.std = mean, std  # (3,) float64 on the 0..255 scale
            # Rows of 32 pixels, ordered (image, channel, row): a composite row-gathers into (B, 3, 32, k 32).
            rows = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().reshape(-1, 32)
            self._images[split] = rows.to(self.device)  # (N 3 32, 32) uint8
            labels = torch.from_numpy(y.astype(np.int64))
            order = torch.argsort(labels, stable=True)
            counts_t = torch.from_numpy(counts)
            start = torch.cumsum(counts_t, 0) - counts_t
            self._labels[split] = labels
            self._by_class[split] = (order, start, counts_t)  # images of class c: order[start[c]:+count[c]]
        self._scale = torch.tensor(1 / self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._shift = torch.tensor(self.mean / self.std, dtype=torch.float32, device=self.device).view(
            1, 3, 1, 1
        )
        # Offsets of the 96 rows (3 channels x 32 rows) of one image, in composite order (channel, row).
        self._row_offsets = (torch.arange(3).view(3, 1) * 32 + torch.arange(32).view(1, 32)).view(1, 3, 32, 1)

    @staticmethod
    def _channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact per-channel mean and standard deviation of uint8 pixels (N, 32, 32, 3), from integer sums.

        Each image's 1024 pixels are summed in float32 in 4 blocks of 256: a block's sum of squares is at
        most 256 * 255^2 < 2^24, so every float32 partial sum is an exactly represented integer whatever the
        summation order; the block sums are added in float64 (exact below 2^53). Four times faster than
        int64 sums, and the same numbers.
        """
        blocks = torch.from_numpy(np.ascontiguousarray(x)).view(len(x), 4, 256, 3)
        s1 = torch.zeros(3, dtype=torch.float64)
        s2 = torch.zeros(3, dtype=torch.float64)
        for start in range(0, len(x), 2048):  # 2048 images (25 MB of float32) at a time bound the memory
            f = blocks[start : start + 2048].float()
            s1 += f.sum(2).double().sum((0, 1))
            s2 += (f * f).sum(2).double().sum((0, 1))
        n = len(x) * 1024
        mean = s1.numpy() / n
        std = np.sqrt(np.maximum(s2.numpy() / n - mean**2, 0.0))
        if (std == 0).any():
            raise InvalidValue("data train images have a constant channel; cannot normalise")
        return mean, std

    # tuples ------------------------------------------------------------------------------------------------
    def _check_which(self, which: str) -> str:
        check_choice("which", which, WHICH)
        if which == "unseen" and self.n_holdout == 0:
            reason = (
                "k = 1 has no combinations" if self.k == 1 else f"holdout_fraction = {self.holdout_fraction}"
            )
            raise InvalidValue(f"there are no unseen combinations: {reason}")
        return which

    def _codes_to_labels(self, codes: torch.Tensor) -> torch.Tensor:
        powers = N_CLASSES ** torch.arange(self.k, dtype=torch.int64)
        return (codes.unsqueeze(-1) // powers) % N_CLASSES  # (n, k)

    def labels_to_codes(self, labels: torch.Tensor) -> torch.Tensor:
        """c = sum_j y_j 10^j for labels (..., k) -> (...,) int64."""
        powers = N_CLASSES ** torch.arange(self.k, dtype=torch.int64)
        return (labels.to(torch.int64).cpu() * powers).sum(-1)

    def is_held_out(self, labels: torch.Tensor) -> torch.Tensor:
        """True where the class tuple (..., k) belongs to the unseen combinations (pi(c) < H)."""
        if (
            not isinstance(labels, torch.Tensor)
            or labels.shape[-1:] != (self.k,)
            or labels.is_floating_point()
        ):
            raise InvalidValue(f"labels must be an integer tensor of shape (..., k={self.k})")
        if ((labels < 0) | (labels >= N_CLASSES)).any():
            raise InvalidValue("labels must be class ids in 0..9")
        codes = self.labels_to_codes(labels)
        return self._perm(codes.reshape(-1)).reshape(codes.shape) < self.n_holdout

    def sample_tuples(self, n: int, which: str = "seen", generator=None) -> torch.Tensor:
        """n class tuples (n, k) int64, uniform over the seen (allowed) or the unseen (held-out) tuples."""
        n = check_int("n", n, low=0)
        self._check_which(which)
        gen = as_generator(generator)
        low, high = (self.n_holdout, self.n_tuples) if which == "seen" else (0, self.n_holdout)
        r = torch.randint(low, high, (n,), generator=gen, dtype=torch.int64)  # ranks pi(c)
        if self._table is not None:
            return self._table[r].long()
        return self._codes_to_labels(self._perm.inverse(r))

    def sample_images(self, labels: torch.Tensor, split: str = "train", generator=None) -> torch.Tensor:
        """Image indices (n, k) into the split: for each slot, uniform among the images of its class."""
        check_choice("split", split, SPLITS)
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() != 2:
            raise InvalidValue(f"labels must be an integer tensor of shape (n, k={self.k})")
        labels = labels.to("cpu", torch.int64)
        gen = as_generator(generator)
        order, start, count = self._by_class[split]
        u = torch.rand(labels.shape, generator=gen, dtype=torch.float64)
        within = (u * count[labels]).long().clamp_max(count[labels] - 1)
        return order[start[labels] + within]

    def slot_marginals(self) -> np.ndarray:
        """Exact training marginals P(y_j = v), (k, 10), by enumerating all 10^k tuples (k <= 6)."""
        if self.k > 6:
            raise InvalidValue(f"slot_marginals enumerates 10^k tuples; allowed for k <= 6, got k = {self.k}")
        codes = torch.arange(self.n_tuples, dtype=torch.int64)
        allowed = self._perm(codes) >= self.n_holdout
        labels = self._codes_to_labels(codes[allowed])  # (N - H, k)
        return np.stack(
            [np.bincount(labels[:, j].numpy(), minlength=N_CLASSES) for j in range(self.k)]
        ) / len(labels)

    # composites --------------------------------------------------------------------------------------------
    def compose(self, indices: torch.Tensor, split: str = "train", noise: float = 0.0, generator=None):
        """Normalised composites (n, 3, 32, 32k) float32 of the split's images ``indices`` (n, k).

        One row gather builds them: row (image, channel, r) of the image table lands at
        (sample, channel, r, slot) of the output, which is the (n, 3, 32, 32k) layout. ``noise`` > 0 adds
        noise * N(0, 1) per pixel after normalisation, drawn on the CPU from ``generator`` (identical on
        every device).
        """
        check_choice("split", split, SPLITS)
        noise = _check_noise(noise)
        if (
            not isinstance(indices, torch.Tensor)
            or indices.is_floating_point()
            or indices.dim() != 2
            or indices.shape[1] != self.k
        ):
            raise InvalidValue(f"indices must be an integer tensor of shape (n, k={self.k})")
        indices = indices.to("cpu", torch.int64)
        n, n_images = indices.shape[0], len(self._labels[split])
        if n and (indices.min() < 0 or indices.max() >= n_images):
            raise InvalidValue(f"indices must lie in [0, {n_images}) for the {split} split")
        rows = indices.view(n, 1, 1, self.k) * 96 + self._row_offsets  # (n, 3, 32, k) rows of 32 pixels
        pixels = (
            self._images[split].index_select(0, rows.view(-1).to(self.device)).view(n, 3, 32, 32 * self.k)
        )
        X = torch.mul(pixels, self._scale).sub_(self._shift)  # uint8 -> float32 in one pass
        if noise > 0:
            X += noise * torch.randn(X.shape, generator=as_generator(generator)).to(self.device)
        return X

    def labels(self, indices: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Class tuples (n, k) int64 of image indices (n, k), on the task's device."""
        check_choice("split", split, SPLITS)
        return self._labels[split][indices.cpu()].to(self.device)

    def sample(
        self, n: int, generator=None, *, split: str = "train", which: str = "seen", noise: float = 0.0
    ):
        """n fresh composites: (X (n, 3, 32, 32k) float32, Y (n, k) int64), tuples from ``which``."""
        n = check_int("n", n, low=1)
        check_choice("split", split, SPLITS)
        noise = _check_noise(noise)
        gen = as_generator(generator)
        idx = self.sample_images(self.sample_tuples(n, which, gen), split, gen)
        return self.compose(idx, split, noise, gen), self.labels(idx, split)

    # fixed sets and training samples ---------------------------------------------------------------------
    def _nested_rows(self, n: int, chunk_seed: Callable[[int], int], split: str, which: str) -> torch.Tensor:
        """n rows (n, k) drawn in whole chunks of CHUNK, chunk c from a generator seeded with chunk_seed(c),
        then cut to n: row r never depends on n, so the first m rows of any larger draw are the draw of m."""
        chunks = []
        for c in range(math.ceil(n / CHUNK)):
            gen = torch.Generator().manual_seed(int(chunk_seed(c)))
            chunks.append(self.sample_images(self.sample_tuples(CHUNK, which, gen), split, gen))
        return torch.cat(chunks)[:n]

    def _fixed_indices(self, name: str, n: int, split: str, which: str) -> torch.Tensor:
        """The task's own fixed set ``name`` of n rows: chunk c seeded by the task's seed for it, plus c."""
        key = f"{name}:{n}"
        if key not in self._fixed:
            base = self._seeds[name]
            self._fixed[key] = self._nested_rows(n, lambda c: base + c, split, which)
        return self._fixed[key]

    def training_rows(self, n: int, chunk_seed: Callable[[int], int]) -> torch.Tensor:
        """A training sample of its own: image indices (n, k) into the training split, seen tuples only.

        Drawn like the fixed training set (chunks of 1024 rows, chunk c from a generator seeded with
        ``chunk_seed(c)``, an int >= 0), so samples are nested in n: the first m rows of the sample of size n
        are the sample of size m. A sweep gives every seed its own ``chunk_seed`` and thus its own sample,
        independent of the task's fixed sets. Example::

            rows = task.training_rows(5000, lambda c: 1000 * seed + c)   # (5000, k), nested in n
        """
        n = check_int("n", n, low=1)
        if not callable(chunk_seed):
            raise InvalidType(
                f"chunk_seed must be a callable chunk index -> int seed, got {type(chunk_seed).__name__}"
            )
        return self._nested_rows(n, chunk_seed, "train", "seen")

    @property
    def train_indices(self) -> torch.Tensor:
        """The fixed training set as image indices (n_train, k) into the training split."""
        if self.n_train is None:
            raise InvalidValue("this task has no fixed training set: pass n_train to CompositionalCIFAR")
        return self._fixed_indices("train", self.n_train, "train", "seen")

    def train_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed training set materialised: (X (n_train, 3, 32, 32k) float32, Y (n_train, k) int64).

        Memory is n_train * k * 12 KiB (about 250 MB for n_train = 5000, k = 4); for larger sets stream it
        with :meth:`batch_source`.
        """
        idx = self.train_indices
        return self.compose(idx, "train"), self.labels(idx, "train")

    def test_indices(self, which: str = "seen") -> torch.Tensor:
        """The fixed test set of ``which`` combinations as image indices (n_test, k) into the test split."""
        self._check_which(which)
        return self._fixed_indices(which, self.n_test, "test", which)

    def batch_source(
        self, batch_size: int
    ) -> Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
        """A ``batch(step, generator) -> (X, Y)`` callable for :func:`modscale.training.train`.

        With ``n_train``: shuffled epochs over the fixed training set (the last batch of an epoch may be
        smaller); epoch e's order is a permutation seeded from one number drawn from ``generator`` at step 0
        and e, so steps must start at 0 and follow each other (as the trainer calls them). Without: fresh
        composites each step, drawn from ``generator``.
        """
        batch_size = check_int("batch_size", batch_size, low=1)
        if self.n_train is None:
            return _BatchSource(self, batch_size)
        return _BatchSource(self, batch_size, self.train_indices.unsqueeze(0))

    def replica_batch_source(
        self, rows: torch.Tensor, batch_size: int, epoch_seeds: Sequence[Callable[[int], int]]
    ) -> Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
        """Per-replica minibatches for a stacked model: ``batch(step, generator) -> (X, Y)`` with
        X (S, B, 3, 32, 32k) and Y (S, B, k), for :func:`modscale.training.train`.

        rows (S, n, k): replica s's own training sample (e.g. :meth:`training_rows`). Replica s walks shuffled
        epochs of ``rows[s]``; epoch e's order is ``torch.randperm(n)`` from a generator seeded with
        ``epoch_seeds[s](e)``, so a replica sees the same batches whatever else is in the stack, and the
        trainer's generator is not used. The last batch of an epoch may be smaller (the same size for every
        replica: they share n).
        """
        batch_size = check_int("batch_size", batch_size, low=1)
        if not isinstance(rows, torch.Tensor) or rows.is_floating_point() or rows.dim() != 3:
            raise InvalidValue(f"rows must be an integer tensor of shape (S, n, k={self.k})")
        if rows.shape[2] != self.k or rows.shape[0] < 1 or rows.shape[1] < 1:
            raise InvalidValue(f"rows must have shape (S >= 1, n >= 1, k={self.k}), got {tuple(rows.shape)}")
        epoch_seeds = list(epoch_seeds)
        if len(epoch_seeds) != rows.shape[0] or not all(callable(f) for f in epoch_seeds):
            raise InvalidValue(
                f"epoch_seeds must hold one callable epoch -> int seed per replica (S = {rows.shape[0]})"
            )
        return _BatchSource(self, batch_size, rows.to("cpu", torch.int64), epoch_seeds)

    # evaluation --------------------------------------------------------------------------------------------
    def test_batches(self, which: str = "seen", noise: float = 0.0, batch_size: int = 500, generator=None):
        """Yield (X, Y) batches of the fixed test set of ``which`` combinations, with optional noise.

        Noise comes from ``generator``; by default from a seed derived from the task's generator, the
        combination set and the noise level, so repeated evaluations see the same noise.
        """
        self._check_which(which)
        noise = _check_noise(noise)
        batch_size = check_int("batch_size", batch_size, low=1)
        if generator is None:
            generator = self._seeds["noise"] + WHICH.index(which) + int(round(noise * 1e6)) * 2
        gen = as_generator(generator)
        idx = self.test_indices(which)
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            yield self.compose(part, "test", noise, gen), self.labels(part, "test")

    @torch.no_grad()
    def evaluate(
        self, predict, which: str = "seen", noise: float = 0.0, *, batch_size: int = 500, generator=None
    ):
        """Metrics of ``predict`` on the fixed test set of ``which`` combinations (see composite_accuracy).

        predict : callable X (B, 3, 32, 32k) -> logits (B, k, 10) or (S, B, k, 10), e.g. a model in eval
            mode. Returns per_slot_accuracy, all_correct_accuracy, slot_accuracy, n, which and noise (floats,
            or (S,) arrays for S stacked replicas).
        """
        if not callable(predict):
            raise InvalidType(
                f"predict must be callable (a model or a function), got {type(predict).__name__}"
            )
        preds, labels = [], []
        for X, Y in self.test_batches(which, noise, batch_size, generator):
            out = _as_slots(predict(X), self.k)
            if out.dim() not in (3, 4) or out.shape[-3:-1] != Y.shape:
                raise InvalidValue(
                    f"predict must return (B, k, 10) or (S, B, k, 10) logits, got {tuple(out.shape)}"
                )
            preds.append(out.argmax(-1))  # keep only the predicted classes: memory O(n k)
            labels.append(Y)
        metrics = _metrics(torch.cat(preds, dim=-2), torch.cat(labels))
        metrics.update(which=which, noise=noise)
        return metrics


class _BatchSource:
    """Training batches for the trainer's batch protocol (:meth:`CompositionalCIFAR.batch_source`,
    :meth:`CompositionalCIFAR.replica_batch_source`).

    rows None: fresh composites each step from the trainer's generator. rows (S, n, k): replica s walks
    shuffled epochs of rows[s], epoch e ordered by a permutation seeded with epoch_seeds[s](e); without
    epoch_seeds (the task's fixed set, S = 1) the seed is b + e with b drawn from the trainer's generator at
    step 0, and batches are (B, ...) rather than (1, B, ...).
    """

    def __init__(self, task: CompositionalCIFAR, batch_size: int, rows=None, epoch_seeds=None):
        self.task, self.B = task, batch_size
        self.rows = rows  # (S, n, k) or None
        self.epoch_seeds = epoch_seeds  # one callable per replica, or None: drawn at step 0
        self.stacked = epoch_seeds is not None
        self._epoch: tuple[int, torch.Tensor] | None = None

    def _order(self, epoch: int) -> torch.Tensor:  # (S, n): each replica's permutation of its rows
        n = self.rows.shape[1]
        perms = [
            torch.randperm(n, generator=torch.Generator().manual_seed(int(f(epoch))))
            for f in self.epoch_seeds
        ]
        return torch.stack(perms)

    def __call__(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        task, B = self.task, self.B
        if self.rows is None:
            return task.sample(B, generator)
        if not self.stacked and (step == 0 or self.epoch_seeds is None):
            base = _draw_seed(as_generator(generator))
            self.epoch_seeds = [lambda e: base + e]
            self._epoch = None  # a new run: an order cached by an earlier run must not be reused
        epoch, pos = divmod(step, math.ceil(self.rows.shape[1] / B))
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._order(epoch))
        take = self._epoch[1][:, pos * B : (pos + 1) * B]  # (S, b)
        idx = torch.gather(self.rows, 1, take.unsqueeze(-1).expand(-1, -1, task.k))  # (S, b, k)
        S, b, k = idx.shape
        X = task.compose(idx.reshape(S * b, k), "train")  # (S b, 3, 32, 32k)
        Y = task.labels(idx.reshape(S * b, k), "train")  # (S b, k)
        if not self.stacked:
            return X, Y
        return X.view(S, b, *X.shape[1:]), Y.view(S, b, k)


__all__ = ["CompositionalCIFAR", "TuplePermutation", "composite_accuracy", "NOISE_LEVELS"]
