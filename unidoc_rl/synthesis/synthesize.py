"""One teacher trajectory: plan → search → (rerank →) select → (layout → region → crop →) read → answer or search
again → judge.

Every assistant turn is played through `Trajectory`, i.e. through the RL agent's own observation step, so the
trajectory is the one the agent loop would render for the same actions.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

from unidoc_rl.env.actions import AnswerAction, BBoxAction, SearchAction, SelectAction, format_action
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.episode_state import PageView
from unidoc_rl.env.vision import Box, CoordinateConvention, PixelBudget, from_norm1000
from unidoc_rl.rewards.components import box_iou
from unidoc_rl.synthesis.layout import LayoutBlock, MinerULayoutParser, draw_blocks, pdf_text_blocks
from unidoc_rl.synthesis.rerank import balanced_orders, tally, winner
from unidoc_rl.synthesis.services import StageError, StageLog, StageStats
from unidoc_rl.synthesis.teacher import Evidence, Teacher
from unidoc_rl.synthesis.trajectory import Trajectory


@dataclass(frozen=True)
class SynthesisOptions:
    enable_rerank: bool = False
    enable_crop: bool = False
    max_searches: int = 2
    """Search rounds before the teacher must answer."""

    def __post_init__(self) -> None:
        if self.max_searches < 1:
            raise ValueError(f"max_searches must be at least 1, got {self.max_searches}")


@dataclass(frozen=True)
class Sample:
    uid: str
    query: str
    reference_answer: str


@dataclass
class SynthesizedTrajectory:
    sample: Sample
    trajectory: Trajectory
    answer: str
    verdict: bool


class LayoutSource:
    """Layout blocks of a page: from MinerU when a parser URL is given, else from the PDF text layer."""

    def __init__(self, parser: MinerULayoutParser | None = None, pdf_dir: Path | None = None):
        if parser is None and pdf_dir is None:
            raise ValueError("cropping needs --layout-parser-url or --pdf-dir (the PDFs the corpus was rendered from)")
        self.parser = parser
        self.pdf_dir = pdf_dir

    async def blocks(self, page: PageView, stats: StageStats) -> list[LayoutBlock]:
        if self.parser is not None:
            return await self.parser.blocks(page.page_id, page.raw, stats)
        stats.calls += 1
        stem, _, number = page.page_id.rpartition("_")
        pdf = self.pdf_dir / f"{stem}.pdf"
        if not stem or not number.isdigit() or not pdf.is_file():
            raise StageError("layout", f"no PDF {pdf} for page {page.page_id}")
        try:
            return await asyncio.to_thread(pdf_text_blocks, pdf, int(number))
        except Exception as error:  # noqa: BLE001 - an unreadable PDF fails this sample, not the run
            raise StageError("layout", f"{pdf.name}: {error}") from None


def model_box(box_norm1000: Box, display: tuple[int, int], convention: CoordinateConvention) -> tuple[int, ...]:
    """The integer box the agent writes for a region given in the 0-1000 frame of the page.

    The frame is the displayed page (`absolute`) or its 0-1000 scale (`norm1000`); each coordinate is rounded
    down or up, whichever pair keeps the most overlap with the exact region (thin boxes shrink least).
    """
    exact = from_norm1000(box_norm1000, display) if convention is CoordinateConvention.ABSOLUTE else box_norm1000
    choices = [(math.floor(value), math.ceil(value)) for value in exact]
    best = max(
        (box for box in itertools.product(*choices) if box[2] > box[0] and box[3] > box[1]),
        key=lambda box: box_iou(box, exact),
    )
    return tuple(int(value) for value in best)


class Synthesizer:
    def __init__(
        self,
        teacher: Teacher,
        search,
        settings: AgentSettings,
        budget: PixelBudget,
        options: SynthesisOptions,
        layout: LayoutSource | None = None,
    ):
        if options.enable_crop and layout is None:
            raise ValueError("enable_crop needs a layout source")
        self.teacher = teacher
        self.search = search
        self.settings = settings
        self.budget = budget
        self.options = options
        self.layout = layout

    def _room_for_another_round(self, trajectory: Trajectory) -> bool:
        """Turns and images for one more search (search, select, crop) and the answer."""
        state = trajectory.state
        turns = 3 if self.options.enable_crop else 2
        images = self.settings.limits.n_candidates + (2 if self.options.enable_crop else 1)
        return state.turns_left >= turns + 1 and state.images_left >= images

    async def run(self, sample: Sample, log: StageLog) -> SynthesizedTrajectory:
        question = sample.query
        trajectory = Trajectory(sample.uid, question, self.settings, self.budget, self.search.for_sample(log))
        plan = await self.teacher.plan(question, log.stage("plan"))
        think, query = plan.think, plan.search
        queries: list[str] = []
        evidence: list[Evidence] = []
        for round_index in range(self.options.max_searches):
            await trajectory.act(format_action(SearchAction(query), think))
            queries.append(query)
            failure = trajectory.failed_search()
            if failure is not None:
                raise StageError("search", failure)
            read_think = ""
            if trajectory.state.record.searches[-1].candidates:
                read_think, found = await self._work_on(question, list(trajectory.state.candidates), trajectory, log)
                evidence.append(found)
            last_round = round_index == self.options.max_searches - 1
            must_answer = last_round or not self._room_for_another_round(trajectory)
            decision = await self.teacher.decide(question, queries, evidence, must_answer, log.stage("decide"))
            if decision.answer is not None:
                answer_think = " ".join(part for part in (read_think, decision.think) if part)
                await trajectory.act(format_action(AnswerAction(decision.answer), answer_think))
                verdict = await self.teacher.judge(
                    question, sample.reference_answer, decision.answer, log.stage("judge")
                )
                return SynthesizedTrajectory(sample, trajectory, decision.answer, verdict)
            think, query = decision.think, decision.search
        raise StageError("decide", "no answer after the last search")  # decide() answers when it must

    async def _work_on(self, question: str, pages: list[PageView], trajectory: Trajectory, log: StageLog):
        """Select a candidate, crop it if the teacher says so, and read it; returns (reading think, evidence)."""
        index, think = await self._select(question, pages, log.stage("rerank"))
        await trajectory.act(format_action(SelectAction(index), think))
        focus = pages[index]
        crop = None
        if self.options.enable_crop:
            blocks = await self.layout.blocks(focus, log.stage("layout"))
            labelled = draw_blocks(focus.raw, blocks)
            choice = await self.teacher.region(question, focus.page_id, labelled, blocks, log.stage("region"))
            if choice.crop:
                box = model_box(choice.box, focus.display_size, self.settings.convention)
                observation = await trajectory.act(format_action(BBoxAction((box,)), choice.think))
                (crop,) = observation.images
        return await self.teacher.read(question, focus.page_id, focus.raw, crop, log.stage("read"))

    async def _select(self, question: str, pages: list[PageView], stats: StageStats) -> tuple[int, str]:
        if not self.options.enable_rerank:
            return 0, "Image 0 is the top search result."
        shown = [(page.page_id, page.raw) for page in pages]
        orders = balanced_orders(len(pages))
        picks = await asyncio.gather(*(self.teacher.pick(question, shown, order, stats) for order in orders))
        best = winner(tally(orders, [position for position, _ in picks]))
        reason = next(think for order, (position, think) in zip(orders, picks, strict=True) if order[position] == best)
        return best, reason
