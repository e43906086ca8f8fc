"""Reward components on hand-computed trajectories, and the reference code's defects not recurring."""

from __future__ import annotations

import math

import pytest

from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep, TurnStep
from unidoc_rl.rewards.components import (
    FormatRule,
    NdcgIdeal,
    box_iou,
    crop_score,
    format_score,
    gold_selection_accuracy,
    interleave_candidates,
    matched_box_f1,
    ndcg,
    retrieval_score,
    selection_score,
)
from unidoc_rl.rewards.ground_truth import GroundTruth

A, S, B, ANS, INV = ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER, ActionKind.INVALID
INV_LOG3 = 1 / math.log2(3)


def test_answered_episode_components(answered_episode, truth):
    assert format_score(answered_episode, FormatRule.UNIDOC) == 1.0
    assert format_score(answered_episode, FormatRule.VRAG) == 1.0
    # gold report_3 at rank 1 of [report_1, report_3, report_5]; two gold pages -> ideal ranks 0 and 1.
    assert retrieval_score(answered_episode, truth) == pytest.approx(INV_LOG3 / (1 + INV_LOG3))
    assert selection_score(answered_episode, truth) == 1.0
    assert crop_score(answered_episode, truth) == 1.0  # IoU 0.975 with the one gold box


def test_unanswered_episode_components(unanswered_episode, truth):
    assert format_score(unanswered_episode, FormatRule.UNIDOC) == 0.5
    assert format_score(unanswered_episode, FormatRule.VRAG) == 0.0
    # interleaved: report_1, report_7, report_2, report_3, report_4, report_9 -> gold at ranks 1 and 3
    assert interleave_candidates(unanswered_episode.searches) == [
        "report_1",
        "report_7",
        "report_2",
        "report_3",
        "report_4",
        "report_9",
    ]
    expected = (INV_LOG3 + 1 / math.log2(5)) / (1 + INV_LOG3)
    assert retrieval_score(unanswered_episode, truth) == pytest.approx(expected)
    # search 1: no gold among candidates -> top-1 (report_1) was right, report_2 chosen; search 2: report_7 was right
    assert selection_score(unanswered_episode, truth) == 0.0
    # search 1: report_2 needs no crop and got none -> 1; search 2: crop IoU 0.25 on report_3 -> 0
    assert crop_score(unanswered_episode, truth) == 0.5


def test_ndcg_compares_whole_id_strings():
    # Reference defect: ids compared as sorted character lists made "doc_12" equal "doc_21" and real matches fail.
    assert ndcg(["doc_21"], ["doc_12"]) == 0.0
    assert ndcg(["doc_12"], ["doc_12"]) == 1.0
    assert ndcg(["doc_1", "doc_12"], ["doc_12"]) == pytest.approx(INV_LOG3)


def test_ndcg_edge_cases():
    assert ndcg([], ["a_1"]) == 0.0
    assert ndcg(["a_1"], []) == 0.0
    assert ndcg(["a_2", "a_1", "a_3"], ["a_1", "a_3", "a_9"]) == pytest.approx((INV_LOG3 + 0.5) / (1 + INV_LOG3 + 0.5))


def test_interleave_deduplicates_keeping_best_rank():
    searches = [
        SearchStep("q1", ["x_1", "x_2"], ["x_1", "x_2"]),
        SearchStep("q2", ["x_2", "x_3", "x_4"], ["x_2", "x_3", "x_4"]),
    ]
    assert interleave_candidates(searches) == ["x_1", "x_2", "x_3", "x_4"]


def test_selection_defaults_to_candidate_zero_when_not_selected(truth):
    episode = EpisodeRecord(searches=[SearchStep("q", ["report_3"], ["report_3", "report_1"])], actions=[A])
    assert selection_score(episode, truth) == 1.0
    episode.searches.append(SearchStep("q2", [], []))  # nothing new to show: counts as a miss
    assert selection_score(episode, truth) == 0.5


def test_box_iou_and_matching():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    gold = [(0, 0, 100, 100), (200, 200, 300, 300)]
    assert matched_box_f1([], []) == 1.0
    assert matched_box_f1([(0, 0, 100, 100)], []) == 0.0
    assert matched_box_f1([], gold) == 0.0
    # one hit of two gold, one prediction: P=1, R=0.5 -> F1 = 2/3
    assert matched_box_f1([(0, 0, 100, 90)], gold) == pytest.approx(2 / 3)
    # duplicates can match one gold box only
    assert matched_box_f1([(0, 0, 100, 100), (0, 0, 100, 100)], gold[:1]) == pytest.approx(2 / 3)
    # greedy would pair the first prediction with gold 0 and leave the second unmatched; the matching is maximal
    wide = (0, 0, 200, 100)
    preds = [(0, 0, 150, 100), (0, 0, 90, 100)]
    assert box_iou(preds[0], (0, 0, 100, 100)) >= 0.5 and box_iou(preds[0], wide) >= 0.5
    assert box_iou(preds[1], wide) < 0.5
    assert matched_box_f1(preds, [(0, 0, 100, 100), wide]) == 1.0


def test_crop_on_page_that_needs_none_scores_zero(truth):
    episode = EpisodeRecord(
        searches=[
            SearchStep(
                "q",
                ["report_7"],
                ["report_7"],
                selected="report_7",
                crops=[CropStep("report_7", [(0, 0, 5, 5)], [(0, 0, 500, 500)])],
            )
        ],
        actions=[A, S, B],
    )
    assert crop_score(episode, truth) == 0.0


def test_required_crop_missing_scores_zero(truth):
    episode = EpisodeRecord(searches=[SearchStep("q", ["report_3"], ["report_3"], selected="report_3")], actions=[A, S])
    assert crop_score(episode, truth) == 0.0


def test_crops_on_a_page_switched_away_from_count_separately(truth):
    # crop on candidate 0 (report_1, no crop needed) then select report_3 and crop it right: (0 + 1) / 2
    step = SearchStep(
        "q",
        ["report_1", "report_3"],
        ["report_1", "report_3"],
        selected="report_3",
        crops=[
            CropStep("report_1", [(0, 0, 1, 1)], [(0, 0, 100, 100)]),
            CropStep("report_3", [(0, 0, 1, 1)], [(100, 100, 500, 300)]),
        ],
    )
    assert crop_score(EpisodeRecord(searches=[step], actions=[A, B, S, B]), truth) == 0.5


def test_no_gold_pages_gives_zero_retrieval_and_top1_selection():
    truth = GroundTruth.from_dict({"query": "q", "reference_answer": "a"})
    episode = EpisodeRecord(searches=[SearchStep("q", ["d_1", "d_2"], ["d_1", "d_2"], selected="d_1")], actions=[A, S])
    assert retrieval_score(episode, truth) == 0.0
    assert selection_score(episode, truth) == 1.0
    assert crop_score(episode, truth) == 1.0


def _tag_text() -> str:
    return "<search>q</search> <select>0</select> <bbox>[1,2,3,4]</bbox> <answer>42 million</answer>"


def test_format_ignores_tags_in_observations_and_invalid_turns():
    # Reference defect: the re-prompt after an invalid action lists every tag, and a regex over the decoded
    # trajectory counted them as actions. This episode searched and selected but never answered; its invalid turn
    # and the observations quote `<answer>42 million</answer>`. Only the recorded kinds count: format 0.5 (UniDoc)
    # and 0 (VRAG); counting the quoted tag as an answer would give 1.0 for both.
    quoted = f"Invalid action (no_action): use one of {_tag_text()}. Example: <answer>42 million</answer>"
    episode = EpisodeRecord(
        searches=[SearchStep("q", ["d_1", "d_2"], ["d_1", "d_2"], selected="d_1")],
        actions=[A, S, INV],
        invalid_reasons=["no_action"],
        turns=[
            TurnStep("<search>q</search>", A, observation="Results for: q <answer>42 million</answer>"),
            TurnStep("<select>0</select>", S, observation="Selected Image 0: <image>"),
            TurnStep("I will answer", INV, detail="no_action: no tag", observation=quoted),
        ],
        finish_reason=FinishReason.MAX_TURNS,
    )
    assert format_score(episode, FormatRule.UNIDOC, max_invalid_actions=1) == 0.5
    assert format_score(episode, FormatRule.VRAG, max_invalid_actions=1) == 0.0
    assert not episode.answered


def test_ndcg_ideal_counts_every_gold_page_unless_set_to_the_ranked_length():
    # Three gold pages, one retrieved at rank 0: the evidence never retrieved costs under the default.
    ranked, gold = ["g_1"], ["g_1", "g_2", "g_3"]
    assert ndcg(ranked, gold) == pytest.approx(1 / (1 + INV_LOG3 + 0.5))
    assert ndcg(ranked, gold, NdcgIdeal.ALL_GOLD) == pytest.approx(0.469279, abs=1e-6)
    assert ndcg(ranked, gold, NdcgIdeal.RANKED_LENGTH) == 1.0
    episode = EpisodeRecord(searches=[SearchStep("q", ["g_1", "x_1"], ["g_1", "x_1"])])
    truth = GroundTruth.from_dict(
        {"query": "q", "reference_answer": "a", "gold_pages": [{"page_id": page_id} for page_id in gold]}
    )
    assert retrieval_score(episode, truth) == pytest.approx(1 / (1 + INV_LOG3 + 0.5))
    assert retrieval_score(episode, truth, "ranked_length") == pytest.approx(1 / (1 + INV_LOG3))


def test_iou_of_exactly_one_half_matches():
    assert box_iou((0, 0, 100, 100), (0, 0, 100, 50)) == 0.5
    assert matched_box_f1([(0, 0, 100, 100)], [(0, 0, 100, 50)]) == 1.0
    assert matched_box_f1([(0, 0, 100, 100)], [(0, 0, 100, 49.9)]) == 0.0


def test_failed_searches_are_left_out_of_retrieval_and_selection():
    truth = GroundTruth.from_dict({"query": "q", "reference_answer": "a", "gold_pages": [{"page_id": "g_1"}]})
    good = SearchStep("q", ["x_1", "g_1"], ["x_1", "g_1"], selected="g_1")
    failed = SearchStep("q", [], [], failed=True, error="ConnectError: refused")
    with_failure = EpisodeRecord(searches=[failed, good], actions=[A, A, S])
    without = EpisodeRecord(searches=[good], actions=[A, S])
    assert selection_score(with_failure, truth) == selection_score(without, truth) == 1.0
    assert retrieval_score(with_failure, truth) == retrieval_score(without, truth) == pytest.approx(INV_LOG3)
    assert with_failure.search_failures == 1
    # A search that answered with nothing new to show is still a miss.
    empty = SearchStep("q2", ["g_1"], [])
    assert selection_score(EpisodeRecord(searches=[good, empty], actions=[A, S, A]), truth) == 0.5


def test_format_rules_per_action_sequence(answered_episode):
    searched_answered = EpisodeRecord(
        searches=[SearchStep("q", ["d_1"], ["d_1"])],
        actions=[A, ANS],
        answer="x",
        finish_reason=FinishReason.ANSWERED,
    )
    assert format_score(searched_answered, FormatRule.UNIDOC) == 0.0  # never selected
    assert format_score(searched_answered, FormatRule.VRAG) == 1.0
    with_invalid = EpisodeRecord.from_dict(answered_episode.to_dict())
    with_invalid.actions.insert(1, INV)
    assert format_score(with_invalid, FormatRule.UNIDOC) == 0.0
    assert format_score(with_invalid, FormatRule.UNIDOC, max_invalid_actions=1) == 1.0
    blank_answer = EpisodeRecord.from_dict(answered_episode.to_dict())
    blank_answer.answer = "   "
    assert format_score(blank_answer, FormatRule.UNIDOC) == 0.5
    answer_only = EpisodeRecord(actions=[ANS], answer="42 million", finish_reason=FinishReason.ANSWERED)
    assert format_score(answer_only, FormatRule.VRAG) == 0.0


def test_strict_components_judge_only_searches_that_showed_gold_and_gold_pages(truth):
    # Search 1 shows no gold page and keeps candidate 0; search 2 shows report_7 (gold, needs no crop) first, keeps
    # it uncropped, and crops report_8 (not gold) after a switch; search 3 shows report_3 at rank 1 and keeps rank 0.
    episode = EpisodeRecord(
        searches=[
            SearchStep("a", ["report_1"], ["report_1"], selected="report_1"),
            SearchStep(
                "b",
                ["report_7", "report_8"],
                ["report_7", "report_8"],
                crops=[CropStep("report_8", [(0, 0, 9, 9)], [(0, 0, 900, 900)])],
            ),
            SearchStep("c", ["report_5", "report_3"], ["report_5", "report_3"], selected="report_5"),
        ],
        actions=[A, S, A, B, A, S],
    )
    # unidoc: search 1 credited (candidate 0), search 2 right (report_7 is the focus), search 3 wrong.
    assert selection_score(episode, truth) == pytest.approx(2 / 3)
    # strict: searches 2 and 3 only.
    assert gold_selection_accuracy(episode, truth) == 0.5
    assert selection_score(episode, truth, strict=True) == 0.5
    # unidoc units: report_1 (1), report_7 (1), report_8 cropped but needs none (0), report_5 (1) -> 3/4.
    assert crop_score(episode, truth) == 0.75
    # strict units: report_7 only (gold, needs no crop, not cropped) -> 1.
    assert crop_score(episode, truth, strict=True) == 1.0


def test_strict_components_with_nothing_to_judge_give_zero(truth):
    episode = EpisodeRecord(searches=[SearchStep("a", ["report_1"], ["report_1"], selected="report_1")])
    assert gold_selection_accuracy(episode, truth) is None
    assert (selection_score(episode, truth), crop_score(episode, truth)) == (1.0, 1.0)
    assert (selection_score(episode, truth, strict=True), crop_score(episode, truth, strict=True)) == (0.0, 0.0)
