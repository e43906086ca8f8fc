"""Teacher service calls: retries on timeouts and 5xx with accounting, no retry on 4xx, bounded JSON re-asks."""

from __future__ import annotations

import pytest

from unidoc_rl.standins.scripted_llm_server import Reply, ScriptedLLMServer
from unidoc_rl.synthesis.services import ChatService, RetryPolicy, StageError, StageStats, parse_json_object

FAST = RetryPolicy(timeout_s=0.5, retries=2, backoff_s=0.01, json_retries=1)


@pytest.mark.parametrize(
    "text",
    ['{"think": "t", "best": 1}', '```json\n{"think": "t", "best": 1}\n```', 'Sure: {"think": "t", "best": 1} done'],
)
def test_parse_json_object_accepts_bare_fenced_and_embedded(text):
    assert parse_json_object(text, {"think": str, "best": int}) == {"think": "t", "best": 1}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty reply"),
        ("no json here", "no JSON object"),
        ('{"think": "t"', "not valid JSON"),
        ('{"think": "t"}', "lacks the key 'best'"),
        ('{"think": "t", "best": true}', "wrong type"),
        ('{"think": "t", "best": "1"}', "wrong type"),
    ],
)
def test_parse_json_object_rejects(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_json_object(text, {"think": str, "best": int})


async def test_5xx_and_timeouts_are_retried_and_counted():
    script = [Reply(status=503), Reply(content="late", delay_s=2.0), Reply(content="ok")]
    with ScriptedLLMServer(script) as server:
        service = ChatService(server.base_url, "m", FAST)
        stats = StageStats()
        assert await service.complete([{"role": "user", "content": "q"}], stats, "read") == "ok"
        await service.aclose()
        assert (stats.calls, stats.retries) == (3, 2)
        assert len(server.requests) == 3 and server.requests[0].body["model"] == "m"


async def test_gives_up_after_the_retry_budget_with_the_stage_named():
    with ScriptedLLMServer(Reply(status=500)) as server:
        service = ChatService(server.base_url, "m", FAST)
        stats = StageStats()
        with pytest.raises(StageError, match=r"plan: gave up after 3 attempts \(HTTP 500\)") as raised:
            await service.complete([{"role": "user", "content": "q"}], stats, "plan")
        await service.aclose()
    assert raised.value.stage == "plan" and stats.calls == 3


async def test_4xx_is_not_retried():
    with ScriptedLLMServer(Reply(status=404)) as server:
        service = ChatService(server.base_url, "m", FAST)
        with pytest.raises(StageError, match="HTTP 404"):
            await service.complete([{"role": "user", "content": "q"}], StageStats(), "plan")
        await service.aclose()
        assert len(server.requests) == 1


async def test_malformed_json_is_asked_again_then_fails():
    with ScriptedLLMServer([Reply(content="{oops"), Reply(content='{"think": "t", "search": "s"}')]) as server:
        service = ChatService(server.base_url, "m", FAST)
        stats = StageStats()
        reply = await service.complete_json([{"role": "user", "content": "q"}], {"search": str}, stats, "plan")
        assert reply["search"] == "s" and (stats.calls, stats.retries) == (2, 1)
        server.set_script(Reply(content="never json"))
        with pytest.raises(StageError, match="no valid JSON after 2 replies"):
            await service.complete_json([{"role": "user", "content": "q"}], {"search": str}, StageStats(), "plan")
        await service.aclose()


async def test_model_name_defaults_to_the_endpoint_s_first_model():
    with ScriptedLLMServer(Reply(content="x")) as server:
        service = ChatService(server.base_url, None, FAST)
        assert await service.resolve_model() == "scripted"
        await service.complete([{"role": "user", "content": "q"}], StageStats(), "plan")
        await service.aclose()
        assert server.requests[0].body["model"] == "scripted"
