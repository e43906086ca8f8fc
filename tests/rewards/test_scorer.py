"""Totals of both presets on hand-computed trajectories, the judge gate, and config-driven weights."""

from __future__ import annotations

import math

import pytest

from unidoc_rl.episode import ActionKind, EpisodeRecord, FinishReason, SearchStep, TurnStep
from unidoc_rl.rewards.presets import get_preset
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings

INV_LOG3 = 1 / math.log2(3)
NDCG_ANSWERED = INV_LOG3 / (1 + INV_LOG3)  # 0.386853
NDCG_UNANSWERED = (INV_LOG3 + 1 / math.log2(5)) / (1 + INV_LOG3)  # 0.650921


def judge_settings(server, **overrides) -> RewardSettings:
    judge = {"base_url": server.base_url, "timeout_s": 2.0, "backoff_initial_s": 0.01, **overrides}
    return RewardSettings.from_mapping({"preset": "unidoc", "judge": judge})


async def test_unidoc_total_with_rule_based_answer(answered_episode, unanswered_episode, truth):
    scorer = EpisodeScorer(RewardSettings(preset="unidoc", answer_scorer="exact_match"))
    result = await scorer.score(answered_episode, truth)
    assert (result.format, result.selection, result.crop, result.answer) == (1.0, 1.0, 1.0, 1.0)
    assert result.retrieval == pytest.approx(NDCG_ANSWERED)
    assert result.score == pytest.approx(0.6 + 0.1 * (NDCG_ANSWERED + 3))  # 0.938685
    assert not result.judge_called

    partial = await scorer.score(unanswered_episode, truth)
    assert (partial.format, partial.selection, partial.crop, partial.answer) == (0.5, 0.0, 0.5, 0.0)
    assert partial.score == pytest.approx(0.1 * (NDCG_UNANSWERED + 0.0 + 0.5 + 0.5))  # 0.165092


async def test_vrag_total_with_rule_based_answer(answered_episode, unanswered_episode, truth):
    scorer = EpisodeScorer(RewardSettings(preset="vrag", answer_scorer="exact_match"))
    result = await scorer.score(answered_episode, truth)
    assert result.score == pytest.approx(0.7 * 1.0 + 0.1 * 1.0 + 0.2 * NDCG_ANSWERED)  # 0.877371
    unanswered = await scorer.score(unanswered_episode, truth)
    assert unanswered.format == 0.0
    assert unanswered.score == 0.0


async def test_wrong_answer_and_anls_partial_credit(answered_episode, truth):
    answered_episode.answer = "42 millon"
    exact = await EpisodeScorer(RewardSettings(answer_scorer="exact_match")).score(answered_episode, truth)
    assert exact.answer == 0.0
    assert exact.score == pytest.approx(0.1 * (NDCG_ANSWERED + 3))
    fuzzy = await EpisodeScorer(RewardSettings(answer_scorer="anls")).score(answered_episode, truth)
    assert fuzzy.answer == pytest.approx(0.9)
    assert fuzzy.score == pytest.approx(0.6 * 0.9 + 0.1 * (NDCG_ANSWERED + 3))


async def test_judge_scores_answer_through_scripted_endpoint(answered_episode, unanswered_episode, truth, judge_server):
    scorer = EpisodeScorer(judge_settings(judge_server))
    result = await scorer.score(answered_episode, truth)
    assert result.judge_called and not result.judge_fallback
    assert result.answer == 1.0
    assert result.score == pytest.approx(0.6 + 0.1 * (NDCG_ANSWERED + 3))
    sent = judge_server.requests[0].prompt
    assert "<candidate>\n42 Million.\n</candidate>" in sent
    assert "<reference>\n42 million\n</reference>" in sent

    # format 0.5: the judge is never called
    before = len(judge_server.requests)
    partial = await scorer.score(unanswered_episode, truth)
    assert not partial.judge_called and len(judge_server.requests) == before
    assert partial.score == pytest.approx(0.1 * (NDCG_UNANSWERED + 1.0))
    await scorer.aclose()


async def test_only_the_final_answer_reaches_the_judge(truth, judge_server, answered_episode):
    # Reference defect: the first `<answer>…</answer>` in the decoded trajectory was judged, and the system prompt's
    # example or an error observation quoting one came first. Here an observation and an invalid turn quote the
    # correct answer while the episode's own final answer is wrong: only "17 million" reaches the judge.
    answered_episode.answer = "17 million"
    answered_episode.actions.insert(3, ActionKind.INVALID)
    answered_episode.invalid_reasons.append("no_action")
    answered_episode.turns = [
        TurnStep(
            "<search>revenue 2020</search>", ActionKind.SEARCH, observation="Example: <answer>42 million</answer>"
        ),
        TurnStep("<answer>42 million", ActionKind.INVALID, detail="unclosed_tag: <answer> is not closed"),
        TurnStep("<answer>17 million</answer>", ActionKind.ANSWER),
    ]
    settings = RewardSettings.from_mapping(
        {"preset": "unidoc", "max_invalid_actions": 1, "judge": {"base_url": judge_server.base_url, "timeout_s": 2.0}}
    )
    scorer = EpisodeScorer(settings)
    result = await scorer.score(answered_episode, truth)
    assert result.judge_called and result.format == 1.0 and result.answer == 0.0
    assert result.score == pytest.approx(0.1 * (NDCG_ANSWERED + 3))
    (request,) = judge_server.requests
    assert "<candidate>\n17 million\n</candidate>" in request.prompt and "42 million</candidate>" not in request.prompt
    await scorer.aclose()


async def test_search_failures_and_forced_answers_are_reported(answered_episode, truth):
    answered_episode.searches.insert(0, SearchStep("revenue", [], [], failed=True, error="TimeoutError"))
    answered_episode.actions.insert(0, ActionKind.SEARCH)
    answered_episode.forced_answer = True
    answered_episode.finish_reason = FinishReason.MAX_IMAGES
    result = await EpisodeScorer(RewardSettings(answer_scorer="exact_match")).score(answered_episode, truth)
    assert result.metrics()["search_failures"] == 1.0 and result.metrics()["forced_answer"] == 1.0
    # The failed search is not a selection miss, and the forced answer is judged as an answer.
    assert (result.format, result.selection, result.answer) == (1.0, 1.0, 1.0)
    assert result.score == pytest.approx(0.6 + 0.1 * (NDCG_ANSWERED + 3))


async def test_weights_come_from_config(answered_episode, truth):
    settings = RewardSettings.from_mapping(
        {"preset": "unidoc", "answer_scorer": "exact_match", "weights": {"answer": 0.5, "crop": 0.2}}
    )
    result = await EpisodeScorer(settings).score(answered_episode, truth)
    assert result.score == pytest.approx(0.5 + 0.1 * NDCG_ANSWERED + 0.1 + 0.2 + 0.1)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown reward preset"):
        RewardSettings(preset="nope")
    with pytest.raises(ValueError, match="unknown reward weights"):
        RewardSettings.from_mapping({"weights": {"answr": 1.0}})
    with pytest.raises(ValueError, match="unknown reward settings"):
        RewardSettings.from_mapping({"presets": "unidoc"})
    with pytest.raises(ValueError, match="unknown judge settings"):
        RewardSettings.from_mapping({"judge": {"url": "x"}})
    with pytest.raises(ValueError, match="max_concurrency must be > 0"):
        RewardSettings.from_mapping({"judge": {"max_concurrency": 0}})
    with pytest.raises(ValueError):
        RewardSettings.from_mapping({"answer_scorer": "llm"})


def test_presets_match_the_design():
    unidoc, vrag = get_preset("unidoc"), get_preset("VRAG")
    assert unidoc.combine(format=1.0, retrieval=1.0, selection=1.0, crop=1.0, answer=1.0) == pytest.approx(1.0)
    assert unidoc.combine(format=0.5, retrieval=1.0, selection=1.0, crop=1.0, answer=0.0) == pytest.approx(0.35)
    assert unidoc.combine(format=0.0, retrieval=1.0, selection=1.0, crop=1.0, answer=1.0) == 0.0
    assert vrag.combine(format=1.0, retrieval=0.5, selection=1.0, crop=1.0, answer=1.0) == pytest.approx(0.9)
    assert vrag.combine(format=0.0, retrieval=1.0, selection=1.0, crop=1.0, answer=1.0) == 0.0


async def test_metrics_have_fixed_keys(answered_episode, truth):
    metrics = (await EpisodeScorer(RewardSettings(answer_scorer="anls")).score(answered_episode, truth)).metrics()
    assert list(metrics) == [
        "score",
        "format",
        "retrieval",
        "selection",
        "crop",
        "answer",
        "judge_called",
        "judge_fallback",
        "judge_cached",
        "search_failures",
        "forced_answer",
    ]
    assert all(isinstance(value, float) for value in metrics.values())
    empty = await EpisodeScorer(RewardSettings(answer_scorer="anls")).score(EpisodeRecord(), truth)
    assert list(empty.metrics()) == list(metrics)
    assert empty.score == 0.0
