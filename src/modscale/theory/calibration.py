"""Calibrate the spectrum constants (c, Omega or s, noise) to measured losses (DESIGN section 1).

Least squares in log-loss: minimise sum_i [ln test_theory(n_i, p_i, m_i; c, Omega|s, s2) - ln loss_i]^2
(and the same for training losses where both are positive), over ln c, ln(Omega - 1) or ln s, and
ln s2. Points at the interpolation threshold |p - n| <= 1 (infinite theory loss) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from modscale._checks import check_at_least, check_choice, check_positive
from modscale.errors import InvalidValue
from modscale.theory.losses import monolithic_losses
from modscale.theory.spectra import DEFAULT_C, DEFAULT_OMEGA, DEFAULT_S, FAMILIES
from modscale.theory.spectra import spectrum as make_spectrum

_NOISE_FLOOR = 1e-10  # keeps ln(noise) finite when the data want no noise at all


@dataclass(frozen=True)
class SpectrumFit:
    """Fitted constants and the quality of the fit (rmse of the log-loss residuals)."""

    family: str
    c: float
    shape_param: float  # Omega for ``exp``, s for ``power``
    noise: float
    rmse_log: float
    n_points: int
    success: bool
    message: str = ""
    kwargs: dict = field(default_factory=dict, repr=False)

    @property
    def spectrum_kwargs(self) -> dict:
        """Keyword arguments for :func:`spectrum` that reproduce the fitted spectrum."""
        key = "omega" if self.family == "exp" else "s"
        return {"family": self.family, "c": self.c, key: self.shape_param}

    def predict(self, n: Any, p: Any, m: Any, n_outputs: Any = 1) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) of the fitted model at (n, p, m)."""
        spec = make_spectrum(m, **self.spectrum_kwargs)
        return monolithic_losses(n, p, spec, noise=self.noise, n_outputs=n_outputs)


def fit(
    n: Any,
    p: Any,
    m: Any,
    test_loss: Any,
    *,
    train_loss: Any = None,
    family: str = "exp",
    fit_noise: bool = True,
    noise: float = 0.0,
    n_outputs: Any = 1,
    initial: dict | None = None,
) -> SpectrumFit:
    r"""Fit (c, Omega or s, noise) so that the closed-form losses match measured (n, p, m, loss) points.

    .. math:: \min_\theta \sum_i \big(\ln \mathrm{test}_\theta(n_i, p_i, m_i) - \ln L_i\big)^2

    n, p, m, test_loss (and train_loss) are arrays of the measurements that broadcast together.

    Args:
        n: the sample counts.
        p: the parameter (feature) counts.
        m: the input dimensions.
        test_loss: the measured test losses, > 0.
        train_loss: optional measured training losses; points where both theory and data are positive
            (the under-parameterised regime) add their log residuals.
        family: spectrum family, ``"exp"`` (fits Omega) or ``"power"`` (fits s).
        fit_noise: fit the label-noise variance too; else keep ``noise`` fixed.
        noise: the label-noise variance kept when ``fit_noise`` is False, and the start otherwise.
        n_outputs: d outputs sharing theta, as in :func:`~modscale.theory.monolithic_losses`.
        initial: starting values, keys ``c``, ``omega``/``s``, ``noise``.

    Returns:
        :class:`SpectrumFit`. Parameters well determined only when the points span several n, p and m.

    Example:
        >>> import numpy as np
        >>> from modscale.theory import fit, monolithic_losses, spectrum
        >>> n, p, m = np.meshgrid([300, 1000, 3000], [50, 100], [2, 3, 4])
        >>> _, test = monolithic_losses(n, p, spectrum(m, c=1.3, omega=1.8), noise=0.05)
        >>> f = fit(n, p, m, test)
        >>> round(f.c, 3), round(f.shape_param, 3), round(f.noise, 3)
        (1.3, 1.8, 0.05)
    """
    check_choice("family", family, FAMILIES)
    n = check_positive("n", n)
    p = check_at_least("p", p, 1.0)
    m = check_at_least("m", m, 1.0)
    test = check_positive("test_loss", test_loss)
    d = check_at_least("n_outputs", n_outputs, 1.0)
    arrays = [n, p, m, test, d]
    if train_loss is not None:
        arrays.append(check_at_least("train_loss", train_loss, 0.0))
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    n, p, m, test, d, *rest = (np.broadcast_to(a, shape).ravel() for a in arrays)
    train = rest[0] if rest else None
    keep = np.abs(np.rint(p) - n * d) > 1
    if keep.sum() < 2:
        raise InvalidValue("fit needs at least 2 points away from the interpolation threshold |p - n| <= 1")
    n, p, m, test, d = (a[keep] for a in (n, p, m, test, d))
    train = train[keep] if train is not None else None

    init = {"c": DEFAULT_C, "omega": DEFAULT_OMEGA, "s": DEFAULT_S, "noise": max(noise, 1e-2)}
    init.update(initial or {})
    shape_key = "omega" if family == "exp" else "s"
    x0 = [np.log(init["c"]), np.log(init["omega"] - 1.0) if family == "exp" else np.log(init["s"])]
    if fit_noise:
        x0.append(np.log(max(init["noise"], _NOISE_FLOOR)))

    def unpack(x):
        c = np.exp(x[0])
        shape_param = 1.0 + np.exp(x[1]) if family == "exp" else np.exp(x[1])
        s2 = np.exp(x[2]) if fit_noise else noise
        return c, shape_param, s2

    def residuals(x):
        c, shape_param, s2 = unpack(x)
        spec = make_spectrum(m, family, c=c, **{shape_key: shape_param})
        tr, te = monolithic_losses(n, p, spec, noise=s2, n_outputs=d)
        r = [np.log(te) - np.log(test)]
        if train is not None:
            both = (tr > 0) & (train > 0)
            r.append(
                np.where(both, np.log(np.where(both, tr, 1.0)) - np.log(np.where(both, train, 1.0)), 0.0)
            )
        return np.concatenate(r)

    sol = least_squares(residuals, np.asarray(x0, dtype=np.float64), method="trf", x_scale=1.0)
    c, shape_param, s2 = unpack(sol.x)
    res = residuals(sol.x)
    return SpectrumFit(
        family=family,
        c=float(c),
        shape_param=float(shape_param),
        noise=float(s2) if fit_noise or noise else 0.0,
        rmse_log=float(np.sqrt(np.mean(res**2))),
        n_points=int(n.size),
        success=bool(sol.success),
        message=str(sol.message),
    )


__all__ = ["fit", "SpectrumFit"]
