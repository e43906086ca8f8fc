"""A finished one-row trajectory as verl's agent-loop worker hands it to a reward-loop worker (tests, benchmarks)."""

from __future__ import annotations

from typing import Any


def reward_worker_trajectory(non_tensor: dict[str, Any]):
    """A `DataProto` of one trajectory: fixed toy token tensors and the given non-tensor columns."""
    import torch
    from tensordict import TensorDict
    from verl import DataProto

    prompt, response = torch.tensor([[3, 3, 2]]), torch.tensor([[2, 2, 0]])
    batch = TensorDict(
        {
            "prompts": prompt,
            "responses": response,
            "input_ids": torch.cat([prompt, response], dim=1),
            "attention_mask": torch.ones(1, 6, dtype=torch.int64),
        },
        batch_size=1,
    )
    return DataProto(batch=batch, non_tensor_batch=non_tensor)
