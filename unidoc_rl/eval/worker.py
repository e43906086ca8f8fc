"""The agent-loop worker evaluation runs: the project's worker without the trainer's tensors.

Episodes run exactly as in training (`UniDocAgentLoopWorker.generate_sequences` → `UniDocAgentLoop.run`); only
the worker's post-processing for the trainer's forward pass is left out: the processor pass over every image of a
finished trajectory (pixel values for the actor) and its M-RoPE position ids. Evaluation reads the episode record
and the token counts, and that pass was measured to cost about as much CPU as everything else of an episode.
Position ids are the plain running count of attended tokens.
"""

from __future__ import annotations

import torch

from unidoc_rl.agent.verl_worker import UniDocAgentLoopWorker


class EvaluationWorker(UniDocAgentLoopWorker):
    def _compute_multi_modal_inputs(self, output, input_ids) -> dict[str, torch.Tensor]:
        return {}

    def _compute_position_ids(self, input_ids, attention_mask, multi_modal_inputs, mm_processor_kwargs=None):
        return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0) * attention_mask
