"""MLP and ModularNet (DESIGN section 3): stacked replicas, modular formula, parameter counts, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modscale.errors import InvalidType, InvalidValue
from modscale.models import MLP, PROJECTIONS, AdditiveIndexNet, ModularNet


def numel_per_replica(net) -> int:
    total = sum(p.numel() for p in net.parameters())
    assert total % net.n_replicas == 0
    return total // net.n_replicas


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 9),
    w=st.integers(1, 12),
    L=st.integers(1, 4),
    o=st.integers(1, 3),
    S=st.integers(1, 3),
)
def test_mlp_count_matches_numel(d, w, L, o, S):
    net = MLP(d, w, L, out_dim=o, n_replicas=S, generator=0)
    assert MLP.count_parameters(d, w, L, o) == numel_per_replica(net)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 8),
    K=st.integers(1, 5),
    b=st.integers(1, 8),
    w=st.integers(1, 9),
    L=st.integers(1, 3),
    o=st.integers(1, 3),
    proj=st.sampled_from(PROJECTIONS),
    h=st.none() | st.integers(1, 6),
    S=st.integers(1, 2),
)
def test_modular_count_matches_numel(d, K, b, w, L, o, proj, h, S):
    b = min(b, d)
    net = ModularNet(d, K, b, w, L, proj, out_dim=o, n_replicas=S, generator=1, projection_width=h)
    expected = ModularNet.count_parameters(d, K, b, w, L, proj, o, projection_width=h)
    assert expected == numel_per_replica(net)


@pytest.mark.parametrize("p", [1, 50, 333, 1000, 12_345, 10**5])
def test_width_for_is_the_closest_count(p):
    """Second route: brute force over all widths up to well past the answer."""
    for count, width_for in (
        (lambda w: MLP.count_parameters(8, w, 2), lambda: MLP.width_for(p, 8, 2)),
        (lambda w: MLP.count_parameters(3, w, 1, 2), lambda: MLP.width_for(p, 3, 1, 2)),
        (
            lambda w: ModularNet.count_parameters(16, 4, 1, w, 2),
            lambda: ModularNet.width_for(p, 16, 4, 1, 2),
        ),
        (
            lambda w: ModularNet.count_parameters(6, 3, 2, w, 1, "nonlinear"),
            lambda: ModularNet.width_for(p, 6, 3, 2, 1, "nonlinear"),
        ),
    ):
        w = width_for()
        best = min(range(1, 3 * w + 10), key=lambda v: (abs(count(v) - p), v))
        assert abs(count(w) - p) == abs(count(best) - p)


def _nets(S, generator):
    yield MLP(5, 6, 2, out_dim=2, n_replicas=S, generator=generator)
    for proj in PROJECTIONS:
        yield ModularNet(5, 3, 2, 4, 2, proj, out_dim=2, n_replicas=S, generator=generator)


def test_forward_shapes_shared_and_per_replica_input():
    x = torch.randn(7, 5)
    for net in _nets(3, 0):
        out = net(x)
        assert out.shape == (3, 7, 2)
        torch.testing.assert_close(net(x.expand(3, 7, 5).contiguous()), out)
    for net in _nets(1, 0):
        assert net(x).shape == (7, 2)
        assert net(x.unsqueeze(0)).shape == (1, 7, 2)


def test_replica_s_equals_single_network_with_seed_s():
    seeds = [11, 22, 33]
    x = torch.randn(9, 5)
    singles_by_net = zip(*(_nets(1, s) for s in seeds), strict=True)
    for stacked, singles in zip(_nets(3, seeds), singles_by_net, strict=True):
        for s, single in enumerate(singles):
            for p_stack, p_one in zip(stacked.parameters(), single.parameters(), strict=True):
                assert torch.equal(p_stack[s], p_one[0])
            torch.testing.assert_close(stacked(x)[s], single(x), rtol=1e-6, atol=1e-6)
            assert torch.equal(stacked.replica(s)(x), single(x))
    # one shared generator: replica 0 is the network that generator alone builds, and replicas differ
    for stacked, single in zip(_nets(2, 5), _nets(1, 5), strict=True):
        for p_stack, p_one in zip(stacked.parameters(), single.parameters(), strict=True):
            assert torch.equal(p_stack[0], p_one[0])
        assert not torch.equal(stacked.weights[-1][0], stacked.weights[-1][1])


def test_replicas_are_independent():
    x = torch.randn(6, 5)
    for net in _nets(3, [0, 1, 2]):
        out = net(x)
        out[1].sum().backward()
        for p in net.parameters():
            assert p.grad[0].abs().max() == 0 and p.grad[2].abs().max() == 0
        assert sum(float(p.grad[1].abs().sum()) for p in net.parameters()) > 0


def test_mlp_is_the_plain_relu_network():
    net = MLP(4, 5, 2, out_dim=3, n_replicas=2, generator=[3, 4])
    x = torch.randn(8, 4)
    for s in range(2):
        W, c = [w[s] for w in net.weights], [b[s] for b in net.biases]
        h = torch.relu(x @ W[0] + c[0])
        h = torch.relu(h @ W[1] + c[1])
        torch.testing.assert_close(net(x)[s], h @ W[2] + c[2])


def test_default_init_matches_torch_linear_bounds():
    net = MLP(64, 256, 1, n_replicas=2, generator=0)
    W0 = net.weights[0]
    bound = 64**-0.5
    assert W0.abs().max() <= bound
    assert float(W0.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("proj", PROJECTIONS)
def test_modular_net_is_a_scaled_sum_of_module_mlps(proj):
    """Second route: evaluate every module separately with a Python loop and sum with 1/sqrt(K)."""
    K, b, d = 3, 2, 5
    net = ModularNet(d, K, b, 4, 2, proj, out_dim=2, n_replicas=2, generator=[7, 8])
    x = torch.randn(10, d)
    z_all = net.module_inputs(x)
    for s in range(2):
        total = 0
        for i in range(K):
            if proj in ("linear", "fixed"):
                z = x @ net.U[s, i].T
            elif proj == "none":
                z = x
            else:
                z = torch.tanh(x @ net.A[s, i].T + net.c[s, i]) @ net.V[s, i].T
            torch.testing.assert_close(z_all[s, i], z)
            h = torch.relu(z @ net.weights[0][s, i] + net.biases[0][s, i])
            h = torch.relu(h @ net.weights[1][s, i] + net.biases[1][s, i])
            total = total + h @ net.weights[2][s, i] + net.biases[2][s, i]
        torch.testing.assert_close(net(x)[s], total / math.sqrt(K), rtol=1e-5, atol=1e-6)


def test_projections_initial_rows_unit_norm_and_set_projections():
    net = ModularNet(6, 4, 2, 3, 1, n_replicas=3, generator=0)
    U = net.projections
    assert U.shape == (3, 4, 2, 6)
    torch.testing.assert_close(U.norm(dim=-1), torch.ones(3, 4, 2))
    new = torch.randn(4, 2, 6)
    net.set_projections(new)
    torch.testing.assert_close(net.projections, new.expand(3, 4, 2, 6))
    per = torch.randn(3, 4, 2, 6)
    net.set_projections(per)
    torch.testing.assert_close(net.projections, per)
    x = torch.randn(5, 6)
    torch.testing.assert_close(net.module_inputs(x), torch.einsum("skbd,nd->sknb", per, x))
    with pytest.raises(InvalidValue, match="U must have shape"):
        net.set_projections(torch.randn(4, 2, 5))
    with pytest.raises(InvalidValue, match="finite"):
        net.set_projections(torch.full((4, 2, 6), float("nan")))
    for proj in ("none", "nonlinear"):
        with pytest.raises(InvalidValue, match="set_projections"):
            ModularNet(6, 4, 2, 3, 1, proj).set_projections(new)
    with pytest.raises(InvalidValue, match="nonlinear"):
        _ = ModularNet(6, 4, 2, 3, 1, "nonlinear").projections
    eye = ModularNet(6, 4, None, 3, 1, "none", n_replicas=2).projections
    assert eye.shape == (2, 4, 6, 6) and torch.equal(eye[1, 3], torch.eye(6))


def test_fixed_projections_are_not_trained():
    net = ModularNet(6, 2, 1, 3, 1, "fixed", generator=0)
    assert all(p is not net.U for p in net.parameters())
    assert "U" in dict(net.named_buffers())
    before = net.projections.clone()
    loss = net(torch.randn(20, 6)).pow(2).mean()
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    assert torch.equal(net.projections, before)


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: MLP(0, 4, 1), InvalidValue, "in_dim"),
        (lambda: MLP(3, 4, 0), InvalidValue, "depth"),
        (lambda: MLP(3, 4, 1, n_replicas=0), InvalidValue, "n_replicas"),
        (lambda: MLP(3, 4, 1, n_replicas=2, generator=[1, 2, 3]), InvalidValue, "generator"),
        (lambda: MLP(3, 4, 1, generator="x"), InvalidType, "generator"),
        (lambda: ModularNet(3, 2, 4, 4, 1), InvalidValue, "module_dim"),
        (lambda: ModularNet(3, 0, 1, 4, 1), InvalidValue, "n_modules"),
        (lambda: ModularNet(3, 2, 1, 4, 1, "mixture"), InvalidValue, "projection"),
        (lambda: ModularNet(3, 2, 1, 4, 1, n_replicas=0), InvalidValue, "n_replicas"),
    ],
)
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_forward_input():
    for net in _nets(2, 0):
        with pytest.raises(InvalidValue, match="x must have shape"):
            net(torch.randn(4, 6))
        with pytest.raises(InvalidValue, match="x must have shape"):
            net(torch.randn(3, 4, 5))  # 3 replicas of input for a 2-replica network
        with pytest.raises(InvalidType, match="floating"):
            net(torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(InvalidValue, match="replica"):
        MLP(3, 4, 1, n_replicas=2).replica(2)


@pytest.mark.parametrize("projection", ["linear", "none", "nonlinear"])
def test_module_outputs_sum_to_the_forward_pass(projection):
    net = ModularNet(6, 3, 2, 8, 2, out_dim=2, projection=projection, n_replicas=2, generator=0)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    parts = net.module_outputs(x)  # (S, K, n, out)
    assert parts.shape == (2, 3, 5, 2)
    torch.testing.assert_close(parts.sum(1), net(x))
    # module i alone: its own MLP on its own inputs, scaled by 1 / sqrt(K)
    Z = net.module_inputs(x)  # (S, K, n, b)
    h = Z
    for i, (W, c) in enumerate(zip(net.weights, net.biases, strict=True)):
        h = h @ W + c.unsqueeze(-2)
        if i < len(net.weights) - 1:
            h = torch.relu(h)
    torch.testing.assert_close(parts, h / 3**0.5)
    if projection != "none":  # the modules on their own inputs (b = 2 here), as the shape functions read them
        torch.testing.assert_close(net.module_functions(Z), parts)


def test_module_functions_rejects_inputs_of_the_wrong_shape():
    net = ModularNet(6, 3, 2, 8, 2, n_replicas=2, generator=0)
    with pytest.raises(InvalidValue, match=r"module inputs must have shape \(S=2, K=3, n, 2\)"):
        net.module_functions(torch.zeros(2, 3, 5, 1))


def test_additive_index_net_is_the_linear_term_plus_the_modules():
    net = ModularNet(6, 3, 1, 8, 2, out_dim=2, generator=0)
    W = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    f = AdditiveIndexNet(net, W)
    with torch.no_grad():
        f.c.copy_(torch.tensor([[0.5, -1.0]]))
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    by_hand = x @ W + torch.tensor([0.5, -1.0]) + net.module_outputs(x)[0].sum(0)  # second route
    torch.testing.assert_close(f(x), by_hand)
    torch.testing.assert_close(f(x.unsqueeze(0))[0], by_hand)  # the trainer's stacked layout
    torch.testing.assert_close(f.linear(x), x @ W + torch.tensor([0.5, -1.0]))
    bare = AdditiveIndexNet(net)
    torch.testing.assert_close(bare(x), net(x))
    torch.testing.assert_close(bare.linear(x), torch.zeros(7, 2))
    assert sum(p.numel() for p in f.parameters()) == sum(p.numel() for p in net.parameters()) + 6 * 2 + 2
    with pytest.raises(InvalidValue, match=r"W must have shape \(in_dim, out_dim\) = \(6, 2\)"):
        AdditiveIndexNet(net, torch.zeros(6, 1))
    with pytest.raises(InvalidValue, match="one replica"):
        AdditiveIndexNet(ModularNet(6, 3, 1, 8, 2, n_replicas=2, generator=0))
