"""The project's plugin for verl, loaded in the driver and in every Ray process (docs/training.md).

Importing it registers, through verl's own registries:
- the trainer mode `unidoc_sync` (verl's synchronous V1 trainer plus the project's per-step metrics);
- the advantage estimator `unidoc_per_action` (per-action credit, credit.py; computed by `unidoc_sync`);
- the platform `cpu` (selected by VERL_PLATFORM=cpu) and the rollout `unidoc_local` (the project's transformers
  engine), with which `main_ppo` trains on machines without GPUs or vLLM;
- on the CPU platform, inside vLLM's worker processes, the fix that lets verl's vLLM rollout take weight syncs
  from vLLM's CPU build (`vllm_cpu.py`).

Importing it also fixes verl's Qwen2/2.5-VL forward over micro-batches without images under transformers 5.x
(text_only_vision.py).

verl imports the modules named in VERL_USE_EXTERNAL_MODULES when it is itself imported, so
`VERL_USE_EXTERNAL_MODULES=unidoc_rl.verl_plugin`, set for the driver and passed to Ray's workers through
`ray_kwargs.ray_init.runtime_env.env_vars` (configs/unidoc_grpo.yaml), loads it everywhere verl runs.
"""

from unidoc_rl.verl_plugin import platform, trl_compat, vllm_cpu

# Before anything imports verl's engines: they resolve the platform at import time.
platform.register_platform()
trl_compat.install_value_head_stand_in()
if platform.is_selected():
    platform.register_engines()
    platform.join_worker_group()
    vllm_cpu.install()

from unidoc_rl.verl_plugin import local_rollout, text_only_vision, trainer  # noqa: E402, F401  (trainer registers `unidoc_sync`)

local_rollout.register_rollout()
text_only_vision.install()
