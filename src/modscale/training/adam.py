"""Adam for stacked replicas: one update of all S networks with a learning rate per replica.

    m_t = beta1 m_{t-1} + (1 - beta1) g_t,      v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    theta_t = theta_{t-1} - lr_s / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

(Kingma & Ba 2015, in the operation order of torch.optim.Adam). Adam acts elementwise, so on parameters
whose leading dimension is the replica index it is exactly S independent Adam optimisers, provided each
replica's gradient is the gradient of that replica's own loss (the trainer sums the per-replica losses).
``lr`` is a tensor of shape (S,) broadcast over each parameter's trailing dimensions; ``active`` (S,) bool
freezes replicas (parameters and moments untouched), e.g. after early stopping, without a host sync.
``replica_dim=False`` applies the same update to an ordinary module (S = 1, no replica dimension).
``weight_decay`` wd adds the gradient of (wd / 2) |theta|^2 to every parameter's gradient before the update
(an L2 penalty, as torch.optim.Adam's ``weight_decay``; not AdamW's decoupled decay).

Example::

    opt = StackedAdam(model.parameters(), lr=torch.tensor([1e-3, 3e-3]), n_replicas=2)
    loss_per_replica.sum().backward(); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from modscale.errors import InvalidValue


class StackedAdam:
    """Vectorised Adam over parameters with a leading replica dimension (module docstring)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: torch.Tensor,
        n_replicas: int,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        replica_dim: bool = True,
        weight_decay: float = 0.0,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.S = int(n_replicas)
        self.replica_dim = bool(replica_dim)
        if not self.replica_dim and self.S != 1:
            raise InvalidValue(f"replica_dim=False (an ordinary module) means n_replicas = 1, got {self.S}")
        for i, p in enumerate(self.params):
            if self.replica_dim and (p.dim() == 0 or p.shape[0] != self.S):
                raise InvalidValue(
                    f"parameter {i} has shape {tuple(p.shape)}: its leading dimension must be "
                    f"n_replicas = {self.S}"
                )
        lr = torch.as_tensor(lr, dtype=torch.float32)
        if lr.shape not in ((), (self.S,)):
            raise InvalidValue(f"lr must be a number or have shape ({self.S},), got {tuple(lr.shape)}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        device = self.params[0].device if self.params else torch.device("cpu")
        self.lr = lr.to(device).expand(self.S).clone()  # (S,)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def _view(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if not self.replica_dim:  # one network whose parameters carry no replica dimension
            return x.reshape(())
        return x.view((self.S,) + (1,) * (p.dim() - 1))

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One Adam step on every replica (or only on replicas where ``active`` is True)."""
        self.t += 1
        bc1 = 1 - self.beta1**self.t
        bc2_sqrt = math.sqrt(1 - self.beta2**self.t)
        step_size = self.lr / bc1  # (S,)
        live = [p for p in self.params if p.grad is not None]
        index = {id(p): i for i, p in enumerate(self.params)}
        ms = [self.exp_avg[index[id(p)]] for p in live]
        vs = [self.exp_avg_sq[index[id(p)]] for p in live]
        grads = [p.grad for p in live]
        if self.weight_decay:  # L2 penalty (wd / 2) |theta|^2 added to the loss: g + wd theta
            grads = torch._foreach_add(grads, live, alpha=self.weight_decay)
        if active is None:  # each operation over every parameter in one foreach call
            gs = grads
            torch._foreach_lerp_(ms, gs, 1 - self.beta1)
            torch._foreach_mul_(vs, self.beta2)
            steps = [self._view(step_size, p) for p in live]
        else:
            # The same update with per-replica factors that are 0 (or 1) for frozen replicas, whose gradients
            # (perhaps non-finite) are replaced by 0: their p, m and v stay exactly as they were.
            zero = torch.zeros((), device=step_size.device)
            gs = [torch.where(self._view(active, p), g, zero) for p, g in zip(live, grads, strict=True)]
            weight = torch.where(active, 1 - self.beta1, 0.0)  # (S,)
            decay = torch.where(active, self.beta2, 1.0)
            torch._foreach_lerp_(ms, gs, [self._view(weight, p) for p in live])
            torch._foreach_mul_(vs, [self._view(decay, p) for p in live])
            steps = [self._view(torch.where(active, step_size, zero), p) for p in live]
        torch._foreach_addcmul_(vs, gs, gs, value=1 - self.beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_mul(ms, steps)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(live, update)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


__all__ = ["StackedAdam"]
