"""Per-action credit's turn spans on the real agent loop's output: each model turn is one run of response_mask == 1,
in the order of the record's turns (unidoc_rl/rewards/credit.py)."""

from __future__ import annotations

import torch

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.rewards.credit import turn_spans

RESULTS = {"revenue": ["report_2", "report_1", "report_3", "report_4"]}


async def run(kit, policy_path, processor, static_search, script):
    url, _ = static_search(RESULTS)
    client = kit.ScriptedLLMClient(processor.tokenizer, script)
    config = kit.make_config(policy_path, url)
    output = await kit.run_worker(config, client, kit.question_batch(["What is the revenue?"]), processor)
    return kit.unpadded(output), kit.episode_of(output)


async def test_each_model_turn_is_one_run_of_the_mask(kit, policy_path, processor, static_search):
    script = [
        "<think>I should search.</think><search>revenue</search>",
        "I think the answer is in a table.",  # invalid: an error observation follows
        "<select>1</select>",
        "<bbox>[10, 20, 100, 120]</bbox>",
        "<answer>42 million</answer>",
    ]
    row, episode = await run(kit, policy_path, processor, static_search, script)
    kinds = [turn.action for turn in episode.turns]
    assert kinds == [ActionKind.SEARCH, ActionKind.INVALID, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER]
    spans = turn_spans(torch.tensor(row["mask"]))
    assert len(spans) == len(episode.turns)
    tokenizer = processor.tokenizer
    for (start, end), turn in zip(spans, episode.turns, strict=True):
        # The run is exactly the turn as the model wrote it; the `<|im_end|>` appended after a stop string is 0.
        assert tokenizer.decode(row["response"][start:end], skip_special_tokens=True) == turn.text
        assert tokenizer.decode(row["response"][end : end + 1]) == "<|im_end|>"
