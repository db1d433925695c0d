"""modscale: the reference implementation of "Breaking Neural Network Scaling Laws with Modularity".

Subpackages, from pure to composite (DESIGN section 6):

- :mod:`modscale.theory`: closed-form train/test loss of linear-in-parameters models (numpy/scipy only).
- :mod:`modscale.tasks`: data generators (the modular sine-wave task, Compositional CIFAR-10).
- :mod:`modscale.models`: monolithic and modular networks with stacked replicas.
- :mod:`modscale.rules`: the kernel learning rule for module projections.
- :mod:`modscale.training`: Adam training of stacked replicas.
- :mod:`modscale.experiments`: the paper's experiments as resumable sweeps.
- :mod:`modscale.plots`: figures and the HTML report, pure functions of saved results.

Subpackages are imported lazily so that ``import modscale.theory`` never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "theory",
    "tasks",
    "models",
    "rules",
    "training",
    "experiments",
    "plots",
    "data",
    "estimators",
    "results",
    "errors",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"modscale.{name}")
    raise AttributeError(f"module 'modscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SUBMODULES))


__all__ = ["__version__", *_SUBMODULES]
