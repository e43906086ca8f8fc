"""Scripted policies for evaluation tests and benchmarks, as `ScriptedLLMClient` scripts.

`plan_policy` finds the question in the prompt (first turn, whatever the template's wording) and plays a
per-question plan of actions; the oracle plan (search a query that finds the gold pages, select the first gold
candidate, crop the gold box where a crop is required, answer the reference) and the "unknown" plan (search,
select 0, answer "unknown") are built by `oracle_plan` and `unknown_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unidoc_rl.env.actions import AnswerAction, BBoxAction, SearchAction, SelectAction, format_action
from unidoc_rl.standins.scripted_client import ScriptedCall


@dataclass(frozen=True)
class Plan:
    replies: tuple[str, ...]


def oracle_plan(query: str, ranking: list[str], gold: list[str], answer: str, crop_box_display=None) -> Plan:
    """`ranking`: the page ids the search returns for `query`; candidates are its first pages."""
    first_gold = next((index for index, page in enumerate(ranking) if page in gold), 0)
    replies = [format_action(SearchAction(query)), format_action(SelectAction(first_gold))]
    if crop_box_display is not None:
        replies.append(format_action(BBoxAction((tuple(round(v) for v in crop_box_display),))))
    replies.append(format_action(AnswerAction(answer)))
    return Plan(tuple(replies))


def unknown_plan(question: str) -> Plan:
    actions = (SearchAction(question), SelectAction(0), AnswerAction("unknown"))
    return Plan(tuple(format_action(action) for action in actions))


def find_question(tokenizer, prompt_ids: list[int], known) -> str:
    """The longest of the `known` questions that the prompt holds, whatever the template's wording (a question
    inside another one is not taken for it)."""
    text = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    question = next((candidate for candidate in sorted(known, key=len, reverse=True) if candidate in text), None)
    if question is None:
        raise RuntimeError(f"none of the {len(known)} known questions is in the prompt")
    return question


def plan_policy(tokenizer, plans: dict[str, Plan]) -> Callable[[ScriptedCall], str]:
    """A script that finds each trajectory's question in its first prompt and replies with that question's plan."""
    questions: dict[str, str] = {}

    def script(call: ScriptedCall) -> str:
        question = questions.get(call.request_id)
        if question is None:
            question = questions[call.request_id] = find_question(tokenizer, call.prompt_ids, plans)
        replies = plans[question].replies
        return replies[min(call.turn, len(replies) - 1)]

    return script
