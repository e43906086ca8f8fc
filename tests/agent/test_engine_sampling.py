"""Sampling in the local engine depends on the request and the seed, never on how requests were batched."""

import asyncio

import pytest
import torch

from unidoc_rl.engine.local_engine import (
    LocalEngine,
    PerRequestSampler,
    SamplingSettings,
    StopAtStrings,
    stop_candidate_table,
)
from unidoc_rl.standins.tiny_models import tiny_policy_path

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


@pytest.mark.parametrize(
    ("temperature", "top_k", "expected"),
    [(1.0, None, [0.5, 0.3, 0.2, 0.0]), (0.5, None, [25 / 38, 9 / 38, 4 / 38, 0.0]), (1.0, 2, [0.625, 0.375, 0, 0])],
)
def test_sampler_draws_from_the_tempered_restricted_distribution(temperature, top_k, expected):
    settings = SamplingSettings(temperature=temperature, top_k=top_k)
    sampler = PerRequestSampler([torch.Generator().manual_seed(3)], settings)
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]]))
    draws = 4000
    chosen = [int(sampler(torch.zeros(1, 1), scores).argmax()) for _ in range(draws)]
    frequencies = [chosen.count(token) / draws for token in range(4)]
    assert frequencies == pytest.approx(expected, abs=0.03)
    assert frequencies[3] == 0.0


def test_rows_stop_once_their_generated_text_holds_a_stop_string():
    tokenizer = LocalEngine.from_pretrained(tiny_policy_path()).tokenizer
    stop = ("</answer>", "</search>")
    table = stop_candidate_table(tokenizer, stop, len(tokenizer))
    prompt = tokenizer.encode("<answer>x</answer> question")  # a stop string inside the prompt never counts
    criterion = StopAtStrings(tokenizer, stop, table, prompt_width=len(prompt))

    def stops(generated: str) -> bool:
        return bool(criterion(torch.tensor([prompt + tokenizer.encode(generated)]), torch.zeros(1, 8)))

    assert stops("<answer>12</answer>") and stops("<search>q</search>")
    assert not stops("<answer>12</answ") and not stops("no action here at all") and not stops("x")
    both = torch.tensor([prompt + tokenizer.encode("a</answer>"), prompt + tokenizer.encode("a<b>")])
    assert criterion(both, torch.zeros(2, 8)).tolist() == [True, False]
