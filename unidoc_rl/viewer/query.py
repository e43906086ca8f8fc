"""The episode list's query: filters, sort and page, parsed from URL parameters and applied to summary rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from operator import attrgetter

from unidoc_rl.viewer.records import CORE_COMPONENTS, EpisodeSummary, is_component

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
    """The total reward, a reward component or an evidence metric (their names do not overlap)."""
    if name == "reward":
        return row.reward
    return row.components.get(name, row.evidence.get(name))


_BUILTIN_KEYS: dict[str, Callable[[EpisodeSummary], object]] = {
    "step": attrgetter("step"),
    "reward": attrgetter("reward"),
    "turns": attrgetter("num_turns"),
    "invalid": attrgetter("invalid_actions"),
    "crops": attrgetter("crops"),
    "uid": attrgetter("uid"),
    "line": attrgetter("source", "line"),
}


def sort_key(name: str) -> Callable[[EpisodeSummary], object]:
    """The value a row sorts by: a built-in column, a reward component or an evidence metric."""
    return _BUILTIN_KEYS.get(name) or (lambda row: metric_value(row, name))


def predicates(query: ListQuery) -> list[Callable[[EpisodeSummary], bool]]:
    """One test per active filter (an inactive filter costs nothing per row)."""
    tests: list[Callable[[EpisodeSummary], bool]] = []
    if query.text:
        folded = query.text.casefold()
        tests.append(lambda row: folded in row.question_folded or folded in row.uid.casefold())
    if query.finish:
        tests.append(lambda row: row.finish_reason == query.finish)
    if query.category:
        tests.append(lambda row: query.category in row.categories)
    if query.source is not None:
        tests.append(lambda row: row.source == query.source)
    if query.step_min is not None:
        tests.append(lambda row: row.step is not None and row.step >= query.step_min)
    if query.step_max is not None:
        tests.append(lambda row: row.step is not None and row.step <= query.step_max)
    if query.answered:
        wanted = query.answered == "yes"
        tests.append(lambda row: row.answered == wanted)
    if query.correct:
        wanted = query.correct == "yes"
        tests.append(lambda row: row.correct is wanted)
    if query.min is not None or query.max is not None:
        low = -math.inf if query.min is None else query.min
        high = math.inf if query.max is None else query.max

        def in_range(row: EpisodeSummary) -> bool:
            value = metric_value(row, query.metric)
            return value is not None and low <= value <= high

        tests.append(in_range)
    return tests


@dataclass(frozen=True)
class ListPage:
    rows: list[EpisodeSummary]
    total: int
    """Rows that match the filters, over all pages."""
    page: int
    pages: int


def run_query(rows: Sequence[EpisodeSummary], query: ListQuery) -> ListPage:
    """Filter, sort (rows without the sort value last, ties in log order) and cut out one page.

    `rows` must be in log order (as the index keeps them); Python's sort is stable, also in reverse.
    """
    tests = predicates(query)
    kept = rows
    for test in tests:  # one pass per filter, each over what the previous one kept
        kept = [row for row in kept if test(row)]
    key = sort_key(query.sort)
    ordered = [row for row in kept if key(row) is not None]
    missing = [row for row in kept if key(row) is None] if len(ordered) < len(kept) else []
    ordered.sort(key=key, reverse=query.order == "desc")
    ordered += missing
    pages = max(1, -(-len(ordered) // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return ListPage(ordered[start : start + query.per_page], len(ordered), page, pages)


def order_components(names: Iterable[str]) -> list[str]:
    """Reward components to show as columns: the dense reward's five first, then the others."""
    seen = set(names)
    core = [name for name in CORE_COMPONENTS if name in seen]
    others = sorted(name for name in seen if name not in CORE_COMPONENTS and is_component(name))
    return core + others
