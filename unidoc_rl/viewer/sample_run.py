"""A small but real run to try the viewer on (and to test it): the sample corpus rendered to page images, scripted
episodes built with the project's own coordinate conversions and scored by the real reward (exact-match answers),
training curves and evaluation results.

    python -m unidoc_rl.viewer.sample_run OUT_DIR
    python -m unidoc_rl.viewer OUT_DIR/run --index-dir OUT_DIR/dataset

Layout made under `root`:
    dataset/pages/{doc}_{page}.png        the sample corpus, rendered by search_engine.corpus
    run/trajectories.jsonl                training episodes (episode log lines, unidoc_rl.episode_log), steps 1 and 2
    run/metrics.jsonl                     20 logged steps
    run/eval/global_step_10/summary.json  evaluation of two checkpoints
    run/eval/global_step_20/{results.jsonl,summary.json}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from search_engine.corpus import discover_documents, render_document
from unidoc_rl.data.prepare import ground_truth_of, load_samples
from unidoc_rl.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep, TurnStep
from unidoc_rl.episode_log import EpisodeLogLine, JudgeVerdict
from unidoc_rl.prompts import load_prompts, message_text
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import EpisodeScorer, RewardBreakdown
from unidoc_rl.rewards.settings import AnswerScorer, RewardSettings
from unidoc_rl.vision import (
    CoordinateConvention,
    PixelBudget,
    crop_and_zoom,
    display_size,
    from_norm1000,
    model_box_to_raw,
    raw_to_display,
)

REPO = Path(__file__).resolve().parents[2]
BUDGET = PixelBudget()
DPI = 100

PROMPTS = load_prompts()
"""The agent's texts: the observations of these episodes read as the agent would have written them."""


@dataclass
class Search:
    query: str
    retrieved: list[str]
    scores: list[float]
    failed: str | None = None


@dataclass
class Select:
    index: int


@dataclass
class Crop:
    boxes: list[tuple[float, float, float, float]]
    """Display frame of the focus page."""


@dataclass
class Answer:
    text: str
    forced: bool = False


@dataclass
class Invalid:
    text: str
    detail: str


@dataclass
class Built:
    line: dict
    record: EpisodeRecord


@dataclass
class FixtureRun:
    root: Path
    run_dir: Path
    dataset_dir: Path
    pages_dir: Path
    truths: dict[str, GroundTruth]
    training: list[Built] = field(default_factory=list)
    evaluation: list[Built] = field(default_factory=list)


class EpisodeBuilder:
    """Plays a script the way the episode state does and writes the record the agent loop would write."""

    def __init__(self, pages_dir: Path, uid: str, question: str):
        self.pages_dir = pages_dir
        self.record = EpisodeRecord(uid=uid, question=question)
        self.candidates: list[str] = []
        self.focus: str | None = None
        self.focus_search = -1

    def sizes(self, page_id: str):
        with Image.open(self.pages_dir / f"{page_id}.png") as image:
            raw = image.size
        display = display_size(raw, BUDGET)
        self.record.page_sizes[page_id] = {"raw": raw, "display": display}
        return raw, display

    def show(self, page_id: str) -> None:
        self.sizes(page_id)
        if page_id not in self.record.shown_page_ids:
            self.record.shown_page_ids.append(page_id)

    def play(self, script: list, finish: FinishReason) -> EpisodeRecord:
        record = self.record
        for action in script:
            record.num_turns += 1
            if isinstance(action, Search):
                text = f"<think>I need the page about {action.query}.</think>\n<search>{action.query}</search>"
                record.actions.append(ActionKind.SEARCH)
                if action.failed:
                    record.searches.append(SearchStep(action.query, [], [], failed=True, error=action.failed))
                    observation = message_text(PROMPTS.search_failed(action.failed))
                else:
                    shown = set(record.shown_page_ids)
                    fresh = [p for p in action.retrieved if p not in shown][:3]
                    record.searches.append(
                        SearchStep(action.query, list(action.retrieved), fresh, scores=list(action.scores))
                    )
                    for page_id in fresh:
                        self.show(page_id)
                    self.candidates = fresh
                    if fresh:
                        self.focus, self.focus_search = fresh[0], len(record.searches) - 1
                    shown_pages = [None] * len(fresh)  # the text only: each image renders as <image>
                    message = PROMPTS.search_results(action.query, shown_pages) if fresh else None
                    observation = message_text(message or PROMPTS.no_new_pages(action.query))
                record.turns.append(TurnStep(text, ActionKind.SEARCH, observation=observation))
            elif isinstance(action, Select):
                page_id = self.candidates[action.index]
                record.actions.append(ActionKind.SELECT)
                record.searches[-1].selected = page_id
                self.focus, self.focus_search = page_id, len(record.searches) - 1
                self.show(page_id)
                text = f"<think>Image {action.index} looks right.</think>\n<select>{action.index}</select>"
                observation = message_text(PROMPTS.selected_page(action.index, None))
                record.turns.append(TurnStep(text, ActionKind.SELECT, observation=observation))
            elif isinstance(action, Crop):
                raw, display = self.sizes(self.focus)
                mapped = [model_box_to_raw(box, CoordinateConvention.ABSOLUTE, display, raw) for box in action.boxes]
                with Image.open(self.pages_dir / f"{self.focus}.png") as page:
                    zoomed = crop_and_zoom(page, [m.raw for m in mapped], BUDGET)
                record.actions.append(ActionKind.BBOX)
                record.searches[self.focus_search].crops.append(
                    CropStep(
                        page_id=self.focus,
                        boxes_display=[m.display for m in mapped],
                        boxes_norm1000=[m.norm1000 for m in mapped],
                        boxes_raw=[m.raw for m in mapped],
                        zoom_size=zoomed.size,
                    )
                )
                boxes = ", ".join("[" + ", ".join(f"{v:.0f}" for v in box) + "]" for box in action.boxes)
                text = f"<think>The value is in this region; zoom in.</think>\n<bbox>{boxes}</bbox>"
                observation = message_text(PROMPTS.cropped_region(zoomed))
                record.turns.append(TurnStep(text, ActionKind.BBOX, observation=observation))
            elif isinstance(action, Answer):
                record.actions.append(ActionKind.ANSWER)
                record.answer = action.text
                record.forced_answer = action.forced
                text = f"<think>The page gives the answer.</think>\n<answer>{action.text}</answer>"
                record.turns.append(TurnStep(text, ActionKind.ANSWER, forced=action.forced))
            elif isinstance(action, Invalid):
                record.actions.append(ActionKind.INVALID)
                record.invalid_reasons.append(action.detail.split(":")[0])
                reason, _, detail = action.detail.partition(": ")
                observation = message_text(PROMPTS.invalid_action(reason, detail))
                record.turns.append(
                    TurnStep(action.text, ActionKind.INVALID, detail=action.detail, observation=observation)
                )
        record.finish_reason = finish
        return record


def gold_display_box(truth: GroundTruth, page_id: str, pages_dir: Path, pad: float = 0.0):
    """The first gold box of a page in its display frame (what a good model would draw), optionally padded."""
    with Image.open(pages_dir / f"{page_id}.png") as image:
        raw = image.size
    display = display_size(raw, BUDGET)
    x1, y1, x2, y2 = raw_to_display(from_norm1000(truth.boxes_for(page_id)[0], raw), raw, display)
    return (x1 - pad, y1 - pad, x2 + pad, y2 + pad)


def _score(record: EpisodeRecord, truth: GroundTruth) -> RewardBreakdown:
    scorer = EpisodeScorer(RewardSettings(answer_scorer=AnswerScorer.EXACT_MATCH))
    return asyncio.run(scorer.score(record, truth))


def render_pages(dataset_dir: Path) -> Path:
    pages_dir = dataset_dir / "pages"
    documents, _ = discover_documents(REPO / "examples" / "corpus", [], f"dpi={DPI}")
    for document in documents:
        render_document(document, pages_dir, DPI)
    return pages_dir


def build_run(root: Path) -> FixtureRun:
    dataset_dir = root / "dataset"
    pages_dir = render_pages(dataset_dir)
    samples = {str(s["uid"]): s for s in load_samples(REPO / "examples" / "samples.json")}
    truths = {uid: ground_truth_of(sample) for uid, sample in samples.items()}
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    fixture = FixtureRun(root, run_dir, dataset_dir, pages_dir, truths)

    nw1, nw2, nw3 = (f"northwind_annual_report_2023_{n}" for n in (1, 2, 3))
    lb1, lb2 = "lakeside_battery_study_1", "lakeside_battery_study_2"
    asia = truths["nw-asia-2023"]
    cycles = truths["lb-summer-cycles"]
    asia_box = gold_display_box(asia, nw2, pages_dir, pad=3)
    cycles_box = gold_display_box(cycles, lb2, pages_dir, pad=2)
    search_asia = Search("Northwind revenue by region 2023", [nw2, nw1, nw3, lb1], [0.912, 0.554, 0.418, 0.102])
    search_cycles = Search("Lakeside battery cycles per season", [lb1, lb2, nw3], [0.771, 0.743, 0.215])
    plans = [
        # step, uid, script, finish
        (1, "nw-asia-2023", [search_asia, Select(0), Crop([asia_box]), Answer("845")], FinishReason.ANSWERED),
        (1, "nw-asia-2023", [search_asia, Select(1), Answer("702")], FinishReason.ANSWERED),
        (
            1,
            "nw-asia-2023",
            [Invalid("<bbox>[10, 20]</bbox>", "bad_box: a box needs four numbers, got 2"), search_asia, Answer("845")],
            FinishReason.ANSWERED,
        ),
        (
            2,
            "lb-summer-cycles",
            [search_cycles, Select(1), Crop([cycles_box, (40, 60, 300, 120)]), Answer("92")],
            FinishReason.ANSWERED,
        ),
        (
            2,
            "lb-summer-cycles",
            [
                Search("battery cycles summer", [], [], failed="search service timed out after 10 s"),
                search_cycles,
                Select(0),
                Answer("110", forced=True),
            ],
            FinishReason.MAX_TURNS,
        ),
        (2, "lb-summer-cycles", [search_cycles, Select(1), Select(0)], FinishReason.MAX_TURNS),
    ]
    lines = []
    for step, uid, script, finish in plans:
        truth = truths[uid]
        record = EpisodeBuilder(pages_dir, uid, truth.query).play(script, finish)
        line = EpisodeLogLine(
            uid=uid,
            episode=record,
            reward=_score(record, truth),
            step=step,
            group=f"{step}-{uid}",
            ground_truth=truth,
        ).to_dict()
        lines.append(line)
        fixture.training.append(Built(line, record))
    _write_jsonl(run_dir / "trajectories.jsonl", lines)
    _write_jsonl(run_dir / "metrics.jsonl", _metrics(20))

    eval_dir = run_dir / "eval" / "global_step_20"
    eval_lines = []
    for uid, script, verdict in (
        ("nw-asia-2023", [search_asia, Select(0), Crop([asia_box]), Answer("845")], 1.0),
        ("lb-summer-cycles", [search_cycles, Select(0), Answer("110")], 0.0),
    ):
        truth = truths[uid]
        record = EpisodeBuilder(pages_dir, uid, truth.query).play(script, FinishReason.ANSWERED)
        meta = samples[uid]["meta_info"]
        line = EpisodeLogLine(
            uid=uid,
            episode=record,
            reward=_score(record, truth),
            benchmark="sample",
            categories={"query_type": [meta["query_type"]], "source_type": [meta["source_type"]]},
            key=f"sample/{uid}/0",
            sample_index=0,
            ground_truth=truth,
            judge=JudgeVerdict(verdict, False, "judge"),
            accuracy=verdict,
        ).to_dict()
        eval_lines.append(line)
        fixture.evaluation.append(Built(line, record))
    eval_dir.mkdir(parents=True)
    _write_jsonl(eval_dir / "results.jsonl", eval_lines)
    for step, table, text in ((10, 0.55, 0.62), (20, 0.71, 0.74)):
        folder = run_dir / "eval" / f"global_step_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        summary = {
            "sample": {
                "overall": {
                    "accuracy": (table + text) / 2,
                    "ci": [(table + text) / 2 - 0.08, (table + text) / 2 + 0.07],
                    "n": 200,
                    "crop_rate": 0.4,
                    "invalid_action_rate": 0.05,
                },
                "categories": {
                    "table": {"accuracy": table, "ci": [table - 0.1, table + 0.09], "n": 90, "crop_rate": 0.6},
                    "text": {"accuracy": text, "ci": [text - 0.09, text + 0.08], "n": 110, "crop_rate": 0.2},
                },
            }
        }
        (folder / "summary.json").write_text(json.dumps(summary))
    return fixture


def _metrics(steps: int) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        progress = step / steps
        wobble = 0.04 * math.sin(step * 1.7)
        row = {
            "step": step,
            "train/reward": 0.2 + 0.5 * progress + wobble,
            "train/reward/format": min(1.0, 0.5 + 0.5 * progress),
            "train/reward/retrieval": 0.3 + 0.4 * progress + wobble,
            "train/reward/selection": 0.4 + 0.3 * progress,
            "train/reward/crop": 0.1 + 0.5 * progress - wobble,
            "train/reward/answer": 0.15 + 0.55 * progress + wobble,
            "train/reward/score": 0.2 + 0.5 * progress + wobble,
            "train/agent/turns": 4.5 - 1.5 * progress,
            "train/response_tokens": 380 - 120 * progress + 20 * wobble,
            "train/reward/judge_fallback": 0.0 if step != 7 else 0.25,
            "train/reward/search_failures": 0.05 if step % 6 == 0 else 0.0,
            "train/reward/std_within_groups": 0.2 - 0.1 * progress,
            "train/agent/crop_rate": 0.3 + 0.4 * progress,
            "actor/kl_loss": 0.002 * step,
            "actor/entropy": 1.2 - 0.4 * progress,
            "actor/grad_norm": 0.8 + wobble,
        }
        rows.append(row)
        if step % 10 == 0:  # the local trainer logs validation as its own line with the same step
            rows.append({"step": step, "val/reward": 0.25 + 0.45 * progress, "val/reward/answer": 0.2 + 0.5 * progress})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unidoc_rl.viewer.sample_run", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="a new folder (gets dataset/ and run/)")
    args = parser.parse_args(argv)
    if (args.out_dir / "run").exists():
        parser.error(f"{args.out_dir / 'run'} already exists")
    fixture = build_run(args.out_dir)
    print(f"python -m unidoc_rl.viewer {fixture.run_dir} --index-dir {fixture.dataset_dir}")


if __name__ == "__main__":
    main()
