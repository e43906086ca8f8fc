"""GRPO math for the local trainer, on verl's own functions (`verl.trainer.ppo.core_algos`).

Only the glue lives here: where the outcome reward sits in the token sequence, how a mini-batch's loss is
aggregated across micro-batches, and teacher-forced log-probs of a rolled-out batch (M-RoPE positions and images
included). The advantage estimator, the clipped policy loss, the KL estimators and the loss aggregation are verl's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from verl.trainer.ppo import core_algos
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits


def token_level_rewards(scores: torch.Tensor, response_attention: torch.Tensor) -> torch.Tensor:
    """(B, R) zeros with each trajectory's scalar reward on its last response token, as verl places it."""
    rewards = torch.zeros(response_attention.shape, dtype=torch.float32)
    lengths = response_attention.sum(-1).long()
    rows = torch.arange(len(scores))
    last = (lengths - 1).clamp(min=0)
    rewards[rows, last] = torch.as_tensor(scores, dtype=torch.float32) * (lengths > 0).float()
    return rewards


def grpo_advantages(
    scores: torch.Tensor,
    response_attention: torch.Tensor,
    response_mask: torch.Tensor,
    groups: np.ndarray,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """Outcome advantages per token (0 on observation tokens), normalized within each prompt's group."""
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards(scores, response_attention),
        response_mask=response_mask.float(),
        index=groups,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    return advantages


@dataclass
class LossTerms:
    loss: torch.Tensor
    pg_loss: float
    kl_loss: float
    entropy: float
    pg_clipfrac: float
    ppo_kl: float


def policy_objective(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor | None,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    actor_config,
    batch_num_tokens: int,
    global_batch_size: int,
    entropy: torch.Tensor | None = None,
) -> LossTerms:
    """The actor loss of one micro-batch, scaled so that micro-batch losses sum to the mini-batch loss.

    `actor_config` is verl's `ActorConfig` (policy loss mode, clip ratios, KL settings, loss aggregation).
    """
    mask = response_mask.float()
    actor_config.global_batch_info.update(
        {"dp_size": 1, "batch_num_tokens": batch_num_tokens, "global_batch_size": global_batch_size}
    )
    mode = actor_config.loss_agg_mode
    policy_loss_fn = core_algos.get_policy_loss_fn(actor_config.policy_loss.loss_mode)
    pg_loss, pg_metrics = policy_loss_fn(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=mode,
        config=actor_config,
    )
    loss = pg_loss
    kl_value = 0.0
    if actor_config.use_kl_loss and ref_log_prob is not None:
        kl = core_algos.kl_penalty(log_prob, ref_log_prob, kl_penalty=actor_config.kl_loss_type)
        kl_loss = core_algos.agg_loss(kl, mask, mode, **actor_config.global_batch_info)
        loss = loss + actor_config.kl_loss_coef * kl_loss
        kl_value = float(kl_loss.detach())
    entropy_value = 0.0
    if entropy is not None:
        entropy_loss = core_algos.agg_loss(entropy, mask, mode, **actor_config.global_batch_info)
        loss = loss - actor_config.entropy_coeff * entropy_loss
        entropy_value = float(entropy_loss.detach())
    return LossTerms(
        loss=loss,
        pg_loss=float(pg_loss.detach()),
        kl_loss=kl_value,
        entropy=entropy_value,
        pg_clipfrac=float(pg_metrics.get("actor/pg_clipfrac", 0.0)),
        ppo_kl=float(pg_metrics.get("actor/ppo_kl", 0.0)),
    )


@dataclass
class PolicyInputs:
    """One micro-batch of rolled-out sequences, trimmed of the padding columns every row shares."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    """(4, B, L): the text positions, then the three M-RoPE rows."""
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    responses: torch.Tensor
    response_start: int
    """Column of the first response token in `input_ids`."""


def policy_inputs(batch, rows: list[int] | slice, device: torch.device) -> PolicyInputs:
    """Select rows of a verl rollout batch (left-padded prompts, right-padded responses) and trim shared padding."""
    tensors = batch.batch
    prompt_length = tensors["prompts"].shape[1]
    attention = tensors["attention_mask"][rows]
    responses = tensors["responses"][rows]
    prompt_attention = attention[:, :prompt_length]
    first = int((prompt_attention.cumsum(-1) == 0).sum(-1).min())
    response_width = int(attention[:, prompt_length:].sum(-1).max())
    end = prompt_length + max(response_width, 1)

    pixel_values, grids = [], []
    multi_modal = batch.non_tensor_batch.get("multi_modal_inputs")
    for inputs in multi_modal[rows] if multi_modal is not None else []:
        if inputs and "pixel_values" in inputs:
            pixel_values.append(inputs["pixel_values"])
            grids.append(inputs["image_grid_thw"])
    return PolicyInputs(
        input_ids=tensors["input_ids"][rows][:, first:end].to(device),
        attention_mask=attention[:, first:end].to(device),
        position_ids=tensors["position_ids"][rows][..., first:end].transpose(0, 1).contiguous().to(device),
        pixel_values=torch.cat(pixel_values).to(device) if pixel_values else None,
        image_grid_thw=torch.cat(grids).to(device) if grids else None,
        responses=responses[:, : end - prompt_length].to(device),
        response_start=prompt_length - first,
    )


def response_log_probs(
    model, inputs: PolicyInputs, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of the response tokens under `model`, at the rollout temperature."""
    kwargs = {
        "input_ids": inputs.input_ids,
        "attention_mask": inputs.attention_mask,
        "position_ids": inputs.position_ids,
        "use_cache": False,
    }
    if inputs.pixel_values is not None:
        kwargs["pixel_values"] = inputs.pixel_values.to(model.dtype)
        kwargs["image_grid_thw"] = inputs.image_grid_thw
    logits = model(**kwargs).logits
    start = inputs.response_start
    logits = logits[:, start - 1 : start - 1 + inputs.responses.shape[1]].float()
    if temperature > 0:
        logits = logits / temperature
    log_probs = logprobs_from_logits(logits, inputs.responses)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return log_probs, entropy
