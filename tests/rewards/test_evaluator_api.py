"""The judge service over real HTTP: validation, batching, fallback, and the trainer's client talking to it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from unidoc_rl.judge.client import EvaluatorServiceJudge, OpenAIJudge
from unidoc_rl.judge.evaluator_api import build_parser, create_app, main, settings_from_args
from unidoc_rl.judge.settings import JudgeSettings
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.standins.scripted_llm_server import Reply, exact_match_judge
from unidoc_rl.standins.serving import ThreadedUvicorn


@pytest.fixture(scope="module")
def evaluator(llm_server):
    args = build_parser().parse_args(["--llm-base-url", llm_server.base_url, "--timeout-s", "1", "--max-retries", "1"])
    judge = OpenAIJudge(settings_from_args(args))
    with ThreadedUvicorn(create_app(judge)) as server:
        yield server


def prompt(query: str, reference: str, answer: str) -> dict:
    return {"query": query, "reference_answer": reference, "generated_answer": answer}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompts"),
        ({"prompts": [], "bs": 4}, "prompts"),
        ({"prompts": [{"query": "q", "reference_answer": "a"}]}, "generated_answer"),
        ({"prompts": [prompt("q", "a", "b")], "bs": 0}, "bs"),
        ({"prompts": [{"query": "q", "reference_answer": 3, "generated_answer": "b"}]}, "reference_answer"),
        ({"prompts": [{**prompt("q", "a", "b"), "extra": 1}]}, "extra"),
        ({"prompts": "q"}, "prompts"),
    ],
)
def test_bad_requests_get_422_naming_the_field(evaluator, judge_server, body, field):
    response = httpx.post(f"{evaluator.url}/eval", json=body)
    assert response.status_code == 422
    assert field in response.text
    assert judge_server.requests == []


def test_non_json_body_is_rejected(evaluator):
    response = httpx.post(f"{evaluator.url}/eval", content=b"prompts=1", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_eval_scores_in_order_in_batches(evaluator, judge_server):
    judge_server.set_script(exact_match_judge(latency_s=0.05))
    prompts = [prompt(f"batch q{i}", "Paris", "paris" if i % 2 == 0 else "Rome") for i in range(5)]
    response = httpx.post(f"{evaluator.url}/eval", json={"prompts": prompts, "bs": 2})
    assert response.status_code == 200
    assert response.json() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert len(judge_server.requests) == 5
    assert judge_server.max_in_flight == 2


def test_eval_falls_back_when_the_llm_is_down(evaluator, judge_server):
    judge_server.set_script(Reply(status=503))
    before = httpx.get(f"{evaluator.url}/health").json()["fallbacks"]
    prompts = [prompt("down q", "42 million", "42 million"), prompt("down q", "42 million", "7")]
    response = httpx.post(f"{evaluator.url}/eval", json={"prompts": prompts, "bs": 8})
    assert response.json() == [1.0, 0.0]
    health = httpx.get(f"{evaluator.url}/health").json()
    assert health["fallbacks"] == before + 2
    assert health["prompt_template"] == "judge_v1"


async def test_trainer_scores_through_its_own_judge_service(evaluator, judge_server, answered_episode, truth):
    # Reference defect: the trainer's judge client and the judge service disagreed on the request shape (HTTP 422,
    # then a crash). Here the reward scorer talks to the service, which talks to the LLM, end to end.
    settings = RewardSettings.from_mapping(
        {"judge": {"backend": "evaluator_service", "base_url": evaluator.url, "timeout_s": 5.0}}
    )
    scorer = EpisodeScorer(settings)
    assert isinstance(scorer.judge, EvaluatorServiceJudge)
    right = await scorer.score(answered_episode, truth)
    answered_episode.answer = "17 million"
    wrong = await scorer.score(answered_episode, truth)
    assert (right.answer, right.judge_called, right.judge_fallback) == (1.0, True, False)
    assert (wrong.answer, wrong.judge_called, wrong.judge_fallback) == (0.0, True, False)
    assert [request.prompt.count("<candidate>\n42 Million.\n</candidate>") for request in judge_server.requests] == [
        1,
        0,
    ]
    await scorer.aclose()


async def test_service_client_falls_back_when_the_service_is_unreachable(answered_episode, truth):
    settings = JudgeSettings(backend="evaluator_service", base_url="http://127.0.0.1:9", max_retries=1)
    judge = EvaluatorServiceJudge(settings)
    verdict = await judge.judge(truth.query, truth.reference_answer, answered_episode.answer)
    # The fallback is DocVQA's ANLS, which keeps punctuation: one extra "." over 11 characters.
    assert verdict.source == "fallback" and verdict.score == pytest.approx(1 - 1 / 11)
    assert "ConnectError" in verdict.error
    await judge.aclose()


def test_cli_help_and_loopback_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--llm-base-url" in capsys.readouterr().out
    assert build_parser().parse_args([]).host == "127.0.0.1"


async def test_concurrent_triples_share_one_eval_request(evaluator, judge_server):
    judge = EvaluatorServiceJudge(JudgeSettings(backend="evaluator_service", base_url=evaluator.url))
    triples = [("q", "Paris", "paris"), ("q", "Paris", "Lyon"), ("q", "Rome", "rome"), ("q", "Rome", "Milan")]
    verdicts = await judge.judge_many(triples)
    assert [(v.score, v.source) for v in verdicts] == [(1.0, "judge"), (0.0, "judge"), (1.0, "judge"), (0.0, "judge")]
    assert (judge.stats.requests, judge.stats.http_requests) == (4, 1)
    assert len(judge_server.requests) == 4
    await judge.aclose()


async def test_eval_batches_are_capped_at_service_batch_size(evaluator, judge_server):
    settings = JudgeSettings(backend="evaluator_service", base_url=evaluator.url, service_batch_size=2)
    judge = EvaluatorServiceJudge(settings)
    verdicts = await judge.judge_many([("q", "a", str(i)) for i in range(5)] + [("q", "a", "a")])
    assert [v.score for v in verdicts] == [0.0] * 5 + [1.0]
    assert (judge.stats.requests, judge.stats.http_requests) == (6, 3)
    await judge.aclose()


@pytest.fixture
def odd_service():
    """A judge service that answers every /eval with the same scripted list, whatever the batch."""
    app = FastAPI()
    app.state.reply = []

    @app.post("/eval")
    async def evaluate() -> list:
        return app.state.reply

    with ThreadedUvicorn(app) as server:
        yield server, app


async def test_each_triple_of_a_batch_judges_its_own_score(odd_service):
    server, app = odd_service
    app.state.reply = [0.25, 7, "high"]
    settings = JudgeSettings(backend="evaluator_service", base_url=server.url, max_retries=0)
    judge = EvaluatorServiceJudge(settings)
    triples = [("q", "Paris", "x"), ("q", "a", "a"), ("q", "b", "c")]
    in_range, out_of_range, not_a_number = await judge.judge_many(triples)
    assert (in_range.score, in_range.source) == (0.25, "judge")
    assert (out_of_range.score, out_of_range.source) == (1.0, "fallback")
    assert out_of_range.error == "JudgeRequestError: /eval score 7 outside [0, 1]"
    assert (not_a_number.score, not_a_number.source) == (0.0, "fallback")
    await judge.aclose()


async def test_a_wrong_length_reply_fails_the_whole_batch(odd_service):
    server, app = odd_service
    app.state.reply = [0.5]
    judge = EvaluatorServiceJudge(JudgeSettings(backend="evaluator_service", base_url=server.url, max_retries=0))
    verdicts = await judge.judge_many([("q", "Paris", "paris"), ("q", "Paris", "Lyon")])
    assert [(v.score, v.source) for v in verdicts] == [(1.0, "fallback"), (0.0, "fallback")]
    assert "expected 2 floats" in verdicts[0].error
    assert (judge.stats.requests, judge.stats.http_requests, judge.stats.fallbacks) == (2, 1, 2)
    await judge.aclose()
