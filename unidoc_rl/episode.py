"""The episode record: what one trajectory did, as structured data.

The agent loop writes it while the episode runs; rewards, evaluation and the trajectory log read it. Nothing
downstream re-parses decoded model text, so text inside observations can never be mistaken for model output.
The record crosses process boundaries (Ray, parquet/JSONL logs), hence the plain-dict round trip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

Box = tuple[float, float, float, float]


class FinishReason(StrEnum):
    ANSWERED = "answered"
    MAX_TURNS = "max_turns"
    MAX_IMAGES = "max_images"
    MAX_MODEL_LEN = "max_model_len"
    NO_ACTION = "no_action"


class ActionKind(StrEnum):
    SEARCH = "search"
    SELECT = "select"
    BBOX = "bbox"
    ANSWER = "answer"
    INVALID = "invalid"


@dataclass
class CropStep:
    """One `<bbox>` action on the focus page."""

    page_id: str
    boxes_display: list[Box]
    """Boxes as the model wrote them, in the pixel frame of the page as displayed to it."""
    boxes_norm1000: list[Box]
    """The same boxes on the raw page, in the 0-1000 frame that gold boxes use."""


@dataclass
class SearchStep:
    """One `<search>` action and what followed it until the next search."""

    query: str
    retrieved: list[str]
    """Page ids the engine returned, in rank order (before removing pages already shown)."""
    candidates: list[str]
    """Page ids shown to the model as Image 0..n-1 for this search."""
    selected: str | None = None
    """Page id chosen by an explicit `<select>`; None when the model never selected."""
    crops: list[CropStep] = field(default_factory=list)


@dataclass
class EpisodeRecord:
    uid: str = ""
    searches: list[SearchStep] = field(default_factory=list)
    shown_page_ids: list[str] = field(default_factory=list)
    """Every page image shown to the model, in order of first appearance."""
    actions: list[ActionKind] = field(default_factory=list)
    """The kind of each assistant turn, in order; malformed turns are INVALID."""
    invalid_reasons: list[str] = field(default_factory=list)
    answer: str | None = None
    finish_reason: FinishReason | None = None
    num_turns: int = 0

    @property
    def invalid_actions(self) -> int:
        return sum(1 for kind in self.actions if kind is ActionKind.INVALID)

    @property
    def selected_page_ids(self) -> list[str]:
        return [step.selected for step in self.searches if step.selected is not None]

    @property
    def crops(self) -> list[CropStep]:
        return [crop for step in self.searches for crop in step.crops]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["actions"] = [kind.value for kind in self.actions]
        data["finish_reason"] = self.finish_reason.value if self.finish_reason else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> EpisodeRecord:
        searches = [
            SearchStep(
                query=step["query"],
                retrieved=list(step["retrieved"]),
                candidates=list(step["candidates"]),
                selected=step.get("selected"),
                crops=[
                    CropStep(
                        page_id=crop["page_id"],
                        boxes_display=[tuple(box) for box in crop["boxes_display"]],
                        boxes_norm1000=[tuple(box) for box in crop["boxes_norm1000"]],
                    )
                    for crop in step.get("crops", [])
                ],
            )
            for step in data.get("searches", [])
        ]
        reason = data.get("finish_reason")
        return cls(
            uid=data.get("uid", ""),
            searches=searches,
            shown_page_ids=list(data.get("shown_page_ids", [])),
            actions=[ActionKind(kind) for kind in data.get("actions", [])],
            invalid_reasons=list(data.get("invalid_reasons", [])),
            answer=data.get("answer"),
            finish_reason=FinishReason(reason) if reason else None,
            num_turns=int(data.get("num_turns", 0)),
        )
