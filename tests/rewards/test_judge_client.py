"""The judge client against a real loopback server scripted to be slow, fail, hang and talk garbage."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.judge.client import OpenAIJudge, ResilientJudge
from unidoc_rl.judge.settings import JudgeSettings
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.standins.scripted_llm_server import Reply, exact_match_judge, replies_in_order

TRUE, FALSE = Reply(content="<judge>True</judge>"), Reply(content="<judge>False</judge>")


def make_judge(server, **overrides) -> OpenAIJudge:
    values = {"base_url": server.base_url, "timeout_s": 0.5, "max_retries": 2, "backoff_initial_s": 0.01}
    return OpenAIJudge(JudgeSettings(**{**values, **overrides}))


async def test_slow_judge_within_timeout_is_used(judge_server):
    judge_server.set_script(Reply(content="<judge>True</judge>", delay_s=0.2))
    judge = make_judge(judge_server)
    verdict = await judge.judge("q", "Paris", "London")
    assert (verdict.score, verdict.source) == (1.0, "judge")
    assert judge.stats.retries == 0
    await judge.aclose()


async def test_5xx_is_retried_then_succeeds(judge_server):
    judge_server.set_script([Reply(status=500), Reply(status=503), FALSE])
    judge = make_judge(judge_server)
    verdict = await judge.judge("q", "Paris", "Paris")
    assert (verdict.score, verdict.source) == (0.0, "judge")
    assert (judge.stats.requests, judge.stats.retries, judge.stats.fallbacks) == (3, 2, 0)
    await judge.aclose()


async def test_persistent_5xx_falls_back_to_rule_based(judge_server):
    judge_server.set_script(Reply(status=502))
    judge = make_judge(judge_server, fallback_scorer="exact_match")
    right, wrong = await judge.judge_many([("q", "Paris", "paris."), ("q", "Paris", "Lyon")])
    assert (right.score, right.source, wrong.score, wrong.source) == (1.0, "fallback", 0.0, "fallback")
    assert right.error == "HTTP 502"
    assert len(judge_server.requests) == 6  # 3 attempts each
    assert judge.stats.fallbacks == 2
    await judge.aclose()


async def test_hanging_judge_times_out_and_falls_back(judge_server):
    judge_server.set_script(Reply(hang=True))
    judge = make_judge(judge_server, timeout_s=0.2, max_retries=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    verdict = await judge.judge("q", "42 million", "42 millon")
    assert loop.time() - started < 1.5
    assert verdict.source == "fallback" and verdict.error == "timeout"
    assert verdict.score == pytest.approx(0.9)  # ANLS fallback
    await judge.aclose()


@pytest.mark.parametrize(
    "garbage",
    [
        Reply(raw_body="{not json"),
        Reply(raw_body='{"choices": []}'),
        Reply(content="I would say it is probably right"),
        Reply(content=None),
    ],
)
async def test_garbage_replies_fall_back(judge_server, garbage):
    judge_server.set_script(garbage)
    judge = make_judge(judge_server, max_retries=1)
    verdict = await judge.judge("q", "Paris", "Paris")
    assert (verdict.score, verdict.source) == (1.0, "fallback")
    assert len(judge_server.requests) == 2
    await judge.aclose()


async def test_4xx_is_not_retried(judge_server):
    judge_server.set_script(Reply(status=400))
    judge = make_judge(judge_server, max_retries=3)
    verdict = await judge.judge("q", "Paris", "Rome")
    assert (verdict.source, verdict.error) == ("fallback", "HTTP 400")
    assert len(judge_server.requests) == 1
    await judge.aclose()


async def test_cache_and_shared_inflight_requests(judge_server):
    judge_server.set_script(Reply(content="<judge>True</judge>", delay_s=0.1))
    judge = make_judge(judge_server)
    verdicts = await judge.judge_many([("q", "a", "x")] * 5 + [("q", "a", "y")])
    assert [v.source for v in verdicts].count("judge") == 2
    assert [v.source for v in verdicts].count("cache") == 4
    again = await judge.judge("q", "a", "x")
    assert again.source == "cache" and again.score == 1.0
    assert len(judge_server.requests) == 2
    await judge.aclose()


async def test_failed_verdicts_are_not_cached(judge_server):
    judge_server.set_script(replies_in_order([Reply(status=500)], then=TRUE))
    judge = make_judge(judge_server, max_retries=0)
    first = await judge.judge("q", "a", "b")
    second = await judge.judge("q", "a", "b")
    assert (first.source, second.source, second.score) == ("fallback", "judge", 1.0)
    await judge.aclose()


async def test_concurrency_is_bounded(judge_server):
    judge_server.set_script(Reply(content="<judge>True</judge>", delay_s=0.05))
    judge = make_judge(judge_server, max_concurrency=4)
    verdicts = await judge.judge_many([("q", "a", str(i)) for i in range(16)])
    assert all(v.source == "judge" for v in verdicts)
    assert judge_server.max_in_flight == 4
    await judge.aclose()


async def test_80_trajectories_all_scored_through_a_flaky_judge(judge_server, answered_episode, truth):
    # Request i gets: 500 / hang / garbage / slow verdict, cycling. Every trajectory must end with a score, and the
    # fallbacks must be visible per trajectory.
    grader = exact_match_judge()

    def flaky(request):
        kind = request.index % 4
        if kind == 0:
            return Reply(status=500)
        if kind == 1:
            return Reply(hang=True)
        if kind == 2:
            return Reply(raw_body="\x00garbage")
        return Reply(content=grader(request).content, delay_s=0.05)

    judge_server.set_script(flaky)
    settings = RewardSettings.from_mapping(
        {"judge": {"base_url": judge_server.base_url, "timeout_s": 0.3, "max_retries": 1, "backoff_initial_s": 0.01}}
    )
    scorer = EpisodeScorer(settings)
    episodes = []
    for i in range(80):
        episode = EpisodeRecord.from_dict(answered_episode.to_dict())
        episode.answer = "42 million" if i % 2 else f"wrong {i}"
        episodes.append(episode)
    results = await asyncio.gather(*(scorer.score(episode, truth) for episode in episodes))
    assert len(results) == 80 and all(r.judge_called for r in results)
    fallbacks = sum(r.judge_fallback for r in results)
    assert 0 < fallbacks < 80
    assert scorer.judge.stats.fallbacks == fallbacks
    for episode, result in zip(episodes, results, strict=True):
        # judge or fallback agree here: exact-match grader vs ANLS on clearly right/wrong answers
        assert result.answer == (1.0 if episode.answer == "42 million" else 0.0)
    await scorer.aclose()


class TurnRecordingJudge(ResilientJudge):
    """Records the event-loop turn in which each request starts; the answer is the candidate itself."""

    def __init__(self, settings: JudgeSettings):
        super().__init__(settings)
        self.turn = 0
        self.started: list[tuple[str, int]] = []

    def _open_transport(self):
        self._counting = True
        asyncio.get_running_loop().call_soon(self._count_turn)
        return object()

    def _count_turn(self) -> None:
        if self._counting:
            self.turn += 1
            asyncio.get_running_loop().call_soon(self._count_turn)

    async def _close_transport(self, transport) -> None:
        self._counting = False

    async def _request(self, transport, query: str, reference: str, answer: str) -> float:
        self.started.append((answer, self.turn))
        await asyncio.sleep(0.01)
        return float(answer) / 10


async def test_a_burst_is_sent_in_waves_of_send_wave_size():
    judge = TurnRecordingJudge(JudgeSettings(send_wave_size=4))
    verdicts = await judge.judge_many([("q", "a", str(i)) for i in range(10)])
    assert [v.score for v in verdicts] == [i / 10 for i in range(10)]
    assert [answer for answer, _ in judge.started] == [str(i) for i in range(10)]
    turns = [turn for _, turn in judge.started]
    assert len(set(turns[:4])) == len(set(turns[4:8])) == len(set(turns[8:])) == 1
    assert turns[0] < turns[4] < turns[8]
    await judge.aclose()


async def test_one_wave_when_the_burst_fits():
    judge = TurnRecordingJudge(JudgeSettings(send_wave_size=16))
    await judge.judge_many([("q", "a", str(i)) for i in range(10)])
    assert len({turn for _, turn in judge.started}) == 1
    await judge.aclose()


async def test_scripted_server_rejects_non_json_and_still_lists_models(judge_server):
    async with httpx.AsyncClient(base_url=judge_server.base_url) as client:
        not_json = await client.post("/chat/completions", content=b"{oops")
        not_object = await client.post("/chat/completions", json=[1, 2])
        models = await client.get("/models")
    assert (not_json.status_code, not_json.json()) == (400, {"error": {"message": "body is not JSON"}})
    assert (not_object.status_code, not_object.json()) == (400, {"error": {"message": "body is not a JSON object"}})
    assert models.json()["data"][0]["id"] == "scripted"
    assert judge_server.requests == []
