"""What each module of a fitted ModularRegressor / ModularClassifier learned: its shape function f_i drawn
against its input U_i x, over the density of the training rows' inputs (the EBM-style view).

A pure function of the numbers ``est.shape_functions()`` returns (numpy arrays, no torch), so it draws the
same figure from a notebook, from ``modscale fit`` and from a saved ``shapes`` dict. Example::

    from modscale.plots.modules import plot_modules
    fig = plot_modules(est.shape_functions())
    fig.savefig("modules.png")
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from modscale.errors import InvalidValue

_KEYS = ("z", "f", "density", "variance_share", "outputs", "top_features")


def plot_modules(shapes: dict, *, columns: int = 4, title: str | None = None):
    """One panel per module: f_i(z) (one line per output or class logit) over the input density (grey).

    ``shapes``: the dict of :meth:`modscale.estimators.ModularRegressor.shape_functions`, z (K, G),
    f (K, G, out), density (K pairs of bin edges and densities), variance_share (K,), outputs (out names),
    top_features (K lists of (name, weight)). Returns a matplotlib Figure (nothing is shown or saved).
    """
    if not isinstance(shapes, dict) or any(k not in shapes for k in _KEYS):
        raise InvalidValue(f"shapes must be the dict of est.shape_functions() with keys {list(_KEYS)}")
    z, f = np.asarray(shapes["z"]), np.asarray(shapes["f"])
    if z.ndim != 2 or f.ndim != 3 or f.shape[:2] != z.shape:
        raise InvalidValue(f"shapes z must be (K, G) and f (K, G, out), got {z.shape} and {f.shape}")
    K = z.shape[0]
    cols = max(1, min(int(columns), K))
    rows = math.ceil(K / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))  # no pyplot: no global figure state, any backend
    axes = fig.subplots(rows, cols, squeeze=False)
    outputs = list(shapes["outputs"])
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= K:
            ax.axis("off")
            continue
        edges, dens = (np.asarray(a) for a in shapes["density"][i])
        twin = ax.twinx()  # the data's density behind the curve, on its own (hidden) scale
        twin.fill_between(edges[:-1], dens, step="post", color="0.85", linewidth=0)
        twin.set_yticks([])
        twin.set_ylim(0, max(float(dens.max()), 1e-12) * 3)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        for j in range(f.shape[2]):
            ax.plot(z[i], f[i, :, j], lw=1.6, label=outputs[j] if f.shape[2] > 1 else None)
        top = ", ".join(f"{name} {w:+.2f}" for name, w in shapes["top_features"][i][:3])
        share = float(shapes["variance_share"][i])
        ax.set_title(f"module {i}: {100 * share:.0f}% of variance\n{top}", fontsize=8)
        ax.set_xlabel(f"z{i} = U{i} x (standardised x)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("contribution to output", fontsize=8)
        if f.shape[2] > 1 and i == 0:
            ax.legend(fontsize=6, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["plot_modules"]
