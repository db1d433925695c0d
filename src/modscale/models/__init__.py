"""Networks (DESIGN section 3), every one with S stacked replicas. Models never import tasks or rules.

- :class:`MLP`: the monolithic ReLU baseline.
- :class:`ModularNet`: K module MLPs on linear, fixed, nonlinear or no projections of the input.
"""

from modscale.models.mlp import MLP
from modscale.models.modular import PROJECTIONS, ModularNet

__all__ = ["MLP", "ModularNet", "PROJECTIONS"]
