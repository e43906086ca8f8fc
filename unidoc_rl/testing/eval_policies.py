"""Scripted policies for evaluation tests and benchmarks, as `ScriptedLLMClient` scripts.

`plan_policy` reads the question from the prompt (first turn) and plays a per-question plan of actions; the
oracle plan (search a query that finds the gold pages, select the first gold candidate, crop the gold box where
a crop is required, answer the reference) and the "unknown" plan (search, select 0, answer "unknown") are built
by `oracle_plan` and `unknown_plan`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from unidoc_rl.agent.scripted_client import ScriptedCall

_QUESTION = re.compile(r"Question: (.*?)<\|im_end\|>", re.S)


@dataclass(frozen=True)
class Plan:
    replies: tuple[str, ...]


def oracle_plan(query: str, ranking: list[str], gold: list[str], answer: str, crop_box_display=None) -> Plan:
    """`ranking`: the page ids the search returns for `query`; candidates are its first pages."""
    first_gold = next((index for index, page in enumerate(ranking) if page in gold), 0)
    replies = [f"<search>{query}</search>", f"<select>{first_gold}</select>"]
    if crop_box_display is not None:
        replies.append("<bbox>[" + ", ".join(str(round(v)) for v in crop_box_display) + "]</bbox>")
    replies.append(f"<answer>{answer}</answer>")
    return Plan(tuple(replies))


def unknown_plan(question: str) -> Plan:
    return Plan((f"<search>{question}</search>", "<select>0</select>", "<answer>unknown</answer>"))


def question_of(tokenizer, prompt_ids: list[int]) -> str:
    match = _QUESTION.search(tokenizer.decode(prompt_ids, skip_special_tokens=False))
    if match is None:
        raise RuntimeError("no 'Question: ...' in the prompt")
    return match.group(1).strip()


def plan_policy(tokenizer, plans: dict[str, Plan]) -> Callable[[ScriptedCall], str]:
    """A script that finds each trajectory's question in its first prompt and replies with that question's plan."""
    questions: dict[str, str] = {}

    def script(call: ScriptedCall) -> str:
        question = questions.get(call.request_id)
        if question is None:
            question = questions[call.request_id] = question_of(tokenizer, call.prompt_ids)
        replies = plans[question].replies
        return replies[min(call.turn, len(replies) - 1)]

    return script
