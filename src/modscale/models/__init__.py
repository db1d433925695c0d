"""Networks (DESIGN section 3), every one with S stacked replicas. Models never import tasks or rules.

- :class:`MLP`: the monolithic ReLU baseline.
- :class:`ModularNet`: K module MLPs on linear, fixed, nonlinear or no projections of the input.
- :class:`ImageModularNet`, :class:`MonolithicCNN`: the Compositional CIFAR-10 networks.
"""

from modscale.models.image import IMAGE_PROJECTIONS, ImageModularNet, MonolithicCNN, slot_cross_entropy
from modscale.models.mlp import MLP
from modscale.models.modular import PROJECTIONS, ModularNet

__all__ = [
    "MLP",
    "ModularNet",
    "PROJECTIONS",
    "ImageModularNet",
    "MonolithicCNN",
    "slot_cross_entropy",
    "IMAGE_PROJECTIONS",
]
