"""Adam training of stacked replicas (DESIGN section 5). Generic over nn.Module: imports no models or tasks.

- :func:`train`, :class:`TrainConfig`, :class:`History`: the training loop and what it returns.
- :class:`StackedAdam`: Adam with a learning rate per replica, vectorised over the replica dimension.
"""

from modscale.training.adam import StackedAdam
from modscale.training.linearized import REGIMES, features, fit_min_norm
from modscale.training.trainer import History, TrainConfig, train

__all__ = ["train", "TrainConfig", "History", "StackedAdam", "features", "fit_min_norm", "REGIMES"]
