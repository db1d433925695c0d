"""modscale.models.image: parameter counts, batched modules vs a per-module loop, replicas, projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from modscale.errors import InvalidType, InvalidValue
from modscale.models.image import ImageModularNet, MonolithicCNN, slot_cross_entropy


def numel(net: torch.nn.Module) -> int:
    """Trainable parameters of one replica, counted on the real tensors."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad) // net.n_replicas


# ---------------------------------------------------------------------------------------------------------
# Closed-form counts vs numel


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 5),
    K=st.integers(1, 5),
    channels=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    hidden=st.integers(1, 9),
    projection=st.sampled_from(["linear", "fixed"]),
)
def test_modular_count_equals_numel(k, K, channels, hidden, projection):
    net = ImageModularNet(k, K, channels, hidden, projection, n_replicas=2)
    assert net.count() == numel(net) == ImageModularNet.count_parameters(k, K, channels, hidden, projection)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 6),
    channels=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    hidden=st.integers(1, 9),
)
def test_monolithic_count_equals_numel(k, channels, hidden):
    net = MonolithicCNN(k, channels, hidden, n_replicas=2)
    assert net.count() == numel(net) == MonolithicCNN.count_parameters(k, channels, hidden)


def test_fixed_projections_are_a_buffer_not_a_parameter():
    net = ImageModularNet(3, 2, projection="fixed")
    assert "W" in dict(net.named_buffers()) and "W" not in dict(net.named_parameters())
    assert numel(ImageModularNet(3, 2, projection="linear")) - numel(net) == 2 * 3


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_hidden_for_matches_the_modular_count(k):
    modular = ImageModularNet(k, k)
    h = MonolithicCNN.hidden_for(modular.count(), k)
    target = modular.count()
    best = abs(MonolithicCNN.count_parameters(k, hidden=h) - target)
    for other in (h - 1, h + 1):
        assert best <= abs(MonolithicCNN.count_parameters(k, hidden=other) - target)
    assert best / target < 0.02  # the count is affine in h: within half a hidden unit


# ---------------------------------------------------------------------------------------------------------
# The batched computation equals a plain per-module, per-replica loop (second route)


def reference_modular(net: ImageModularNet, x: torch.Tensor) -> torch.Tensor:
    """(S, n, k, 10) by looping over replicas and modules with ordinary (ungrouped) convolutions."""
    S, K, k = net.n_replicas, net.n_modules, net.k_slots
    outs = []
    for s in range(S):
        xs = x if x.dim() == 4 else x[s]
        slots = [xs[..., 32 * j : 32 * (j + 1)] for j in range(k)]
        total = 0
        for i in range(K):
            z = sum(net.W[s, i, j] * slots[j] for j in range(k))
            for w, b in zip(net.conv_weights, net.conv_biases, strict=True):
                z = F.max_pool2d(torch.relu(F.conv2d(z, w[s, i], b[s, i], padding=1)), 2)
            h = z.flatten(1)
            h = torch.relu(h @ net.dense_weights[0][s, i] + net.dense_biases[0][s, i])
            total = total + h @ net.dense_weights[1][s, i] + net.dense_biases[1][s, i]
        outs.append(total.view(-1, k, 10))
    return torch.stack(outs)


def reference_monolithic(net: MonolithicCNN, x: torch.Tensor) -> torch.Tensor:
    outs = []
    for s in range(net.n_replicas):
        z = x if x.dim() == 4 else x[s]
        for w, b in zip(net.conv_weights, net.conv_biases, strict=True):
            z = F.max_pool2d(torch.relu(F.conv2d(z, w[s], b[s], padding=1)), 2)
        h = torch.relu(z.flatten(1) @ net.dense_weights[0][s] + net.dense_biases[0][s])
        outs.append((h @ net.dense_weights[1][s] + net.dense_biases[1][s]).view(-1, net.k_slots, 10))
    return torch.stack(outs)


@pytest.mark.parametrize(("k", "K", "channels"), [(1, 1, (4,)), (3, 2, (4, 6)), (2, 4, (3, 5, 4))])
@pytest.mark.parametrize("shared", [True, False])
def test_modular_forward_equals_per_module_loop(k, K, channels, shared):
    net = ImageModularNet(k, K, channels, hidden=7, n_replicas=3, generator=[0, 1, 2])
    gen = torch.Generator().manual_seed(5)
    x = (
        torch.randn(5, 3, 32, 32 * k, generator=gen)
        if shared
        else torch.randn(3, 5, 3, 32, 32 * k, generator=gen)
    )
    torch.testing.assert_close(net(x), reference_modular(net, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_monolithic_forward_equals_per_replica_loop(shared):
    k = 3
    net = MonolithicCNN(k, (4, 6), hidden=7, n_replicas=3, generator=[0, 1, 2])
    gen = torch.Generator().manual_seed(5)
    x = (
        torch.randn(5, 3, 32, 32 * k, generator=gen)
        if shared
        else torch.randn(3, 5, 3, 32, 32 * k, generator=gen)
    )
    torch.testing.assert_close(net(x), reference_monolithic(net, x), rtol=1e-4, atol=1e-5)


def test_output_shapes_single_replica():
    x = torch.randn(4, 3, 32, 64)
    assert ImageModularNet(2, 3)(x).shape == (4, 2, 10)
    assert MonolithicCNN(2)(x).shape == (4, 2, 10)
    assert ImageModularNet(2, 3)(x.unsqueeze(0)).shape == (1, 4, 2, 10)  # the trainer's (1, n, ...) call
    assert MonolithicCNN(2)(x.unsqueeze(0)).shape == (1, 4, 2, 10)


# ---------------------------------------------------------------------------------------------------------
# Stacked replicas


@pytest.mark.parametrize("cls", [ImageModularNet, MonolithicCNN])
def test_replica_equals_single_network_with_its_seed(cls):
    args = (2, 3) if cls is ImageModularNet else (2,)
    stack = cls(*args, channels=(4, 5), hidden=6, n_replicas=3, generator=[7, 8, 9])
    single = cls(*args, channels=(4, 5), hidden=6, generator=8)
    for (name, p), q in zip(stack.named_parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(p[1:2], q, rtol=0, atol=0, msg=name)
    x = torch.randn(4, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(stack(x)[1], single(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stack.replica(1)(x), single(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [ImageModularNet, MonolithicCNN])
def test_replicas_do_not_share_gradients(cls):
    args = (2, 2) if cls is ImageModularNet else (2,)
    net = cls(*args, channels=(3,), hidden=4, n_replicas=3)
    x = torch.randn(3, 4, 3, 32, 64)
    y = torch.randint(0, 10, (4, 2))
    slot_cross_entropy(net(x), y)[1].backward()  # replica 1's loss only
    for name, p in net.named_parameters():
        assert p.grad[1].abs().sum() > 0, name
        assert p.grad[0].abs().sum() == 0 and p.grad[2].abs().sum() == 0, name


# ---------------------------------------------------------------------------------------------------------
# Projections


def test_one_hot_projections_route_slot_i_to_module_i():
    k = 3
    net = ImageModularNet(k, k, n_replicas=2)
    net.set_projections(torch.eye(k))
    x = torch.randn(2, 3, 32, 32 * k)
    z = net.module_inputs(x)  # (S, K, n, 3, 32, 32)
    assert z.shape == (2, k, 2, 3, 32, 32)
    for i in range(k):
        torch.testing.assert_close(z[:, i], x[..., 32 * i : 32 * (i + 1)].expand(2, *x.shape[:-1], 32))


def test_random_projections_are_unit_vectors():
    W = ImageModularNet(5, 6, n_replicas=2).projections
    torch.testing.assert_close(W.norm(dim=-1), torch.ones(2, 6))
    assert not torch.allclose(W[0], W[1])


def test_set_projections_per_replica_and_errors():
    net = ImageModularNet(2, 3, n_replicas=2)
    W = torch.randn(2, 3, 2)
    net.set_projections(W)
    torch.testing.assert_close(net.projections, W)
    with pytest.raises(InvalidValue, match=r"W must have shape \(3, 2\) or \(2, 3, 2\)"):
        net.set_projections(torch.randn(3, 3))
    with pytest.raises(InvalidValue, match="finite"):
        net.set_projections(torch.full((3, 2), float("nan")))
    with pytest.raises(InvalidType, match="torch.Tensor"):
        net.set_projections([[1.0, 0.0]] * 3)


def test_linear_projections_learn_and_fixed_do_not():
    x = torch.randn(4, 3, 32, 64)
    y = torch.randint(0, 10, (4, 2))
    learn = ImageModularNet(2, 2, channels=(3,), hidden=4)
    slot_cross_entropy(learn(x), y).backward()
    assert learn.W.grad is not None and learn.W.grad.abs().sum() > 0
    fixed = ImageModularNet(2, 2, channels=(3,), hidden=4, projection="fixed")
    slot_cross_entropy(fixed(x), y).backward()
    assert fixed.W.grad is None


# ---------------------------------------------------------------------------------------------------------
# Loss


def test_slot_cross_entropy_is_the_sum_of_slot_cross_entropies():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 10, generator=gen)
    labels = torch.randint(0, 10, (6, 3), generator=gen)
    manual = sum(F.cross_entropy(logits[:, j], labels[:, j], reduction="none") for j in range(3))
    torch.testing.assert_close(slot_cross_entropy(logits, labels, "none"), manual)
    torch.testing.assert_close(slot_cross_entropy(logits, labels), manual.mean())
    stacked = torch.stack([logits, 2 * logits])  # (S, n, k, 10) with shared labels
    per = slot_cross_entropy(stacked, labels, "none")
    assert per.shape == (2, 6)
    torch.testing.assert_close(per[0], manual)


def test_slot_cross_entropy_of_uniform_logits_is_k_log_10():
    loss = slot_cross_entropy(torch.zeros(5, 4, 10), torch.randint(0, 10, (5, 4)))
    torch.testing.assert_close(loss, torch.tensor(4 * torch.log(torch.tensor(10.0)).item()))


def test_slot_cross_entropy_bad_input():
    with pytest.raises(InvalidValue, match="logits must be"):
        slot_cross_entropy(torch.zeros(5, 4, 9), torch.zeros(5, 4, dtype=torch.long))
    with pytest.raises(InvalidValue, match="integer"):
        slot_cross_entropy(torch.zeros(5, 4, 10), torch.zeros(5, 4))
    with pytest.raises(InvalidValue, match="reduction"):
        slot_cross_entropy(torch.zeros(5, 4, 10), torch.zeros(5, 4, dtype=torch.long), "sum")


# ---------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k_slots": 0, "n_modules": 2}, InvalidValue, "k_slots"),
        ({"k_slots": 2, "n_modules": 0}, InvalidValue, "n_modules"),
        ({"k_slots": 2, "n_modules": 2, "channels": ()}, InvalidType, "channels"),
        ({"k_slots": 2, "n_modules": 2, "channels": (2,) * 6}, InvalidValue, "at most 5"),
        ({"k_slots": 2, "n_modules": 2, "channels": (4, 0)}, InvalidValue, r"channels\[1\]"),
        ({"k_slots": 2, "n_modules": 2, "hidden": 0}, InvalidValue, "hidden"),
        ({"k_slots": 2, "n_modules": 2, "projection": "none"}, InvalidValue, "projection"),
        (
            {"k_slots": 2, "n_modules": 2, "n_replicas": 2, "generator": [1]},
            InvalidValue,
            "one entry per replica",
        ),
        ({"k_slots": 2.5, "n_modules": 2}, InvalidType, "k_slots"),
    ],
)
def test_modular_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageModularNet(**kwargs)


def test_bad_inputs_to_forward():
    net = ImageModularNet(2, 2, n_replicas=2)
    with pytest.raises(InvalidValue, match=r"\(n, 3, 32, 64\)"):
        net(torch.randn(4, 3, 32, 96))
    with pytest.raises(InvalidValue, match="n_replicas=2"):
        net(torch.randn(3, 4, 3, 32, 64))
    with pytest.raises(InvalidType, match="floating-point"):
        net(torch.zeros(4, 3, 32, 64, dtype=torch.uint8))
    with pytest.raises(InvalidValue, match="k_slots"):
        MonolithicCNN(0)
    with pytest.raises(InvalidValue, match="p must be"):
        MonolithicCNN.hidden_for(0, 2)


# ---------------------------------------------------------------------------------------------------------
# Training through modscale.training (the stacked-model protocol)


def test_trains_with_the_stacked_trainer():
    """A planted signal: class of slot j is set by the mean brightness of its image; loss must fall."""
    from modscale.training import train

    gen = torch.Generator().manual_seed(0)
    k, n = 2, 64
    Y = torch.randint(0, 10, (n, k), generator=gen)
    X = 0.3 * torch.randn(n, 3, 32, 32 * k, generator=gen)
    X += (Y.float() / 5 - 1).repeat_interleave(32, dim=1).view(n, 1, 1, 32 * k)
    net = ImageModularNet(k, k, channels=(4,), hidden=16, n_replicas=2, generator=[0, 1])
    before = slot_cross_entropy(net(X), Y).detach()
    hist = train(
        net,
        (X, Y),
        steps=60,
        lr=3e-3,
        batch_size=32,
        loss=lambda out, y: slot_cross_entropy(out, y, "none"),
        generator=[0, 1],
        device="cpu",
    )
    after = slot_cross_entropy(net(X), Y).detach()
    assert (after < 0.5 * before).all(), (before, after, hist.as_dict().keys())


@pytest.mark.parametrize("first_groups", [1, 6])
def test_cpu_per_group_convolutions_equal_one_grouped_convolution(first_groups):
    """The CPU path (one dense channels-last convolution per group) against the grouped one (the CUDA
    path): forward values and every gradient agree to rounding (in float64, where rounding is ~1e-16;
    the training test below compares float32 runs)."""
    from modscale.models.image import _conv_blocks_grouped, _conv_blocks_per_group

    gen = torch.Generator().manual_seed(0)
    G, channels, n = 6, (4, 8), 5
    f64 = torch.float64
    z = torch.randn(n, 3 * first_groups, 32, 32, generator=gen, dtype=f64)
    dims = (3, *channels)
    pairs = zip(dims[:-1], dims[1:], strict=True)
    ws = [0.3 * torch.randn(G, co, ci, 3, 3, generator=gen, dtype=f64) for ci, co in pairs]
    bs = [0.1 * torch.randn(G, co, generator=gen, dtype=f64) for co in channels]
    results = []
    for fn in (_conv_blocks_grouped, _conv_blocks_per_group):
        leaves = [t.clone().requires_grad_() for t in (z, *ws, *bs)]
        zz, ww, bb = leaves[0], leaves[1 : 1 + len(ws)], leaves[1 + len(ws) :]
        out = fn(zz, ww, bb, G, first_groups)  # (n, G c_L, 8, 8)
        (out * torch.linspace(-1, 1, out.numel(), dtype=f64).view_as(out)).sum().backward()
        results.append((out.detach(), [t.grad for t in leaves]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert out_a.shape == (n, G * channels[-1], 8, 8)
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-10)


def test_cpu_training_equals_the_grouped_path_to_float32_rounding(monkeypatch):
    """Twenty Adam steps of a stacked modular network with the CPU convolution path and with the grouped
    path (patched in): the same seed ends at the same weights and losses up to float32 rounding."""
    import modscale.models.image as image
    from modscale.training import train

    gen = torch.Generator().manual_seed(1)
    k, n = 2, 32
    Y = torch.randint(0, 10, (n, k), generator=gen)
    X = torch.randn(n, 3, 32, 32 * k, generator=gen)

    def fit():
        net = ImageModularNet(k, k, channels=(4, 8), hidden=16, n_replicas=2, generator=[0, 1])
        hist = train(
            net, (X, Y), steps=20, lr=1e-3, batch_size=16, eval_every=20, generator=[0, 1],
            loss=lambda out, y: slot_cross_entropy(out, y, "none"), device="cpu",
        )  # fmt: skip
        return hist.train, [p.detach().clone() for p in net.parameters()]

    loss_cpu, params_cpu = fit()
    monkeypatch.setattr(image, "_conv_blocks_per_group", image._conv_blocks_grouped)
    loss_grouped, params_grouped = fit()
    np.testing.assert_allclose(loss_cpu, loss_grouped, rtol=1e-5)
    for a, b in zip(params_cpu, params_grouped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [2, 3])
def test_forward_flops_match_torchs_flop_counter(k):
    # second route: torch counts the FLOPs of every conv and matmul the forward pass actually runs
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(5, 3, 32, 32 * k)
    for net, closed in (
        (ImageModularNet(k, k, (8, 16), 12, n_replicas=2, generator=[0, 1]),
         ImageModularNet.forward_flops(k, k, (8, 16), 12)),
        (ImageModularNet(k, 2 * k, (4,), 7, projection="fixed", generator=0),
         ImageModularNet.forward_flops(k, 2 * k, (4,), 7)),
        (MonolithicCNN(k, (8, 16), 12, n_replicas=2, generator=[0, 1]),
         MonolithicCNN.forward_flops(k, (8, 16), 12)),
    ):  # fmt: skip
        with FlopCounterMode(display=False) as counter:
            net(x)
        assert counter.get_total_flops() == closed * x.shape[0] * net.n_replicas
