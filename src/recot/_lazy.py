"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap.

``recot --help`` imports every ``commands`` module, and with it each package's
``__init__``; with lazy attributes that costs no torch, transformers or PyAV import.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose public names (``_exports``: name -> defining module) are imported on first access."""

    _exports: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        exports = self.__dict__.get("_exports", {})
        if name not in exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        self.__dict__[name] = value  # later look-ups skip this method
        return value

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__.get("_exports", {})})

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a submodule binds it as an attribute of its package. Where a submodule has the name of an export
        # (the module recot.video.probe and the function probe), the export keeps the name, as with eager imports.
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_exports", {}):
            return
        super().__setattr__(name, value)


def lazy_package(package: str, exports: dict[str, str]) -> None:
    """Make the public ``name`` of ``package`` resolve, on first use, to ``name`` of module ``exports[name]``.

    Call at the end of the package's ``__init__``: ``lazy_package(__name__, {"VideoChat": "recot.engine.chat"})``.
    """
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module.__dict__["_exports"] = dict(exports)
