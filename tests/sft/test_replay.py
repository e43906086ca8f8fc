"""The central property of the SFT data: a teacher trajectory is what the RL agent loop renders for its actions.

Each synthesized trajectory's assistant turns are replayed through `UniDocAgentLoop` in verl's real
AgentLoopWorker (scripted LLM client, the same live search service). The loop must show the same observation texts
and the same images, pixel for pixel; it must build the same token sequence the chat template builds from the SFT
messages; and its episode record must be the teacher's and score the same.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image
from verl.protocol import DataProto

from unidoc_rl.agent.scripted_client import ScriptedLLMClient
from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config, rope_processor
from unidoc_rl.data.prepare import ground_truth_of
from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.prompts import load_prompts
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.testing.tiny_models import tiny_policy_path


@pytest.fixture(scope="module")
def processor():
    return rope_processor(tiny_policy_path())


@pytest.fixture(scope="module")
def replay(oracle_run, search_url, processor):
    lines = list(oracle_run.lines.values())
    turns = {line["uid"]: [m["content"] for m in line["messages"] if m["role"] == "assistant"] for line in lines}
    questions = {line["uid"]: line["question"] for line in lines}
    owner: dict[str, str] = {}

    def script(call) -> str:
        if call.request_id not in owner:
            text = processor.tokenizer.decode(call.prompt_ids)
            owner[call.request_id] = next(uid for uid, question in questions.items() if question in text)
        return turns[owner[call.request_id]][call.turn]

    config = compose_verl_config(
        [
            f"actor_rollout_ref.model.path={tiny_policy_path()}",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.prompt_length=1024",
            "actor_rollout_ref.rollout.response_length=4096",
        ],
        {"unidoc_agent": {"search_url": search_url}},
    )
    client = ScriptedLLMClient(processor.tokenizer, script)
    batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array(
                [[load_prompts().question_message(questions[line["uid"]])] for line in lines], dtype=object
            ),
            "agent_name": np.array(["unidoc_agent"] * len(lines), dtype=object),
            "extra_info": np.array([{"uid": line["uid"]} for line in lines], dtype=object),
        }
    )
    batch.meta_info["validate"] = True
    worker = build_agent_loop_worker(config, client, processor=processor)
    output = asyncio.run(worker.generate_sequences(batch))
    episodes = {}
    for row in range(len(lines)):
        episode = EpisodeRecord.from_dict(output.non_tensor_batch["episode"][row])
        episodes[episode.uid] = episode
    last_calls = {}
    for call in client.calls:
        last_calls[owner[call.request_id]] = call
    return episodes, last_calls


def test_replayed_observations_are_the_sft_user_turns(oracle_run, replay):
    episodes, _ = replay
    for uid, line in oracle_run.lines.items():
        observations = [m["content"] for m in line["messages"][3::2]]
        assert [turn.observation for turn in episodes[uid].turns[:-1]] == observations
        assert [turn.text for turn in episodes[uid].turns] == [m["content"] for m in line["messages"][2::2]]


def test_replayed_images_are_pixel_equal(oracle_run, replay):
    _, last_calls = replay
    root = oracle_run.output.parent
    for uid, line in oracle_run.lines.items():
        shown = last_calls[uid].images  # the last generate call carries every image shown so far
        assert len(shown) == len(line["images"]) > 0
        for path, image in zip(line["images"], shown, strict=True):
            with Image.open(root / path) as saved:
                assert saved.size == image.size
                assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image.convert("RGB")))


def test_the_agent_token_sequence_is_the_chat_template_of_the_sft_messages(oracle_run, replay, processor):
    """The ids the engine was given before the answer = the processor's rendering of the SFT chat so far."""
    _, last_calls = replay
    root = oracle_run.output.parent
    for uid, line in oracle_run.lines.items():
        history = line["messages"][:-1]
        images = [Image.open(root / path).convert("RGB") for path in line["images"]]
        chat = []
        for message in history:
            pieces = message["content"].split("<image>")
            content = [{"type": "text", "text": pieces[0]}]
            for piece in pieces[1:]:
                content += [{"type": "image"}, {"type": "text", "text": piece}]
            chat.append({"role": message["role"], "content": [part for part in content if part.get("text") != ""]})
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids = processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()
        assert last_calls[uid].prompt_ids == ids, uid


async def test_replayed_episodes_score_as_the_teacher_did(oracle_run, replay):
    episodes, _ = replay
    scorer = EpisodeScorer(RewardSettings(answer_scorer="exact_match"))
    for sample in oracle_run.samples:
        teacher = EpisodeRecord.from_dict(oracle_run.lines[sample["uid"]]["episode"])
        replayed = episodes[sample["uid"]]
        assert replayed.to_dict() == teacher.to_dict()
        truth = ground_truth_of(sample)
        expected, got = await scorer.score(teacher, truth), await scorer.score(replayed, truth)
        assert got == expected
        assert (got.format, got.selection, got.answer) == (1.0, 1.0, 1.0)
        assert got.crop == 1.0  # crop F1 1.0 where a crop is required, and no crop elsewhere
        assert [crop.page_id for crop in replayed.crops] == [
            page for page in replayed.selected_page_ids if truth.requires_crop(page)
        ]
