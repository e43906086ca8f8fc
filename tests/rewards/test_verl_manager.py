"""The reward manager inside verl's own reward-loop worker, configured from configs/reward/*.yaml."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.rewards.verl_manager import MissingEpisodeError, UniDocRewardManager
from unidoc_rl.standins.trajectories import reward_worker_trajectory

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    vocab = {"<pad>": 0, "<unk>": 1, "answer": 2, "search": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    return path


def trainer_config(preset_file: str, tokenizer_dir: Path, judge_url: str):
    overrides = [
        f"hydra.searchpath=[file://{CONFIGS}]",
        f"reward={preset_file}",
        f"actor_rollout_ref.model.path={tokenizer_dir}",
        f"reward.reward_kwargs.judge.base_url={judge_url}",
        "reward.reward_kwargs.judge.timeout_s=2",
    ]
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def trajectory(episode: dict | None, ground_truth: dict, streaming: bool = True) -> DataProto:
    """One finished trajectory shaped as verl's agent-loop worker sends it to a reward worker."""
    extra_fields = {} if episode is None else {"episode": episode}
    non_tensor = {
        "data_source": np.array(["slidevqa"]),
        "reward_model": np.array([{"style": "rule", "ground_truth": ground_truth}]),
        "extra_info": np.array([{"index": 0}]),
        # the system prompt's example answer: must never be read as the model's answer
        "raw_prompt": np.array([[{"role": "system", "content": "Example: <answer>42 million</answer>"}]], dtype=object),
        "__num_turns__": np.array([4]),
    }
    if streaming:
        non_tensor["tool_extra_fields"] = np.array([extra_fields], dtype=object)
    else:
        for key, value in extra_fields.items():
            column = np.empty(1, dtype=object)
            column[0] = value
            non_tensor[key] = column
    return reward_worker_trajectory(non_tensor)


async def test_reward_loop_worker_scores_with_unidoc_preset(
    tokenizer_dir, judge_server, answered_episode, unanswered_episode, truth
):
    worker = RewardLoopWorker(trainer_config("unidoc_dense", tokenizer_dir, judge_server.base_url))
    assert isinstance(worker.reward_manager, UniDocRewardManager)
    assert worker.reward_manager.settings.judge.timeout_s == 2.0

    result = await worker.compute_score(trajectory(answered_episode.to_dict(), truth.to_dict()))
    assert result["reward_score"] == pytest.approx(0.9386852807)
    info = result["reward_extra_info"]
    assert info["answer"] == 1.0 and info["judge_called"] == 1.0 and info["judge_fallback"] == 0.0
    assert info["retrieval"] == pytest.approx(0.3868528072)
    assert len(judge_server.requests) == 1

    batch_path = trajectory(unanswered_episode.to_dict(), truth.to_dict(), streaming=False)
    partial = await worker.compute_score(batch_path)
    assert partial["reward_score"] == pytest.approx(0.1650920930)
    assert partial["reward_extra_info"]["judge_called"] == 0.0
    assert set(partial["reward_extra_info"]) == set(info)
    assert len(judge_server.requests) == 1  # format 0.5: judge gated off


async def test_reward_loop_worker_with_vrag_preset_and_judge_down(tokenizer_dir, answered_episode, truth):
    config = trainer_config("vrag", tokenizer_dir, "http://127.0.0.1:9/v1")
    config.reward.reward_kwargs.judge.max_retries = 0
    worker = RewardLoopWorker(config)
    outputs = await worker.compute_score_batch(trajectory(answered_episode.to_dict(), truth.to_dict()))
    assert outputs[0]["reward_extra_info"]["judge_fallback"] == 1.0
    # ANLS fallback of "42 Million." against "42 million": one extra character over 11.
    assert outputs[0]["reward_score"] == pytest.approx(0.7 * (1 - 1 / 11) + 0.1 + 0.2 * 0.3868528072)


async def test_missing_episode_is_a_clear_error(tokenizer_dir, judge_server, truth):
    worker = RewardLoopWorker(trainer_config("unidoc_dense", tokenizer_dir, judge_server.base_url))
    with pytest.raises(MissingEpisodeError, match="extra_fields\\['episode'\\]"):
        await worker.compute_score(trajectory(None, truth.to_dict()))


def test_registered_under_its_name():
    assert get_reward_manager_cls("unidoc_dense") is UniDocRewardManager


async def test_multi_output_trajectory_is_scored_on_its_last_output(
    tokenizer_dir, judge_server, answered_episode, unanswered_episode, truth
):
    worker = RewardLoopWorker(trainer_config("unidoc_dense", tokenizer_dir, judge_server.base_url))
    first = trajectory(unanswered_episode.to_dict(), truth.to_dict())
    last = trajectory(answered_episode.to_dict(), truth.to_dict())
    result = await worker.reward_manager.run_single(DataProto.concat([first, last]))
    assert result["reward_score"] == pytest.approx(0.9386852807)
    assert len(judge_server.requests) == 1


def test_manager_moves_the_start_up_heap_out_of_the_cyclic_collector(tokenizer_dir, judge_server):
    gc.unfreeze()
    UniDocRewardManager(trainer_config("unidoc_dense", tokenizer_dir, judge_server.base_url), tokenizer=None)
    assert gc.get_freeze_count() > 1000


@pytest.mark.parametrize(("preset_file", "strict"), [("unidoc_dense", False), ("unidoc_strict", True)])
def test_reward_files_choose_the_component_definitions(preset_file, strict, tokenizer_dir):
    config = trainer_config(preset_file, tokenizer_dir, "http://127.0.0.1:9/v1")
    settings = RewardSettings.from_mapping(config.reward.reward_kwargs)
    assert (settings.preset, settings.strict) == ("unidoc", strict)
