"""Data generators for the paper's tasks (DESIGN section 2). Tasks never import models.

- :class:`SineTask`: the modular sine-wave regression task, with its combinatorial out-of-distribution split
  and nonlinear variant.
- :class:`CompositionalCIFAR`: k CIFAR-10 images side by side, with held-out class combinations and noise.
"""

from modscale.tasks.cifar import NOISE_LEVELS, CompositionalCIFAR, TuplePermutation, composite_accuracy
from modscale.tasks.sine import DEFAULT_AMPLITUDES, DEFAULT_FREQUENCIES, SineTask

__all__ = [
    "SineTask",
    "DEFAULT_FREQUENCIES",
    "DEFAULT_AMPLITUDES",
    "CompositionalCIFAR",
    "TuplePermutation",
    "composite_accuracy",
    "NOISE_LEVELS",
]
