"""A generation server for verl's rollout path that runs an in-process engine (no vLLM), for CPU machines.

verl's agent loops reach the policy through `LLMServerClient`, which asks the router for a server actor and calls
its `generate(request_id=..., prompt_ids=..., sampling_params=..., image_data=..., video_data=...)`, expecting a
`TokenOutput`. `GenerationServer` is that actor's class around any object with the same `generate` coroutine: the
project's `LocalEngine` (transformers on CPU) or a scripted client in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verl.workers.rollout.replica import TokenOutput

EngineFactory = Callable[[], Any]


class GenerationServer:
    """Serves verl's token-in/token-out `generate` from the engine that `engine_factory()` builds in the actor."""

    def __init__(self, engine_factory: EngineFactory):
        self.engine = engine_factory()

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        return await self.engine.generate(
            request_id,
            prompt_ids=prompt_ids,
            sampling_params=sampling_params,
            image_data=image_data,
            video_data=video_data,
            **kwargs,
        )
