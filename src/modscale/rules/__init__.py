"""The kernel learning rule for module projections (DESIGN section 4; PAPER.md claim 3).

Tensors in, projections out: this package knows no network classes (its kernels take plain functions and
weights).

- :mod:`modscale.rules.kernels`: rbf, laplace, arccos (infinite-width ReLU tangent kernel), ntk (empirical).
- :func:`kernel_projections`: U (K, b, in_dim) from the kernel objective, strategies "independent" (the
  paper) and "deflation"; :func:`choose_n_modules` when the number of modules is unknown.
- :func:`moment_directions`: the modules' directions from Hermite moments of the data (the rule's starts).
- :func:`recovery_score`: Hungarian-matched subspace overlap of learned and true projections.
"""

from modscale.rules import kernels
from modscale.rules.kernels import arccos, laplace, ntk, rbf
from modscale.rules.module_count import choose_n_modules
from modscale.rules.moments import MomentStarts, moment_directions
from modscale.rules.objective import KernelJitterWarning, kernel_objective
from modscale.rules.projections import INITS, STRATEGIES, KernelRuleInfo, kernel_projections
from modscale.rules.recovery import Recovery, overlap_matrix, recovery_score

__all__ = [
    "kernels",
    "rbf",
    "laplace",
    "arccos",
    "ntk",
    "kernel_projections",
    "choose_n_modules",
    "moment_directions",
    "MomentStarts",
    "kernel_objective",
    "KernelJitterWarning",
    "KernelRuleInfo",
    "STRATEGIES",
    "INITS",
    "recovery_score",
    "overlap_matrix",
    "Recovery",
]
