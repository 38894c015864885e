"""Module paths from before the package was split into stage folders, kept for one release.

``from aurora_batch.join import nearest`` still works: the old module forwards each name to its new home,
with a ``DeprecationWarning`` that names it.  Old paths that are now packages (``aurora_batch.formats``,
``.partition``, ``.store``, ``.month``) forward their old names the same way (:func:`forward`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: old module -> the modules its names went to, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "fs": ("core.fs",),
    "lock": ("core.lock",),
    "stations": ("core.stations",),
    "ephemeris": ("core.ephemeris",),
    "catalog": ("plan.catalog", "core.keys"),
    "imaging": ("formats.decode", "model.recipes", "partition.sky"),
    "skymap": ("formats.skymap",),
    "readers": ("instruments.readers",),
    "join": ("instruments.join",),
    "torch_recipes": ("model.torch_recipes",),
    "features": ("model.features", "model.backbones"),
    "runtimes": ("model.runtimes",),
    "quantize": ("model.quantize",),
    "classify": ("model.heads", "core.classes"),
    "listing": ("plan.listing",),
    "planning": ("plan.planner", "runner.planning"),
    "stream": ("partition.stream",),
    "increment": ("month.increment", "store.state"),
    "versions": ("store.versions",),
    "results": ("products.results",),
    "keogram": ("products.keogram",),
    "embedding": ("products.embedding",),
    "ridge": ("products.ridge",),
    "report": ("products.report",),
    "files": ("products.files",),
    "season": ("runner.season",),
    "nightly": ("runner.nightly",),
    "cluster": ("runner.cluster",),
    "worker": ("runner.worker",),
    "synth": ("datasets.synth",),
    "oath": ("datasets.oath", "products.oath"),
}
#: old modules whose path is now a package: their old names, forwarded by the package
PACKAGES: dict[str, tuple[str, ...]] = {
    "formats": ("formats.names", "formats.files"),
    "partition": ("partition.process", "partition.frames", "partition.featurise", "partition.clock"),
    "store": ("store.layout", "store.parts", "store.zarrs", "store.ledger", "month.commit", "month.dataset"),
    "month": ("month.build", "month.join", "runner.joins"),
}


def forward(old: str, new: Sequence[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds ``name`` in the ``new`` modules, warning that it moved."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for where in new:
                module = importlib.import_module(f"aurora_batch.{where}")
                if hasattr(module, name):
                    warnings.warn(
                        f"aurora_batch.{old}.{name} moved to aurora_batch.{where}.{name}; "
                        "the old path is removed in the next release",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    return getattr(module, name)
        raise AttributeError(f"module 'aurora_batch.{old}' has no attribute {name!r}")

    return __getattr__


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``aurora_batch.<old module>`` as a forwarding module (no old module is a real one any more)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        return importlib.util.spec_from_loader(fullname, self) if package == "aurora_batch" and old in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__.split(".", 1)[1]
        module.__getattr__ = forward(old, MOVED[old])  # type: ignore[method-assign]


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())  # before an editable install's finder, which may know stale files
