"""A full episode with the local engine and the tiny policy against the real search service on loopback."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_smart_resize

from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.env.episode import ActionKind, FinishReason
from unidoc_rl.standins.sample_corpus import index_sample_corpus
from unidoc_rl.standins.serving import ThreadedUvicorn

QUESTIONS = [
    "What dividend per share does the Northwind Energy board propose for 2023?",
    "What round-trip efficiency did the Lakeside battery study measure over twelve months?",
]
QUERIES = ["dividend per share", "round-trip efficiency"]


@contextlib.contextmanager
def serve(app):
    with ThreadedUvicorn(app, lifespan="off") as server:
        yield server.url


@pytest.fixture(scope="module")
def search_service(tmp_path_factory):
    from search_engine.search_engine_api import ServiceConfig, create_app

    names = ("northwind_annual_report_2023.pdf", "lakeside_battery_study.pdf", "city_water_survey.pdf")
    corpus = index_sample_corpus(tmp_path_factory.mktemp("corpus"), names)
    with serve(create_app(ServiceConfig(dataset_dir=str(corpus)))) as url:
        yield url


class ScriptedThenEngine:
    """Replays scripted turns (the search), then lets the local engine generate every later turn."""

    def __init__(self, engine: LocalEngine, first_turn):
        self.engine = engine
        self.first_turn = first_turn
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
        turn = sum(1 for call in self.calls if call["request_id"] == request_id)
        call = {"request_id": request_id, "prompt_ids": list(prompt_ids), "images": list(image_data or [])}
        if turn == 0:
            question = self.engine.tokenizer.decode(prompt_ids)
            text = next(self.first_turn[q] for q in self.first_turn if q in question)
            from verl.workers.rollout.replica import TokenOutput

            output = TokenOutput(token_ids=self.engine.tokenizer.encode(text), log_probs=None)
        else:
            output = await self.engine.generate(
                request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, image_data=image_data
            )
        call.update(engine=turn > 0, reply=list(output.token_ids), log_probs=output.log_probs)
        self.calls.append(call)
        return output


@pytest.mark.slow
async def test_local_engine_episode_against_live_search(kit, policy_path, processor, search_service):
    from search_engine.client import SearchClient

    engine = LocalEngine.from_pretrained(policy_path, seed=0, batch_wait_s=0.5)
    client = ScriptedThenEngine(engine, {q: f"<search>{s}</search>" for q, s in zip(QUESTIONS, QUERIES, strict=True)})
    config = kit.make_config(policy_path, search_service, max_turns=3, max_tokens_per_turn=32)
    output = await kit.run_worker(config, client, kit.question_batch(QUESTIONS), processor, validate=True)

    with SearchClient(search_service) as sync_client:
        expected_hits = sync_client.search(QUERIES, top_k=10)
    assert expected_hits[0][0].page_id == "northwind_annual_report_2023_1"
    assert expected_hits[1][0].page_id == "lakeside_battery_study_1"
    assert 2 in engine.batches_run  # the two trajectories' later turns were generated together

    image_pad = engine.image_token_id
    for row, hits in enumerate(expected_hits):
        episode = kit.episode_of(output, row)
        assert episode.searches[0].query == QUERIES[row]
        assert episode.searches[0].retrieved == [hit.page_id for hit in hits]
        assert episode.searches[0].candidates == [hit.page_id for hit in hits[:3]]
        assert episode.actions[0] is ActionKind.SEARCH and episode.num_turns == 3
        assert episode.finish_reason in {FinishReason.MAX_TURNS, FinishReason.ANSWERED}

        # The engine saw the rendered pages from disk at their display size.
        data = kit.unpadded(output, row)
        full = data["prompt"] + data["response"]
        row_calls = [call for call in client.calls if full[: len(call["prompt_ids"])] == call["prompt_ids"]]
        assert len(row_calls) == 3 and len({call["request_id"] for call in row_calls}) == 1
        images = row_calls[-1]["images"]
        assert [len(call["images"]) for call in row_calls] == [0, 3, 3]
        for hit, image in zip(hits[:3], images, strict=True):
            with Image.open(hit.image_file) as raw:
                height, width = qwen_smart_resize(raw.height, raw.width, 28, 8 * 28 * 28, 64 * 28 * 28)
                expected = raw.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
            assert np.array_equal(np.asarray(image), np.asarray(expected))

        # Engine turns: mask 1 on exactly the engine's tokens, and their log-probs equal teacher forcing over the
        # whole multi-turn, multi-image sequence.
        ids = torch.tensor([full])
        features = processor.image_processor(images=images, return_tensors="pt")
        with torch.no_grad():
            logits = engine.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=features["pixel_values"],
                image_grid_thw=features["image_grid_thw"],
                mm_token_type_ids=(ids == image_pad).long(),
            ).logits[0]
        teacher = torch.log_softmax(logits.float(), -1)
        engine_calls = [c for c in row_calls if c["engine"]]
        assert len(engine_calls) == 2
        for call in engine_calls:
            start = len(call["prompt_ids"])
            end = start + len(call["reply"])
            assert full[start:end] == call["reply"]
            assert data["mask"][start - len(data["prompt"]) : end - len(data["prompt"])] == [1] * len(call["reply"])
            expected_lp = teacher[start - 1 : end - 1].gather(-1, torch.tensor(call["reply"])[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(call["log_probs"]), expected_lp, atol=1e-4)
        assert sum(data["mask"]) == sum(len(c["reply"]) for c in row_calls)
