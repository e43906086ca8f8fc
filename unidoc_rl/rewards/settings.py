"""Reward settings: the `reward.reward_kwargs` block of configs/reward/*.yaml, validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum

from unidoc_rl.common.settings_keys import reject_unknown_keys
from unidoc_rl.judge.settings import JudgeSettings
from unidoc_rl.rewards.components import NdcgIdeal
from unidoc_rl.rewards.presets import RewardPreset, get_preset


class AnswerScorer(StrEnum):
    JUDGE = "judge"
    EXACT_MATCH = "exact_match"
    ANLS = "anls"


@dataclass(frozen=True)
class RewardSettings:
    preset: str = "unidoc"
    weights: dict[str, float] = field(default_factory=dict)
    """Overrides of the preset's weights, by component name."""
    answer_scorer: AnswerScorer = AnswerScorer.JUDGE
    max_invalid_actions: int = 0
    crop_iou_threshold: float = 0.5
    ndcg_ideal: NdcgIdeal = NdcgIdeal.ALL_GOLD
    """Ideal DCG of the retrieval reward: `all_gold` (every gold page; missed evidence costs) or `ranked_length`."""
    strict: bool = False
    """Selection and crop judge only what they can: selection only the searches that showed a gold page, crop only
    gold pages; a trajectory with nothing they can judge earns 0 from them (the weights stay the preset's). False
    keeps the reference's definitions (docs/rewards.md, "Strict components")."""
    judge: JudgeSettings = field(default_factory=JudgeSettings)

    def __post_init__(self):
        object.__setattr__(self, "answer_scorer", AnswerScorer(self.answer_scorer))
        object.__setattr__(self, "ndcg_ideal", NdcgIdeal(self.ndcg_ideal))
        if not isinstance(self.strict, bool):
            raise ValueError(f"strict must be true or false, got {self.strict!r}")
        if self.max_invalid_actions < 0:
            raise ValueError(f"max_invalid_actions must be >= 0, got {self.max_invalid_actions}")
        if not 0.0 < self.crop_iou_threshold <= 1.0:
            raise ValueError(f"crop_iou_threshold must be in (0, 1], got {self.crop_iou_threshold}")
        self.resolved_preset()

    def resolved_preset(self) -> RewardPreset:
        return get_preset(self.preset).with_weights(self.weights)

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> RewardSettings:
        """From a plain mapping or an OmegaConf node (e.g. `config.reward.reward_kwargs`)."""
        values = _to_plain(values) or {}
        reject_unknown_keys(values, (f.name for f in fields(cls)), "reward")
        judge = JudgeSettings.from_mapping(values.pop("judge", None))
        weights = dict(values.pop("weights", None) or {})
        return cls(judge=judge, weights=weights, **values)


def _to_plain(values):
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:
        return dict(values) if values is not None else None
    if isinstance(values, DictConfig):
        return OmegaConf.to_container(values, resolve=True)
    return dict(values) if values is not None else None
