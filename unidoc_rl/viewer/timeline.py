"""An episode as the model lived it: each turn with the pages, boxes and crop it produced.

The record keeps turns and searches apart (`turns` in order; `searches` with their candidates, selection and crops).
This module walks the turns and attaches to each the structured step it caused, following the episode state's
own rules: a search with candidates makes candidate 0 the focus page, a select makes the selected page the focus,
a crop is recorded on the search the focus page came from. A turn whose observation was never rendered has no
effects in the record, so it takes no step (records from before turns were logged count every action as rendered).

Boxes are converted here, through `unidoc_rl.env.vision`, into the display frame of the page (the frame the model
saw): the model's boxes already are; gold boxes come from 0-1000 of the raw page; crop regions from raw pixels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, SearchStep, TurnStep
from unidoc_rl.env.vision import Box, Size, from_norm1000, raw_to_display
from unidoc_rl.rewards.ground_truth import GroundTruth

PageSizes = Callable[[str], tuple[Size, Size] | None]
"""page id -> (raw size, display size), or None when neither the record nor the page image knows it."""

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)


@dataclass
class CandidateView:
    position: int
    """Image index the model saw (`Image i`)."""
    page_id: str
    rank: int | None
    """1-based rank among the engine's results."""
    score: float | None
    selected: bool
    gold: bool


@dataclass
class FocusView:
    page_id: str
    raw_size: Size
    display_size: Size
    model_boxes: list[Box] = field(default_factory=list)
    """Display frame, as the model wrote them (clamped)."""
    crop_regions: list[Box] = field(default_factory=list)
    """Display frame: the regions actually cropped (grown to the minimum crop side)."""
    gold_boxes: list[Box] = field(default_factory=list)
    """Display frame."""
    crop: tuple[int, int] | None = None
    """(search index, crop index) of the crop this view shows."""
    zoom_size: Size | None = None
    """The zoomed crop's size as recorded."""
    recomputed_size: Size | None = None
    """The size of the crop the viewer recomputed (differs from `zoom_size` only under another pixel budget)."""


@dataclass
class TurnView:
    number: int
    kind: ActionKind
    thinking: str
    action_text: str
    turn: TurnStep
    search: SearchStep | None = None
    search_number: int | None = None
    candidates: list[CandidateView] = field(default_factory=list)
    focus: FocusView | None = None
    focus_missing: str | None = None
    """Why a page that should be shown cannot be (unknown size)."""


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, the rest) of a turn's text, for display only; the action itself comes from the record."""
    thoughts = [match.strip() for match in _THINK.findall(text)]
    return "\n\n".join(thoughts), _THINK.sub("", text).strip()


def crop_regions_raw(crop: CropStep, raw_size: Size) -> list[Box]:
    """The raw-page regions the crop was cut from (records without `boxes_raw`: the boxes the model asked for)."""
    if crop.boxes_raw:
        return [tuple(box) for box in crop.boxes_raw]
    return [from_norm1000(box, raw_size) for box in crop.boxes_norm1000]


def turns_of(record: EpisodeRecord) -> list[TurnStep]:
    if record.turns:
        return record.turns
    return [TurnStep(text="", action=kind) for kind in record.actions]


def build_timeline(record: EpisodeRecord, truth: GroundTruth | None, sizes: PageSizes) -> list[TurnView]:
    gold_ids = set(truth.gold_page_ids) if truth else set()
    views: list[TurnView] = []
    next_search = 0
    current = -1
    focus_search = -1
    used_crops: dict[int, int] = {}

    def focus_view(page_id: str) -> FocusView | str:
        known = sizes(page_id)
        if known is None:
            return f"the size of page {page_id} is unknown (not in the record, no page image)"
        raw, display = known
        gold = [
            raw_to_display(from_norm1000(box, raw), raw, display) for box in (truth.boxes_for(page_id) if truth else ())
        ]
        return FocusView(page_id=page_id, raw_size=raw, display_size=display, gold_boxes=gold)

    def attach(view: TurnView, page_id: str) -> FocusView | None:
        made = focus_view(page_id)
        if isinstance(made, str):
            view.focus_missing = made
            return None
        view.focus = made
        return made

    logged_turns = bool(record.turns)
    for number, turn in enumerate(turns_of(record), start=1):
        thinking, action_text = split_thinking(turn.text)
        view = TurnView(number, turn.action, thinking, action_text, turn)
        views.append(view)
        if logged_turns and turn.observation is None:
            continue
        if turn.action is ActionKind.SEARCH and next_search < len(record.searches):
            current = next_search
            next_search += 1
            step = record.searches[current]
            view.search, view.search_number = step, current + 1
            view.candidates = _candidates(step, gold_ids)
            if step.candidates:
                focus_search = current
        elif turn.action is ActionKind.SELECT and 0 <= current and record.searches[current].selected:
            focus_search = current
            attach(view, record.searches[current].selected)
        elif turn.action is ActionKind.BBOX:
            located = _next_crop(record.searches, focus_search, used_crops)
            if located is not None:
                search_index, crop_index = located
                crop = record.searches[search_index].crops[crop_index]
                made = attach(view, crop.page_id)
                if made is not None:
                    made.model_boxes = [tuple(box) for box in crop.boxes_display]
                    made.crop_regions = [
                        raw_to_display(box, made.raw_size, made.display_size)
                        for box in crop_regions_raw(crop, made.raw_size)
                    ]
                    made.crop = located
                    made.zoom_size = crop.zoom_size
    return views


def _candidates(step: SearchStep, gold_ids: set[str]) -> list[CandidateView]:
    ranks = {page_id: rank for rank, page_id in reversed(list(enumerate(step.retrieved)))}
    result = []
    for position, page_id in enumerate(step.candidates):
        rank = ranks.get(page_id)
        score = step.scores[rank] if rank is not None and rank < len(step.scores) else None
        result.append(
            CandidateView(
                position=position,
                page_id=page_id,
                rank=rank + 1 if rank is not None else None,
                score=score,
                selected=page_id == step.selected,
                gold=page_id in gold_ids,
            )
        )
    return result


def _next_crop(searches: list[SearchStep], focus_search: int, used: dict[int, int]) -> tuple[int, int] | None:
    """The next crop recorded on the focus page's search; else the first crop not yet shown (a defensive fallback)."""
    order = ([focus_search] if focus_search >= 0 else []) + list(range(len(searches)))
    for index in order:
        position = used.get(index, 0)
        if position < len(searches[index].crops):
            used[index] = position + 1
            return index, position
    return None
