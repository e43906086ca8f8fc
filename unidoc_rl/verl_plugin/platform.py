"""verl's device abstraction for the host CPU: collectives on gloo, no device memory to manage.

Registered as verl platform `cpu` and selected by `VERL_PLATFORM=cpu` (it is never auto-detected, so CPU-only
processes on GPU nodes keep verl's own choice). Ray schedules verl's workers by accelerator count, so the platform
names Ray's "GPU" resource and the CPU recipe starts Ray with that many logical GPUs (`ray_kwargs.ray_init.num_gpus`);
no CUDA is touched.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase

PLATFORM_NAME = "cpu"
RAY_ACCELERATOR = "GPU"


class _CpuDeviceModule:
    """What verl calls on `torch.<device>`, for the host CPU: memory management is a no-op."""

    def __getattr__(self, name: str):
        return getattr(torch.cpu, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def memory_allocated(*args, **kwargs) -> int:
        return 0

    @staticmethod
    def memory_reserved(*args, **kwargs) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(*args, **kwargs) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(*args, **kwargs) -> int:
        return 0

    @staticmethod
    def reset_peak_memory_stats(*args, **kwargs) -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(*args, **kwargs) -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def get_device_name(*args, **kwargs) -> str:
        return "cpu"

    @staticmethod
    def get_rng_state(*args, **kwargs) -> torch.Tensor:
        # The "device" generator is the host's: checkpoints save and restore the CPU generator state.
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, *args, **kwargs) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def mem_get_info(*args, **kwargs) -> tuple[int, int]:
        pages, page_size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * page_size, os.sysconf("SC_PHYS_PAGES") * page_size


CPU_DEVICE = _CpuDeviceModule()


class PlatformCPU(PlatformBase):
    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return CPU_DEVICE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected (see the module docstring)

    def current_device(self) -> str:
        # verl passes the "device id" straight to `.to()` and `torch.device()`, where an int means a CUDA device.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return RAY_ACCELERATOR

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False  # verl's vLLM rollout then passes synced weights through shared memory

    def rollout_env_vars(self) -> dict[str, str]:
        # The environment of verl's vLLM server actors (and so of vLLM's engine and worker processes): vLLM's CPU
        # build sizes its KV cache in host RAM from VLLM_CPU_KVCACHE_SPACE, and must not reach for a model hub.
        from unidoc_rl.engine.vllm_server import cpu_environment

        return cpu_environment()

    def cudart(self) -> Any:
        return None


def register_platform() -> None:
    from verl.plugin.platform.platform_manager import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(PLATFORM_NAME)(PlatformCPU)


def register_engines() -> None:
    """verl's FSDP engines run on the CPU as they are (FSDP2 over gloo); verl registers them for cuda and npu only."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        EngineRegistry.register(model_type=model_type, backend=["fsdp", "fsdp2"], device=PLATFORM_NAME)(engine)


def is_selected() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def join_worker_group() -> None:
    """In a verl worker process on the CPU platform, join the worker group's process group on gloo alone.

    verl 0.9.1 asks for `cpu:gloo,{device}:{backend}` (verl/utils/distributed.py, initialize_global_process_group_ray),
    which torch rejects when the device is the CPU ("Duplicate device type cpu"), and only skips that when a process
    group already exists. verl starts each worker with its rank and rendezvous in the environment (WG_BACKEND=ray,
    RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the plugin joins the same group as soon as verl is imported there.
    """
    import torch.distributed

    if os.environ.get("WG_BACKEND") != "ray" or "RANK" not in os.environ or torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group(
        backend="gloo",
        init_method=os.environ.get("DIST_INIT_METHOD") or "env://",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
