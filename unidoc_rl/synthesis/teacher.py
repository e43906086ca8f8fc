"""The teacher's roles: what each one is asked, in which words, and what reply shape it must give.

`--vllm-engine-url` (a VLM) plays the roles that look at pages: rerank, region, read. `--llm-engine-url` (a text LLM,
default: the VLM) plays plan, decide and judge. Every request starts with a system message `Role: <role>.` and the
user text carries `Question: <question>`; candidate pages are named by page id and layout blocks listed with their
0-1000 boxes, so a teacher (or the scripted one in `unidoc_rl.standins.scripted_teacher`) can ground each decision.

Replies are JSON objects (judge: `<judge>True|False</judge>`, the judge template's own format). The text a role
writes in `think` becomes the `<think>` of the corresponding assistant turn; action tags are stripped from it so
it can never end a turn early or inject an action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import Image

from unidoc_rl.env.vision import Box
from unidoc_rl.judge.prompt import load_template
from unidoc_rl.judge.verdict import VerdictParseError, parse_verdict
from unidoc_rl.synthesis.layout import LayoutBlock
from unidoc_rl.synthesis.services import ChatService, StageError, StageStats, user_message

ROLES = ("plan", "rerank", "region", "read", "decide", "judge")
_TAGS = re.compile(r"<\s*/?\s*(?:think|search|select|bbox|answer)\s*>", re.IGNORECASE)


def clean_text(text: str) -> str:
    """One line of teacher text, safe inside an assistant turn: action tags removed, whitespace collapsed."""
    return " ".join(_TAGS.sub(" ", str(text)).split())


def _system(role: str, task: str) -> dict:
    return {"role": "system", "content": f"Role: {role}.\n{task}"}


_PLAN = (
    "You plan searches over a collection of document page images to answer a question. Reply with only a JSON "
    'object {"think": "<one or two sentences of reasoning>", "search": "<a short keyword query for the page search '
    'engine>"}.'
)
_RERANK = (
    "The images are candidate document pages retrieved for a question, shown as Image 0, Image 1, ... in this "
    "order, each with its page id and its rank in the search results. Reply with only a JSON object "
    '{"think": "<why, naming pages by their content, not by image number>", "best": <index of the image most '
    "likely to answer the question>}."
)
_REGION = (
    "The page is shown with its layout blocks outlined in red and numbered. Decide whether answering the question "
    "needs a zoomed crop of part of the page (small print, a table cell, a chart value), and which region. Reply with "
    'only a JSON object {"think": "<why>", "crop": true|false, "blocks": [<numbers of the blocks that hold the '
    'evidence>], "box": [x1, y1, x2, y2]}; "box" is optional: a tighter region in the 0-1000 coordinates of the '
    "page (origin top left); without it the crop covers the chosen blocks."
)
_READ = (
    "Read the page (and the zoomed crop of it, when one is given) and report what it says about the question. "
    'Reply with only a JSON object {"think": "<what you looked at>", "evidence": "<what the page says that bears on '
    'the question, or that it says nothing about it>"}.'
)
_DECIDE = (
    "You answer a question from evidence read on document pages. If the evidence suffices, answer briefly; "
    'otherwise search again with a new query. Reply with only a JSON object {"think": "<why>", "answer": "<the '
    'answer>"} or {"think": "<why>", "search": "<a new keyword query>"}.'
)
_MUST_ANSWER = " No more searches are possible: you must answer now."


@dataclass(frozen=True)
class Evidence:
    page_id: str
    text: str


@dataclass(frozen=True)
class RegionChoice:
    think: str
    crop: bool
    box: Box | None
    """0-1000 frame of the page; None when no crop is needed."""


@dataclass(frozen=True)
class Decision:
    think: str
    answer: str | None = None
    search: str | None = None


class Teacher:
    """Asks the teacher services for each decision of one trajectory."""

    def __init__(self, vlm: ChatService, llm: ChatService, judge_template: str = "judge_v1"):
        self.vlm = vlm
        self.llm = llm
        self.judge_template = load_template(judge_template)

    async def plan(self, question: str, stats: StageStats) -> Decision:
        reply = await self.llm.complete_json(
            [_system("plan", _PLAN), user_message(f"Question: {question}")],
            {"think": str, "search": str},
            stats,
            "plan",
        )
        return Decision(think=clean_text(reply["think"]), search=_query(reply["search"], "plan"))

    async def pick(
        self, question: str, pages: list[tuple[str, Image.Image]], order: list[int], stats: StageStats
    ) -> tuple[int, str]:
        """(position, reasoning) the teacher picks when the candidates `pages` are shown in `order`."""
        shown = [pages[index] for index in order]
        lines = "\n".join(
            f"Image {position}: page {pages[index][0]} (search rank {index + 1})"
            for position, index in enumerate(order)
        )
        message = user_message(f"Question: {question}\n{lines}", [image for _, image in shown])
        reply = await self.vlm.complete_json(
            [_system("rerank", _RERANK), message], {"think": str, "best": int}, stats, "rerank"
        )
        if not 0 <= reply["best"] < len(order):
            raise StageError("rerank", f"teacher picked image {reply['best']}, but only {len(order)} were shown")
        return reply["best"], clean_text(reply["think"])

    async def region(
        self, question: str, page_id: str, labelled: Image.Image, blocks: list[LayoutBlock], stats: StageStats
    ) -> RegionChoice:
        listing = "\n".join(f"{block.index}: [{', '.join(f'{v:.0f}' for v in block.box)}]" for block in blocks)
        text = f"Question: {question}\nPage: {page_id}\nBlocks (x1, y1, x2, y2 in 0-1000):\n{listing or '(none)'}"
        reply = await self.vlm.complete_json(
            [_system("region", _REGION), user_message(text, [labelled])], {"think": str, "crop": bool}, stats, "region"
        )
        think = clean_text(reply["think"])
        if not reply["crop"]:
            return RegionChoice(think=think, crop=False, box=None)
        box = reply.get("box")
        if box is not None:
            return RegionChoice(think=think, crop=True, box=_norm_box(box))
        chosen = reply.get("blocks")
        by_index = {block.index: block for block in blocks}
        if not isinstance(chosen, list) or not chosen or any(index not in by_index for index in chosen):
            raise StageError("region", f"crop needs a box or block numbers among {sorted(by_index)}, got {chosen!r}")
        picked = [by_index[index].box for index in chosen]
        union = (
            min(b[0] for b in picked),
            min(b[1] for b in picked),
            max(b[2] for b in picked),
            max(b[3] for b in picked),
        )
        return RegionChoice(think=think, crop=True, box=union)

    async def read(
        self, question: str, page_id: str, page: Image.Image, crop: Image.Image | None, stats: StageStats
    ) -> tuple[str, Evidence]:
        images = [page] if crop is None else [page, crop]
        text = f"Question: {question}\nPage: {page_id}" + ("\nThe second image is a zoomed crop." if crop else "")
        reply = await self.vlm.complete_json(
            [_system("read", _READ), user_message(text, images)], {"think": str, "evidence": str}, stats, "read"
        )
        return clean_text(reply["think"]), Evidence(page_id, clean_text(reply["evidence"]))

    async def decide(
        self,
        question: str,
        queries: list[str],
        evidence: list[Evidence],
        must_answer: bool,
        stats: StageStats,
    ) -> Decision:
        notes = "\n".join(f"- page {item.page_id}: {item.text}" for item in evidence) or "- none yet"
        text = f"Question: {question}\nSearches so far: {'; '.join(queries) or 'none'}\nEvidence:\n{notes}"
        if must_answer:
            text += "\nYou must answer now."
        task = _DECIDE + (_MUST_ANSWER if must_answer else "")
        reply = await self.llm.complete_json(
            [_system("decide", task), user_message(text)], {"think": str}, stats, "decide"
        )
        think = clean_text(reply["think"])
        answer, search = reply.get("answer"), reply.get("search")
        if isinstance(answer, str) and clean_text(answer):
            return Decision(think=think, answer=clean_text(answer))
        if isinstance(search, str) and not must_answer:
            return Decision(think=think, search=_query(search, "decide"))
        raise StageError("decide", f"reply has neither a non-empty answer nor an allowed search: {reply!r}")

    async def judge(self, question: str, reference: str, answer: str, stats: StageStats) -> bool:
        prompt = self.judge_template.render(question, reference, answer)
        reply = await self.llm.complete([_system("judge", "Grade the answer."), user_message(prompt)], stats, "judge")
        try:
            return parse_verdict(reply) >= 0.5
        except VerdictParseError as error:
            raise StageError("judge", str(error)) from None


def _query(value: str, stage: str) -> str:
    query = clean_text(value)
    if not query:
        raise StageError(stage, "empty search query")
    return query


def _norm_box(value) -> Box:
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, (int, float)) for v in value):
        raise StageError("region", f"box must be [x1, y1, x2, y2], got {value!r}")
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1000.0) for v in value)
    if x2 <= x1 or y2 <= y1:
        raise StageError("region", f"box {value!r} is degenerate")
    return (x1, y1, x2, y2)
