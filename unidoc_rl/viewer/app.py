"""The viewer's content, independent of how it is delivered: pages as HTML, images as PNG bytes.

The HTTP server and the static export both ask a `Viewer` for their content; neither reads the run on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from unidoc_rl.env.vision import PixelBudget
from unidoc_rl.viewer import render
from unidoc_rl.viewer.images import PageNotFound, PageStore
from unidoc_rl.viewer.index import EpisodeIndex
from unidoc_rl.viewer.query import ListQuery, run_query
from unidoc_rl.viewer.records import RecordError, SampleInfo
from unidoc_rl.viewer.run_data import read_metrics, read_summaries
from unidoc_rl.viewer.timeline import TurnView, build_timeline, crop_regions_raw

ASSETS = ("viewer.css",)


class NotFound(LookupError):
    """Nothing of the run or the index answers to this address."""


@dataclass
class ViewerSettings:
    run_dir: Path
    pages_dir: Path | None = None
    budget: PixelBudget = PixelBudget()
    """The pixel budget the agent displayed pages and zoomed crops at (its `min_pixels`/`max_pixels`)."""
    samples: SampleInfo | None = None


class Viewer:
    def __init__(self, settings: ViewerSettings):
        if not settings.run_dir.is_dir():
            raise FileNotFoundError(f"run folder {settings.run_dir} does not exist")
        self.settings = settings
        self.run_dir = settings.run_dir.resolve()
        self.run_name = self.run_dir.name
        self.index = EpisodeIndex(self.run_dir, settings.samples)
        self.pages = PageStore(settings.pages_dir, settings.budget)

    # --- pages ------------------------------------------------------------------------------------------------

    def episodes_html(self, query: ListQuery, links) -> str:
        self.index.refresh()
        rows = self.index.rows
        return render.episode_list(self.index, rows, run_query(rows, query), query, links, self.run_name)

    def _entry_and_timeline(self, source: int, line: int):
        try:
            entry = self.index.entry(source, line)
        except KeyError as error:
            raise NotFound(str(error)) from error
        sizes = entry.record.page_sizes
        timeline = build_timeline(
            entry.record, entry.ground_truth, lambda page_id: self.pages.sizes(page_id, sizes.get(page_id))
        )
        for view in timeline:
            focus = view.focus
            if focus is not None and focus.crop is not None and self.pages.exists(focus.page_id):
                crop = entry.record.searches[focus.crop[0]].crops[focus.crop[1]]
                _, focus.recomputed_size = self.pages.crop_png(
                    focus.page_id, crop_regions_raw(crop, focus.raw_size), crop.zoom_size
                )
        return entry, timeline

    def episode_html(self, source: int, line: int, links) -> str:
        try:
            entry, timeline = self._entry_and_timeline(source, line)
        except RecordError as error:
            return render.error_page(422, f"this line cannot be shown: {error}", links, self.run_name)
        return render.episode_page(entry, timeline, source, line, self.index, self.pages, links, self.run_name)

    def timeline(self, source: int, line: int) -> list[TurnView]:
        return self._entry_and_timeline(source, line)[1]

    def run_html(self, links) -> str:
        self.index.refresh()
        metrics = read_metrics(self.run_dir / "metrics.jsonl")
        return render.run_page(metrics, read_summaries(self.run_dir), self.index.rows, links, self.run_name)

    # --- images -----------------------------------------------------------------------------------------------

    def page_png(self, page_id: str) -> bytes:
        try:
            return self.pages.page_png(page_id)
        except PageNotFound as error:
            raise NotFound(str(error)) from error

    def thumbnail_png(self, page_id: str) -> bytes:
        try:
            return self.pages.thumbnail_png(page_id)
        except PageNotFound as error:
            raise NotFound(str(error)) from error

    def crop_png(self, source: int, line: int, search: int, crop: int) -> bytes:
        try:
            record = self.index.entry(source, line).record
            step = record.searches[search]
            crop_step = step.crops[crop]
        except (KeyError, IndexError, RecordError) as error:
            raise NotFound(f"no crop {search}/{crop} in that episode") from error
        sizes = self.pages.sizes(crop_step.page_id, record.page_sizes.get(crop_step.page_id))
        if sizes is None:
            raise NotFound(f"no page image for {crop_step.page_id!r}")
        try:
            png, _ = self.pages.crop_png(crop_step.page_id, crop_regions_raw(crop_step, sizes[0]), crop_step.zoom_size)
        except PageNotFound as error:
            raise NotFound(str(error)) from error
        return png

    @staticmethod
    def asset(name: str) -> bytes:
        if name not in ASSETS:
            raise NotFound(f"no asset {name!r}")
        return resources.files("unidoc_rl.viewer").joinpath("static", name).read_bytes()
