"""verl's V1 rollout path under a real Ray cluster on CPU, end to end.

Ray starts locally with two CPUs; the project's agent-loop manager (the one `main_ppo` loads) starts its Ray
workers; verl's router and `LLMServerClient` send every turn to a generation-server actor that replies from a
script (search, select, crop, answer); the agent loop calls the real search service over loopback HTTP (bm25
index of examples/corpus); verl's `RewardLoopManager` starts a reward worker running the project's reward manager,
which asks a scripted OpenAI-compatible judge on loopback. Trajectories land in TransferQueue, where the V1 trainer
reads them; the test reads them from there too.
"""

from __future__ import annotations

import functools
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from unidoc_rl.standins.sample_corpus import index_sample_corpus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "examples" / "samples.json"
GROUP = 2
WON, LOST = "nw-asia-2023", "lb-summer-cycles"
PLANS = {
    # Gold page ranked second by the search: select it, crop the gold region, answer right.
    WON: {"query": "Northwind Energy 2023 revenue", "select": 1, "crop": "gold", "answer": "845"},
    # Gold page ranked second again: select it, crop beside the gold region, answer wrong.
    LOST: {"query": "Lakeside battery round-trip efficiency cycles", "select": 1, "crop": "miss", "answer": "90"},
}
MISSED_BOX_NORM1000 = [95, 600, 905, 700]


def scripted_engine(policy_path: str, replies: dict[str, list[str]]):
    """Runs inside the generation-server actor: replies by question and by the number of assistant turns so far
    (verl's client sends every turn under a fresh request id, so the prompt is what tells turns apart)."""
    from unidoc_rl.compat import load_policy_processor
    from unidoc_rl.standins.scripted_client import ScriptedLLMClient

    tokenizer = load_policy_processor(policy_path).tokenizer

    def script(call) -> str:
        prompt = tokenizer.decode(call.prompt_ids)
        [question] = [question for question in replies if question in prompt]
        return replies[question][prompt.count("<|im_start|>assistant") - 1]

    return ScriptedLLMClient(tokenizer, script, logprob=-0.5)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return index_sample_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def search_url(corpus_dir):
    from search_engine.search_engine_api import ServiceConfig, create_app
    from unidoc_rl.standins.serving import ThreadedUvicorn

    with ThreadedUvicorn(create_app(ServiceConfig(dataset_dir=str(corpus_dir))), lifespan="off") as server:
        yield server.url


@pytest.fixture(scope="module")
def judge():
    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    with ScriptedLLMServer(exact_match_judge()) as server:
        yield server


@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory):
    from unidoc_rl.data.prepare import load_samples, prepare, write_parquet

    samples = [sample for sample in load_samples(SAMPLES) if sample["uid"] in PLANS]
    split = prepare(samples, data_source="examples", val_size=0)
    path = tmp_path_factory.mktemp("rl") / "train.parquet"
    write_parquet(split.train, path)
    return path


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        # Ray's workers import this checkout's code, and run offline like the tests.
        runtime_env={
            "env_vars": {
                "PYTHONPATH": str(REPO_ROOT),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        },
    )
    # The engine factory below lives in this test module, which Ray's workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def rollout_config(policy_path: str, search_url: str, judge_url: str, train_file: Path):
    from unidoc_rl.config import compose_config

    return compose_config(
        [
            f"actor_rollout_ref.model.path={policy_path}",
            f"data.train_files={train_file}",
            f"data.val_files={train_file}",
            f"unidoc_agent.search_url={search_url}",
            "unidoc_agent.search_top_k=5",
            "unidoc_agent.max_tokens_per_turn=64",
            f"actor_rollout_ref.rollout.n={GROUP}",
            "actor_rollout_ref.rollout.calculate_log_probs=true",
            "actor_rollout_ref.rollout.agent.num_workers=1",
            "reward.num_workers=1",
            "reward.reward_kwargs.answer_scorer=judge",
            f"reward.reward_kwargs.judge.base_url={judge_url}",
            "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        ],
        experiment="local_cpu",
    )


def display_box(image_file: str, norm1000: list[int], config, processor) -> list[float]:
    from unidoc_rl.env.agent_settings import AgentSettings
    from unidoc_rl.env.vision import display_size, from_norm1000

    settings = AgentSettings.from_mapping(OmegaConf.to_container(config.unidoc_agent))
    size = processor.image_processor.size
    budget = settings.pixel_budget(size["shortest_edge"], size["longest_edge"])
    with Image.open(image_file) as raw:
        return [round(value) for value in from_norm1000(norm1000, display_size(raw.size, budget))]


def wait_for_groups(tq, uids: list[str], timeout_s: float = 240.0) -> dict[str, dict]:
    """The trajectories of every prompt group, once the worker has marked the group finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = tq.kv_list(partition_id="train").get("train", {})
        status = {uid: listing.get(uid, {}).get("status") for uid in uids}
        if all(value in {"finished", "failure"} for value in status.values()):
            assert set(status.values()) == {"finished"}, status
            return {key: tags for key, tags in listing.items() if key not in uids}
        time.sleep(0.5)
    raise TimeoutError(f"prompt groups not finished after {timeout_s} s: {status}")


def test_v1_rollout_through_ray_router_search_and_reward_workers(
    ray_session, tiny_policy_dir, search_url, judge, rl_rows
):
    import transfer_queue as tq
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
    from verl.workers.rollout.llm_server import LLMServerClient
    from verl.workers.rollout.router import get_router_handle

    from search_engine.client import SearchClient
    from unidoc_rl.agent.verl_worker import UniDocAgentLoopManager, UniDocAgentLoopManagerTQ, rope_processor
    from unidoc_rl.env.episode import EpisodeRecord
    from unidoc_rl.rewards.ground_truth import GroundTruth
    from unidoc_rl.verl_plugin.generation_server import GenerationServer

    ray = ray_session
    policy_path = str(tiny_policy_dir)
    processor = rope_processor(policy_path)
    tokenizer = processor.tokenizer
    config = rollout_config(policy_path, search_url, judge.base_url, rl_rows)
    OmegaConf.resolve(config)

    dataset = RLHFDataset(data_files=[str(rl_rows)], tokenizer=tokenizer, config=config.data, processor=processor)
    rows = [dataset[index] for index in range(len(dataset))]
    by_uid = {row["extra_info"]["uid"]: row for row in rows}
    truths = {uid: GroundTruth.from_dict(row["reward_model"]["ground_truth"]) for uid, row in by_uid.items()}

    # What the search service returns for each planned query, and the boxes the script draws on the gold page.
    with SearchClient(search_url) as search:
        hits = {uid: search.search([plan["query"]], top_k=5)[0] for uid, plan in PLANS.items()}
    replies, expected_boxes = {}, {}
    for uid, plan in PLANS.items():
        selected = hits[uid][plan["select"]]
        assert selected.page_id in truths[uid].gold_page_ids  # the plan selects the gold page
        gold = truths[uid].gold_boxes[selected.page_id][0]
        target = gold if plan["crop"] == "gold" else MISSED_BOX_NORM1000
        box = display_box(selected.image_file, target, config, processor)
        expected_boxes[uid] = box
        replies[truths[uid].query] = [
            f"<think>look it up</think><search>{plan['query']}</search>",
            f"<select>{plan['select']}</select>",
            f"<bbox>[{', '.join(str(v) for v in box)}]</bbox>",
            f"<answer>{plan['answer']}</answer>",
        ]

    tq.init(config.transfer_queue)
    try:
        server = ray.remote(GenerationServer).remote(functools.partial(scripted_engine, policy_path, replies))
        router = get_router_handle(servers={"scripted-0": server})
        client = LLMServerClient(config, load_balancer_handle=router)
        reward_loop = RewardLoopManager(config)
        assert config.trainer.use_v1 is True
        manager = UniDocAgentLoopManager.create(
            config=config, llm_client=client, reward_loop_worker_handles=reward_loop.reward_loop_worker_handles
        )
        assert isinstance(manager, UniDocAgentLoopManagerTQ) and len(manager.agent_loop_workers) == 1

        batch_dict = collate_fn(rows)
        uids = [str(uuid.uuid4()) for _ in rows]
        batch_dict["uid"] = np.array(uids, dtype=object)
        batch = tu.get_tensordict(batch_dict)
        tu.assign_non_tensor_data(batch, "global_steps", 1)
        tq.kv_batch_put(
            keys=uids, partition_id="train", tags=[{"is_prompt": True, "status": "pending", "global_steps": 1}] * 2
        )
        started = time.monotonic()
        manager.generate_sequences(batch)
        trajectories = wait_for_groups(tq, uids)
        print(f"rollout of {len(rows)} x {GROUP} trajectories: {time.monotonic() - started:.1f} s")

        keys = sorted(trajectories)
        assert keys == sorted(f"{uid}_{session}_0" for uid in uids for session in range(GROUP))
        assert {trajectories[key]["status"] for key in keys} == {"success"}
        data = tq.kv_batch_get(keys=keys, partition_id="train")
    finally:
        tq.close()

    sample_of = {uid: row["extra_info"]["uid"] for uid, row in zip(uids, rows, strict=True)}
    uid_of_key = {f"{uid}_{session}_0": sample for uid, sample in sample_of.items() for session in range(GROUP)}
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size**2
    for position, key in enumerate(keys):
        sample = uid_of_key[key]
        plan, truth = PLANS[sample], truths[sample]
        prompt = data["prompts"][position].tolist()
        response = data["responses"][position].tolist()
        mask = data["response_mask"][position].tolist()
        extra = data["extra_fields"][position]
        episode = EpisodeRecord.from_dict(extra["episode"])

        # The episode: the planned actions on the pages the real search service returned.
        assert [search.query for search in episode.searches] == [plan["query"]]
        assert episode.searches[0].retrieved == [hit.page_id for hit in hits[sample]]
        assert episode.searches[0].candidates == [hit.page_id for hit in hits[sample][:3]]
        assert episode.selected_page_ids == [hits[sample][plan["select"]].page_id]
        [crop] = episode.crops
        assert crop.page_id == hits[sample][plan["select"]].page_id
        assert [round(v) for v in crop.boxes_display[0]] == expected_boxes[sample]
        assert episode.answer == plan["answer"] and episode.num_turns == 4

        # Token-exact mask: 1 on exactly the tokens the script produced, 0 on every observation token.
        replies_ids = [tokenizer.encode(text, add_special_tokens=False) for text in replies[truth.query]]
        generated = [index for index, bit in enumerate(mask) if bit == 1]
        runs = np.split(np.array(generated), np.where(np.diff(generated) != 1)[0] + 1)
        assert [[response[i] for i in run] for run in runs] == replies_ids
        assert sum(mask) == sum(len(ids) for ids in replies_ids)
        logprobs = data["rollout_log_probs"][position].tolist()
        assert all(logprobs[i] == -0.5 for i in generated)

        # Images per trajectory: three candidates, the selected page, the zoomed crop; their pixel rows and
        # placeholder tokens agree.
        inputs = data["multi_modal_inputs"][position]
        grid = inputs["image_grid_thw"]
        assert grid.shape == (5, 3)
        assert inputs["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())
        assert (prompt + response).count(image_pad) == int(grid.prod(dim=1).sum()) // merge
        assert all(token != image_pad for token in prompt)  # page images arrive only through observations

        # M-RoPE position ids: verl's text row plus t/h/w; text advances by one per token, an image's tokens
        # share their temporal position and the axes resume after the image's largest extent.
        positions = data["position_ids"][position]
        assert positions.shape == (4, len(prompt) + len(response))
        assert positions[0].tolist() == list(range(len(prompt) + len(response)))
        assert torch.equal(positions[1, : len(prompt)], torch.arange(len(prompt)))
        ids = torch.tensor(prompt + response)
        first_image = int((ids == image_pad).nonzero()[0])
        image_run = positions[1:, first_image : first_image + int(grid[0].prod()) // merge]
        assert len(set(image_run[0].tolist())) == 1 and len(set(image_run[1].tolist())) > 1
        expected_rope, _ = processor.get_rope_index(
            input_ids=ids[None],
            attention_mask=torch.ones_like(ids)[None],
            image_grid_thw=grid,
            mm_token_type_ids=(ids == image_pad).long()[None],
        )
        assert torch.equal(positions[1:], expected_rope[:, 0])

        # Per-component rewards from the reward worker (the judge saw the answer, exact match).
        info = extra["reward_extra_info"]
        rank_of_gold = 1 / np.log2(plan["select"] + 2)
        assert info["format"] == 1.0 and info["selection"] == 1.0
        assert info["retrieval"] == pytest.approx(rank_of_gold)
        assert info["crop"] == (1.0 if plan["crop"] == "gold" else 0.0)
        assert info["answer"] == (1.0 if sample == WON else 0.0)
        assert info["judge_called"] == 1.0 and info["judge_fallback"] == 0.0
        expected_score = 0.6 * info["answer"] + 0.1 * (info["retrieval"] + 1.0 + info["crop"] + 1.0)
        assert info["score"] == pytest.approx(expected_score)
        scores = data["rm_scores"][position]
        assert float(scores[-1]) == pytest.approx(expected_score) and float(scores[:-1].abs().sum()) == 0.0

    # What the unidoc_sync trainer adds to verl's metrics for this step.
    from unidoc_rl.verl_plugin.metrics import rollout_metrics
    from unidoc_rl.verl_plugin.trainer import column_values

    metrics = rollout_metrics(column_values(data["extra_fields"], len(keys)))
    assert metrics["unidoc/reward/answer"] == 0.5 and metrics["unidoc/reward/crop"] == 0.5
    assert metrics["unidoc/reward/format"] == 1.0 and metrics["unidoc/reward/judge_fallback"] == 0.0
    assert metrics["unidoc/agent/turns"] == 4.0 and metrics["unidoc/agent/crop_rate"] == 1.0
    assert metrics["unidoc/agent/answered"] == 1.0 and metrics["unidoc/agent/searches"] == 1.0
    assert metrics["unidoc/agent/invalid_actions"] == 0.0 and metrics["unidoc/agent/search_failures"] == 0.0

    from unidoc_rl.judge.prompt import extract_sections

    judged = {extract_sections(request.prompt)["candidate"] for request in judge.requests}
    assert judged == {plan["answer"] for plan in PLANS.values()}
