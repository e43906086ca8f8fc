"""SFT with LLaMA-Factory on the exported trajectories, then the GRPO side loads the checkpoint, rolls out with it and
takes a training step from it (verl's trainer, through scripts/train.sh on CPU).

LLaMA-Factory runs in its own environment (`make sft-env` → .venv-sft) through the project's launcher, exactly as a
user runs it; the checkpoint is then read by this environment (transformers 5.10, verl).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration
from verl.protocol import DataProto

from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config
from unidoc_rl.compat import load_policy_processor
from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.standins.tiny_models import tiny_policy_path
from unidoc_rl.synthesis.convert_to_llamafactory import main as convert_main

CPU_CONFIG = "LLaMA-Factory/examples/train_full/qwen2_5vl_full_sft_cpu.yaml"
SFT_SAMPLES = 16
"""Trajectories trained on (3 epochs, one per step)."""
FROZEN_PREFIXES = ("visual.",)
"""The vision tower, with the merger (Qwen2.5-VL's projector) inside it."""


@pytest.fixture(scope="module")
def sft_python(repo_root):
    python = os.environ.get("UNIDOC_SFT_PYTHON") or str(repo_root / ".venv-sft" / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("the SFT environment is missing: run `make sft-env` (make test creates it)")
    return python


@pytest.fixture(scope="module")
def sft_checkpoint(oracle_run, sft_python, repo_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("sft")
    data_dir = work / "data"
    data_dir.mkdir()
    shutil.copy(repo_root / "LLaMA-Factory/data/dataset_info.json", data_dir)
    dataset = data_dir / "unidoc_sft.json"  # the file dataset_info.json registers as unidoc_sft
    assert convert_main(["--input-path", str(oracle_run.output), "--output-path", str(dataset)]) == 0
    output_dir = work / "checkpoint"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLCONFIGDIR": str(work / "mpl"),
        "PYTHONPATH": "",
    }
    command = [
        sft_python, "LLaMA-Factory/launch.py", "train", CPU_CONFIG,
        f"model_name_or_path={tiny_policy_path()}", f"dataset_dir={data_dir}", f"output_dir={output_dir}",
        "learning_rate=1.0e-2", f"max_samples={SFT_SAMPLES}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return output_dir


def teacher_nll(model_path, oracle_run, count: int) -> float:
    """Mean negative log-likelihood of the teacher's assistant tokens over the first `count` trajectories (the ones
    LLaMA-Factory's `max_samples` trained on: the converter keeps the output's order)."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_path).eval()
    processor = load_policy_processor(model_path)
    image_pad = model.config.image_token_id
    total, tokens = 0.0, 0
    for line in list(oracle_run.lines.values())[:count]:
        images = [Image.open(oracle_run.output.parent / path).convert("RGB") for path in line["images"]]
        chat = []
        for message in line["messages"]:
            pieces = message["content"].split("<image>")
            content = [{"type": "text", "text": pieces[0]}]
            for piece in pieces[1:]:
                content += [{"type": "image"}, {"type": "text", "text": piece}]
            chat.append({"role": message["role"], "content": content})
        text = processor.apply_chat_template(chat, tokenize=False)
        inputs = processor(text=[text], images=images, return_tensors="pt")
        ids = inputs["input_ids"]
        inputs["mm_token_type_ids"] = (ids == image_pad).long()  # M-RoPE positions need it (STACK.md)
        with torch.no_grad():
            logits = model(**inputs).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        targets = torch.zeros_like(ids[0, 1:], dtype=torch.bool)
        start_ids = processor.tokenizer.encode("<|im_start|>assistant\n")
        sequence = ids[0].tolist()
        for start in range(len(sequence) - len(start_ids)):
            if sequence[start : start + len(start_ids)] == start_ids:
                end = sequence.index(processor.tokenizer.convert_tokens_to_ids("<|im_end|>"), start + len(start_ids))
                targets[start + len(start_ids) - 1 : end] = True  # the assistant's text and its <|im_end|>
        total -= float(logprobs[targets].sum())
        tokens += int(targets.sum())
    return total / tokens


@pytest.mark.slow
def test_sft_trains_the_language_model_only_and_learns_the_trajectories(sft_checkpoint, oracle_run):
    log = [json.loads(line) for line in (sft_checkpoint / "trainer_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 3 * SFT_SAMPLES  # 3 epochs, one trajectory per step
    assert losses[-1] < losses[0] - 2.0

    base = load_file(tiny_policy_path() / "model.safetensors")
    tuned = load_file(sft_checkpoint / "model.safetensors")
    assert base.keys() == tuned.keys()
    frozen = [name for name in base if name.startswith(FROZEN_PREFIXES)]
    assert frozen and all(torch.equal(base[name], tuned[name]) for name in frozen)
    trained = [name for name in base if not name.startswith(FROZEN_PREFIXES)]
    assert sum(not torch.equal(base[name], tuned[name]) for name in trained) == len(trained)

    config = json.loads((sft_checkpoint / "config.json").read_text())
    assert config["use_cache"] is True  # the launcher switches it back on for rollouts
    assert (
        json.loads((sft_checkpoint / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    )
    tuned_nll = teacher_nll(sft_checkpoint, oracle_run, SFT_SAMPLES)
    assert tuned_nll < teacher_nll(tiny_policy_path(), oracle_run, SFT_SAMPLES) - 2.0


def rollout(model_path, search_url, questions: list[str]):
    """Greedy rollouts of `model_path` through verl's AgentLoopWorker with the local engine."""
    config = compose_verl_config(
        [
            f"actor_rollout_ref.model.path={model_path}",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.prompt_length=1024",
            "actor_rollout_ref.rollout.response_length=1024",
            "actor_rollout_ref.rollout.calculate_log_probs=True",
            "actor_rollout_ref.rollout.val_kwargs.temperature=0",
        ],
        {"unidoc_agent": {"search_url": search_url, "max_turns": 2, "max_tokens_per_turn": 16}},
    )
    batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array([[load_prompts().question_message(q)] for q in questions], dtype=object),
            "agent_name": np.array(["unidoc_agent"] * len(questions), dtype=object),
            "extra_info": np.array([{"uid": str(i)} for i in range(len(questions))], dtype=object),
        }
    )
    batch.meta_info["validate"] = True

    async def run():
        engine = LocalEngine.from_pretrained(model_path, seed=0)
        worker = build_agent_loop_worker(config, engine)
        return await worker.generate_sequences(batch)

    output = asyncio.run(run())
    return [EpisodeRecord.from_dict(output.non_tensor_batch["episode"][row]) for row in range(len(questions))], output


@pytest.mark.slow
def test_the_sft_checkpoint_rolls_out_through_the_grpo_agent_loop(sft_checkpoint, search_url, samples):
    questions = [sample["query"] for sample in samples[:3]]
    tuned, output = rollout(sft_checkpoint, search_url, questions)
    base, _ = rollout(tiny_policy_path(), search_url, questions)
    # Every SFT trajectory opens with the teacher's opening tags (`<think>…</think><search>`; a short SFT sometimes
    # drops the think); the untrained policy's never do.
    openings = ("<think>", "<search>")
    assert all(episode.turns[0].text.startswith(openings) for episode in tuned)
    assert not any(episode.turns[0].text.startswith(openings) for episode in base)
    for row, episode in enumerate(tuned):
        assert 1 <= episode.num_turns <= 2 and episode.question == questions[row]
        mask = output.batch["response_mask"][row].bool()
        logprobs = output.batch["rollout_log_probs"][row][mask]
        assert mask.any() and bool(torch.isfinite(logprobs).all()) and bool((logprobs <= 0).all())


GRPO_LR = 1.0e-4
"""The learning rate of the GRPO step below (experiment/local_cpu.yaml's, stated)."""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_verl_takes_a_grpo_step_from_the_sft_checkpoint(sft_checkpoint, search_url, samples, repo_root, tmp_path):
    """`VERL_PLATFORM=cpu bash scripts/train.sh` with MODEL_PATH the LLaMA-Factory checkpoint, as `make demo` runs it:
    verl's trainer loads it, rolls out on the training prompts and takes one optimizer step from its weights."""
    from unidoc_rl.common.jsonl import read_jsonl
    from unidoc_rl.data.prepare import prepare, write_parquet
    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    split = prepare(samples, "sample", val_size=2, seed=0)
    write_parquet(split.train, tmp_path / "train.parquet")
    write_parquet(split.val, tmp_path / "val.parquet")
    checkpoints = tmp_path / "checkpoints"
    with ScriptedLLMServer(exact_match_judge()) as judge:
        env = {
            **os.environ,
            "VERL_PLATFORM": "cpu",
            "MODEL_PATH": str(sft_checkpoint),
            "TRAIN_FILE": str(tmp_path / "train.parquet"),
            "VAL_FILE": str(tmp_path / "val.parquet"),
            "SEARCH_URL": search_url,
            "JUDGE_URL": judge.base_url,
            "PYTHON": sys.executable,
            "VERL_FILE_LOGGER_PATH": str(tmp_path / "metrics.jsonl"),
            "RAY_DEDUP_LOGS": "0",
        }
        command = [
            "bash", "scripts/train.sh",
            "unidoc_agent.max_turns=2", "unidoc_agent.max_tokens_per_turn=16",
            "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2", f"actor_rollout_ref.actor.optim.lr={GRPO_LR}",
            "trainer.total_training_steps=1", "trainer.save_freq=1", "trainer.test_freq=0",
            "trainer.val_before_train=false", "trainer.logger=[console,file]",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
            f"trainer.default_local_dir={checkpoints}",
            f"unidoc_trainer.trajectory_log={tmp_path / 'trajectories.jsonl'}",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]

    [logged] = read_jsonl(tmp_path / "metrics.jsonl")
    metrics = logged["data"]
    assert logged["step"] == 1 and metrics["training/global_step"] == 1
    assert np.isfinite(metrics["actor/pg_loss"]) and np.isfinite(metrics["actor/grad_norm"])
    assert "critic/score/mean" in metrics
    episodes = [EpisodeRecord.from_dict(line["episode"]) for line in read_jsonl(tmp_path / "trajectories.jsonl")]
    train_uids = {row["extra_info"]["uid"] for row in split.train}
    assert len(episodes) == 4 and {episode.uid for episode in episodes} <= train_uids
    assert all(1 <= episode.num_turns <= 2 for episode in episodes)

    # One AdamW step moves a weight by at most about the learning rate (plus weight decay): the step started from
    # the SFT weights, which the SFT moved far further from the untrained policy's, and it changed them.
    sft = load_file(sft_checkpoint / "model.safetensors")["lm_head.weight"]
    trained = load_file(checkpoints / "global_step_1/actor/huggingface/model.safetensors")["lm_head.weight"]
    moved = float((trained.float() - sft.float()).abs().max())
    assert 0.0 < moved <= 2 * GRPO_LR
    untrained = load_file(tiny_policy_path() / "model.safetensors")["lm_head.weight"]
    assert float((sft - untrained).abs().max()) > 100 * moved
