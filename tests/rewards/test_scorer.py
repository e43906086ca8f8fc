"""Totals of both presets on hand-computed trajectories, the judge gate, and config-driven weights."""

from __future__ import annotations

import math

import pytest

from unidoc_rl.env.episode import ActionKind, EpisodeRecord, FinishReason, SearchStep, TurnStep
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


def _vacuous_episode() -> EpisodeRecord:
    """Retrieves no gold page, keeps candidate 0 (`<select>0</select>`), never crops, answers wrongly."""
    candidates = ["report_1", "report_2", "report_4"]
    return EpisodeRecord(
        searches=[SearchStep("revenue", list(candidates), list(candidates), selected="report_1")],
        shown_page_ids=list(candidates),
        actions=[ActionKind.SEARCH, ActionKind.SELECT, ActionKind.ANSWER],
        answer="17 million",
        finish_reason=FinishReason.ANSWERED,
        num_turns=3,
    )


def _two_search_episode() -> EpisodeRecord:
    """Search 1 shows no gold page (keeps candidate 0); search 2 shows report_3 first and selects it but never crops
    it (its crop is required); answers correctly."""
    return EpisodeRecord(
        searches=[
            SearchStep("revenue", ["report_1", "report_2"], ["report_1", "report_2"], selected="report_1"),
            SearchStep("2020 revenue", ["report_3", "report_8"], ["report_3", "report_8"], selected="report_3"),
        ],
        shown_page_ids=["report_1", "report_2", "report_3", "report_8"],
        actions=[ActionKind.SEARCH, ActionKind.SELECT, ActionKind.SEARCH, ActionKind.SELECT, ActionKind.ANSWER],
        answer="42 million",
        finish_reason=FinishReason.ANSWERED,
        num_turns=5,
    )


# (episode, (selection, crop, total) under unidoc, (selection, crop, total) under strict), all by hand:
# - vacuous: retrieval 0, format 1, answer 0. unidoc credits candidate 0 (no gold shown) and no crop on a page that
#   is not gold: 0.1 * (0 + 1 + 1 + 1) = 0.3. strict judges neither: 0.1 * format = 0.1.
# - answered (fixture): gold report_3 shown, selected, cropped at IoU 0.975: both give 0.6 + 0.1 * (NDCG + 3).
# - unanswered (fixture, format 0.5): unidoc crop 0.5 = mean(report_2 not cropped and not gold: 1, report_3 IoU
#   0.25: 0); strict judges report_3 only: 0, and selection search 2 only (report_7 was right, report_3 chosen): 0.
# - two searches: ranking report_1, report_3, report_2, report_8 -> NDCG as the answered fixture's. unidoc
#   selection 1 (search 1 credited with candidate 0), crop mean(report_1: 1, report_3 uncropped: 0) = 0.5;
#   strict selection = search 2 alone = 1, crop = report_3 alone = 0.
STRICT_CASES = {
    "vacuous": (_vacuous_episode, (1.0, 1.0, 0.3), (0.0, 0.0, 0.1)),
    "answered": (None, (1.0, 1.0, 0.6 + 0.1 * (NDCG_ANSWERED + 3)), (1.0, 1.0, 0.6 + 0.1 * (NDCG_ANSWERED + 3))),
    "unanswered": (None, (0.0, 0.5, 0.1 * (NDCG_UNANSWERED + 1.0)), (0.0, 0.0, 0.1 * (NDCG_UNANSWERED + 0.5))),
    "two_searches": (
        _two_search_episode,
        (1.0, 0.5, 0.6 + 0.1 * (NDCG_ANSWERED + 2.5)),
        (1.0, 0.0, 0.6 + 0.1 * (NDCG_ANSWERED + 2.0)),
    ),
}


@pytest.mark.parametrize("name", list(STRICT_CASES))
async def test_unidoc_and_strict_on_the_same_trajectories(name, request, truth):
    build, reference, strict = STRICT_CASES[name]
    episode = build() if build else request.getfixturevalue(f"{name}_episode")
    for flag, (selection, crop, total) in ((False, reference), (True, strict)):
        settings = RewardSettings.from_mapping({"preset": "unidoc", "answer_scorer": "exact_match", "strict": flag})
        result = await EpisodeScorer(settings).score(episode, truth)
        assert (result.selection, result.crop) == (selection, crop), (name, flag)
        assert result.score == pytest.approx(total), (name, flag)


def test_strict_is_off_by_default_and_must_be_a_boolean():
    assert RewardSettings().strict is False
    assert RewardSettings.from_mapping({"strict": True}).strict is True
    with pytest.raises(ValueError, match="strict must be true or false"):
        RewardSettings.from_mapping({"strict": "yes"})
