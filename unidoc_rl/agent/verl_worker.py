"""Run verl's `AgentLoopWorker` in-process (local trainer, tests, benchmarks, demo).

verl's `hf_processor` builds the processor with `AutoProcessor`, which fails without torchvision (CPU machines):
the worker then has no processor and cannot handle images. `build_agent_loop_worker` installs the project's
torchvision-free processor instead and binds the model's M-RoPE `get_rope_index` to it, as verl does for the
stock class. With torchvision present, verl's own processor is kept.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import unidoc_rl.agent.agent_loop  # noqa: F401  (registers "unidoc_agent")
from unidoc_rl.compat import load_policy_processor

VERL_CONFIG_NAME = "ppo_trainer"


def compose_verl_config(overrides: list[str] | None = None, extra: dict[str, Any] | None = None) -> DictConfig:
    """verl's `ppo_trainer` config with Hydra overrides, plus extra top-level sections (e.g. `unidoc_agent`)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name=VERL_CONFIG_NAME, overrides=list(overrides or []))
    if extra:
        OmegaConf.set_struct(config, False)
        config = OmegaConf.merge(config, OmegaConf.create(extra))
    return config


def rope_processor(model_path: str | Path):
    """The policy processor with `get_rope_index` bound, as verl's `hf_processor` prepares it."""
    from transformers import AutoConfig, Qwen2_5_VLModel, Qwen2VLModel

    processor = load_policy_processor(model_path)
    config = AutoConfig.from_pretrained(str(model_path))
    model_class = {"qwen2_vl": Qwen2VLModel, "qwen2_5_vl": Qwen2_5_VLModel}.get(config.model_type)
    if model_class is None:
        raise ValueError(f"no M-RoPE binding for model_type {config.model_type!r}")
    processor.config = config
    processor.get_rope_index = types.MethodType(model_class.get_rope_index, processor)
    if hasattr(model_class, "get_vision_position_ids"):
        processor.get_vision_position_ids = types.MethodType(model_class.get_vision_position_ids, processor)
    return processor


def build_agent_loop_worker(config: DictConfig, llm_client, processor=None):
    """An in-process `AgentLoopWorker` whose processor handles images on this machine."""
    import warnings

    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to create processor")
        worker = AgentLoopWorker(config, llm_client)
    if worker.processor is None:
        processor = processor or rope_processor(config.actor_rollout_ref.model.path)
        worker.processor = processor
        worker.model_config.processor = processor
    return worker
