"""Run the synthesis over many samples: bounded concurrency, resume by uid, crash-safe output, failure records.

Files (for `--output-path out.jsonl`):
- `out.jsonl`: one line per finished sample, written in one fsynced write after its images are on disk.
- `out_images/`: the images the lines name (paths relative to the folder of `out.jsonl`): page images at the
  display budget, shared by samples (`pages/{page_id}_{w}x{h}.png`), and each sample's crops (`{uid}/crop_{n}.png`).
- `out.failures.jsonl`: one line per failed attempt: uid, stage, error, stages.
- `out.summary.json`: counts of this run and of the whole output, failures per stage.

A rerun skips the uids already in `out.jsonl`, and the uids whose latest attempt failed unless `retry_failed`.
A killed run leaves at most a partial last line, which the next run drops before appending.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from unidoc_rl.common.atomic import atomic_write, atomic_write_json
from unidoc_rl.common.jsonl import JsonlLog
from unidoc_rl.synthesis.services import StageError, StageLog
from unidoc_rl.synthesis.synthesize import Sample, SynthesizedTrajectory, Synthesizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputPaths:
    output: Path

    @property
    def root(self) -> Path:
        return self.output.parent

    @property
    def images(self) -> Path:
        return self.root / f"{self.output.stem}_images"

    @property
    def failures(self) -> Path:
        return self.root / f"{self.output.stem}.failures.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / f"{self.output.stem}.summary.json"


@dataclass
class RunSummary:
    samples: int = 0
    skipped_finished: int = 0
    skipped_failed: int = 0
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    correct: int = 0
    """Succeeded with a YES verdict."""
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    finished_total: int = 0
    """Lines in the output after this run."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_samples(raw: list[Any]) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Unified samples → (usable samples, failure records for the unusable ones); duplicate uids are an error."""
    samples, problems = [], []
    for position, item in enumerate(raw):
        uid = str(item.get("uid")) if isinstance(item, dict) and item.get("uid") is not None else f"#{position}"
        if not isinstance(item, dict):
            problems.append({"uid": uid, "stage": "input", "error": "sample is not a JSON object"})
            continue
        bad = [key for key in ("query", "reference_answer") if not isinstance(item.get(key), str) or not item[key]]
        if item.get("uid") is None or bad:
            what = "no uid" if item.get("uid") is None else f"missing or empty {', '.join(bad)}"
            problems.append({"uid": uid, "stage": "input", "error": what})
            continue
        samples.append(Sample(uid=uid, query=item["query"], reference_answer=item["reference_answer"]))
    repeated = sorted(uid for uid, count in Counter(s.uid for s in samples).items() if count > 1)
    if repeated:
        raise ValueError(f"uids must be unique (resume is by uid); repeated: {repeated}")
    return samples, problems


def uids_in(path: Path) -> set[str]:
    """The uids of the complete lines of a JSONL file (a partial last line is an unfinished write)."""
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return {str(json.loads(line)["uid"]) for line in lines if line.endswith("\n") and line.strip()}


def safe_name(uid: str) -> str:
    """A folder name for a uid: itself when it is plain, else a readable part plus a short digest."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}", uid):
        return uid
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uid)[:60].strip("._") or "sample"
    return f"{readable}-{hashlib.sha256(uid.encode()).hexdigest()[:10]}"


def _save_png(path: Path, image) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def output_line(result: SynthesizedTrajectory, log: StageLog, paths: OutputPaths) -> dict[str, Any]:
    """Save the trajectory's images and build its output line (images relative to the output's folder)."""
    crops_dir = paths.images / safe_name(result.sample.uid)
    relative = []
    for shown in result.trajectory.images:
        is_page = shown.name.startswith("pages/")
        target = paths.images / shown.name if is_page else crops_dir / shown.name
        if not (is_page and target.exists()):
            _save_png(target, shown.image)
        relative.append(target.relative_to(paths.root).as_posix())
    return {
        "uid": result.sample.uid,
        "question": result.sample.query,
        "reference_answer": result.sample.reference_answer,
        "generated_answer": result.answer,
        "verdict": result.verdict,
        "messages": result.trajectory.messages,
        "images": relative,
        "stages": log.to_dict(),
        "episode": result.trajectory.state.record.to_dict(),
    }


async def run_all(
    synthesizer: Synthesizer,
    raw_samples: list[Any],
    output: Path,
    concurrency: int = 8,
    retry_failed: bool = False,
    progress: bool = True,
) -> RunSummary:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    started = time.perf_counter()
    paths = OutputPaths(Path(output))
    paths.root.mkdir(parents=True, exist_ok=True)
    samples, problems = parse_samples(raw_samples)
    outputs = JsonlLog(paths.output)  # drops a partial last line left by a killed run
    failures = JsonlLog(paths.failures)
    summary = RunSummary(samples=len(samples) + len(problems))
    try:
        done = uids_in(paths.output)
        failed_before = uids_in(paths.failures) - done
        todo = []
        for sample in samples:
            if sample.uid in done:
                summary.skipped_finished += 1
            elif sample.uid in failed_before and not retry_failed:
                summary.skipped_failed += 1
            else:
                todo.append(sample)
        stage_failures: Counter[str] = Counter()
        for problem in problems:
            if problem["uid"] not in done:
                failures.write({**problem, "stages": {}})
                stage_failures["input"] += 1
        summary.attempted = len(todo)
        semaphore = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(todo), unit="sample", disable=not progress, desc="teacher trajectories")

        async def one(sample: Sample) -> None:
            log = StageLog()
            async with semaphore:
                try:
                    result = await synthesizer.run(sample, log)
                    line = await asyncio.to_thread(output_line, result, log, paths)
                except StageError as error:
                    log.stage(error.stage).failure = error.message
                    record = {"uid": sample.uid, "stage": error.stage, "error": error.message}
                    failures.write({**record, "stages": log.to_dict()})
                    stage_failures[error.stage] += 1
                    logger.warning("sample %s failed at %s: %s", sample.uid, error.stage, error.message)
                except Exception as error:  # noqa: BLE001 - a bug on one sample is recorded, the run goes on
                    message = f"{type(error).__name__}: {error}"
                    failures.write({"uid": sample.uid, "stage": "internal", "error": message, "stages": log.to_dict()})
                    stage_failures["internal"] += 1
                    logger.exception("sample %s failed", sample.uid)
                else:
                    outputs.write(line)
                    summary.succeeded += 1
                    summary.correct += bool(result.verdict)
            bar.update(1)
            bar.set_postfix(failed=sum(stage_failures.values()), correct=summary.correct)

        await asyncio.gather(*(one(sample) for sample in todo))
        bar.close()
        summary.failed = sum(stage_failures.values())
        summary.failures_by_stage = dict(sorted(stage_failures.items()))
    finally:
        outputs.close()
        failures.close()
    summary.finished_total = len(uids_in(paths.output))
    summary.seconds = round(time.perf_counter() - started, 3)
    atomic_write_json(paths.summary, summary.to_dict())
    return summary
