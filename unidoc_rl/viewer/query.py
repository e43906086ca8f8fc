"""The episode list's query: filters, sort and page, parsed from URL parameters and applied to summary rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace

from unidoc_rl.viewer.records import CORE_COMPONENTS, JUDGE_FLAG_PREFIX, TOTAL_KEYS, EpisodeSummary

BUILTIN_SORTS = ("step", "reward", "turns", "invalid", "crops", "uid", "line")
CHOICES = ("", "yes", "no")
MAX_PER_PAGE = 500


class QueryError(ValueError):
    """A URL parameter with a value the list cannot use; the message names it."""


@dataclass(frozen=True)
class ListQuery:
    text: str = ""
    """Case-insensitive substring of the question (or the uid)."""
    finish: str = ""
    category: str = ""
    source: int | None = None
    step_min: int | None = None
    step_max: int | None = None
    answered: str = ""
    correct: str = ""
    metric: str = "reward"
    """The value `min`/`max` bound: the reward or one component."""
    min: float | None = None
    max: float | None = None
    sort: str = "step"
    order: str = "asc"
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> ListQuery:
        values = {}
        for spec in fields(cls):
            raw = params.get(spec.name)
            if not raw or raw[-1].strip() == "":
                continue
            text = raw[-1].strip()
            kind = spec.type
            try:
                if "int" in kind:
                    values[spec.name] = int(text)
                elif "float" in kind:
                    values[spec.name] = float(text)
                else:
                    values[spec.name] = text
            except ValueError:
                raise QueryError(f"{spec.name}={text!r} is not a number") from None
        query = cls(**values)
        query.check()
        return query

    def check(self) -> None:
        for name in ("answered", "correct"):
            if getattr(self, name) not in CHOICES:
                raise QueryError(f"{name} must be yes, no or empty, got {getattr(self, name)!r}")
        if self.order not in ("asc", "desc"):
            raise QueryError(f"order must be asc or desc, got {self.order!r}")
        if self.page < 1:
            raise QueryError(f"page must be at least 1, got {self.page}")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise QueryError(f"per_page must be in 1..{MAX_PER_PAGE}, got {self.per_page}")

    def to_params(self, **changes) -> dict[str, str]:
        """Non-default parameters (for links), with `changes` applied."""
        query = replace(self, **changes)
        default = ListQuery()
        return {
            name: str(value)
            for name, value in asdict(query).items()
            if value != getattr(default, name) and value is not None
        }


def metric_value(row: EpisodeSummary, name: str) -> float | None:
    if name == "reward":
        return row.reward
    return row.components.get(name)


def sort_key_value(row: EpisodeSummary, name: str):
    match name:
        case "step":
            return row.step
        case "reward":
            return row.reward
        case "turns":
            return row.num_turns
        case "invalid":
            return row.invalid_actions
        case "crops":
            return row.crops
        case "uid":
            return row.uid
        case "line":
            return (row.source, row.line)
    return row.components.get(name)


def matches(row: EpisodeSummary, query: ListQuery, folded_text: str) -> bool:
    if folded_text and folded_text not in row.question_folded and folded_text not in row.uid.casefold():
        return False
    if query.finish and row.finish_reason != query.finish:
        return False
    if query.category and query.category not in row.categories:
        return False
    if query.source is not None and row.source != query.source:
        return False
    if query.step_min is not None and (row.step is None or row.step < query.step_min):
        return False
    if query.step_max is not None and (row.step is None or row.step > query.step_max):
        return False
    if query.answered and row.answered != (query.answered == "yes"):
        return False
    if query.correct and row.correct is not (query.correct == "yes"):
        return False
    if query.min is not None or query.max is not None:
        value = metric_value(row, query.metric)
        if value is None:
            return False
        if query.min is not None and value < query.min:
            return False
        if query.max is not None and value > query.max:
            return False
    return True


@dataclass(frozen=True)
class ListPage:
    rows: list[EpisodeSummary]
    total: int
    """Rows that match the filters, over all pages."""
    page: int
    pages: int


def run_query(rows: Sequence[EpisodeSummary], query: ListQuery) -> ListPage:
    """Filter, sort (rows without the sort value last, ties in log order) and cut out one page."""
    folded = query.text.casefold()
    kept = [row for row in rows if matches(row, query, folded)]
    present = [row for row in kept if sort_key_value(row, query.sort) is not None]
    missing = [row for row in kept if sort_key_value(row, query.sort) is None]
    present.sort(key=lambda row: (row.source, row.line))
    present.sort(key=lambda row: sort_key_value(row, query.sort), reverse=query.order == "desc")
    ordered = present + missing
    pages = max(1, -(-len(ordered) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return ListPage(ordered[start : start + query.per_page], len(ordered), page, pages)


def sort_names(rows: Sequence[EpisodeSummary]) -> list[str]:
    """Built-in sorts, then every component any row has."""
    return list(BUILTIN_SORTS) + component_names(rows)


def component_names(rows: Sequence[EpisodeSummary]) -> list[str]:
    seen = {name for row in rows for name in row.components}
    core = [name for name in CORE_COMPONENTS if name in seen]
    others = sorted(
        name
        for name in seen
        if name not in CORE_COMPONENTS and name not in TOTAL_KEYS and not name.startswith(JUDGE_FLAG_PREFIX)
    )
    return core + others
