"""Episode state: what the agent has seen and chosen, the budgets left, and the episode record.

Pure bookkeeping, no I/O: the agent loop fetches search results and images and hands them in here. Every
decision about what an action means in context (which page an index names, where a box lands, whether a budget
is spent) is made here, and each one is written to the `EpisodeRecord` the rewards read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from unidoc_rl.env.actions import InvalidAction, InvalidReason
from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep, TurnStep
from unidoc_rl.env.vision import (
    BoxError,
    BoxProblem,
    CoordinateConvention,
    MappedBox,
    PixelBudget,
    model_box_to_raw,
    to_display,
)

_BOX_REASONS = {
    BoxProblem.DEGENERATE: InvalidReason.DEGENERATE_BOX,
    BoxProblem.OUTSIDE: InvalidReason.BOX_OUTSIDE_PAGE,
    BoxProblem.NON_FINITE: InvalidReason.NON_FINITE_BOX,
}


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
    candidates_search: int = -1
    """Index of the search step the candidate list came from (a failed search leaves it unchanged)."""
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

    def record_turn(self, text: str, kind: ActionKind, forced: bool = False) -> None:
        """The turn the model just wrote (its effects are recorded by the record_* calls that follow)."""
        self.record.turns.append(TurnStep(text=text, action=kind, forced=forced))

    def record_observation(self, text: str) -> None:
        """The text of the observation shown after the latest turn."""
        if self.record.turns:
            self.record.turns[-1].observation = text

    def record_action(self, kind: ActionKind) -> None:
        """An action whose observation the model never saw: its kind counts, its effects do not."""
        self.record.actions.append(kind)

    def record_invalid(self, invalid: InvalidAction) -> None:
        self.record.actions.append(ActionKind.INVALID)
        self.record.invalid_reasons.append(invalid.reason.value)
        if self.record.turns:
            turn = self.record.turns[-1]
            turn.action = ActionKind.INVALID
            turn.detail = f"{invalid.reason.value}: {invalid.detail}"

    def record_answer(self, text: str, forced: bool = False) -> None:
        self.record.actions.append(ActionKind.ANSWER)
        self.record.answer = text
        self.record.forced_answer = forced

    # --- search --------------------------------------------------------------------------------------------

    def new_page_ids(self, retrieved: list[str]) -> list[str]:
        """Retrieved ids not shown before, without repeats, in rank order, at most `n_candidates`."""
        shown = set(self.record.shown_page_ids)
        fresh: list[str] = []
        for page_id in retrieved:
            if page_id not in shown and page_id not in fresh:
                fresh.append(page_id)
        return fresh[: self.limits.n_candidates]

    def record_search(
        self, query: str, retrieved: list[str], pages: list[PageView], scores: list[float] | None = None
    ) -> None:
        """A search whose new pages are shown as Image 0..n-1; candidate 0 becomes the focus page."""
        self.record.actions.append(ActionKind.SEARCH)
        self.record.searches.append(
            SearchStep(
                query=query,
                retrieved=list(retrieved),
                candidates=[page.page_id for page in pages],
                scores=list(scores or []),
            )
        )
        self.candidates = list(pages)
        self.candidates_search = len(self.record.searches) - 1
        if pages:
            self.focus = pages[0]
            self.focus_search = self.candidates_search
        for page in pages:
            self._show(page)

    def record_failed_search(self, query: str, error: str) -> None:
        """A search the service could not answer: no candidates; the previous candidate list and focus stay."""
        self.record.actions.append(ActionKind.SEARCH)
        self.record.searches.append(SearchStep(query=query, retrieved=[], candidates=[], failed=True, error=error))

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
        self.record.searches[self.candidates_search].selected = page.page_id
        self.focus = page
        self.focus_search = self.candidates_search
        self._show(page)

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
                return InvalidAction(_BOX_REASONS[error.problem], str(error))
        return mapped

    def record_crop(self, mapped: list[MappedBox], zoom: Image.Image) -> None:
        self.record.actions.append(ActionKind.BBOX)
        self.record.searches[self.focus_search].crops.append(
            CropStep(
                page_id=self.focus.page_id,
                boxes_display=[box.display for box in mapped],
                boxes_norm1000=[box.norm1000 for box in mapped],
                boxes_raw=[box.raw for box in mapped],
                zoom_size=zoom.size,
            )
        )
        self.images_shown += 1

    # --- internals -----------------------------------------------------------------------------------------

    def _show(self, page: PageView) -> None:
        self.images_shown += 1
        if page.page_id not in self.record.shown_page_ids:
            self.record.shown_page_ids.append(page.page_id)
            self.record.page_sizes[page.page_id] = {"raw": page.raw_size, "display": page.display_size}
