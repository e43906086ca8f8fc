"""Per-sample ground truth for the dense reward, and the row shape the RL parquet stores it in.

verl hands the reward manager `reward_model.ground_truth` (and `extra_info`) from each parquet row. Gold pages are
stored as a list of records rather than a mapping keyed by page id: parquet/arrow turns a dict with varying keys
into a struct holding the union of all keys, so a per-page mapping does not survive the round trip.

Row shape (`reward_model.ground_truth`), documented in docs/rewards.md:

    {"query": str, "reference_answer": str,
     "gold_pages": [{"page_id": "{doc_stem}_{page}", "boxes": [[x1, y1, x2, y2], ...], "crop_required": bool}, ...]}

`boxes` are in the 0-1000 frame of the raw page; `boxes` and `crop_required` may be omitted (no boxes; crop required
exactly when boxes are given). Gold pages are listed in order of relevance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from unidoc_rl.env.episode import Box


class GroundTruthError(ValueError):
    """The ground truth of a sample is malformed; the message names the offending field."""


@dataclass(frozen=True)
class GroundTruth:
    query: str
    reference_answer: str
    gold_page_ids: tuple[str, ...] = ()
    """Gold page ids `{doc_stem}_{page}` (1-indexed pages), most relevant first."""
    gold_boxes: dict[str, tuple[Box, ...]] = field(default_factory=dict)
    """Gold evidence boxes per page id, in the 0-1000 frame of the raw page."""
    crop_required: dict[str, bool] = field(default_factory=dict)
    """Whether answering needs a crop of that page; pages not listed need none."""

    def requires_crop(self, page_id: str) -> bool:
        return self.crop_required.get(page_id, False)

    def boxes_for(self, page_id: str) -> tuple[Box, ...]:
        return self.gold_boxes.get(page_id, ())

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "reference_answer": self.reference_answer,
            "gold_pages": [
                {
                    "page_id": page_id,
                    "boxes": [list(box) for box in self.boxes_for(page_id)],
                    "crop_required": self.requires_crop(page_id),
                }
                for page_id in self.gold_page_ids
            ],
        }

    @classmethod
    def from_dict(cls, ground_truth: Mapping | str, extra_info: Mapping | None = None) -> GroundTruth:
        """Build from `reward_model.ground_truth` of a parquet row.

        A bare string is accepted as the reference answer of a sample without page labels; the query then comes from
        `extra_info["query"]` (or `"question"`).
        """
        extra_info = extra_info or {}
        if isinstance(ground_truth, str):
            ground_truth = {"reference_answer": ground_truth}
        if not isinstance(ground_truth, Mapping):
            raise GroundTruthError(f"ground_truth must be a mapping or a string, got {type(ground_truth).__name__}")
        query = ground_truth.get("query") or extra_info.get("query") or extra_info.get("question") or ""
        reference = ground_truth.get("reference_answer")
        if not isinstance(reference, str):
            raise GroundTruthError(f"ground_truth.reference_answer must be a string, got {reference!r}")
        if not isinstance(query, str):
            raise GroundTruthError(f"ground_truth.query must be a string, got {query!r}")

        page_ids: list[str] = []
        boxes: dict[str, tuple[Box, ...]] = {}
        required: dict[str, bool] = {}
        for position, page in enumerate(_as_list(ground_truth.get("gold_pages"), "gold_pages")):
            where = f"ground_truth.gold_pages[{position}]"
            if not isinstance(page, Mapping):
                raise GroundTruthError(f"{where} must be a mapping with a page_id, got {page!r}")
            page_id = page.get("page_id")
            if not isinstance(page_id, str) or not page_id:
                raise GroundTruthError(f"{where}.page_id must be a non-empty string, got {page_id!r}")
            if page_id in boxes:
                raise GroundTruthError(f"{where}.page_id {page_id!r} is listed twice")
            page_boxes = tuple(
                _parse_box(box, f"{where}.boxes[{i}]")
                for i, box in enumerate(_as_list(page.get("boxes"), f"{where}.boxes"))
            )
            crop_flag = page.get("crop_required")
            page_ids.append(page_id)
            boxes[page_id] = page_boxes
            required[page_id] = bool(page_boxes) if crop_flag is None else bool(crop_flag)
            if required[page_id] and not page_boxes:
                raise GroundTruthError(f"{where} has crop_required but no gold boxes")
        return cls(
            query=query,
            reference_answer=reference,
            gold_page_ids=tuple(page_ids),
            gold_boxes=boxes,
            crop_required=required,
        )


def _as_list(value, name: str) -> list:
    """Lists come back from parquet as lists or numpy arrays; None means empty."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) and not hasattr(value, "tolist"):
        raise GroundTruthError(f"ground_truth {name} must be a list, got {value!r}")
    return list(value)


def _parse_box(value, where: str) -> Box:
    coords = _as_list(value, where)
    if len(coords) != 4:
        raise GroundTruthError(f"{where} must have 4 coordinates [x1, y1, x2, y2], got {value!r}")
    try:
        x1, y1, x2, y2 = (float(c) for c in coords)
    except (TypeError, ValueError) as error:
        raise GroundTruthError(f"{where} has a non-numeric coordinate: {value!r}") from error
    if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000):
        raise GroundTruthError(f"{where} must satisfy 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000, got {value!r}")
    return (x1, y1, x2, y2)
