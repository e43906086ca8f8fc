"""Sampling in the local engine depends on the request and the seed, never on how requests were batched."""

import asyncio

import pytest

from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.testing.tiny_models import tiny_policy_path

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 12, "logprobs": True}


@pytest.fixture(scope="module")
def prompts():
    engine = LocalEngine.from_pretrained(tiny_policy_path())
    encode = engine.tokenizer.encode
    return [encode("<|im_start|>user\nWhat is the revenue?<|im_end|>\n<|im_start|>assistant\n")] * 3 + [
        encode("<|im_start|>user\nWhich page shows the chart?<|im_end|>\n<|im_start|>assistant\n")
    ]


def sample(prompts, seed: int, max_batch_size: int) -> list[list[int]]:
    engine = LocalEngine.from_pretrained(tiny_policy_path(), max_batch_size=max_batch_size)
    engine.reseed(seed)

    async def run():
        outputs = await asyncio.gather(
            *(engine.generate(f"r{i}", prompt_ids=p, sampling_params=SAMPLING) for i, p in enumerate(prompts))
        )
        return [output.token_ids for output in outputs], engine.batches_run

    tokens, batches = asyncio.run(run())
    assert max(batches) <= max_batch_size
    return tokens


def test_same_seed_same_samples_whatever_the_batching(prompts):
    one_at_a_time = sample(prompts, seed=7, max_batch_size=1)
    together = sample(prompts, seed=7, max_batch_size=8)
    assert together == one_at_a_time
    # Identical prompts still get distinct streams, so a GRPO group is not three copies of one sample.
    assert len({tuple(tokens) for tokens in together[:3]}) == 3


def test_another_seed_gives_other_samples(prompts):
    assert sample(prompts, seed=7, max_batch_size=8) != sample(prompts, seed=8, max_batch_size=8)
