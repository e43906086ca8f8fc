"""verl 0.9.1 with trl 1.x: a stand-in for the value-head model class that trl no longer has.

When trl is installed, verl's `apply_monkey_patch` (verl/models/transformers/monkey_patch.py, on every actor model
load) imports `AutoModelForCausalLMWithValueHead` from `trl.experimental.ppo` or `trl` and replaces its
`state_dict`. trl 1.x removed the class from both places, so every model load fails with an ImportError. No model of
that class can exist with such a trl, so an empty stand-in served as `trl.experimental.ppo` gives verl the class it
patches and changes nothing else. With a trl that has the class, nothing is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

STAND_IN_MODULE = "trl.experimental.ppo"


class AutoModelForCausalLMWithValueHead:
    """Stand-in: this trl has no value-head models (see the module docstring)."""


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != STAND_IN_MODULE:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.AutoModelForCausalLMWithValueHead = AutoModelForCausalLMWithValueHead


def trl_lacks_value_head() -> bool:
    if importlib.util.find_spec("trl") is None:
        return False
    try:
        has_experimental = importlib.util.find_spec(STAND_IN_MODULE) is not None
    except ModuleNotFoundError:
        has_experimental = False
    if has_experimental:
        return False
    import trl

    try:
        return getattr(trl, "AutoModelForCausalLMWithValueHead", None) is None
    except ImportError:
        return True


def install_value_head_stand_in() -> None:
    if any(isinstance(finder, _StandInFinder) for finder in sys.meta_path) or not trl_lacks_value_head():
        return
    sys.meta_path.insert(0, _StandInFinder())
