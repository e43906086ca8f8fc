"""The episode record: what one trajectory did, as structured data.

The agent loop writes it while the episode runs; rewards, evaluation, the trajectory log and the viewer read it.
Nothing downstream re-parses decoded model text, so text inside observations can never be mistaken for model
output. The record holds only what the model saw: an action whose observation was never rendered is kept as a
turn (its kind counts for the format reward) but adds no shown pages, candidates, selections or crops.
The record crosses process boundaries (Ray, parquet/JSONL logs), hence the plain-dict round trip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

Box = tuple[float, float, float, float]
Size = tuple[int, int]
"""(width, height)."""


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
    """Boxes as the model asked for them, clamped, in the pixel frame of the page as displayed to it."""
    boxes_norm1000: list[Box]
    """The same boxes on the raw page, in the 0-1000 frame that gold boxes use."""
    boxes_raw: list[Box] = field(default_factory=list)
    """The regions actually cropped from the raw page (grown to the minimum crop side)."""
    zoom_size: Size | None = None
    """Size of the zoomed image the model was shown."""


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
    scores: list[float] = field(default_factory=list)
    """The engine's scores, aligned with `retrieved` (empty when the backend gives none)."""
    failed: bool = False
    """The search service failed (error, timeout): no candidates, and left out of retrieval and selection."""
    error: str | None = None

    @property
    def focus_page(self) -> str | None:
        """The page the agent worked on after this search: its `<select>`, else candidate 0 (the default focus)."""
        if self.selected is not None:
            return self.selected
        return self.candidates[0] if self.candidates else None


@dataclass
class TurnStep:
    """One assistant turn: what the model wrote, what it meant, and the observation it got back."""

    text: str
    """The turn as decoded (special tokens skipped)."""
    action: ActionKind
    detail: str | None = None
    """For an invalid action: `reason: detail`."""
    observation: str | None = None
    """Text of the observation turn that followed (None when none was rendered)."""
    forced: bool = False
    """The turn answered a final-answer request after a budget ran out."""


@dataclass
class EpisodeRecord:
    uid: str = ""
    question: str = ""
    searches: list[SearchStep] = field(default_factory=list)
    shown_page_ids: list[str] = field(default_factory=list)
    """Every page image shown to the model, in order of first appearance."""
    page_sizes: dict[str, dict[str, Size]] = field(default_factory=dict)
    """Per shown page: {"raw": (w, h), "display": (w, h)}, the frames its boxes live in."""
    actions: list[ActionKind] = field(default_factory=list)
    """The kind of each assistant turn, in order; malformed turns are INVALID."""
    invalid_reasons: list[str] = field(default_factory=list)
    turns: list[TurnStep] = field(default_factory=list)
    answer: str | None = None
    forced_answer: bool = False
    """The answer came in a forced final turn (the finish reason then names the budget)."""
    finish_reason: FinishReason | None = None
    num_turns: int = 0

    @property
    def answered(self) -> bool:
        """The episode ended on a valid `<answer>` with non-empty text, in a turn of its own or in the final turn
        forced by a spent budget. (The agent loop sets `answer` only so; a hand-built record may not.)"""
        return (
            (self.finish_reason is FinishReason.ANSWERED or self.forced_answer)
            and bool(self.actions)
            and self.actions[-1] is ActionKind.ANSWER
            and self.answer is not None
            and bool(self.answer.strip())
        )

    @property
    def cropped(self) -> bool:
        """The episode made at least one crop."""
        return any(step.crops for step in self.searches)

    @property
    def served_searches(self) -> list[SearchStep]:
        """The searches the service answered; failed ones are counted in `search_failures`, not scored as misses."""
        return [step for step in self.searches if not step.failed]

    @property
    def invalid_actions(self) -> int:
        return sum(1 for kind in self.actions if kind is ActionKind.INVALID)

    @property
    def selected_page_ids(self) -> list[str]:
        return [step.selected for step in self.searches if step.selected is not None]

    @property
    def crops(self) -> list[CropStep]:
        return [crop for step in self.searches for crop in step.crops]

    @property
    def search_failures(self) -> int:
        return sum(1 for step in self.searches if step.failed)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["actions"] = [kind.value for kind in self.actions]
        data["finish_reason"] = self.finish_reason.value if self.finish_reason else None
        for turn in data["turns"]:
            turn["action"] = ActionKind(turn["action"]).value
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
                        boxes_raw=[tuple(box) for box in crop.get("boxes_raw", [])],
                        zoom_size=tuple(crop["zoom_size"]) if crop.get("zoom_size") else None,
                    )
                    for crop in step.get("crops", [])
                ],
                scores=[float(score) for score in step.get("scores", [])],
                failed=bool(step.get("failed", False)),
                error=step.get("error"),
            )
            for step in data.get("searches", [])
        ]
        turns = [
            TurnStep(
                text=turn["text"],
                action=ActionKind(turn["action"]),
                detail=turn.get("detail"),
                observation=turn.get("observation"),
                forced=bool(turn.get("forced", False)),
            )
            for turn in data.get("turns", [])
        ]
        reason = data.get("finish_reason")
        return cls(
            uid=data.get("uid", ""),
            question=data.get("question", ""),
            searches=searches,
            shown_page_ids=list(data.get("shown_page_ids", [])),
            page_sizes={
                page_id: {frame: tuple(size) for frame, size in sizes.items()}
                for page_id, sizes in data.get("page_sizes", {}).items()
            },
            actions=[ActionKind(kind) for kind in data.get("actions", [])],
            invalid_reasons=list(data.get("invalid_reasons", [])),
            turns=turns,
            answer=data.get("answer"),
            forced_answer=bool(data.get("forced_answer", False)),
            finish_reason=FinishReason(reason) if reason else None,
            num_turns=int(data.get("num_turns", 0)),
        )
