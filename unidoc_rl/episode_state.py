"""Episode state: what the agent has seen and chosen, the budgets left, and the episode record.

Pure bookkeeping, no I/O: the agent loop fetches search results and images and hands them in here. Every
decision about what an action means in context (which page an index names, where a box lands, whether a budget
is spent) is made here, and each one is written to the `EpisodeRecord` the rewards read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from unidoc_rl.actions import InvalidAction, InvalidReason
from unidoc_rl.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.vision import (
    BoxError,
    CoordinateConvention,
    MappedBox,
    PixelBudget,
    model_box_to_raw,
    to_display,
)


@dataclass(frozen=True)
class EpisodeLimits:
    max_turns: int = 10
    """Assistant turns per episode."""
    max_images: int = 12
    """Images in the context (candidate pages, selected pages, crops)."""
    n_candidates: int = 3
    max_boxes: int = 4
    min_crop_side: float = 28.0
    """Shortest crop side, in display pixels."""

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_images", "n_candidates", "max_boxes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_crop_side < 0:
            raise ValueError(f"min_crop_side must be non-negative, got {self.min_crop_side}")


@dataclass
class PageView:
    """A page image: the raw page on disk and the version the model is shown."""

    page_id: str
    raw: Image.Image
    display: Image.Image

    @classmethod
    def from_raw(cls, page_id: str, raw: Image.Image, budget: PixelBudget) -> PageView:
        return cls(page_id=page_id, raw=raw, display=to_display(raw, budget))

    @property
    def raw_size(self) -> tuple[int, int]:
        return self.raw.size

    @property
    def display_size(self) -> tuple[int, int]:
        return self.display.size


@dataclass
class EpisodeState:
    limits: EpisodeLimits
    budget: PixelBudget
    convention: CoordinateConvention = CoordinateConvention.ABSOLUTE
    record: EpisodeRecord = field(default_factory=EpisodeRecord)
    candidates: list[PageView] = field(default_factory=list)
    """The latest candidate list, as shown (Image 0..n-1)."""
    focus: PageView | None = None
    focus_search: int = -1
    """Index of the search step the focus page came from (crops are recorded there)."""
    images_shown: int = 0
    turns: int = 0

    # --- budgets -------------------------------------------------------------------------------------------

    @property
    def turns_left(self) -> int:
        return self.limits.max_turns - self.turns

    @property
    def images_left(self) -> int:
        return self.limits.max_images - self.images_shown

    @property
    def finished(self) -> bool:
        return self.record.finish_reason is not None

    def finish(self, reason: FinishReason) -> None:
        if self.record.finish_reason is None:
            self.record.finish_reason = reason
        self.record.num_turns = self.turns

    # --- turns ---------------------------------------------------------------------------------------------

    def begin_turn(self) -> None:
        self.turns += 1
        self.record.num_turns = self.turns

    def record_invalid(self, invalid: InvalidAction) -> None:
        self.record.actions.append(ActionKind.INVALID)
        self.record.invalid_reasons.append(invalid.reason.value)

    def record_answer(self, text: str) -> None:
        self.record.actions.append(ActionKind.ANSWER)
        self.record.answer = text

    # --- search --------------------------------------------------------------------------------------------

    def new_page_ids(self, retrieved: list[str]) -> list[str]:
        """Retrieved ids not shown before, without repeats, in rank order, at most `n_candidates`."""
        shown = set(self.record.shown_page_ids)
        fresh: list[str] = []
        for page_id in retrieved:
            if page_id not in shown and page_id not in fresh:
                fresh.append(page_id)
        return fresh[: self.limits.n_candidates]

    def record_search(self, query: str, retrieved: list[str], pages: list[PageView]) -> None:
        """A search whose new pages are shown as Image 0..n-1; candidate 0 becomes the focus page."""
        self.record.actions.append(ActionKind.SEARCH)
        self.record.searches.append(
            SearchStep(query=query, retrieved=list(retrieved), candidates=[page.page_id for page in pages])
        )
        self.candidates = list(pages)
        if pages:
            self.focus = pages[0]
            self.focus_search = len(self.record.searches) - 1
        for page in pages:
            self._show(page.page_id)

    # --- select --------------------------------------------------------------------------------------------

    def resolve_select(self, index: int) -> PageView | InvalidAction:
        if not self.candidates:
            return InvalidAction(InvalidReason.NO_CANDIDATES, "there is no candidate list to select from; search first")
        if not 0 <= index < len(self.candidates):
            return InvalidAction(
                InvalidReason.INDEX_OUT_OF_RANGE,
                f"index {index} is not in 0..{len(self.candidates) - 1}",
            )
        return self.candidates[index]

    def record_select(self, page: PageView) -> None:
        self.record.actions.append(ActionKind.SELECT)
        self.record.searches[-1].selected = page.page_id
        self.focus = page
        self.focus_search = len(self.record.searches) - 1
        self._show(page.page_id)

    # --- crop ----------------------------------------------------------------------------------------------

    def resolve_crop(self, boxes: tuple[tuple[float, float, float, float], ...]) -> list[MappedBox] | InvalidAction:
        if self.focus is None:
            return InvalidAction(InvalidReason.NO_FOCUS_PAGE, "no page to crop; search and select a page first")
        mapped = []
        for box in boxes:
            try:
                mapped.append(
                    model_box_to_raw(
                        box,
                        self.convention,
                        display=self.focus.display_size,
                        raw=self.focus.raw_size,
                        min_crop_side=self.limits.min_crop_side,
                    )
                )
            except BoxError as error:
                return InvalidAction(InvalidReason.DEGENERATE_BOX, str(error))
        return mapped

    def record_crop(self, mapped: list[MappedBox]) -> None:
        self.record.actions.append(ActionKind.BBOX)
        self.record.searches[self.focus_search].crops.append(
            CropStep(
                page_id=self.focus.page_id,
                boxes_display=[box.display for box in mapped],
                boxes_norm1000=[box.norm1000 for box in mapped],
            )
        )
        self.images_shown += 1

    # --- internals -----------------------------------------------------------------------------------------

    def _show(self, page_id: str) -> None:
        self.images_shown += 1
        if page_id not in self.record.shown_page_ids:
            self.record.shown_page_ids.append(page_id)
