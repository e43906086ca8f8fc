"""verl reward-loop manager for the dense multi-part reward.

Select it in the trainer config (configs/reward/*.yaml does this):

    reward.reward_manager.source=importlib
    reward.reward_manager.name=UniDocRewardManager
    reward.reward_manager.module.path=pkg://unidoc_rl.rewards.verl_manager

or, once this module has been imported in the reward worker, `source=register, name=unidoc_dense`. Settings come from
`reward.reward_kwargs` (see unidoc_rl/rewards/settings.py).

Where the episode record comes from: the agent loop stores `EpisodeRecord.to_dict()` in its output's
`extra_fields["episode"]`. With streaming rewards (verl's default when no reward model is enabled) the agent-loop
worker sends each finished trajectory to a reward-loop worker with `non_tensor_batch["tool_extra_fields"]` holding
that extra_fields dict; when rewards are computed after rollout instead, the extra fields are columns of the batch, so
the record is `non_tensor_batch["episode"]`. Both are read here. Ground truth is the dataset row's
`reward_model.ground_truth` (see unidoc_rl/rewards/ground_truth.py), with `extra_info` as a fallback for the query.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings

logger = logging.getLogger(__name__)

EPISODE_KEY = "episode"


class MissingEpisodeError(KeyError):
    """The trajectory carries no episode record: the rollout did not use a UniDoc agent loop."""


@register("unidoc_dense")
class UniDocRewardManager(RewardManagerBase):
    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        reward_config = config.get("reward") if hasattr(config, "get") else None
        kwargs = reward_config.get("reward_kwargs") if reward_config is not None else None
        self.settings = RewardSettings.from_mapping(kwargs)
        self.scorer = EpisodeScorer(self.settings)
        # The reward worker's start-up heap (torch, verl, tokenizer: about half a million objects) lives as long as
        # the worker; moved out of the cyclic collector's reach, a full collection no longer stalls the event loop,
        # and every judge call in flight with it, for 0.3-0.5 s on a small CPU node.
        gc.freeze()
        logger.info("dense reward: preset=%s answer_scorer=%s", self.settings.preset, self.settings.answer_scorer.value)

    async def run_single(self, data: DataProto) -> dict:
        # Multi-output trajectories are scored on their last output; only its non-tensor fields are read, so the
        # tensor batch is never sliced.
        fields = {key: column[-1] for key, column in data.non_tensor_batch.items()}
        episode = EpisodeRecord.from_dict(episode_dict_from(fields))
        reward_model = fields.get("reward_model")
        if not isinstance(reward_model, Mapping) or "ground_truth" not in reward_model:
            raise KeyError("dataset row has no reward_model.ground_truth; see docs/rewards.md for the row shape")
        truth = GroundTruth.from_dict(reward_model["ground_truth"], fields.get("extra_info"))
        breakdown = await self.scorer.score(episode, truth)
        return {"reward_score": breakdown.score, "reward_extra_info": breakdown.metrics()}


def episode_dict_from(non_tensor_fields: Mapping) -> dict:
    tool_fields = non_tensor_fields.get("tool_extra_fields")
    if isinstance(tool_fields, Mapping) and EPISODE_KEY in tool_fields:
        return tool_fields[EPISODE_KEY]
    if isinstance(non_tensor_fields.get(EPISODE_KEY), Mapping):
        return non_tensor_fields[EPISODE_KEY]
    raise MissingEpisodeError(
        f"no episode record in the trajectory (looked for extra_fields[{EPISODE_KEY!r}]); the agent loop must store "
        "EpisodeRecord.to_dict() there"
    )
