"""The registry of experiments: every module of this package that defines ``EXPERIMENTS``, plus plugins.

Adding an experiment is adding one file ``modscale/experiments/<name>.py`` that defines a module-level
``EXPERIMENTS = (Experiment(...), ...)``; it is found on first use. Experiments outside the package come from
plugins: modules (dotted names or ``.py`` paths) listed in the ``MODSCALE_EXPERIMENTS`` environment variable
(separated by ``os.pathsep``), and installed distributions' entry points in the group
``modscale.experiments`` (each pointing at a module or at an ``EXPERIMENTS`` tuple).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from modscale.errors import InvalidType, InvalidValue
from modscale.experiments.experiment import Experiment

ENV_VAR = "MODSCALE_EXPERIMENTS"
ENTRY_POINT_GROUP = "modscale.experiments"
_FRAMEWORK = {"experiment", "registry", "runner", "backends", "search", "calibration", "schedule"}
PLUGIN_PREFIX = "modscale_plugin_"

_registry: dict[str, Experiment] = {}
# What load() found in modules: name -> (experiment, where: a module name, a plugin path or "module:attr");
# another process imports the same source to get the same experiment (the local backend's workers).
_sources: dict[str, tuple[Experiment, str]] = {}
_loaded = False


def register(experiment: Experiment, *, replace: bool = False) -> Experiment:
    """Add ``experiment``; a second experiment of the same name is an error unless ``replace``."""
    if not isinstance(experiment, Experiment):
        raise InvalidType(f"register expects an Experiment, got {type(experiment).__name__}")
    old = _registry.get(experiment.name)
    if old is not None and old is not experiment and not replace:
        raise InvalidValue(f"an experiment named {experiment.name!r} is already registered")
    _registry[experiment.name] = experiment
    return experiment


def unregister(name: str) -> None:
    """Remove the experiment ``name`` (tests use it to clean up)."""
    _registry.pop(name, None)


def _register_module(module: ModuleType, source: str) -> list[Experiment]:
    return _register_all(getattr(module, "EXPERIMENTS", ()), source)


def _register_all(found, source: str) -> list[Experiment]:
    found = list(found) if isinstance(found, list | tuple) else [found]
    for experiment in found:
        _sources[experiment.name] = (register(experiment, replace=True), source)
    return found


def import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a dotted module name or a path to a ``.py`` file."""
    path = Path(spec)
    if spec.endswith(".py"):
        if not path.is_file():
            raise InvalidValue(f"{ENV_VAR}: no such plugin file {spec}")
        name = PLUGIN_PREFIX + path.stem
        module = sys.modules.get(name)
        if module is None or getattr(module, "__file__", None) != str(path.resolve()):
            loader_spec = importlib.util.spec_from_file_location(name, path.resolve())
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as exc:
        raise InvalidValue(f"{ENV_VAR}: cannot import plugin {spec!r}: {exc}") from None


def _builtin_modules() -> Iterable[str]:
    package = Path(__file__).resolve().parent
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name not in _FRAMEWORK:
            yield f"modscale.experiments.{info.name}"


def load(force: bool = False) -> None:
    """Import the built-in experiment modules and the plugins (once; ``force`` re-reads the plugins)."""
    global _loaded
    if _loaded and not force:
        return
    _loaded = True
    for name in _builtin_modules():
        _register_module(importlib.import_module(name), name)
    for spec in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        spec = spec.strip()
        _register_module(import_plugin(spec), str(Path(spec).resolve()) if spec.endswith(".py") else spec)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        load_source(entry.value)


def source(experiment: Experiment) -> str | None:
    """Where :func:`load` found ``experiment`` (a module name, a plugin path, ``module:attr``), or None when
    it was registered by hand or replaced since; :func:`load_source` in another process finds it again."""
    found = _sources.get(experiment.name)
    if found is None or found[0] is not experiment or _registry.get(experiment.name) is not experiment:
        return None
    return found[1]


def load_source(where: str) -> list[Experiment]:
    """Register and return the experiments of one source as :func:`source` names it (a module name or
    ``.py`` path, or ``module:attr`` naming a module, an Experiment or a tuple of them)."""
    module_name, sep, attr = where.partition(":")
    if sep and not where.endswith(".py"):
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    else:
        obj = import_plugin(where)
    if isinstance(obj, ModuleType):
        return _register_module(obj, where)
    return _register_all(obj, where)


def names() -> list[str]:
    """Every registered experiment's name, sorted."""
    load()
    return sorted(_registry)


def all_experiments() -> list[Experiment]:
    """Every registered experiment, sorted by name."""
    load()
    return [_registry[n] for n in sorted(_registry)]


def get(name: str | Experiment) -> Experiment:
    """The experiment called ``name``; an unknown name raises ``InvalidValue`` listing the valid ones."""
    if isinstance(name, Experiment):
        return name
    load()
    if name not in _registry:
        raise InvalidValue(f"unknown experiment {name!r}; valid names: {', '.join(sorted(_registry))}")
    return _registry[name]


__all__ = [
    "ENV_VAR",
    "ENTRY_POINT_GROUP",
    "register",
    "unregister",
    "load",
    "names",
    "all_experiments",
    "get",
    "import_plugin",
    "source",
    "load_source",
]
