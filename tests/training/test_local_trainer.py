"""The local trainer end to end on the tiny policy: it learns a toy task, and resumes exactly."""

import json

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend, unregister_inprocess_backend
from unidoc_rl.data.prepare import prepare, write_parquet
from unidoc_rl.jsonl import read_jsonl
from unidoc_rl.trainer.local import LocalTrainer, compose_config


@pytest.fixture(scope="module")
def data_dir(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rl_data")
    split = prepare(json.loads((repo_root / "examples/samples.json").read_text()), "sample", val_size=2, seed=0)
    write_parquet(split.train, out / "train.parquet")
    write_parquet(split.val, out / "val.parquet")
    return out


@pytest.fixture(scope="module")
def search_url():
    url = register_inprocess_backend("trainer-tests", StaticSearchBackend({}, {}))
    yield url
    unregister_inprocess_backend("trainer-tests")


def digit_share_reward(tokenizer):
    """Toy task: the share of the model's tokens that contain a digit (about 0.3 for the untrained policy)."""
    digit_ids = {i for token, i in tokenizer.get_vocab().items() if any(ch.isdigit() for ch in token)}

    async def score(batch):
        results = []
        for row in range(len(batch)):
            mask = batch.batch["response_mask"][row].bool()
            tokens = batch.batch["responses"][row][mask].tolist()
            share = sum(token in digit_ids for token in tokens) / max(len(tokens), 1)
            results.append((share, {"digit_share": share}))
        return results

    return score


def toy_config(data_dir, search_url, out, *overrides):
    return compose_config(
        [
            f"data.train_files={data_dir / 'train.parquet'}",
            f"data.val_files={data_dir / 'val.parquet'}",
            f"unidoc_agent.search_url={search_url}",
            "unidoc_agent.max_turns=1",
            "unidoc_agent.force_final_answer=false",
            "unidoc_agent.max_tokens_per_turn=8",
            "data.train_batch_size=2",
            "actor_rollout_ref.rollout.n=8",
            f"local_trainer.log_dir={out / 'logs'}",
            f"local_trainer.checkpoint_dir={out / 'checkpoints'}",
            "local_trainer.micro_batch_size=8",
            *overrides,
        ]
    )


def fit_toy(config) -> tuple[LocalTrainer, list[dict]]:
    """Train with the toy reward until `local_trainer.total_steps`; returns the closed trainer and its step metrics."""
    trainer = LocalTrainer(config)
    trainer.reward_fn = digit_share_reward(trainer.tokenizer)
    try:
        return trainer, trainer.fit()
    finally:
        trainer.close()


@pytest.mark.slow
def test_grpo_raises_mean_reward_on_a_toy_task(data_dir, search_url, tmp_path):
    config = toy_config(
        data_dir, search_url, tmp_path,
        "actor_rollout_ref.actor.optim.lr=3e-2", "actor_rollout_ref.actor.use_kl_loss=false",
        "local_trainer.total_steps=16", "local_trainer.save_freq=0",
    )  # fmt: skip
    _, history = fit_toy(config)
    rewards = [step["train/reward"] for step in history]
    assert rewards[0] < 0.5
    assert max(rewards[-3:]) >= 0.8, rewards
    logged = read_jsonl(tmp_path / "logs/metrics.jsonl")
    assert [record["step"] for record in logged] == list(range(1, 17))
    assert logged[-1]["train/reward/digit_share"] == pytest.approx(rewards[-1])
    assert len(read_jsonl(tmp_path / "logs/trajectories.jsonl")) == 16 * 2 * 8


@pytest.mark.slow
def test_resume_continues_exactly(data_dir, search_url, tmp_path):
    overrides = ["actor_rollout_ref.actor.optim.lr=1e-2", "local_trainer.save_freq=2"]
    straight, uninterrupted = fit_toy(
        toy_config(data_dir, search_url, tmp_path / "straight", *overrides, "local_trainer.total_steps=3")
    )
    fit_toy(toy_config(data_dir, search_url, tmp_path / "resumed", *overrides, "local_trainer.total_steps=2"))
    second, resumed = fit_toy(
        toy_config(data_dir, search_url, tmp_path / "resumed", *overrides, "local_trainer.total_steps=3")
    )

    assert len(resumed) == 1 and second.global_step == 3
    for key in ("actor/loss", "actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "train/reward"):
        assert resumed[0][key] == pytest.approx(uninterrupted[2][key], abs=1e-6), key
    assert [r["step"] for r in read_jsonl(tmp_path / "resumed/logs/metrics.jsonl")] == [1, 2, 3]

    checkpoint = tmp_path / "resumed/checkpoints/global_step_2/model"
    exported = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint)
    assert (tmp_path / "resumed/checkpoints/latest").read_text().strip() == "global_step_2"
    assert not torch.equal(
        exported.lm_head.weight,
        Qwen2_5_VLForConditionalGeneration.from_pretrained(straight.config.actor_rollout_ref.model.path).lm_head.weight,
    )
