"""The modular sine-wave regression task (DESIGN section 2; PAPER.md "Known experimental facts").

    x ~ N(0, I_m),   z_i = U_i x in R^b (U_i in R^{b x m}, orthonormal rows),   i = 1..k
    g_i(z) = sum_j a_j sin(omega_j <v_ij, z> + phase_ij),   v_ij unit vectors in R^b (v = 1 when b = 1)
    y = ((1/sqrt(k)) sum_i g_i(z_i) - mu) / sigma  (+ optional label noise)

mu and sigma are the exact mean and standard deviation of (1/sqrt(k)) sum_i g_i(U_i x) under x ~ N(0, I_m), so
that y has mean 0 and variance 1 for every (m, k, b): a test loss is the fraction of unexplained variance and
predicting 0 scores 1. The derivation (see :func:`_sine_moments`): every term is sin(omega t + phase) of
t = <w, x> with w = U_i^T v_ij a unit vector, so t ~ N(0, 1) and two such t are jointly Gaussian with
correlation <w, w'>. With E cos(s) = exp(-Var s / 2) for a centred Gaussian s,

    E sin(omega t + phi) = sin(phi) exp(-omega^2 / 2)
    E sin(A) sin(B) = 1/2 [cos(phi - phi') exp(-(omega^2 + omega'^2 - 2 omega omega' rho) / 2)
                         - cos(phi + phi') exp(-(omega^2 + omega'^2 + 2 omega omega' rho) / 2)]

for A = omega t + phi, B = omega' t' + phi', rho = corr(t, t'). Modules with independent random U_i are
correlated through rho, and the formula accounts for it exactly.

Nonlinear variant (``nonlinear=True``): z_i = M_i U_i tanh(A_i x), where A_i in R^{m x m} has Gaussian rows
scaled to unit norm (each coordinate of A_i x is N(0, 1)) and M_i = (U_i C_i U_i^T)^{-1/2} whitens z_i
(C_i = Cov tanh(A_i x), computed by two-dimensional Gauss-Hermite quadrature, exact to about 1e-10), so every
module input has mean 0 and covariance I_b. z_i is then not Gaussian and (mu, sigma) have no closed form:
they are estimated once, at construction, by Monte Carlo on 2^17 draws from the task's own random stream
(relative error of sigma about 0.3 %).

Combinatorial out-of-distribution split (k >= 2): the in-distribution region is where an even number of
modules have a positive first coordinate of z_i, the out-of-distribution region where that number is odd.
The OOD experiment trains on ``sample(n, region="even")`` and tests on :meth:`SineTask.sample_ood`
(``region="odd"``). Both are sampled exactly by rejection: x is drawn from N(0, I_m) and kept when its parity
matches, which yields exactly N(0, I_m) conditioned on the region (each region has probability about 1/2; a
region of probability ~0, possible only for tiny m such as m = 1, raises). When the modules' projections are
mutually orthogonal (possible when k b <= m), the z_i are independent and any k - 1 of them have the same
joint law in both regions: only the full combination differs. Random U_i overlap, most at small m, and then
the regions also differ in the module marginals.

The plain ``sample(n)`` draws x ~ N(0, I_m) (``region="all"``), the distribution the normalisation and the
theory (DESIGN section 1) refer to. On one region alone y is not standardised, because the modules' random
U_i overlap: measured with 1e5 draws (task seed 3), m=4, k=3 gives mean 0.33 and variance 0.73 on the even
region; nonlinear m=8, k=4 gives variance 0.68 (even) and 1.33 (odd); linear m=16, k=4, b=2 stays within
2.5 % of mean 0, variance 1. For k = 1 there are no combinations and :meth:`SineTask.sample_ood` raises.

Example::

    task = SineTask(m=8, k=4, generator=0)
    X, y = task.sample(1000, generator=1)                # (1000, 8), (1000, 1) float32, x ~ N(0, I_8)
    X_id, y_id = task.sample(1000, generator=2, region="even")  # training set of the OOD experiment
    X_ood, y_ood = task.sample_ood(500, generator=3)            # unseen combinations
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from modscale._checks import check_choice, check_int
from modscale._torch import as_generator
from modscale.errors import InvalidType, InvalidValue

DEFAULT_FREQUENCIES = (1.0, 3.0, 5.0)
"""The sine components' frequencies omega_j, for up to 3 components."""
DEFAULT_AMPLITUDES = (1.0, 0.5, 0.2)
"""The sine components' amplitudes a_j, for up to 3 components."""
NONLINEAR_MC_DRAWS = 2**17
_GH_NODES = 64  # Gauss-Hermite nodes per dimension for E tanh(s) tanh(t); error < 1e-10 at 64 nodes
_REGIONS = ("even", "odd", "all")


def _sine_moments(W, omega, amp, phase):
    """Exact mean and variance of sum_a amp_a sin(omega_a <W_a, x> + phase_a), x ~ N(0, I), unit rows W_a.

    W (T, m), omega/amp/phase (T,), float64. Returns (mean, var) as Python floats (formulas in the module
    docstring).
    """
    rho = W @ W.T  # (T, T) correlations of the t_a = <W_a, x>
    oo = omega[:, None] * omega[None, :]
    sq = (omega**2)[:, None] + (omega**2)[None, :]
    e_prod = 0.5 * (
        torch.cos(phase[:, None] - phase[None, :]) * torch.exp(-(sq - 2 * oo * rho) / 2)
        - torch.cos(phase[:, None] + phase[None, :]) * torch.exp(-(sq + 2 * oo * rho) / 2)
    )
    e_one = torch.sin(phase) * torch.exp(-(omega**2) / 2)  # (T,)
    cov = e_prod - e_one[:, None] * e_one[None, :]
    mean = float(amp @ e_one)
    var = float(amp @ cov @ amp)
    return mean, var


def _tanh_covariance(A: torch.Tensor) -> torch.Tensor:
    """Cov tanh(A x) for x ~ N(0, I) and unit-norm rows of A (k, m, m) -> (k, m, m), by Gauss-Hermite.

    E tanh(s) tanh(t) for standard normal (s, t) with correlation rho: s = u, t = rho u + sqrt(1 - rho^2) w,
    u, w independent, integrated with the probabilists' Gauss-Hermite rule in both variables. tanh is odd, so
    the means are 0 and this is the covariance.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    weights = weights / math.sqrt(2 * math.pi)
    rho = torch.einsum("kpm,kqm->kpq", A, A).clamp(-1.0, 1.0).numpy()  # (k, m, m)
    flat = rho.reshape(-1)
    out = np.empty_like(flat)
    u = nodes[:, None]
    w = nodes[None, :]
    ww = weights[:, None] * weights[None, :]
    tu = np.tanh(u)
    chunk = 4096
    for start in range(0, flat.size, chunk):  # bounded memory: chunk x nodes^2 doubles
        r = flat[start : start + chunk, None, None]
        t = r * u + np.sqrt(np.maximum(1.0 - r * r, 0.0)) * w
        out[start : start + chunk] = (ww * tu * np.tanh(t)).sum(axis=(1, 2))
    return torch.from_numpy(out.reshape(rho.shape))


def _inverse_sqrt(C: torch.Tensor) -> torch.Tensor:
    """Symmetric inverse square root of a batch of SPD matrices (..., b, b)."""
    evals, evecs = torch.linalg.eigh(C)
    return evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.transpose(-1, -2)


class SineTask:
    """Sum of k sine-wave modules on b-dimensional projections of an m-dimensional Gaussian input.

    The ground truth (``projections``, ``module_inputs``, ``module_outputs``, ``target``) is for evaluation.

    Parameters
    ----------
    m : input dimension.
    k : number of modules (>= 1).
    b : module input dimension, 1 <= b <= m.
    n_components : number of sine components per module; the defaults (omega, a) = (1, 1), (3, 0.5), (5, 0.2)
        cover up to 3, more need ``frequencies`` and ``amplitudes``.
    nonlinear : module inputs z_i = M_i U_i tanh(A_i x) instead of U_i x (module docstring).
    noise : variance s2 of Gaussian label noise N(0, s2) added to y AFTER the normalisation, so
        Var y = 1 + s2 and the best achievable test MSE on noisy labels is s2. ``target(X)`` is noiseless.
    generator : torch.Generator, int seed or None (seed 0) for the task's random parameters (U, v, phases,
        A); the task also derives from it a private stream used by :meth:`sample` when no generator is given.
    frequencies : keyword-only override of the omega_j, of length n_components.
    amplitudes : keyword-only override of the a_j, of length n_components.
    """

    def __init__(
        self,
        m: int,
        k: int,
        b: int = 1,
        n_components: int = 3,
        nonlinear: bool = False,
        noise: float = 0.0,
        generator: torch.Generator | int | None = None,
        *,
        frequencies: Sequence[float] | None = None,
        amplitudes: Sequence[float] | None = None,
    ):
        self.m = check_int("m", m, low=1)
        self.k = check_int("k", k, low=1)
        self.b = check_int("b", b, low=1)
        if self.b > self.m:
            raise InvalidValue(f"b (module input dimension) must be <= m = {self.m}, got {self.b}")
        self.n_components = check_int("n_components", n_components, low=1)
        if not isinstance(nonlinear, bool | np.bool_):
            raise InvalidType(f"nonlinear must be a bool, got {type(nonlinear).__name__}")
        self.nonlinear = bool(nonlinear)
        if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
            raise InvalidType(f"noise must be a real number (a variance), got {type(noise).__name__}")
        if not (math.isfinite(noise) and noise >= 0):
            raise InvalidValue(f"noise (label-noise variance) must be finite and >= 0, got {noise}")
        self.noise = float(noise)
        self.frequencies = self._components("frequencies", frequencies, DEFAULT_FREQUENCIES, positive=True)
        self.amplitudes = self._components("amplitudes", amplitudes, DEFAULT_AMPLITUDES, positive=False)
        gen = as_generator(generator)

        k_, b_, m_, J = self.k, self.b, self.m, self.n_components
        # Orthonormal rows: QR of a Gaussian m x b matrix, signs fixed by diag(R) so U_i is Haar-distributed.
        G = torch.randn(k_, m_, b_, generator=gen, dtype=torch.float64)
        Q, R = torch.linalg.qr(G)
        Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
        self._U = Q.transpose(-1, -2).contiguous()  # (k, b, m)
        if b_ == 1:
            self._v = torch.ones(k_, J, 1, dtype=torch.float64)
        else:
            v = torch.randn(k_, J, b_, generator=gen, dtype=torch.float64)
            self._v = v / v.norm(dim=-1, keepdim=True)  # (k, J, b)
        self._phase = 2 * math.pi * torch.rand(k_, J, generator=gen, dtype=torch.float64)  # (k, J)
        self._A = None
        self._M = None
        if self.nonlinear:
            A = torch.randn(k_, m_, m_, generator=gen, dtype=torch.float64)
            self._A = A / A.norm(dim=-1, keepdim=True)  # (k, m, m): every coordinate of A_i x is N(0, 1)
            C = _tanh_covariance(self._A)  # (k, m, m)
            self._M = _inverse_sqrt(self._U @ C @ self._U.transpose(-1, -2))  # (k, b, b)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
        self._stream = torch.Generator().manual_seed(seed)

        if self.nonlinear:
            mc = torch.Generator().manual_seed(seed ^ 0x5EED)
            X = torch.randn(NONLINEAR_MC_DRAWS, m_, generator=mc, dtype=torch.float64)
            raw = self._raw(X)
            self.mean, self.std = float(raw.mean()), float(raw.std())
        else:
            W = torch.einsum("kjb,kbm->kjm", self._v, self._U).reshape(k_ * J, m_)  # unit rows w_ij
            omega = self.frequencies.repeat(k_)
            amp = self.amplitudes.repeat(k_) / math.sqrt(k_)
            mean, var = _sine_moments(W, omega, amp, self._phase.reshape(-1))
            self.mean, self.std = mean, math.sqrt(var)

    def _components(self, name, value, default, *, positive):
        if value is None:
            if self.n_components > len(default):
                raise InvalidValue(
                    f"n_components > {len(default)} needs explicit frequencies and amplitudes, "
                    f"got n_components={self.n_components}"
                )
            return torch.tensor(default[: self.n_components], dtype=torch.float64)
        try:
            arr = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise InvalidType(f"{name} must be a sequence of numbers, got {type(value).__name__}") from None
        if arr.shape != (self.n_components,):
            raise InvalidValue(
                f"{name} must have length n_components = {self.n_components}, got {tuple(arr.shape)}"
            )
        if not torch.isfinite(arr).all() or (positive and (arr <= 0).any()):
            raise InvalidValue(
                f"{name} must be finite{' and positive' if positive else ''}, got {arr.tolist()}"
            )
        return arr

    # ground truth ------------------------------------------------------------------------------------------
    @property
    def projections(self) -> torch.Tensor:
        """True U, (k, b, m) float32 with orthonormal rows."""
        return self._U.to(torch.float32)

    def _check_X(self, X) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            X = torch.as_tensor(np.asarray(X))
        if X.dim() != 2 or X.shape[1] != self.m:
            raise InvalidValue(f"X must have shape (n, m={self.m}), got {tuple(X.shape)}")
        if not X.is_floating_point():
            X = X.to(torch.float64)
        return X.detach().to("cpu", torch.float64)

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:  # X (n, m) float64 -> (n, k, b)
        if not self.nonlinear:
            return torch.einsum("kbm,nm->nkb", self._U, X)
        h = torch.tanh(torch.einsum("kqm,nm->nkq", self._A, X))  # (n, k, m)
        return torch.einsum("kbq,nkq->nkb", self._M @ self._U, h)

    def _outputs(self, z: torch.Tensor) -> torch.Tensor:  # (n, k, b) -> (n, k) g_i(z_i)
        t = torch.einsum("kjb,nkb->nkj", self._v, z)  # (n, k, J)
        return (self.amplitudes * torch.sin(self.frequencies * t + self._phase)).sum(-1)

    def _raw(self, X: torch.Tensor) -> torch.Tensor:  # (n,) (1/sqrt k) sum_i g_i, before normalisation
        return self._outputs(self._inputs(X)).sum(-1) / math.sqrt(self.k)

    def module_inputs(self, X) -> torch.Tensor:
        """z_i for every sample and module: (n, k, b) float32 (U_i x, or M_i U_i tanh(A_i x) if nonlinear)."""
        return self._inputs(self._check_X(X)).to(torch.float32)

    def module_outputs(self, X) -> torch.Tensor:
        """g_i(z_i): (n, k) float32, before the 1/sqrt(k) factor and the normalisation."""
        return self._outputs(self._inputs(self._check_X(X))).to(torch.float32)

    def target(self, X) -> torch.Tensor:
        """Noiseless normalised target y(X): (n, 1) float32."""
        return self._target(self._check_X(X)).to(torch.float32)

    def _target(self, X: torch.Tensor) -> torch.Tensor:
        return ((self._raw(X) - self.mean) / self.std).unsqueeze(-1)

    # sampling ----------------------------------------------------------------------------------------------
    def sample(
        self, n: int, generator: torch.Generator | int | None = None, *, region: str = "all"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples (X (n, m), y (n, 1)), float32, labels with the task's noise.

        region: "all" (default: x ~ N(0, I_m)), "even" (the in-distribution region of the combinatorial
        split) or "odd" (its out-of-distribution region, as :meth:`sample_ood`).
        generator: torch.Generator, int seed, or None to continue the task's own stream.
        """
        n = check_int("n", n, low=1)
        check_choice("region", region, _REGIONS)
        gen = self._stream if generator is None else as_generator(generator)
        X = self._draw(n, region, gen)
        y = self._target(X)
        if self.noise > 0:
            y = y + math.sqrt(self.noise) * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        return X.to(torch.float32), y.to(torch.float32)

    def sample_ood(
        self, n: int, generator: torch.Generator | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples from the odd region: combinations of module inputs never seen in training (k >= 2)."""
        if self.k < 2:
            raise InvalidValue("sample_ood needs k >= 2 modules (the split is over combinations), got k=1")
        return self.sample(n, generator, region="odd")

    def region_parity(self, X) -> torch.Tensor:
        """(n,) int64: the number of modules whose first input coordinate z_i[0] is positive, modulo 2."""
        return self._parity(self._inputs(self._check_X(X)))

    @staticmethod
    def _parity(z: torch.Tensor) -> torch.Tensor:
        return (z[..., 0] > 0).sum(-1) % 2

    def _draw(self, n: int, region: str, gen: torch.Generator) -> torch.Tensor:
        if region == "all":
            return torch.randn(n, self.m, generator=gen, dtype=torch.float64)
        want = 0 if region == "even" else 1
        kept, have, drawn = [], 0, 0
        while have < n:  # rejection sampling: exact; each round draws about twice what is still missing
            batch = 2 * (n - have) + 64
            X = torch.randn(batch, self.m, generator=gen, dtype=torch.float64)
            X = X[self._parity(self._inputs(X)) == want]
            kept.append(X)
            have += X.shape[0]
            drawn += batch
            if drawn > 10_000 + 1000 * n and have < n:
                raise InvalidValue(
                    f"the {region} region of this task has (almost) zero probability: accepted {have} of "
                    f"{drawn} draws (m={self.m}, k={self.k}); use region='all' or a larger m"
                )
        return torch.cat(kept)[:n]

    def __repr__(self) -> str:
        return (
            f"SineTask(m={self.m}, k={self.k}, b={self.b}, n_components={self.n_components}, "
            f"nonlinear={self.nonlinear}, noise={self.noise})"
        )


__all__ = ["SineTask", "DEFAULT_FREQUENCIES", "DEFAULT_AMPLITUDES"]
