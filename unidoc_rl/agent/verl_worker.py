"""The project's verl agent-loop worker, and running it in-process (local trainer, tests, benchmarks, demo).

`UniDocAgentLoopWorker` is verl's `AgentLoopWorker` without per-trajectory costs measured to dominate CPU rollouts
of short turns (together about 40 ms per trajectory):

- verl builds a new agent loop through `hydra.utils.instantiate` for every trajectory. Agent loops that declare
  `reusable = True` (they keep no per-episode state on the instance) are built once per worker and name.
- verl re-runs the processor over the decoded text of every finished trajectory to collect multi-modal inputs.
  For a Qwen2/2.5-VL trajectory without images, videos or audio it yields nothing but a placeholder that tells verl to
  derive M-RoPE positions from the token ids; the worker supplies that placeholder directly.
- For such a trajectory of a Qwen2-VL/Qwen2.5-VL model, `get_rope_index` (a Python loop over token groups)
  reduces to one position per attended token on all three M-RoPE axes; the worker fills that in directly.
- verl pads each trajectory's prompt, response and mask through `tokenizer.pad` (about 1 ms a call); the worker
  writes the same tensors directly.

`UniDocAgentLoopManager` makes verl's trainer start these workers (`rollout.agent.agent_loop_manager_class`).

verl's `hf_processor` builds the processor with `AutoProcessor`, which fails without torchvision (CPU machines):
the worker then has no processor and cannot handle images. `build_agent_loop_worker` installs the project's
torchvision-free processor instead and binds the model's M-RoPE `get_rope_index` to it, as verl does for the
stock class. With torchvision present, verl's own processor is kept.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import hydra
import ray
import torch
from omegaconf import DictConfig, OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopManager,
    AgentLoopWorker,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.utils.rollout_trace import rollout_trace_attr

import unidoc_rl.agent.agent_loop  # noqa: F401  (registers "unidoc_agent")
from unidoc_rl.compat import load_policy_processor

VERL_CONFIG_NAME = "ppo_trainer"
TEXT_ROPE_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})
"""Models whose processor yields only a token-type marker for text alone and whose M-RoPE positions for text
alone are the running count of attended tokens on every axis; other models take verl's general path."""


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


class UniDocAgentLoopWorker(AgentLoopWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reusable_loops: dict[str, Any] = {}

    def _build_agent_loop(self, agent_name: str):
        return hydra.utils.instantiate(
            config=_agent_loop_registry[agent_name],
            trainer_config=DictConfigWrap(config=self.config),
            server_manager=self.llm_client,
            tokenizer=self.tokenizer,
            processor=self.processor,
            hf_model_type=self.hf_model_type,
            dataset_cls=self.dataset_cls,
            data_config=DictConfigWrap(self.config.data),
            tools=ToolListWrap(self.tools),
        )

    def _agent_loop(self, agent_name: str):
        if agent_name not in _agent_loop_registry:
            raise KeyError(f"agent loop {agent_name!r} is not registered; registered: {sorted(_agent_loop_registry)}")
        cached = self._reusable_loops.get(agent_name)
        if cached is not None:
            return cached
        agent_loop = self._build_agent_loop(agent_name)
        if getattr(agent_loop, "reusable", False):
            self._reusable_loops[agent_name] = agent_loop
        return agent_loop

    async def _run_agent_loop(self, sampling_params, trajectory, *, agent_name: str, trace: bool = True, **kwargs):
        with rollout_trace_attr(
            step=trajectory["step"],
            sample_index=trajectory["sample_index"],
            rollout_n=trajectory["rollout_n"],
            validate=trajectory["validate"],
            name="agent_loop",
            trace=trace,
        ):
            output = await self._agent_loop(agent_name).run(sampling_params, **kwargs)
            return await self._agent_loop_postprocess(output, trajectory["validate"], **kwargs)

    def _pad_token_ids(
        self, tokens: list[int], *, max_length: int, padding_side: str, return_attention_mask: bool
    ) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            if tokens:
                raise ValueError("the tokenizer has no pad token")
            pad_id = 0
        width = max(max_length, len(tokens))
        input_ids = torch.full((1, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((1, width), dtype=torch.long)
        start = width - len(tokens) if padding_side == "left" else 0
        input_ids[0, start : start + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[0, start : start + len(tokens)] = 1
        return (
            {"input_ids": input_ids, "attention_mask": attention_mask}
            if return_attention_mask
            else {"input_ids": input_ids}
        )

    def _compute_multi_modal_inputs(self, output, input_ids) -> dict[str, torch.Tensor]:
        media = output.multi_modal_data or {}
        if not self._text_rope_model() or any(media.get(kind) for kind in ("images", "videos", "audios")):
            return super()._compute_multi_modal_inputs(output, input_ids)
        # What a Qwen2/2.5-VL processor returns for text alone once verl drops its ids and mask: the token-type
        # marker, whose presence (not value) makes verl derive M-RoPE positions from the token ids.
        return {"mm_token_type_ids": torch.zeros_like(input_ids)}

    def _compute_position_ids(self, input_ids, attention_mask, multi_modal_inputs, mm_processor_kwargs=None):
        if not self._text_only(input_ids, multi_modal_inputs):
            return super()._compute_position_ids(input_ids, attention_mask, multi_modal_inputs, mm_processor_kwargs)
        multi_modal_inputs.pop("mm_token_type_ids", None)
        valid = attention_mask[0].bool()
        count = torch.arange(int(valid.sum()), dtype=torch.long)
        text = torch.ones((1, input_ids.shape[1]), dtype=torch.long)
        text[0, valid] = count
        vision = torch.zeros((3, input_ids.shape[1]), dtype=torch.long)
        vision[:, valid] = count
        return torch.cat((text, vision)).unsqueeze(0)  # (1, 4, seq_len): verl's text row, then M-RoPE t/h/w

    def _text_rope_model(self) -> bool:
        """Whether the shortcuts for text-only trajectories hold for this model (see TEXT_ROPE_MODEL_TYPES)."""
        return (
            self.hf_model_type in TEXT_ROPE_MODEL_TYPES and getattr(self.processor, "get_rope_index", None) is not None
        )

    def _text_only(self, input_ids: torch.Tensor, multi_modal_inputs: dict[str, Any]) -> bool:
        if not self._text_rope_model():
            return False
        if any(multi_modal_inputs.get(key) is not None for key in ("image_grid_thw", "video_grid_thw")):
            return False
        config = self.processor.config
        media_ids = (config.image_token_id, config.video_token_id)
        return not any(bool((input_ids == token).any()) for token in media_ids if token is not None)


class UniDocAgentLoopManager(AgentLoopManager):
    """verl's agent-loop manager, starting `UniDocAgentLoopWorker`s."""

    def __init__(self, *args, **kwargs):
        self.agent_loop_workers_class = ray.remote(UniDocAgentLoopWorker)
        super().__init__(*args, **kwargs)


def build_agent_loop_worker(
    config: DictConfig, llm_client, processor=None, worker_class: type[AgentLoopWorker] = UniDocAgentLoopWorker
) -> AgentLoopWorker:
    """An in-process agent-loop worker (by default the project's) whose processor handles images on this machine."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to create processor")
        worker = worker_class(config, llm_client)
    if worker.processor is None:
        processor = processor or rope_processor(config.actor_rollout_ref.model.path)
        worker.processor = processor
        worker.model_config.processor = processor
    return worker
