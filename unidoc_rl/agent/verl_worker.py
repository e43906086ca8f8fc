"""The project's verl agent-loop workers and managers, and running a worker in-process (evaluation harness, tests).

verl 0.9.1 has two trainers, and each drives its own worker class:

- the V1 trainer (`trainer.use_v1=true`, verl's default) calls `AgentLoopManagerTQ.generate_sequences` with a
  `TensorDict` and reads finished trajectories from TransferQueue, written by `AgentLoopWorkerTQ`;
- the legacy trainer (`trainer.use_v1=false`) calls `AgentLoopManager.generate_sequences` with a `DataProto` and
  gets a padded `DataProto` back from `AgentLoopWorker`.

`UniDocAgentLoopManager` (the value of `rollout.agent.agent_loop_manager_class`) builds whichever of the two the
configured trainer drives, with `UniDocAgentLoopWorkerTQ` or `UniDocAgentLoopWorker` respectively. Both workers are
verl's plus `ProjectWorkerMixin`, whose overrides hold on either path:

- Processor: verl's `hf_processor` builds the processor with `AutoProcessor`, which fails without torchvision
  (CPU machines); the worker then has no processor and cannot handle images. The mixin installs the project's
  torchvision-free processor in the worker's constructor (so in every Ray worker, not only in-process) and binds
  the model's M-RoPE `get_rope_index` to it, as verl does for the stock class. With torchvision, verl's is kept.
- verl builds a new agent loop through `hydra.utils.instantiate` for every trajectory. Agent loops that declare
  `reusable = True` (they keep no per-episode state on the instance) are built once per worker and name; the
  UniDoc loop also renders a group's shared prompt once through this.
- For a Qwen2/2.5-VL trajectory without images, videos or audio, verl re-runs the processor over the decoded text
  only to learn that M-RoPE positions follow the token ids, and `get_rope_index` (a Python loop over token groups)
  then yields one position per attended token on all three axes; the mixin fills both in directly. Both workers
  call these two methods with the same arguments (the V1 worker with unpadded rows).
- Weight versions: verl's V1 trainer reads each trajectory's `min_global_steps`/`max_global_steps` (the policy
  versions that generated it, stamped by the rollout server on every `TokenOutput`) from the agent loop's
  `extra_fields`, and fails on a trajectory without them. The mixin records the versions of every generate call a
  trajectory makes and fills both in when the agent loop did not.
- The legacy worker pads each trajectory's prompt, response and mask through `tokenizer.pad` (about 1 ms a call);
  the mixin writes the same tensors directly. The V1 worker does not pad, so this applies to the legacy path and
  the in-process worker (evaluation harness, tests) only.

Every override is tested equal to verl's own output (tests/agent/test_verl_worker.py, tests/verl/).
"""

from __future__ import annotations

import types
import warnings
from contextvars import ContextVar
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
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
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


_trajectory_versions: ContextVar[list[int] | None] = ContextVar("unidoc_trajectory_versions", default=None)
VERSION_KEYS = ("min_global_steps", "max_global_steps")


class VersionRecordingClient:
    """The worker's LLM client, noting the weight versions of the outputs a trajectory receives."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    async def generate(self, *args, **kwargs):
        output = await self.client.generate(*args, **kwargs)
        versions = _trajectory_versions.get()
        extra = getattr(output, "extra_fields", None) or {}
        if versions is not None:
            versions.extend(int(extra[key]) for key in VERSION_KEYS if extra.get(key) is not None)
        return output


def stamp_versions(output, versions: list[int]) -> None:
    """Fill in an agent-loop output's weight-version span where the agent loop left it out."""
    if not versions:
        return
    for item in output if isinstance(output, list) else [output]:
        item.extra_fields.setdefault("min_global_steps", min(versions))
        item.extra_fields.setdefault("max_global_steps", max(versions))


def install_processor(worker: AgentLoopWorker, processor=None) -> None:
    """Give a worker whose processor verl could not build (no torchvision) the project's, M-RoPE bound."""
    processor = processor or rope_processor(worker.config.actor_rollout_ref.model.path)
    worker.processor = processor
    worker.model_config.processor = processor


class ProjectWorkerMixin:
    """The project's overrides of verl's agent-loop worker; mixed into the legacy and the V1 (TransferQueue) one."""

    def __init__(self, *args, processor=None, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Failed to create processor")
            super().__init__(*args, **kwargs)
        if processor is not None or self.processor is None:
            install_processor(self, processor)
        self.llm_client = VersionRecordingClient(self.llm_client)
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
            versions = _trajectory_versions.set([])
            try:
                output = await self._agent_loop(agent_name).run(sampling_params, **kwargs)
                stamp_versions(output, _trajectory_versions.get())
            finally:
                _trajectory_versions.reset(versions)
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


class UniDocAgentLoopWorker(ProjectWorkerMixin, AgentLoopWorker):
    """verl's legacy (DataProto) agent-loop worker with the project's overrides; also the in-process worker."""


class UniDocAgentLoopWorkerTQ(ProjectWorkerMixin, AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's V1 agent-loop worker (writes trajectories to TransferQueue) with the project's overrides."""


class UniDocLegacyAgentLoopManager(AgentLoopManager):
    """verl's legacy agent-loop manager, starting `UniDocAgentLoopWorker`s."""

    def __init__(self, *args, **kwargs):
        self.agent_loop_workers_class = ray.remote(UniDocAgentLoopWorker)
        super().__init__(*args, **kwargs)


class UniDocAgentLoopManagerTQ(AgentLoopManagerTQ):
    """verl's V1 agent-loop manager, starting `UniDocAgentLoopWorkerTQ`s."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = ray.remote(UniDocAgentLoopWorkerTQ)


def uses_v1_trainer(config: DictConfig) -> bool:
    """Whether `main_ppo` runs the V1 trainer for this config (`trainer.use_v1`, true when absent, as in verl)."""
    return bool(OmegaConf.select(config, "trainer.use_v1", default=True))


class UniDocAgentLoopManager:
    """The value of `rollout.agent.agent_loop_manager_class`: both of verl's trainers load this class and call
    `create(config=..., llm_client=..., teacher_client=..., reward_loop_worker_handles=...)`; it builds the manager
    that the configured trainer drives (`trainer.use_v1`)."""

    @staticmethod
    def manager_class(config: DictConfig) -> type[AgentLoopManager]:
        return UniDocAgentLoopManagerTQ if uses_v1_trainer(config) else UniDocLegacyAgentLoopManager

    @classmethod
    def create(cls, config: DictConfig, *args, **kwargs):
        return cls.manager_class(config).create(config, *args, **kwargs)


def build_agent_loop_worker(
    config: DictConfig, llm_client, processor=None, worker_class: type[AgentLoopWorker] = UniDocAgentLoopWorker
) -> AgentLoopWorker:
    """An in-process agent-loop worker (by default the project's legacy one, which returns a DataProto) whose
    processor handles images on this machine; `processor` saves loading one when the caller has it."""
    if issubclass(worker_class, ProjectWorkerMixin):
        return worker_class(config, llm_client, processor=processor)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to create processor")
        worker = worker_class(config, llm_client)
    if worker.processor is None:
        install_processor(worker, processor)
    return worker
