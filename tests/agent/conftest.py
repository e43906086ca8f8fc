"""Shared fixtures: the tiny policy's processor, synthetic pages, and a runner for verl's real AgentLoopWorker."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from verl.protocol import DataProto

from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend, unregister_inprocess_backend
from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config, rope_processor
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.standins.scripted_client import ScriptedLLMClient
from unidoc_rl.standins.tiny_models import tiny_policy_path

RAW_PAGE_SIZE = (600, 800)


@pytest.fixture(scope="session")
def policy_path() -> str:
    return str(tiny_policy_path())


@pytest.fixture(scope="session")
def processor(policy_path):
    return rope_processor(policy_path)


@pytest.fixture(scope="session")
def tokenizer(processor):
    return processor.tokenizer


def pattern_page(seed: int, size=RAW_PAGE_SIZE) -> Image.Image:
    """A page whose every pixel differs from its neighbours, so any crop or resize error shows."""
    width, height = size
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([(x * 3 + seed) % 256, (y * 5 + seed) % 256, (x + y + 40 * seed) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


@pytest.fixture(scope="session")
def pages() -> dict[str, Image.Image]:
    return {f"report_{page}": pattern_page(page) for page in range(1, 7)}


_names = itertools.count()


@pytest.fixture
def static_search(pages):
    """Register an in-process backend with fixed results; yields a factory returning (url, backend)."""
    names = []

    def make(results: dict[str, list[str]], backend=None):
        name = f"static-{next(_names)}"
        names.append(name)
        backend = backend or StaticSearchBackend(pages, results)
        return register_inprocess_backend(name, backend), backend

    yield make
    for name in names:
        unregister_inprocess_backend(name)


def make_config(policy_path: str, search_url: str, response_length: int = 2048, **agent):
    return compose_verl_config(
        [
            f"actor_rollout_ref.model.path={policy_path}",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.prompt_length=512",
            f"actor_rollout_ref.rollout.response_length={response_length}",
            "actor_rollout_ref.rollout.calculate_log_probs=True",
            "actor_rollout_ref.rollout.temperature=1.0",
            "actor_rollout_ref.rollout.val_kwargs.temperature=0",
        ],
        {"unidoc_agent": {"search_url": search_url, **agent}},
    )


def question_batch(questions: list[str], uids: list[str] | None = None) -> DataProto:
    uids = uids or [f"q{index}" for index in range(len(questions))]
    return DataProto.from_single_dict(
        {
            "raw_prompt": np.array([load_prompts().prompt_messages(question) for question in questions], dtype=object),
            "agent_name": np.array(["unidoc_agent"] * len(questions), dtype=object),
            "extra_info": np.array([{"uid": uid} for uid in uids], dtype=object),
        }
    )


async def run_worker(config, client, batch: DataProto, processor, validate: bool = False) -> DataProto:
    worker = build_agent_loop_worker(config, client, processor=processor)
    batch.meta_info["validate"] = validate
    return await worker.generate_sequences(batch)


def episode_of(output: DataProto, row: int = 0) -> EpisodeRecord:
    return EpisodeRecord.from_dict(output.non_tensor_batch["episode"][row])


def unpadded(output: DataProto, row: int = 0) -> dict:
    """Prompt, response, mask and log-probs of one row without padding."""
    prompt = output.batch["prompts"][row]
    prompt_attention = output.batch["attention_mask"][row][: prompt.shape[0]].bool()
    response_length = int(output.batch["attention_mask"][row][prompt.shape[0] :].sum())
    return {
        "prompt": prompt[prompt_attention].tolist(),
        "response": output.batch["responses"][row][:response_length].tolist(),
        "mask": output.batch["response_mask"][row][:response_length].tolist(),
        "logprobs": output.batch["rollout_log_probs"][row][:response_length].tolist(),
    }


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for test modules (importlib import mode keeps conftest out of their namespace)."""
    return SimpleNamespace(
        ScriptedLLMClient=ScriptedLLMClient,
        make_config=make_config,
        question_batch=question_batch,
        run_worker=run_worker,
        episode_of=episode_of,
        unpadded=unpadded,
        pattern_page=pattern_page,
    )
