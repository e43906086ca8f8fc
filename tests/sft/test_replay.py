"""The central property of the SFT data: a teacher trajectory is what the RL agent loop renders for its actions.

Each synthesized trajectory's assistant turns are replayed through `UniDocAgentLoop` in verl's real
AgentLoopWorker (scripted LLM client, the same live search service). The loop must show the same observation texts
and the same images, pixel for pixel; it must build the same token sequence the chat template builds from the SFT
messages; and its episode record must be the teacher's and score the same.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from verl.protocol import DataProto

import unidoc_rl.standins
from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config, rope_processor
from unidoc_rl.data.prepare import ground_truth_of
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.env.prompts import DEFAULT_TEMPLATE, load_prompts
from unidoc_rl.env.vision import CoordinateConvention
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.standins.scripted_client import ScriptedLLMClient
from unidoc_rl.standins.tiny_models import tiny_policy_path


@pytest.fixture(scope="module")
def processor():
    return rope_processor(tiny_policy_path())


def replay_lines(lines, search_url, processor, prompt_template: str = DEFAULT_TEMPLATE):
    """Replay each synthesized trajectory's assistant turns through the agent loop; (episodes, last call per uid)."""
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
        {"unidoc_agent": {"search_url": search_url, "prompt_template": prompt_template}},
    )
    client = ScriptedLLMClient(processor.tokenizer, script)
    prompts = load_prompts(prompt_template)
    batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array(
                [[prompts.question_message(questions[line["uid"]])] for line in lines], dtype=object
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


@pytest.fixture(scope="module")
def replay(oracle_run, search_url, processor):
    return replay_lines(list(oracle_run.lines.values()), search_url, processor)


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


def assert_engine_ids_are_the_chat_template(lines, root, last_calls, processor):
    """The ids the engine was given before the answer = the processor's rendering of the SFT chat so far."""
    for uid, line in lines.items():
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


def test_the_agent_token_sequence_is_the_chat_template_of_the_sft_messages(oracle_run, replay, processor):
    assert_engine_ids_are_the_chat_template(oracle_run.lines, oracle_run.output.parent, replay[1], processor)


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


ALTERNATE = str(Path(unidoc_rl.standins.__file__).parent / "alternate_prompts.jinja")
DEFAULT_WORDS = (
    "Question: ",
    "Results for: ",
    "Image 0: ",
    "Selected Image",
    "Zoomed region: ",
    "You answer questions",
)


@pytest.fixture(scope="module")
def alternate_run(samples, search_url, oracle_teacher, corpus_dir, cli_args, tmp_path_factory):
    """Synthesis under a second template (every string differs) over a few samples: a crop, a multi-hop, a text one."""
    from unidoc_rl.synthesis.generate_cot_data import main

    picks = [
        next(s for s in samples if any(s["meta_info"].get("crop_required") or [])),
        next(s for s in samples if s["meta_info"]["query_type"] == "multi-hop"),
        next(s for s in samples if s["meta_info"]["source_type"] == "text"),
    ]
    root = tmp_path_factory.mktemp("alternate")
    data = root / "samples.json"
    data.write_text(json.dumps(picks))
    output = root / "out.jsonl"
    argv = cli_args(search_url, oracle_teacher.base_url, corpus_dir, output, data, "--prompt-template", ALTERNATE)
    assert main(argv) == 0
    lines = {line["uid"]: line for line in map(json.loads, output.read_text().splitlines())}
    assert sorted(lines) == sorted(s["uid"] for s in picks)
    return SimpleNamespace(output=output, lines=lines, samples=picks)


def test_a_second_template_words_synthesis_export_and_replay_alike(alternate_run, search_url, processor, tmp_path):
    from unidoc_rl.synthesis.convert_to_llamafactory import main as export

    alternate = load_prompts(ALTERNATE)
    for line in alternate_run.lines.values():
        system, question, *_ = line["messages"]
        assert system["content"] == alternate.system_prompt(CoordinateConvention.ABSOLUTE, 3)
        assert question["content"] == f"Task: {line['question']}\nBegin."
        observations = [m["content"] for m in line["messages"][3::2]]
        assert observations[0].startswith("Search [") and " <page 0> <image>" in observations[0]
        assert any(text.startswith("Focus on page ") for text in observations)
        text = json.dumps(line["messages"])
        assert not [word for word in DEFAULT_WORDS if word in text]
    assert any("Zoom:<image>" in json.dumps(line["messages"]) for line in alternate_run.lines.values())

    target = tmp_path / "sft.json"
    assert export(["--input-path", str(alternate_run.output), "--output-path", str(target)]) == 0
    records = json.loads(target.read_text())
    in_uid_order = [alternate_run.lines[uid] for uid in sorted(alternate_run.lines)]  # the export's order
    assert [r["messages"] for r in records] == [line["messages"] for line in in_uid_order]

    episodes, last_calls = replay_lines(list(alternate_run.lines.values()), search_url, processor, ALTERNATE)
    for uid, line in alternate_run.lines.items():
        assert [turn.observation for turn in episodes[uid].turns[:-1]] == [m["content"] for m in line["messages"][3::2]]
        assert episodes[uid].to_dict() == EpisodeRecord.from_dict(line["episode"]).to_dict()
    assert_engine_ids_are_the_chat_template(alternate_run.lines, alternate_run.output.parent, last_calls, processor)
