"""Closed-form theory of train/test loss vs samples n, parameters p and input dimension m (DESIGN section 1).

Pure numpy/scipy, float64, vectorised over broadcastable arrays; importing it never loads torch.
"""

from modscale.theory.calibration import SpectrumFit, fit
from modscale.theory.complexity import sample_complexity
from modscale.theory.losses import modular_losses, monolithic_losses, unexplained_variance
from modscale.theory.simulation import SimulationResult, simulate
from modscale.theory.spectra import ArraySpectrum, PowerSpectrum, Spectrum, as_spectrum, spectrum

__all__ = [
    "Spectrum",
    "PowerSpectrum",
    "ArraySpectrum",
    "spectrum",
    "as_spectrum",
    "monolithic_losses",
    "modular_losses",
    "unexplained_variance",
    "sample_complexity",
    "fit",
    "SpectrumFit",
    "simulate",
    "SimulationResult",
]
