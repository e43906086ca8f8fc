"""A small but real run to try the viewer on (and to test it): the sample corpus rendered to page images, scripted
turns stepped through the agent's own environment and scored by the real reward (exact-match answers), training
curves and evaluation results.

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
from unidoc_rl.agent.search import StaticHit
from unidoc_rl.data.prepare import ground_truth_of, load_samples
from unidoc_rl.env.actions import AnswerAction, BBoxAction, SearchAction, SelectAction, format_action
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.environment import AgentEnvironment
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.env.episode_state import EpisodeLimits
from unidoc_rl.env.vision import (
    PixelBudget,
    display_size,
    from_norm1000,
    raw_to_display,
)
from unidoc_rl.episode_log import EpisodeLogLine, JudgeVerdict
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import EpisodeScorer, RewardBreakdown
from unidoc_rl.rewards.settings import AnswerScorer, RewardSettings

REPO = Path(__file__).resolve().parents[2]
BUDGET = PixelBudget()
DPI = 100


class SampleSearch:
    """The sample run's search backend: fixed ranked hits per query, page images from disk; a query mapped to a
    message fails with it (as a search service that timed out)."""

    def __init__(self, pages_dir: Path, results: dict[str, list[tuple[str, float]] | str]):
        self.pages_dir = pages_dir
        self.results = results

    async def search(self, queries: list[str], top_k: int | None = None) -> list[list[StaticHit]]:
        (query,) = queries
        result = self.results[query]
        if isinstance(result, str):
            raise TimeoutError(result)
        return [[StaticHit(page_id, score) for page_id, score in result[:top_k]]]

    async def load_image(self, hit: StaticHit) -> Image.Image:
        with Image.open(self.pages_dir / f"{hit.page_id}.png") as image:
            return image.convert("RGB")


THINK = {
    SearchAction: lambda action: f"I need the page about {action.query}.",
    SelectAction: lambda action: f"Image {action.index} looks right.",
    BBoxAction: lambda action: "The value is in this region; zoom in.",
    AnswerAction: lambda action: "The page gives the answer.",
}


def turn(action) -> str:
    """An action as a model turn with its reasoning; a plain string is a turn as written (e.g. a malformed one)."""
    return action if isinstance(action, str) else format_action(action, think=THINK[type(action)](action))


def play(backend: SampleSearch, uid: str, question: str, script: list, **limits) -> EpisodeRecord:
    """Step the agent's environment through a script of turns, as the agent loop would (limits: EpisodeLimits)."""
    environment = AgentEnvironment(AgentSettings(limits=EpisodeLimits(**limits)), BUDGET, backend)
    environment.reset(uid=uid, question=question)

    async def run() -> None:
        for action in script:
            await environment.step(turn(action))

    asyncio.run(run())
    if not environment.done:
        raise ValueError(f"the script for {uid} does not end its episode")
    return environment.record


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
    search_asia = SearchAction("Northwind revenue by region 2023")
    search_cycles = SearchAction("Lakeside battery cycles per season")
    timed_out = SearchAction("battery cycles summer")
    backend = SampleSearch(
        pages_dir,
        {
            search_asia.query: [(nw2, 0.912), (nw1, 0.554), (nw3, 0.418), (lb1, 0.102)],
            search_cycles.query: [(lb1, 0.771), (lb2, 0.743), (nw3, 0.215)],
            timed_out.query: "search service timed out after 10 s",
        },
    )
    answer = AnswerAction
    plans = [
        # step, uid, script, episode limits
        (1, "nw-asia-2023", [search_asia, SelectAction(0), BBoxAction((asia_box,)), answer("845")], {}),
        (1, "nw-asia-2023", [search_asia, SelectAction(1), answer("702")], {}),
        (1, "nw-asia-2023", ["<bbox>[10, 20]</bbox>", search_asia, answer("845")], {}),
        (
            2,
            "lb-summer-cycles",
            [search_cycles, SelectAction(1), BBoxAction((cycles_box, (40, 60, 300, 120))), answer("92")],
            {},
        ),
        # The image budget runs out at the select: one request for a final answer, answered (forced).
        (2, "lb-summer-cycles", [timed_out, search_cycles, SelectAction(0), answer("110")], {"max_images": 3}),
        # The turn budget runs out on a select, which then has no effect.
        (2, "lb-summer-cycles", [search_cycles, SelectAction(1), SelectAction(0)], {"max_turns": 3}),
    ]
    lines = []
    for step, uid, script, limits in plans:
        truth = truths[uid]
        record = play(backend, uid, truth.query, script, **limits)
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
        ("nw-asia-2023", [search_asia, SelectAction(0), BBoxAction((asia_box,)), answer("845")], 1.0),
        ("lb-summer-cycles", [search_cycles, SelectAction(0), answer("110")], 0.0),
    ):
        truth = truths[uid]
        record = play(backend, uid, truth.query, script)
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
        if step % 10 == 0:  # validation on its own line, same step (older runs)
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
