"""Run a fix on a third-party module right after it is imported, without importing it before anyone needs it.

The framework's narrow fixes to libraries it does not own (transformers' Qwen2.5-VL processor without
torchvision, vLLM's CPU linear layers) apply to a module's contents, and importing those modules eagerly costs
seconds in every process that never uses them.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable
from types import ModuleType


def after_import(name: str, action: Callable[[ModuleType], None]) -> None:
    """Calls `action(module)` once module `name` has been executed: now if it already has, else when it is."""
    if name in sys.modules:
        action(sys.modules[name])
    elif not any(isinstance(finder, _AfterImport) and finder.name == name for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, action))


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, action: Callable[[ModuleType], None]):
        self.name = name
        self.action = action

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                spec.loader = _ThenRun(spec.loader, self.action)
                return spec
        return None


class _ThenRun(importlib.abc.Loader):
    def __init__(self, loader, action: Callable[[ModuleType], None]):
        self.loader = loader
        self.action = action

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.action(module)
