"""Evidence metrics on hand-built episodes with hand-computed values, beside what the `unidoc` reward gives them."""

from __future__ import annotations

import pytest

from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.eval.evidence import EVIDENCE_METRICS, evidence_metrics
from unidoc_rl.rewards.components import crop_score, selection_score
from unidoc_rl.rewards.ground_truth import GroundTruth

A, S, B, ANS = ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER
GOLD_BOX = (100, 100, 500, 300)


@pytest.fixture
def truth() -> GroundTruth:
    """report_3 needs a crop of one region, report_7 needs none."""
    return GroundTruth.from_dict(
        {
            "query": "q",
            "reference_answer": "42",
            "gold_pages": [
                {"page_id": "report_3", "boxes": [list(GOLD_BOX)], "crop_required": True},
                {"page_id": "report_7"},
            ],
        }
    )


def search(candidates, selected=None, crops=(), failed=False) -> SearchStep:
    return SearchStep("q", list(candidates), list(candidates), selected=selected, crops=list(crops), failed=failed)


def episode(*searches: SearchStep) -> EpisodeRecord:
    return EpisodeRecord(searches=list(searches), actions=[A, S, B, ANS], finish_reason=FinishReason.ANSWERED)


def test_an_episode_that_found_selected_and_cropped_some_evidence(truth):
    # Search 1 shows no gold page (keeps candidate 0); search 2 shows report_3 first, selects it and draws a good box
    # (IoU 0.975) and a spurious one; search 3 fails (left out). Ranking: report_1, report_3, report_2, report_8.
    crop = CropStep("report_3", [(0, 0, 1, 1)] * 2, [(110, 100, 500, 300), (600, 600, 700, 700)])
    record = episode(
        search(["report_1", "report_2"], selected="report_1"),
        search(["report_3", "report_8"], selected="report_3", crops=[crop]),
        search([], failed=True),
    )
    metrics = evidence_metrics(record, truth, 0.5)
    assert list(metrics) == list(EVIDENCE_METRICS)
    assert metrics == {
        "recall@1": 0.0,
        "recall@3": 0.5,
        "recall@5": 0.5,
        "recall@all": 0.5,
        "ndcg": pytest.approx((1 / 1.5849625007211562) / (1 + 1 / 1.5849625007211562)),
        "gold_shown": 0.5,  # one of the two answered searches
        "gold_selection": 1.0,  # search 2 alone
        "crop_rate": 1.0,
        "gold_crop_f1": pytest.approx(2 / 3),  # one match, two drawn, one gold
    }


def test_the_vacuous_episode_the_reward_credits_shows_no_evidence(truth):
    # No gold page retrieved, candidate 0 kept, no crop: the unidoc reward gives selection 1 and crop 1.
    record = episode(search(["report_1", "report_2", "report_4"], selected="report_1"))
    assert (selection_score(record, truth), crop_score(record, truth)) == (1.0, 1.0)
    metrics = evidence_metrics(record, truth, 0.5)
    assert (metrics["gold_shown"], metrics["gold_selection"]) == (0.0, None)
    assert (metrics["crop_rate"], metrics["gold_crop_f1"]) == (0.0, 0.0)  # report_3 needed a crop it never got


def test_a_gold_page_cropped_in_two_searches_pools_its_boxes(truth):
    # Both boxes match the one gold box, one-to-one: one match, two drawn -> F1 2/3. A wrong pick where gold was
    # shown counts against selection: report_7 (gold, rank 0) was the target of search 2.
    good = CropStep("report_3", [(0, 0, 1, 1)], [GOLD_BOX])
    record = episode(
        search(["report_3"], selected="report_3", crops=[good]),
        search(["report_7", "report_3"], selected="report_3", crops=[good]),
    )
    metrics = evidence_metrics(record, truth, 0.5)
    assert metrics["gold_crop_f1"] == pytest.approx(2 / 3)
    assert (metrics["gold_shown"], metrics["gold_selection"]) == (1.0, 0.5)


def test_undefined_without_gold_pages_or_searches(truth):
    no_gold = GroundTruth.from_dict({"query": "q", "reference_answer": "Not answerable"})
    metrics = evidence_metrics(episode(search(["report_1"], selected="report_1")), no_gold, 0.5)
    assert all(metrics[name] is None for name in EVIDENCE_METRICS)
    no_search = evidence_metrics(EpisodeRecord(), truth, 0.5)
    assert (no_search["gold_shown"], no_search["gold_selection"], no_search["gold_crop_f1"]) == (None, None, 0.0)
