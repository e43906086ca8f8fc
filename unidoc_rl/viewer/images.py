"""Page images of the search index, thumbnails, and the zoomed crops the model was shown.

Only `{pages_dir}/{page_id}.png` files are ever read: a page id is checked against a strict pattern and the
resolved path must lie inside the pages folder (a symlink pointing out of it is refused). Crops are recomputed
from the raw page with `unidoc_rl.env.vision.crop_and_zoom`, the function the agent uses.
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from unidoc_rl.env.vision import Box, PixelBudget, Size, crop_and_zoom, display_size

PAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\- ]{0,200}$")
THUMB_WIDTH = 220
CACHE_ITEMS = 256


class PageNotFound(LookupError):
    pass


def resolve_pages_dir(index_dir: Path | None) -> Path | None:
    """The folder holding `{page_id}.png`: given a dataset folder (its `pages/`), an index folder (the sibling
    `pages/` that ingestion writes), or the pages folder itself."""
    if index_dir is None:
        return None
    index_dir = index_dir.resolve()
    if (index_dir / "pages").is_dir():
        return index_dir / "pages"
    if (index_dir / "manifest.json").is_file() and (index_dir.parent / "pages").is_dir():
        return index_dir.parent / "pages"
    if index_dir.is_dir() and any(index_dir.glob("*.png")):
        return index_dir
    raise FileNotFoundError(
        f"no page images under {index_dir}: expected DIR/pages/, an index folder beside pages/, or a folder of PNGs"
    )


class _LRU:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)


class PageStore:
    def __init__(self, pages_dir: Path | None, budget: PixelBudget):
        self.pages_dir = pages_dir.resolve() if pages_dir else None
        self.budget = budget
        self._png = _LRU(CACHE_ITEMS)
        self._sizes: dict[str, Size | None] = {}

    def path(self, page_id: str) -> Path:
        if self.pages_dir is None:
            raise PageNotFound("no page images folder was given (--index-dir)")
        if not PAGE_ID.match(page_id) or ".." in page_id:
            raise PageNotFound(f"not a page id: {page_id!r}")
        path = (self.pages_dir / f"{page_id}.png").resolve()
        if not path.is_relative_to(self.pages_dir) or not path.is_file():
            raise PageNotFound(f"no page image for {page_id!r}")
        return path

    def exists(self, page_id: str) -> bool:
        try:
            self.path(page_id)
        except PageNotFound:
            return False
        return True

    def open(self, page_id: str) -> Image.Image:
        with Image.open(self.path(page_id)) as image:
            image.load()
            return image

    def raw_size(self, page_id: str) -> Size | None:
        if page_id not in self._sizes:
            try:
                with Image.open(self.path(page_id)) as image:
                    self._sizes[page_id] = image.size
            except (PageNotFound, OSError):
                self._sizes[page_id] = None
        return self._sizes[page_id]

    def sizes(self, page_id: str, recorded: dict | None) -> tuple[Size, Size] | None:
        """(raw, display) size: from the record when it has them, else from the image and the pixel budget."""
        if recorded and recorded.get("raw") and recorded.get("display"):
            return tuple(recorded["raw"]), tuple(recorded["display"])
        raw = tuple(recorded["raw"]) if recorded and recorded.get("raw") else self.raw_size(page_id)
        if raw is None:
            return None
        return raw, display_size(raw, self.budget)

    def page_png(self, page_id: str) -> bytes:
        return self.path(page_id).read_bytes()

    def thumbnail_png(self, page_id: str, width: int = THUMB_WIDTH) -> bytes:
        key = ("thumb", page_id, width)
        cached = self._png.get(key)
        if cached is None:
            image = self.open(page_id).convert("RGB")
            height = max(1, round(image.height * width / image.width))
            cached = _png_bytes(image.resize((width, height), Image.Resampling.LANCZOS))
            self._png.put(key, cached)
        return cached

    def crop_png(self, page_id: str, raw_boxes: list[Box], zoom: Size | None) -> tuple[bytes, Size]:
        """The zoomed crop as the agent made it, and its size (a mismatch with `zoom` means another budget)."""
        key = ("crop", page_id, tuple(tuple(box) for box in raw_boxes))
        cached = self._png.get(key)
        if cached is None:
            image = crop_and_zoom(self.open(page_id), raw_boxes, self.budget)
            cached = (_png_bytes(image), image.size)
            self._png.put(key, cached)
        return cached


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
