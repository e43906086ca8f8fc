"""Score one finished episode: all components, the preset's total, and the judge's involvement."""

from __future__ import annotations

from dataclasses import dataclass, fields

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.judge.client import ResilientJudge, build_judge
from unidoc_rl.rewards.answer_match import rule_based_score
from unidoc_rl.rewards.components import crop_score, format_score, retrieval_score, selection_score
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.settings import AnswerScorer, RewardSettings


@dataclass(frozen=True)
class RewardBreakdown:
    score: float
    format: float
    retrieval: float
    selection: float
    crop: float
    answer: float
    judge_called: bool
    judge_fallback: bool
    judge_cached: bool
    search_failures: int = 0
    """Searches the service failed (left out of retrieval and selection)."""
    forced_answer: bool = False
    """The answer came in a forced final turn."""

    def metrics(self) -> dict[str, float]:
        """Every component as a float, with the same keys for every trajectory (verl stacks them per key)."""
        return {name: float(getattr(self, name)) for name in _BREAKDOWN_FIELDS}


_BREAKDOWN_FIELDS = tuple(f.name for f in fields(RewardBreakdown))


class EpisodeScorer:
    def __init__(self, settings: RewardSettings, judge: ResilientJudge | None = None):
        self.settings = settings
        self.preset = settings.resolved_preset()
        if settings.answer_scorer is AnswerScorer.JUDGE and judge is None:
            judge = build_judge(settings.judge)
        self.judge = judge if settings.answer_scorer is AnswerScorer.JUDGE else None

    async def score(self, episode: EpisodeRecord, truth: GroundTruth) -> RewardBreakdown:
        fmt = format_score(episode, self.preset.format_rule, self.settings.max_invalid_actions)
        retrieval = retrieval_score(episode, truth, self.settings.ndcg_ideal)
        selection = selection_score(episode, truth, self.settings.strict)
        crop = crop_score(episode, truth, self.settings.crop_iou_threshold, self.settings.strict)
        answer, called, fallback, cached = 0.0, False, False, False
        if fmt >= self.preset.answer_gate and episode.answered:
            if self.judge is None:
                answer = rule_based_score(episode.answer, truth.reference_answer, self.settings.answer_scorer.value)
            else:
                verdict = await self.judge.judge(truth.query, truth.reference_answer, episode.answer)
                answer, called = verdict.score, True
                fallback, cached = verdict.fallback, verdict.source == "cache"
        total = self.preset.combine(format=fmt, retrieval=retrieval, selection=selection, crop=crop, answer=answer)
        return RewardBreakdown(
            score=total,
            format=fmt,
            retrieval=retrieval,
            selection=selection,
            crop=crop,
            answer=answer,
            judge_called=called,
            judge_fallback=fallback,
            judge_cached=cached,
            search_failures=episode.search_failures,
            forced_answer=episode.forced_answer and episode.answered,
        )

    async def aclose(self) -> None:
        if self.judge is not None:
            await self.judge.aclose()
