"""Argument checks shared by all packages: one sentence per failure (what was wrong, what is allowed)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from modscale.errors import InvalidType, InvalidValue


def as_float_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array; a non-numeric or non-finite entry raises naming ``name``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidType(
            f"{name} must be a number or an array of numbers, got {type(value).__name__}"
        ) from None
    if np.isnan(arr).any():
        raise InvalidValue(f"{name} must not contain NaN")
    return arr


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> np.ndarray:
    """Every entry of ``value`` must be > 0 (and finite unless ``allow_inf``)."""
    arr = as_float_array(name, value)
    bad = arr <= 0 if allow_inf else ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        shown = arr[bad].ravel()[0]
        allowed = "positive" if allow_inf else "positive and finite"
        raise InvalidValue(f"{name} must be {allowed}, got {shown:g}")
    return arr


def check_positive_number(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """``value`` must be one real number (bools excluded), finite and > 0; returned as a float. With
    ``allow_none``, None is allowed and returned as is (e.g. "choose it for me")."""
    if value is None and allow_none:
        return None
    extra = " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(f"{name} must be a positive finite number{extra}, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidValue(f"{name} must be a positive finite number{extra}, got {value!r}")
    return float(value)


def check_at_least(name: str, value: Any, low: float, *, what: str = "") -> np.ndarray:
    """Every entry of ``value`` must be finite and >= ``low``."""
    arr = as_float_array(name, value)
    bad = ~np.isfinite(arr) | (arr < low)
    if bad.any():
        shown = arr[bad].ravel()[0]
        suffix = f" ({what})" if what else ""
        raise InvalidValue(f"{name} must be >= {low:g}{suffix}, got {shown:g}")
    return arr


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` must be an integer (bools excluded) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        else:
            raise InvalidType(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise InvalidValue(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise InvalidValue(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InvalidValue(f"{name} must be one of {listed}, got {value!r}")
    return value


__all__ = [
    "as_float_array",
    "check_positive",
    "check_positive_number",
    "check_at_least",
    "check_int",
    "check_choice",
]
