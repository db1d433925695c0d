"""Networks for Compositional CIFAR-10 (DESIGN section 3): k images side by side, 10 logits per image.

Input x in R^{3 x 32 x 32k}: k slots x_1..x_k of 3 x 32 x 32 each. Output: logits (k, 10).

Image modular network, K modules with slot projections w_i in R^k (PAPER.md claim 4; DESIGN section 3):

    z_i = sum_j w_ij x_j                      (a 3 x 32 x 32 mixture of the slots)
    f(x) = sum_{i=1..K} g_i(z_i)             (g_i a small CNN with 10k outputs, read as (k, 10) logits)

Every g_i has the same architecture: ``len(channels)`` blocks of [3x3 convolution (padding 1), ReLU, 2x2 max
pooling], then a ReLU layer of ``hidden`` units and a linear layer with 10k outputs. All K modules (and all
S stacked replicas) run as one grouped convolution with groups = S K and one batched matmul per dense
layer: there is no Python loop over modules or replicas. The projections W (K, k) are learnable by default
("linear"), or a buffer ("fixed"); they start as random unit vectors, and
:meth:`ImageModularNet.set_projections` sets them, e.g. to the kernel learning rule's answer (the
kernel-initialised network) or to one-hot rows (module i reads slot i).

Monolithic baseline :class:`MonolithicCNN`: the same block architecture on the whole 3 x 32 x 32k image,
with the hidden width chosen so that its parameter count matches a modular network
(:meth:`MonolithicCNN.hidden_for`). With K = k and equal ``hidden`` the two have nearly equal counts: the
dense layer dominates and sees c_L (32/2^L)^2 features per module versus k times that for the monolith.

Parameters per replica (closed forms, :meth:`count_parameters`), with c_0 = 3, channels c_1..c_L, hidden h,
r = 32 / 2^L the side of the last feature map, and k slots:

    conv(c) = sum_l c_l (9 c_{l-1} + 1)
    ImageModularNet:  K [conv(c) + c_L r^2 h + h + 10 k h + 10 k]  +  K k  (projections, "linear" only)
    MonolithicCNN:        conv(c) + c_L r^2 k h + h + 10 k h + 10 k

Forward FLOPs per composite and replica (closed forms, :meth:`forward_flops`; a multiply-add is 2 FLOPs, a
3 x 3 conv keeps the side and a block's 2 x 2 pooling halves it; biases, ReLU and pooling not counted):

    convflops(c, w) = sum_l 2 * 9 c_{l-1} c_l (32 / 2^{l-1}) (w / 2^{l-1})     (an image 32 x w)
    ImageModularNet:  K [convflops(c, 32) + 2 c_L r^2 h + 2 h 10 k]  +  2 K k 3 32^2  (slot mixing)
    MonolithicCNN:        convflops(c, 32 k) + 2 c_L r^2 k h + 2 h 10 k

Initialisation is torch.nn's default: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); replica s of
a stack built from ``generator=[g_0, .., g_S-1]`` equals the single network built from g_s.

Stacked replicas: forward(x) takes x (n, 3, 32, 32k) shared by all replicas or (S, n, 3, 32, 32k) and
returns logits (S, n, k, 10); a single replica fed an unstacked batch returns (n, k, 10).
Loss: :func:`slot_cross_entropy`, the sum of the k per-slot cross-entropies.

Example::

    net = ImageModularNet(k_slots=4, n_modules=4, n_replicas=2, generator=[0, 1])
    net.set_projections(torch.eye(4))              # module i reads slot i, in both replicas
    logits = net(torch.randn(8, 3, 32, 128))       # (2, 8, 4, 10)
    loss = slot_cross_entropy(logits, torch.randint(0, 10, (8, 4)))     # (2,): mean over samples
    mono = MonolithicCNN(4, hidden=MonolithicCNN.hidden_for(net.count(), 4))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modscale._checks import check_choice, check_int
from modscale._torch import GeneratorLike, as_generators
from modscale.errors import InvalidType, InvalidValue
from modscale.models._replicas import Replicated, init_replicas

N_CLASSES = 10
IMAGE_SIDE = 32
IMAGE_PROJECTIONS = ("linear", "fixed")
"""ImageModularNet's slot mixtures: learned, or fixed buffers."""
DEFAULT_CHANNELS = (16, 32)
DEFAULT_HIDDEN = 64


def _check_channels(channels) -> tuple[int, ...]:
    if isinstance(channels, int | str) or not isinstance(channels, Sequence) or len(channels) == 0:
        raise InvalidType(f"channels must be a non-empty sequence of ints, got {channels!r}")
    out = tuple(check_int(f"channels[{i}]", c, low=1) for i, c in enumerate(channels))
    if len(out) > 5:
        raise InvalidValue(f"channels allows at most 5 blocks (32 -> 1 pixel), got {len(out)}")
    return out


def _conv_count(channels: tuple[int, ...]) -> int:
    dims = (3, *channels)
    return sum(c_out * (9 * c_in + 1) for c_in, c_out in zip(dims[:-1], dims[1:], strict=True))


def _conv_flops(channels: tuple[int, ...], width: int) -> int:
    """Forward FLOPs of the conv blocks on one 3 x 32 x width image (module docstring)."""
    flops, h, w, c_in = 0, IMAGE_SIDE, width, 3
    for c_out in channels:
        flops += 2 * 9 * c_in * c_out * h * w
        h, w, c_in = h // 2, w // 2, c_out
    return flops


def _conv_specs(
    groups: tuple[int, ...], channels: tuple[int, ...]
) -> list[tuple[str, tuple[int, ...], float]]:
    """init_replicas specs of every conv block: weight (*groups, c_out, c_in, 3, 3), bias (*groups, c_out)."""
    specs, dims = [], (3, *channels)
    for c_in, c_out in zip(dims[:-1], dims[1:], strict=True):
        bound = (9 * c_in) ** -0.5
        specs += [("uniform", (*groups, c_out, c_in, 3, 3), bound), ("uniform", (*groups, c_out), bound)]
    return specs


def _dense_specs(groups: tuple[int, ...], dims: list[int]) -> list[tuple[str, tuple[int, ...], float]]:
    specs = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
        bound = fan_in**-0.5
        specs += [("uniform", (*groups, fan_in, fan_out), bound), ("uniform", (*groups, fan_out), bound)]
    return specs


def _conv_blocks(z: torch.Tensor, weights, biases, groups: int, first_groups: int) -> torch.Tensor:
    """[conv 3x3, ReLU, max-pool 2] blocks on z (n, groups c_0, H, W); group g uses parameter slice g.

    One grouped convolution per block where the backend is good at them (CUDA). On the CPU oneDNN's grouped
    convolution runs at a third of the speed of the same work as one dense convolution per group in
    channels-last layout (benchmarks/bench_cifar_train.py), so there the groups are walked one by one
    (:func:`_conv_blocks_per_group`); both give the same numbers to float32 rounding
    (tests/test_image_models.py).
    """
    if not z.is_cuda:
        return _conv_blocks_per_group(z, weights, biases, groups, first_groups)
    return _conv_blocks_grouped(z, weights, biases, groups, first_groups)


def _conv_blocks_grouped(z: torch.Tensor, weights, biases, groups: int, first_groups: int) -> torch.Tensor:
    """:func:`_conv_blocks` as one grouped convolution per block (the CUDA path)."""
    for l, (w, b) in enumerate(zip(weights, biases, strict=True)):
        c_in = w.shape[-3]
        z = F.conv2d(
            z, w.reshape(-1, c_in, 3, 3), b.reshape(-1), padding=1, groups=first_groups if l == 0 else groups
        )
        z = torch.relu(F.max_pool2d(z, 2))  # (n, groups c_out, H/2, W/2); relu and max commute
    return z


def _conv_blocks_per_group(z: torch.Tensor, weights, biases, groups: int, first_groups: int) -> torch.Tensor:
    """:func:`_conv_blocks` as one dense channels-last convolution per group and block (the CPU path).

    first_groups is 1 (every group reads the same c_0 channels of z) or ``groups`` (group g reads its own).
    Returns (n, groups c_L, r, r) like the grouped path.
    """
    c0 = weights[0].shape[-3]
    ws = [w.reshape(groups, *w.shape[-4:]) for w in weights]  # (G, c_out, c_in, 3, 3)
    bs = [b.reshape(groups, -1) for b in biases]  # (G, c_out)
    outs = []
    for g in range(groups):
        h = z if first_groups == 1 else z[:, g * c0 : (g + 1) * c0]
        h = h.contiguous(memory_format=torch.channels_last)  # (n, c_0, H, W), NHWC in memory
        for w, b in zip(ws, bs, strict=True):
            h = torch.relu(F.max_pool2d(F.conv2d(h, w[g], b[g], padding=1), 2))  # (n, c_out, H/2, W/2)
        outs.append(h)
    return torch.cat(outs, 1)  # (n, G c_L, r, r)


def _dense(h: torch.Tensor, weights, biases) -> torch.Tensor:
    """ReLU MLP per group: h (G, n, F) with weights (G, fan_in, fan_out) -> (G, n, out)."""
    last = len(weights) - 1
    for l, (W, c) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(c.unsqueeze(1), h, W)  # (G, n, fan_out)
        if l < last:
            h = torch.relu(h)
    return h


class _ImageNet(Replicated):
    """Input checks shared by the image networks."""

    k_slots: int

    def _check_input(self, x) -> bool:
        """True when x (n, 3, 32, 32k) is shared by all replicas, False when it is (S, n, 3, 32, 32k)."""
        if not isinstance(x, torch.Tensor):
            raise InvalidType(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise InvalidType(f"x must be a floating-point tensor, got dtype {x.dtype}")
        image = (3, IMAGE_SIDE, IMAGE_SIDE * self.k_slots)
        if x.dim() == 4 and tuple(x.shape[1:]) == image:
            return True
        if x.dim() == 5 and x.shape[0] == self.n_replicas and tuple(x.shape[2:]) == image:
            return False
        raise InvalidValue(
            f"x must have shape (n, 3, 32, {image[2]}) or (n_replicas={self.n_replicas}, n, 3, 32, "
            f"{image[2]}), got {tuple(x.shape)}"
        )


class ImageModularNet(_ImageNet):
    """K CNN modules on learned mixtures z_i = sum_j w_ij x_j of the k image slots; logits summed.

    Parameters
    ----------
    k_slots : k, the number of images side by side.
    n_modules : K.
    channels : output channels of the conv blocks of every module (default (16, 32)).
    hidden : units of every module's hidden dense layer (default 64).
    projection : "linear" (W learnable, default) or "fixed" (W a buffer, never trained).
    n_replicas : S, the number of independent stacked networks.
    generator : torch.Generator, int seed or None (seed 0) shared by all replicas, or one per replica.
    """

    def __init__(
        self,
        k_slots: int,
        n_modules: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        hidden: int = DEFAULT_HIDDEN,
        projection: str = "linear",
        n_replicas: int = 1,
        generator: GeneratorLike | Sequence[GeneratorLike] = None,
    ):
        super().__init__()
        self.k_slots = check_int("k_slots", k_slots, low=1)
        self.n_modules = check_int("n_modules", n_modules, low=1)
        self.channels = _check_channels(channels)
        self.hidden = check_int("hidden", hidden, low=1)
        self.projection = check_choice("projection", projection, IMAGE_PROJECTIONS)
        self.n_replicas = check_int("n_replicas", n_replicas, low=1)
        gens = as_generators(generator, self.n_replicas)
        K, k = self.n_modules, self.k_slots
        side = IMAGE_SIDE >> len(self.channels)
        dense = [self.channels[-1] * side * side, self.hidden, N_CLASSES * k]
        conv = _conv_specs((K,), self.channels)
        tensors = init_replicas(gens, [("unit_rows", (K, k), 0.0), *conv, *_dense_specs((K,), dense)])
        W, conv_t, dense_t = tensors[0], tensors[1 : 1 + len(conv)], tensors[1 + len(conv) :]
        if self.projection == "linear":
            self.W = nn.Parameter(W)  # (S, K, k)
        else:
            self.register_buffer("W", W)  # (S, K, k), never trained
        self.conv_weights = nn.ParameterList(
            nn.Parameter(t) for t in conv_t[0::2]
        )  # (S, K, c_out, c_in, 3, 3)
        self.conv_biases = nn.ParameterList(nn.Parameter(t) for t in conv_t[1::2])  # (S, K, c_out)
        self.dense_weights = nn.ParameterList(
            nn.Parameter(t) for t in dense_t[0::2]
        )  # (S, K, fan_in, fan_out)
        self.dense_biases = nn.ParameterList(nn.Parameter(t) for t in dense_t[1::2])  # (S, K, fan_out)

    @staticmethod
    def count_parameters(
        k_slots: int,
        n_modules: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        hidden: int = DEFAULT_HIDDEN,
        projection: str = "linear",
    ) -> int:
        """Trainable parameters of one replica (closed form in the module docstring)."""
        k, K = check_int("k_slots", k_slots, low=1), check_int("n_modules", n_modules, low=1)
        c, h = _check_channels(channels), check_int("hidden", hidden, low=1)
        projection = check_choice("projection", projection, IMAGE_PROJECTIONS)
        r = IMAGE_SIDE >> len(c)
        module = _conv_count(c) + c[-1] * r * r * h + h + N_CLASSES * k * h + N_CLASSES * k
        return K * module + (K * k if projection == "linear" else 0)

    def count(self) -> int:
        """This network's trainable parameters per replica (the closed form)."""
        return self.count_parameters(
            self.k_slots, self.n_modules, self.channels, self.hidden, self.projection
        )

    @staticmethod
    def forward_flops(
        k_slots: int,
        n_modules: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        hidden: int = DEFAULT_HIDDEN,
    ) -> int:
        """Forward FLOPs per composite of one replica (closed form in the module docstring; fixed and
        learned projections cost the same); training costs about 3 times this per composite."""
        k, K = check_int("k_slots", k_slots, low=1), check_int("n_modules", n_modules, low=1)
        c, h = _check_channels(channels), check_int("hidden", hidden, low=1)
        r = IMAGE_SIDE >> len(c)
        module = _conv_flops(c, IMAGE_SIDE) + 2 * c[-1] * r * r * h + 2 * h * N_CLASSES * k
        return K * module + 2 * K * k * 3 * IMAGE_SIDE * IMAGE_SIDE

    # projections ------------------------------------------------------------------------------------------
    @property
    def projections(self) -> torch.Tensor:
        """The slot projections W, (S, K, k), detached."""
        return self.W.detach()

    def set_projections(self, W: torch.Tensor) -> None:
        """Overwrite the slot projections with W (K, k) for every replica, or (S, K, k)."""
        if not isinstance(W, torch.Tensor):
            raise InvalidType(f"W must be a torch.Tensor, got {type(W).__name__}")
        S, K, k = self.W.shape
        if tuple(W.shape) not in ((K, k), (S, K, k)):
            raise InvalidValue(f"W must have shape ({K}, {k}) or ({S}, {K}, {k}), got {tuple(W.shape)}")
        if not torch.isfinite(W).all():
            raise InvalidValue("W must be finite (no NaN or inf)")
        with torch.no_grad():
            self.W.copy_(W.to(self.W).expand_as(self.W))

    def _mix(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """z_i = sum_j w_ij x_j for every replica and module: (n, S, K, 3, 32, 32)."""
        k, side = self.k_slots, IMAGE_SIDE
        if shared:
            xs = x.reshape(x.shape[0], 3, side, k, side)  # (n, c, h, j, w)
            return torch.einsum("nchjw,sij->nsichw", xs, self.W)
        xs = x.reshape(*x.shape[:2], 3, side, k, side)  # (S, n, c, h, j, w)
        return torch.einsum("snchjw,sij->nsichw", xs, self.W)

    def module_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The module inputs z_i: (S, K, n, 3, 32, 32)."""
        shared = self._check_input(x)
        return self._mix(x, shared).permute(1, 2, 0, 3, 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self._check_input(x)
        S, K, k = self.n_replicas, self.n_modules, self.k_slots
        G = S * K
        n = x.shape[0] if shared else x.shape[1]
        z = self._mix(x, shared).reshape(n, G * 3, IMAGE_SIDE, IMAGE_SIDE)  # group g = (s, i)
        h = _conv_blocks(z, self.conv_weights, self.conv_biases, G, G)  # (n, G c_L, r, r)
        h = h.reshape(n, G, -1).transpose(0, 1)  # (G, n, c_L r^2)
        dense_w = [w.reshape(G, *w.shape[2:]) for w in self.dense_weights]
        dense_b = [b.reshape(G, -1) for b in self.dense_biases]
        logits = _dense(h, dense_w, dense_b)  # (G, n, 10 k)
        out = logits.view(S, K, n, k, N_CLASSES).sum(1)  # (S, n, k, 10): module outputs summed
        return out[0] if shared and S == 1 else out

    def extra_repr(self) -> str:
        return (
            f"k_slots={self.k_slots}, n_modules={self.n_modules}, channels={self.channels}, "
            f"hidden={self.hidden}, projection={self.projection!r}, n_replicas={self.n_replicas}"
        )


class MonolithicCNN(_ImageNet):
    """One CNN on the whole 3 x 32 x 32k composite with 10k logits (the monolithic baseline).

    Parameters
    ----------
    k_slots : k, the number of images side by side.
    channels : as for :class:`ImageModularNet`.
    hidden : as for :class:`ImageModularNet`; pick it with :meth:`hidden_for` to match a modular network's
        parameter count.
    n_replicas : as for :class:`ImageModularNet`.
    generator : as for :class:`ImageModularNet`.
    """

    def __init__(
        self,
        k_slots: int,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        hidden: int = DEFAULT_HIDDEN,
        n_replicas: int = 1,
        generator: GeneratorLike | Sequence[GeneratorLike] = None,
    ):
        super().__init__()
        self.k_slots = check_int("k_slots", k_slots, low=1)
        self.channels = _check_channels(channels)
        self.hidden = check_int("hidden", hidden, low=1)
        self.n_replicas = check_int("n_replicas", n_replicas, low=1)
        gens = as_generators(generator, self.n_replicas)
        side = IMAGE_SIDE >> len(self.channels)
        dense = [self.channels[-1] * side * side * self.k_slots, self.hidden, N_CLASSES * self.k_slots]
        conv = _conv_specs((), self.channels)
        tensors = init_replicas(gens, [*conv, *_dense_specs((), dense)])
        conv_t, dense_t = tensors[: len(conv)], tensors[len(conv) :]
        self.conv_weights = nn.ParameterList(nn.Parameter(t) for t in conv_t[0::2])  # (S, c_out, c_in, 3, 3)
        self.conv_biases = nn.ParameterList(nn.Parameter(t) for t in conv_t[1::2])  # (S, c_out)
        self.dense_weights = nn.ParameterList(nn.Parameter(t) for t in dense_t[0::2])  # (S, fan_in, fan_out)
        self.dense_biases = nn.ParameterList(nn.Parameter(t) for t in dense_t[1::2])  # (S, fan_out)

    @staticmethod
    def count_parameters(
        k_slots: int, channels: Sequence[int] = DEFAULT_CHANNELS, hidden: int = DEFAULT_HIDDEN
    ) -> int:
        """Trainable parameters of one replica (closed form in the module docstring)."""
        k, c = check_int("k_slots", k_slots, low=1), _check_channels(channels)
        h = check_int("hidden", hidden, low=1)
        r = IMAGE_SIDE >> len(c)
        return _conv_count(c) + c[-1] * r * r * k * h + h + N_CLASSES * k * h + N_CLASSES * k

    def count(self) -> int:
        """This network's trainable parameters per replica (the closed form)."""
        return self.count_parameters(self.k_slots, self.channels, self.hidden)

    @staticmethod
    def forward_flops(
        k_slots: int, channels: Sequence[int] = DEFAULT_CHANNELS, hidden: int = DEFAULT_HIDDEN
    ) -> int:
        """Forward FLOPs per composite of one replica (closed form in the module docstring)."""
        k, c = check_int("k_slots", k_slots, low=1), _check_channels(channels)
        h = check_int("hidden", hidden, low=1)
        r = IMAGE_SIDE >> len(c)
        return _conv_flops(c, IMAGE_SIDE * k) + 2 * c[-1] * r * r * k * h + 2 * h * N_CLASSES * k

    @staticmethod
    def hidden_for(p: int, k_slots: int, channels: Sequence[int] = DEFAULT_CHANNELS) -> int:
        """The hidden width (>= 1) whose parameter count is closest to p; the count is affine in hidden."""
        p = check_int("p", p, low=1)
        k, c = check_int("k_slots", k_slots, low=1), _check_channels(channels)
        r = IMAGE_SIDE >> len(c)
        fixed = _conv_count(c) + N_CLASSES * k
        per_unit = c[-1] * r * r * k + 1 + N_CLASSES * k
        return max(1, round((p - fixed) / per_unit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self._check_input(x)
        S, k = self.n_replicas, self.k_slots
        if shared:  # every replica reads the same 3 channels: the first conv needs no copy of x
            n, z, first = x.shape[0], x, 1
        else:  # (S, n, 3, H, W) -> (n, S 3, H, W): replica s owns channel group s
            n = x.shape[1]
            z, first = x.transpose(0, 1).reshape(n, S * 3, *x.shape[3:]), S
        h = _conv_blocks(z, self.conv_weights, self.conv_biases, S, first)  # (n, S c_L, r, r k)
        h = h.reshape(n, S, -1).transpose(0, 1)  # (S, n, c_L r^2 k)
        logits = _dense(h, list(self.dense_weights), list(self.dense_biases))  # (S, n, 10 k)
        out = logits.view(S, n, k, N_CLASSES)
        return out[0] if shared and S == 1 else out

    def extra_repr(self) -> str:
        return (
            f"k_slots={self.k_slots}, channels={self.channels}, hidden={self.hidden}, "
            f"n_replicas={self.n_replicas}"
        )


def slot_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The composite loss: the sum over the k slots of the cross-entropy of each slot's 10 logits.

        loss(x, y) = sum_{j=1..k} -log softmax(logits_j)[y_j]

    logits: (..., n, k, 10); labels: (..., n, k) integer class ids broadcastable to logits' leading shape.
    reduction "none" returns per-sample losses (..., n) (the trainer's per-sample loss callable),
    "mean" the mean over samples (...,) (a scalar for an unstacked batch).
    """
    check_choice("reduction", reduction, ("mean", "none"))
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise InvalidType("logits and labels must be torch.Tensors")
    if logits.dim() < 3 or logits.shape[-1] != N_CLASSES or labels.is_floating_point():
        raise InvalidValue(
            f"logits must be (..., n, k, 10) and labels integer (..., n, k), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)} ({labels.dtype})"
        )
    labels = labels.to(logits.device).long().expand(logits.shape[:-1])
    per_slot = F.cross_entropy(logits.reshape(-1, N_CLASSES), labels.reshape(-1), reduction="none")
    per_sample = per_slot.view(logits.shape[:-1]).sum(-1)  # (..., n)
    return per_sample if reduction == "none" else per_sample.mean(-1)


__all__ = ["ImageModularNet", "MonolithicCNN", "slot_cross_entropy", "IMAGE_PROJECTIONS"]
