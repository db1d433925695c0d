"""Input checks shared by kernel_projections, choose_n_modules and moment_directions."""

from __future__ import annotations

import numpy as np
import torch

from modscale.errors import InvalidType, InvalidValue


def as_data(X, y, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, in_dim, *features) and y (n, c) as ``dtype`` tensors, or one clear error (InvalidType /
    InvalidValue) naming what was wrong."""

    def tensor(name, v):
        if isinstance(v, torch.Tensor):
            t = v.detach()
        else:
            try:
                t = torch.as_tensor(np.asarray(v, dtype=np.float64))
            except (TypeError, ValueError):
                raise InvalidType(
                    f"{name} must be a numeric array or tensor, got {type(v).__name__}"
                ) from None
        if t.is_complex() or t.dtype == torch.bool:
            raise InvalidType(f"{name} must be real-valued, got dtype {t.dtype}")
        return t.to(dtype)

    X, y = tensor("X", X), tensor("y", y)
    if X.dim() < 2 or 0 in X.shape[2:]:
        raise InvalidValue(f"X must have shape (n, in_dim) or (n, in_dim, *features), got {tuple(X.shape)}")
    if y.dim() == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[0] != X.shape[0]:
        raise InvalidValue(
            f"y must have shape (n,) or (n, c) with n = {X.shape[0]} rows like X, got {tuple(y.shape)}"
        )
    if not torch.isfinite(X).all():
        raise InvalidValue("X contains NaN or inf; every input must be finite")
    if not torch.isfinite(y).all():
        raise InvalidValue("y contains NaN or inf; every target must be finite")
    return X, y
