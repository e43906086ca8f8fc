"""Records that cross the search service boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class SearchHit:
    """One retrieved page: its position in the index, its image file as the service sees it, its id and score."""

    idx: int
    image_file: str
    page_id: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchHit:
        missing = [name for name in ("idx", "image_file", "page_id", "score") if name not in data]
        if missing:
            raise ValueError(f"search hit is missing fields {missing}: {data!r}")
        return cls(
            idx=int(data["idx"]),
            image_file=str(data["image_file"]),
            page_id=str(data["page_id"]),
            score=float(data["score"]),
        )
