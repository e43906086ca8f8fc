"""Shared fixtures for reward and judge tests: hand-built trajectories, their ground truth, a scripted judge server."""

from __future__ import annotations

import pytest

from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

A, S, B, ANS, INV = ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER, ActionKind.INVALID


@pytest.fixture
def truth() -> GroundTruth:
    """Two gold pages; report_3 needs a crop of one region, report_7 needs none."""
    return GroundTruth.from_dict(
        {
            "query": "What was the revenue in 2020?",
            "reference_answer": "42 million",
            "gold_pages": [
                {"page_id": "report_3", "boxes": [[100, 100, 500, 300]], "crop_required": True},
                {"page_id": "report_7"},
            ],
        }
    )


@pytest.fixture
def answered_episode() -> EpisodeRecord:
    """search -> select the gold page (rank 1) -> crop it well -> answer correctly."""
    crop = CropStep("report_3", boxes_display=[(60, 50, 300, 150)], boxes_norm1000=[(110, 100, 500, 300)])
    return EpisodeRecord(
        uid="a",
        searches=[
            SearchStep(
                query="revenue 2020",
                retrieved=["report_1", "report_3", "report_5", "report_7"],
                candidates=["report_1", "report_3", "report_5"],
                selected="report_3",
                crops=[crop],
            )
        ],
        shown_page_ids=["report_1", "report_3", "report_5"],
        actions=[A, S, B, ANS],
        answer="42 Million.",
        finish_reason=FinishReason.ANSWERED,
        num_turns=4,
    )


@pytest.fixture
def unanswered_episode() -> EpisodeRecord:
    """Two searches with wrong selections and a poor crop; the turn budget ends the episode before an answer."""
    return EpisodeRecord(
        uid="b",
        searches=[
            SearchStep(
                query="revenue",
                retrieved=["report_1", "report_2", "report_4"],
                candidates=["report_1", "report_2", "report_4"],
                selected="report_2",
            ),
            SearchStep(
                query="2020 revenue table",
                retrieved=["report_1", "report_7", "report_3", "report_9"],
                candidates=["report_7", "report_3", "report_9"],
                selected="report_3",
                crops=[CropStep("report_3", [(0, 0, 10, 10)], [(100, 100, 300, 200)])],
            ),
        ],
        shown_page_ids=["report_1", "report_2", "report_4", "report_7", "report_3", "report_9"],
        actions=[A, S, A, S, B],
        finish_reason=FinishReason.MAX_TURNS,
        num_turns=5,
    )


@pytest.fixture(scope="module")
def llm_server():
    with ScriptedLLMServer(exact_match_judge()) as server:
        yield server


@pytest.fixture
def judge_server(llm_server):
    """The module's scripted server, reset to an exact-match judge with no latency."""
    llm_server.set_script(exact_match_judge())
    return llm_server
