"""`VERL_PLATFORM=cpu bash scripts/train.sh actor_rollout_ref.rollout.name=vllm`: verl's own vLLM rollout (its
async server, agent-loop workers, weight sync from the FSDP actor) on vLLM's CPU build, from `.venv-vllm`.

Two GRPO steps; verl logs, every step, how far the rollout's token probabilities are from the ones the actor
recomputes for the same tokens (`training/rollout_probs_diff_*`, `calculate_debug_metrics` in
verl/utils/debug/metrics.py, enabled by `rollout.calculate_log_probs`). Step 1 rolls out with the weights synced at
start-up, step 2 with the weights step 1 produced: if the second sync did not land, step 2's rollout would sample
from the initial policy while the actor scores with the updated one.

The policy is the tiny one fine-tuned for a few seconds to open most episodes with a search, so that each
micro-batch holds page images: verl 0.9.1 cannot run a Qwen2.5-VL forward over a micro-batch without any
(docs/training.md), and the untrained tiny policy almost never searches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
OPENING = "<search>Northwind revenue</search>"
OPENING_PROBABILITY = 0.9
"""How likely the fine-tuned policy opens an episode with OPENING: likely enough that each micro-batch of 4
trajectories has one with images (1 - 0.1^4), unlikely enough that trajectories differ and GRPO has a signal."""
PROBS_DIFF_MAX = 0.05
PROBS_DIFF_MEAN = 5e-3
"""Bounds on |p_rollout - p_actor| over a step's response tokens (max, mean). Measured with this test's settings:
step 1 3.6e-3 / 2.1e-3, step 2 1.6e-2 / 1.0e-3, Pearson correlation of the probabilities 0.9998 and 0.99999. With the
sync after step 1 skipped (a counterfactual run), step 2 gave 0.79 / 0.15 and a correlation of 0.49. The floor is
not float noise: verl bans the vision placeholder tokens in vLLM's logits (`monkey_patch_compute_logits`), so
vLLM's probabilities are renormalized over the rest of the vocabulary while the actor's are not, and the tiny random
policy puts about 3/1024 of its mass on those tokens. vLLM starts on dummy weights (`rollout.load_format`), so step 1
agrees only if the initial sync landed too."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm (make vllm-env): verl's vLLM rollout needs it"),
]


def searching_policy(base: Path, out_dir: Path, questions: list[str], system_prompt: str) -> Path:
    """The tiny policy, trained until its first turn after any of `questions` is OPENING with OPENING_PROBABILITY."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    shutil.copytree(base, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    target = tokenizer.encode(OPENING, add_special_tokens=False)
    prompts = [
        tokenizer.encode(
            tokenizer.apply_chat_template(
                [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}],
                add_generation_prompt=True,
                tokenize=False,
            ),
            add_special_tokens=False,
        )
        for question in questions
    ]
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        total = torch.zeros(())
        for prompt in prompts:
            ids = torch.tensor([prompt + target])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            total = total + torch.log_softmax(logits, -1).gather(1, torch.tensor(target)[:, None]).sum()
        mean_log_p = total / len(prompts)
        if mean_log_p.exp().item() >= OPENING_PROBABILITY:
            break
        optimizer.zero_grad()
        (-mean_log_p).backward()
        optimizer.step()
    else:
        raise AssertionError(f"the opening's probability reached only {mean_log_p.exp().item():.2f}")
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def policy(services, tmp_path_factory, tiny_policy_dir):
    import pandas as pd

    from unidoc_rl.env import prompts

    rows = pd.read_parquet(services["root"] / "data/train.parquet")
    questions = [prompts.message_text(list(row)[-1]) for row in rows["prompt"][:4]]
    return searching_policy(
        tiny_policy_dir,
        tmp_path_factory.mktemp("policy") / "searching",
        questions,
        prompts.load_prompts().system_prompt(),
    )


@pytest.mark.timeout(900)
def test_train_sh_trains_through_verls_vllm_rollout_on_cpu(train_sh, policy):
    steps, output, seconds = train_sh(
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.calculate_log_probs=true",
        # Step 1 changes the weights whatever the rewards (a group with equal rewards has no GRPO gradient): each
        # weight moves by about lr on Adam's first step. At 1e-2 the policy stops searching at step 2.
        "actor_rollout_ref.actor.entropy_coeff=0.01",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "trainer.val_before_train=false",
        "trainer.test_freq=0",
        "trainer.save_freq=0",
        python=str(VLLM_PYTHON),
        model_path=str(policy),
    )
    print(f"main_ppo with verl's vLLM rollout, 2 GRPO steps: {seconds:.0f} s")
    for step in (1, 2):
        metrics = steps[step]
        print(step, {key: metrics[key] for key in sorted(metrics) if "probs" in key or "grad_norm" in key})
    assert "vLLMHttpServer" in output  # verl's own vLLM server served the rollout
    assert sorted(steps) == [1, 2]
    assert steps[1]["actor/grad_norm"] > 0  # step 1 changed the weights that step 2 rolls out with
    for step in (1, 2):
        metrics = steps[step]
        assert metrics["training/rollout_probs_diff_valid"] == 1
        assert metrics["training/rollout_probs_diff_max"] < PROBS_DIFF_MAX
        assert metrics["training/rollout_probs_diff_mean"] < PROBS_DIFF_MEAN
        assert metrics["training/rollout_actor_probs_pearson_corr"] > 0.999
        assert metrics["unidoc/agent/searches"] > 0
