"""Evaluation samples: unified JSON samples with their benchmark, categories and ground truth.

A unified sample (README.md, Data formats; docs/evaluation.md, Evaluation samples) may carry, in `meta_info`, what
evaluation reads beyond training's fields: `benchmark` (name), `categories` ({field: [values]}; a sample counts once
under each value), `answer_format` (the benchmark's own scoring rule, e.g. MMLongBench-Doc's
Int/Float/Str/List/None) and `reference_boxes` / `crop_required` per reference page. Unlike RL samples, evaluation
samples may have no reference page at all (unanswerable questions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unidoc_rl.data.prepare import SampleValidationError, page_id
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError


class SampleError(SampleValidationError):
    """Samples are unusable for evaluation; `problems` maps each uid to what is wrong with it."""

    purpose = "evaluated"


@dataclass(frozen=True)
class EvalSample:
    uid: str
    benchmark: str
    query: str
    reference_answer: str
    truth: GroundTruth
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    answer_format: str | None = None
    raw: dict = field(default_factory=dict, repr=False)
    """The unified sample as read (curation writes it back out)."""

    @property
    def gold_page_ids(self) -> tuple[str, ...]:
        return self.truth.gold_page_ids


def read_sample_file(path: Path) -> list[dict]:
    """A JSON list, a JSON object with an `examples` list (ViDoRAG/VRAG files), or JSON Lines."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("examples"), list):
        return data["examples"]
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of samples, an object with an 'examples' list, or JSON Lines")
    return data


def to_eval_sample(sample: dict, default_benchmark: str) -> EvalSample:
    """Raises KeyError / TypeError / GroundTruthError / ValueError naming what is wrong."""
    if not isinstance(sample, dict):
        raise TypeError(f"sample must be a JSON object, got {type(sample).__name__}")
    missing = [key for key in ("uid", "query", "reference_answer", "meta_info") if key not in sample]
    if missing:
        raise KeyError(f"missing {', '.join(missing)}")
    meta = sample["meta_info"]
    if not isinstance(meta, dict) or "file_name" not in meta:
        raise KeyError("missing meta_info.file_name")
    if not isinstance(sample["query"], str) or not sample["query"].strip():
        raise ValueError("query must be a non-empty string")
    pages = meta.get("reference_page") or []
    if not isinstance(pages, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in pages):
        raise GroundTruthError(f"meta_info.reference_page must be a list of 1-indexed ints, got {pages!r}")
    boxes = meta.get("reference_boxes") or [[] for _ in pages]
    required = meta.get("crop_required") or [bool(page_boxes) for page_boxes in boxes]
    if not len(boxes) == len(required) == len(pages):
        raise GroundTruthError("meta_info.reference_boxes and crop_required must align with reference_page")
    truth = GroundTruth.from_dict(
        {
            "query": sample["query"],
            "reference_answer": str(sample["reference_answer"]),
            "gold_pages": [
                {"page_id": page_id(meta["file_name"], page), "boxes": page_boxes, "crop_required": bool(crop)}
                for page, page_boxes, crop in zip(pages, boxes, required, strict=True)
            ],
        }
    )
    categories = meta.get("categories") or {}
    if not isinstance(categories, dict):
        raise TypeError(f"meta_info.categories must be an object, got {categories!r}")
    return EvalSample(
        uid=str(sample["uid"]),
        benchmark=str(meta.get("benchmark") or default_benchmark),
        query=sample["query"],
        reference_answer=str(sample["reference_answer"]),
        truth=truth,
        categories={str(name): _as_values(values) for name, values in categories.items()},
        answer_format=meta.get("answer_format"),
        raw=sample,
    )


def _as_values(values) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, (list, tuple)):
        return tuple(str(value) for value in values)
    return (str(values),)


def load_eval_samples(paths: Iterable[Path]) -> list[EvalSample]:
    """All samples of the given files; every problem of every file is reported in one error."""
    samples: list[EvalSample] = []
    problems: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for path in paths:
        path = Path(path)
        for position, raw in enumerate(read_sample_file(path)):
            name = f"{path.name}#{position}"
            try:
                sample = to_eval_sample(raw, default_benchmark=path.stem)
            except (KeyError, TypeError, ValueError) as error:
                problems.setdefault(f"{name} (uid {raw.get('uid') if isinstance(raw, dict) else '?'})", []).append(
                    str(error).strip("'\"")
                )
                continue
            key = (sample.benchmark, sample.uid)
            if key in seen:
                problems.setdefault(f"{name} (uid {sample.uid})", []).append(f"duplicate uid in {sample.benchmark}")
                continue
            seen.add(key)
            samples.append(sample)
    if problems:
        raise SampleError(problems)
    return samples


def missing_from_index(samples: Iterable[EvalSample], known_page_ids: set[str]) -> dict[str, list[str]]:
    """Per sample uid, its evidence pages that the index does not hold (the corpus check)."""
    absent = {}
    for sample in samples:
        pages = [pid for pid in sample.gold_page_ids if pid not in known_page_ids]
        if pages:
            absent[f"{sample.benchmark}/{sample.uid}"] = pages
    return absent
