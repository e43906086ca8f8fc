"""A verl rollout backed by the project's transformers engine, for machines without vLLM (CPU).

Selected with `actor_rollout_ref.rollout.name=unidoc_local` (configs/experiment/cpu.yaml).

- `LocalRolloutReplica` is a rollout replica whose server actor (`LocalGenerationServer`) generates with
  `LocalEngine` (transformers, sdpa attention) from the policy checkpoint.
- `LocalRolloutAdapter` is the rollout that verl's hybrid actor worker holds: when verl syncs weights after an
  update, it sends the actor's full parameters to its replica's server, which loads them into its model.
"""

from __future__ import annotations

import logging

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.verl_plugin.generation_server import GenerationServer

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "unidoc_local"


def build_engine(model_path: str, max_model_len: int, max_batch_size: int, seed: int) -> LocalEngine:
    return LocalEngine.from_pretrained(
        model_path, max_model_len=max_model_len, max_batch_size=max_batch_size, seed=seed, batch_wait_s=0.05
    )


def server_name(replica_rank: int, suffix: str = "") -> str:
    return f"unidoc_local_server_{replica_rank}{suffix}"


class LocalGenerationServer(GenerationServer):
    """The replica's server actor: `LocalEngine` generation, weights loaded from the actor on every sync. The
    memory controls verl sends to a vLLM server (sleep, wake_up, kv cache) have nothing to free here."""

    def __init__(self, engine_factory):
        super().__init__(engine_factory)
        self.global_steps: int | None = None
        """The trainer step whose weights the model holds (verl stamps every output with it)."""

    async def generate(self, request_id: str, **kwargs) -> TokenOutput:
        output = await super().generate(request_id, **kwargs)
        output.extra_fields["global_steps"] = self.global_steps
        return output

    def load_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        model = self.engine.model
        own = model.state_dict()
        unknown = sorted(set(named_tensors) - set(own))
        if unknown:
            raise KeyError(f"weights not in the rollout model: {unknown[:5]} ({len(unknown)} in all)")
        with torch.no_grad():
            for name, tensor in named_tensors.items():
                own[name].copy_(tensor.to(own[name].dtype))
        self.global_steps = global_steps
        return len(named_tensors)

    async def wake_up(self) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> None:
        return None

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class LocalRolloutReplica(RolloutReplica):
    async def launch_servers(self):
        from functools import partial

        config = self.config
        factory = partial(
            build_engine,
            str(self.model_config.path),
            int(config.prompt_length + config.response_length),
            int(config.max_num_seqs),
            int(config.seed),
        )
        server = (
            ray.remote(LocalGenerationServer)
            .options(
                name=server_name(self.replica_rank, self.name_suffix),
                max_concurrency=self.max_concurrency,
                num_cpus=0,
            )
            .remote(factory)
        )
        await server.wake_up.remote()  # returns once the actor has loaded the model
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_name(self.replica_rank, self.name_suffix)


class LocalRolloutAdapter(BaseRollout):
    """The rollout inside verl's hybrid actor worker: forwards synced weights to the replica's server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        replica_world = self.config.tensor_model_parallel_size * self.config.data_parallel_size
        replica_world *= self.config.pipeline_model_parallel_size
        self.replica_rank, self.sender = divmod(rank, replica_world)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"the local rollout takes full named tensors, not {wire_format!r}")
        named = {}
        for name, tensor in weights:  # every rank walks the generator: gathering a full tensor is collective
            if self.sender == 0:
                named[name] = tensor.detach().to("cpu").clone()
        if self.sender != 0:
            return
        server = ray.get_actor(server_name(self.replica_rank))
        loaded = await server.load_weights.remote(named, kwargs.get("global_steps"))
        logger.info("synced %d tensors to %s", loaded, server_name(self.replica_rank))


def register_rollout() -> None:
    """Make verl find the `unidoc_local` replica (driver side) and rollout (inside the actor worker)."""
    from verl.workers.rollout import base as rollout_base  # its registry has no register function

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: LocalRolloutReplica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.LocalRolloutAdapter"
