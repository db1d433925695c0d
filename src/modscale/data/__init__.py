"""Datasets on local disk (DESIGN section 2), and the one command that downloads one. Imports no other
modscale package.

- :func:`load_cifar10`: CIFAR-10 from the offline JPEG npz copy (decoded once, cached with a checksum) or the
  official ``cifar-10-batches-py`` folder (read through a restricted unpickler); :func:`find_cifar10` says
  where it was found (``--data-dir``, ``MODSCALE_DATA``, the data home, the copy beside a checkout).
- :func:`fetch_cifar10`: the official archive downloaded (resumable), verified against its pinned checksum,
  extracted safely into the data home (:func:`data_home`). Loading never downloads.
"""

from modscale.data.cifar10 import (
    CACHE_ENV,
    CIFAR10_CLASSES,
    DATA_ENV,
    FETCH_COMMAND,
    CacheWarning,
    Cifar10Arrays,
    Found,
    RestrictedUnpickler,
    data_home,
    default_cache_dir,
    default_fetch_dir,
    find_cifar10,
    load_cifar10,
    locate_cifar10,
    restricted_load,
)
from modscale.data.fetch import CIFAR10_ARCHIVE, Archive, DownloadProgress, fetch_cifar10

__all__ = [
    "load_cifar10",
    "locate_cifar10",
    "find_cifar10",
    "Found",
    "fetch_cifar10",
    "Archive",
    "CIFAR10_ARCHIVE",
    "DownloadProgress",
    "data_home",
    "default_cache_dir",
    "default_fetch_dir",
    "restricted_load",
    "RestrictedUnpickler",
    "Cifar10Arrays",
    "CacheWarning",
    "CIFAR10_CLASSES",
    "DATA_ENV",
    "CACHE_ENV",
    "FETCH_COMMAND",
]
