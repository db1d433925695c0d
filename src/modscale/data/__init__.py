"""Datasets read from local files (DESIGN section 2). Imports no other modscale package; never downloads.

- :func:`load_cifar10`: CIFAR-10 from the offline JPEG npz copy (decoded once, cached with a checksum) or the
  official ``cifar-10-batches-py`` folder (read through a restricted unpickler).
"""

from modscale.data.cifar10 import (
    CACHE_ENV,
    CIFAR10_CLASSES,
    DATA_ENV,
    CacheWarning,
    Cifar10Arrays,
    RestrictedUnpickler,
    default_cache_dir,
    load_cifar10,
    locate_cifar10,
    restricted_load,
)

__all__ = [
    "load_cifar10",
    "locate_cifar10",
    "default_cache_dir",
    "restricted_load",
    "RestrictedUnpickler",
    "Cifar10Arrays",
    "CacheWarning",
    "CIFAR10_CLASSES",
    "DATA_ENV",
    "CACHE_ENV",
]
