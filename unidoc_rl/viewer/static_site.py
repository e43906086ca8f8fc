"""Export the viewer as static HTML: a folder that opens from disk or any file server, no viewer process needed.

Layout: `index.html`, `index-N.html` (the episode list in log order, paginated), `run.html`,
`episodes/{log}-{line}.html`, and the images those pages show (`pages/`, `thumbs/`, `crops/`), plus `static/`.
The list has no filters (they need the server). The site is built in a staging folder and renamed into place;
an existing export (recognised by its marker file) is replaced, any other existing folder is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

from unidoc_rl.common.atomic import atomic_directory
from unidoc_rl.viewer import render
from unidoc_rl.viewer.app import ASSETS, Viewer
from unidoc_rl.viewer.links import StaticLinks
from unidoc_rl.viewer.query import ListQuery, run_query
from unidoc_rl.viewer.run_data import read_metrics, read_summaries

MARKER = ".unidoc-viewer-site"
PER_PAGE = 100


class ExportError(RuntimeError):
    pass


def export_site(viewer: Viewer, out: Path, max_episodes: int | None = None) -> int:
    """Write the site to `out`; returns the number of episode pages written."""
    out = Path(out)
    if out.exists() and not (out / MARKER).exists():
        if not out.is_dir() or any(out.iterdir()):
            raise ExportError(f"{out} exists and is not a viewer export; choose an empty or new folder")
    staging_target = out.with_name(out.name + ".building")
    if staging_target.exists():
        shutil.rmtree(staging_target)
    written = 0

    def build(root: Path) -> None:
        nonlocal written
        written = _build(viewer, root, max_episodes)

    atomic_directory(staging_target, build)
    if out.exists():
        retired = out.with_name(out.name + ".old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(out, retired)
        os.replace(staging_target, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging_target, out)
    return written


def _build(viewer: Viewer, root: Path, max_episodes: int | None) -> int:
    (root / MARKER).write_text("exported by python -m unidoc_rl.viewer --out\n")
    for folder in ("episodes", "pages", "thumbs", "crops", "static"):
        (root / folder).mkdir()
    for name in ASSETS:
        (root / "static" / name).write_bytes(viewer.asset(name))
    index = viewer.index
    rows = index.rows if max_episodes is None else index.rows[:max_episodes]
    links, deep_links = StaticLinks(0), StaticLinks(1)
    query = ListQuery(sort="line", per_page=PER_PAGE)
    first = run_query(rows, query)
    for number in range(1, first.pages + 1):
        page_query = ListQuery(sort="line", per_page=PER_PAGE, page=number)
        html = render.episode_list(index, rows, run_query(rows, page_query), page_query, links, viewer.run_name)
        name = "index.html" if number == 1 else f"index-{number}.html"
        (root / name).write_text(html, encoding="utf-8")
    metrics = read_metrics(viewer.run_dir / "metrics.jsonl")
    run_html = render.run_page(metrics, read_summaries(viewer.run_dir), rows, links, viewer.run_name)
    (root / "run.html").write_text(run_html, encoding="utf-8")

    pages, thumbs, crops = set(), set(), set()
    for row in tqdm(rows, desc="episode pages", unit="ep", disable=len(rows) < 200):
        html = viewer.episode_html(row.source, row.line, deep_links)
        (root / "episodes" / f"{row.source}-{row.line}.html").write_text(html, encoding="utf-8")
        try:
            timeline = viewer.timeline(row.source, row.line)
        except (LookupError, ValueError):  # the page above already says why this line cannot be drawn
            continue
        for view in timeline:
            for candidate in view.candidates:
                thumbs.add(candidate.page_id)
                pages.add(candidate.page_id)
            if view.focus is not None:
                pages.add(view.focus.page_id)
                if view.focus.crop is not None:
                    crops.add((row.source, row.line, *view.focus.crop))
    _write_images(viewer, root, pages, thumbs, crops)
    return len(rows)


def _write_images(viewer: Viewer, root: Path, pages: set, thumbs: set, crops: set) -> None:
    store = viewer.pages
    for page_id in sorted(pages):
        if store.exists(page_id):
            shutil.copyfile(store.path(page_id), root / "pages" / f"{page_id}.png")
    for page_id in sorted(thumbs):
        if store.exists(page_id):
            (root / "thumbs" / f"{page_id}.png").write_bytes(store.thumbnail_png(page_id))
    for source, line, search, crop in sorted(crops):
        try:
            png = viewer.crop_png(source, line, search, crop)
        except LookupError:
            continue
        (root / "crops" / f"{source}-{line}-{search}-{crop}.png").write_bytes(png)
