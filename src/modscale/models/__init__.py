"""Networks (DESIGN section 3), every one with S stacked replicas. Models never import tasks or rules.

- :class:`MLP`: the monolithic ReLU baseline.
- :class:`ModularNet`: K module MLPs on linear, fixed, nonlinear or no projections of the input.
- :class:`AdditiveIndexNet`: a linear term beside a ModularNet, x W + c + g(x) (the estimators' model).
- :class:`ImageModularNet`, :class:`MonolithicCNN`: the Compositional CIFAR-10 networks.
"""

from modscale.models.additive import AdditiveIndexNet
from modscale.models.image import IMAGE_PROJECTIONS, ImageModularNet, MonolithicCNN, slot_cross_entropy
from modscale.models.mlp import MLP
from modscale.models.modular import PROJECTIONS, ModularNet

__all__ = [
    "MLP",
    "ModularNet",
    "AdditiveIndexNet",
    "PROJECTIONS",
    "ImageModularNet",
    "MonolithicCNN",
    "slot_cross_entropy",
    "IMAGE_PROJECTIONS",
]
