"""The episode log line (one format for training and evaluation) and the episode facts the record derives."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.episode_log import EpisodeLogError, EpisodeLogLine, JudgeVerdict
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import RewardBreakdown

A, S, B, ANS, INV = ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER, ActionKind.INVALID


def record(**changes) -> EpisodeRecord:
    crop = CropStep("d_2", [(1.0, 2.0, 30.0, 40.0)], [(10.0, 20.0, 300.0, 400.0)])
    searches = [
        SearchStep("q", ["d_1", "d_2"], ["d_1", "d_2"], selected="d_2", crops=[crop]),
        SearchStep("down", [], [], failed=True, error="timeout"),
        SearchStep("again", ["d_3"], ["d_3"]),
    ]
    values = dict(
        uid="u1",
        question="Q?",
        searches=searches,
        actions=[A, S, B, A, A, ANS],
        answer="42",
        finish_reason=FinishReason.ANSWERED,
        num_turns=6,
    )
    return EpisodeRecord(**{**values, **changes})


def test_episode_facts():
    episode = record()
    assert episode.answered and episode.cropped
    assert [step.focus_page for step in episode.searches] == ["d_2", None, "d_3"]
    assert [step.query for step in episode.served_searches] == ["q", "again"]
    # A forced final answer counts; an empty one, one that is not the last action or one on an unfinished episode
    # does not (the agent loop never writes those; the definition says what "answered" means).
    assert record(finish_reason=FinishReason.MAX_TURNS, forced_answer=True).answered
    assert not record(answer="  ").answered
    assert not record(answer=None).answered
    assert not record(actions=[A, ANS, INV]).answered
    assert not record(finish_reason=FinishReason.MAX_TURNS).answered
    assert not record(searches=[SearchStep("q", ["d_1"], ["d_1"])]).cropped


REWARD = RewardBreakdown(0.4, 0.0, 1.0, 1.0, 0.5, 0.0, False, False, False, search_failures=1)


def evaluation_line() -> EpisodeLogLine:
    return EpisodeLogLine(
        uid="u1",
        episode=record(),
        reward=REWARD,
        benchmark="slidevqa",
        categories={"hop": ["multi-hop"]},
        key="slidevqa/u1/0",
        sample_index=0,
        ground_truth=GroundTruth("Q?", "42", ("d_2",), {"d_2": ((0.0, 0.0, 500.0, 500.0),)}, {"d_2": True}),
        judge=JudgeVerdict(1.0, False, "judge"),
        accuracy=1.0,
        native={"slidevqa_em": 1.0},
        metrics={"gold_shown": 0.5, "gold_selection": None, "finish_reason": "answered"},
        tokens={"prompt": 10, "response": 5, "model": 3, "total": 15},
        latency_s=0.25,
    )


def test_a_line_survives_json_and_reads_back_equal():
    line = evaluation_line()
    text = json.dumps(line.to_dict())
    again = EpisodeLogLine.from_dict(json.loads(text))
    assert json.loads(json.dumps(again.to_dict())) == json.loads(text)
    assert again.reward == line.reward and again.judge == line.judge and again.ground_truth == line.ground_truth
    assert again.total == 0.4 and again.correct is True  # the verdict, not the gated answer reward
    assert again.category_labels == ("benchmark: slidevqa", "hop: multi-hop")

    training = EpisodeLogLine(uid="u1", episode=record(), reward=line.reward, step=3, group="p1", turn_advantages=[0.5])
    data = json.loads(json.dumps(training.to_dict()))
    assert set(data) == {"schema", "uid", "step", "group", "episode", "reward", "turn_advantages"}
    assert EpisodeLogLine.from_dict(data).turn_advantages == [0.5]
    assert EpisodeLogLine.from_dict(data).verdict is None and EpisodeLogLine.from_dict(data).correct is False


def test_the_reward_s_own_verdict_where_it_called_the_judge():
    reward = RewardBreakdown(0.9, 1.0, 1.0, 1.0, 1.0, 1.0, True, False, True)
    line = EpisodeLogLine(uid="u1", episode=record(), reward=reward)
    assert line.verdict == JudgeVerdict(1.0, False, "cache") and line.correct is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": None}, "schema must be 1, got None"),
        ({"uid": 7}, "uid must be a string"),
        ({"episode": None}, "no `episode` object"),
        ({"episode": {"actions": ["jump"]}}, "episode does not parse"),
        ({"reward": {**asdict(REWARD), "score": "high"}}, "reward.score must be a number"),
        ({"reward": {**asdict(REWARD), "search_failures": 1.5}}, "reward.search_failures must be a whole number"),
        ({"reward": {**asdict(REWARD), "judge_called": "yes"}}, "reward.judge_called must be a boolean"),
        ({"judge": {"score": 1.0, "why": "x"}}, "judge has unknown fields ['why']"),
        ({"tokens": {"prompt": "ten"}}, "tokens.prompt must be a number"),
        ({"ground_truth": {"reference_answer": 42}}, "ground_truth: ground_truth.reference_answer must be a string"),
        ({"turn_advantages": 0.5}, "turn_advantages must be a list of numbers"),
        ({"question": "Q?"}, "unknown fields ['question']"),
    ],
)
def test_malformed_lines_name_the_field(change, message):
    data = evaluation_line().to_dict()
    data.update(change)
    if change.get("schema", 1) is None:
        del data["schema"]
    with pytest.raises(EpisodeLogError) as error:
        EpisodeLogLine.from_dict(data)
    assert str(error.value).startswith(message)
