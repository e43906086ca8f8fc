"""Unified JSON samples → RL parquet files (train / val) in the row shape verl's `RLHFDataset` reads.

    python -m unidoc_rl.data.prepare --samples examples/samples.json --out_dir data/rl --index_dir index/

Each row carries the chat prompt (`prompt`: the question turn only; the agent loop adds the system prompt from its
own settings), the `data_source`, the agent loop to run (`agent_name`), and the ground truth the reward reads
(`reward_model.ground_truth`, see `unidoc_rl.rewards.ground_truth`). verl's default dataset class fits these rows
as they are: the prompt is text-only, page images arrive through the search tool during the episode.

Validation is all-or-nothing: every malformed sample, and every sample whose reference pages are absent from the
index, is listed in one error, and no file is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from unidoc_rl.common.atomic import atomic_write
from unidoc_rl.env.prompts import DEFAULT_TEMPLATE, AgentPrompts, load_prompts
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError

logger = logging.getLogger(__name__)

AGENT_NAME = "unidoc_agent"
ABILITY = "visual_rag"


class SampleValidationError(ValueError):
    """One or more samples are unusable; `problems` maps each uid to what is wrong with it."""

    purpose = "used"

    def __init__(self, problems: dict[str, list[str]]):
        self.problems = problems
        lines = [f"  {uid}: {'; '.join(reasons)}" for uid, reasons in problems.items()]
        super().__init__(f"{len(problems)} sample(s) cannot be {self.purpose}:\n" + "\n".join(lines))


@dataclass(frozen=True)
class PreparedSplit:
    train: list[dict]
    val: list[dict]


def page_id(file_name: str, page: int) -> str:
    """`{doc_stem}_{page}` with a 1-indexed page, the id the index and the rewards use."""
    return f"{Path(file_name).stem}_{page}"


def load_samples(path: Path) -> list[dict]:
    """A JSON list, or JSON Lines (one sample per line)."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of samples (or use .jsonl)")
    return data


def ground_truth_of(sample: dict) -> GroundTruth:
    """The reward's ground truth for one unified sample; raises GroundTruthError / KeyError / TypeError if malformed."""
    meta = sample["meta_info"]
    pages = meta["reference_page"]
    if not isinstance(pages, list) or not pages or not all(isinstance(p, int) and p >= 1 for p in pages):
        raise GroundTruthError(f"meta_info.reference_page must be a non-empty list of 1-indexed ints, got {pages!r}")
    boxes = meta.get("reference_boxes") or [[] for _ in pages]
    crop_required = meta.get("crop_required") or [bool(page_boxes) for page_boxes in boxes]
    if not (len(boxes) == len(crop_required) == len(pages)):
        raise GroundTruthError("meta_info.reference_boxes and crop_required must align with reference_page")
    row = {
        "query": sample["query"],
        "reference_answer": sample["reference_answer"],
        "gold_pages": [
            {"page_id": page_id(meta["file_name"], page), "boxes": page_boxes, "crop_required": bool(required)}
            for page, page_boxes, required in zip(pages, boxes, crop_required, strict=True)
        ],
    }
    return GroundTruth.from_dict(row)


def to_row(sample: dict, truth: GroundTruth, data_source: str, split: str, index: int, prompts: AgentPrompts) -> dict:
    meta = sample["meta_info"]
    return {
        "data_source": data_source,
        "agent_name": AGENT_NAME,
        # The question only: the agent loop renders the system prompt from its own settings (coordinate
        # convention, candidates per search), so data and rollout cannot describe different frames.
        "prompt": [prompts.question_message(sample["query"])],
        "ability": ABILITY,
        "reward_model": {"style": "model", "ground_truth": truth.to_dict()},
        "extra_info": {
            "index": index,
            "split": split,
            "uid": str(sample["uid"]),
            "query": sample["query"],
            "file_name": meta["file_name"],
            "source_type": str(meta.get("source_type", "")),
            "query_type": str(meta.get("query_type", "")),
        },
    }


def validate(samples: Sequence[dict], known_page_ids: set[str] | None) -> list[GroundTruth]:
    problems: dict[str, list[str]] = {}
    truths = []
    seen_uids: set[str] = set()
    for position, sample in enumerate(samples):
        uid = str(sample.get("uid", f"<sample #{position} without uid>")) if isinstance(sample, dict) else str(position)
        reasons = []
        if not isinstance(sample, dict):
            problems[uid] = [f"sample must be a JSON object, got {type(sample).__name__}"]
            continue
        missing = [key for key in ("uid", "query", "reference_answer", "meta_info") if key not in sample]
        missing += [
            f"meta_info.{key}" for key in ("file_name", "reference_page") if key not in sample.get("meta_info", {})
        ]
        if missing:
            problems[uid] = [f"missing {', '.join(missing)}"]
            continue
        if uid in seen_uids:
            reasons.append("duplicate uid")
        seen_uids.add(uid)
        if not isinstance(sample["query"], str) or not sample["query"].strip():
            reasons.append("query must be a non-empty string")
        try:
            truth = ground_truth_of(sample)
        except (GroundTruthError, TypeError, ValueError) as error:
            reasons.append(str(error))
            truth = None
        if truth is not None and known_page_ids is not None:
            absent = [pid for pid in truth.gold_page_ids if pid not in known_page_ids]
            if absent:
                reasons.append(f"reference pages absent from the index: {', '.join(absent)}")
        if reasons:
            problems[uid] = reasons
        else:
            truths.append(truth)
    if problems:
        raise SampleValidationError(problems)
    return truths


def split_samples(samples: Sequence[dict], val_size: int | float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffled train / val indices; `val_size` is a count (int) or a fraction (float in (0, 1))."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    count = round(val_size * len(order)) if isinstance(val_size, float) else int(val_size)
    if not 0 <= count <= len(order):
        raise ValueError(f"val_size {val_size} does not fit {len(order)} samples")
    return sorted(order[count:]), sorted(order[:count])


def prepare(
    samples: Sequence[dict],
    data_source: str,
    val_size: int | float = 0.1,
    seed: int = 0,
    known_page_ids: set[str] | None = None,
    prompt_template: str = DEFAULT_TEMPLATE,
) -> PreparedSplit:
    """`prompt_template` words the question turn; train with the same `unidoc_agent.prompt_template`."""
    prompts = load_prompts(prompt_template)
    truths = validate(samples, known_page_ids)
    train_idx, val_idx = split_samples(samples, val_size, seed)

    def rows(indices: Iterable[int], split: str) -> list[dict]:
        return [to_row(samples[i], truths[i], data_source, split, i, prompts) for i in indices]

    return PreparedSplit(train=rows(train_idx, "train"), val=rows(val_idx, "val"))


def write_parquet(rows: list[dict], path: Path) -> None:
    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda handle: pq.write_table(table, handle))


def index_page_ids(index_dir: Path) -> set[str]:
    from search_engine.manifest import read_manifest

    return set(read_manifest(index_dir).page_ids())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert unified JSON samples into RL parquet files for verl.")
    parser.add_argument("--samples", type=Path, required=True, help="unified samples: a JSON list or .jsonl")
    parser.add_argument("--out_dir", type=Path, required=True, help="writes train.parquet and val.parquet here")
    parser.add_argument("--data_source", default=None, help="dataset name stored per row (default: samples file stem)")
    parser.add_argument("--val_size", type=float, default=0.1, help="fraction (<1) or count (>=1) of samples for val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val shuffle")
    parser.add_argument(
        "--index_dir", type=Path, default=None, help="search index to check reference pages against (recommended)"
    )
    parser.add_argument(
        "--prompt_template",
        default=DEFAULT_TEMPLATE,
        help="agent prompt template (name or .jinja path) wording the question turn; the same as the training's "
        "unidoc_agent.prompt_template",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    samples = load_samples(args.samples)
    known = index_page_ids(args.index_dir) if args.index_dir else None
    val_size = int(args.val_size) if args.val_size >= 1 else args.val_size
    try:
        split = prepare(
            samples,
            data_source=args.data_source or args.samples.stem,
            val_size=val_size,
            seed=args.seed,
            known_page_ids=known,
            prompt_template=args.prompt_template,
        )
    except SampleValidationError as error:
        raise SystemExit(str(error)) from None
    write_parquet(split.train, args.out_dir / "train.parquet")
    write_parquet(split.val, args.out_dir / "val.parquet")
    logger.info("wrote %d train and %d val rows to %s", len(split.train), len(split.val), args.out_dir)


if __name__ == "__main__":
    main()
