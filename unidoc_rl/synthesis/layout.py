"""Layout blocks of a page: from a MinerU server or from the PDF's own text layer, and drawn numbered on the page.

Blocks are rectangles in the 0-1000 frame of the page (x1, y1, x2, y2, origin top left), the frame gold boxes use.
The teacher sees the page with the blocks drawn and numbered, and picks the ones that hold the evidence.

MinerU (`mineru-api`, MinerU 2.x) is asked with one request per page:

    POST {layout_parser_url}/file_parse   (multipart/form-data)
      files=<page>.png   backend=<--layout-backend>   return_middle_json=true   return_md=false
      [server_url=<--layout-server-url>, for MinerU's vlm-*-client backends]

and the blocks are read from `results[<file stem>].middle_json.pdf_info[0].para_blocks[*].bbox`, in the units of
that page's `page_size`.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont

from unidoc_rl.env.vision import Box
from unidoc_rl.synthesis.services import Retryable, RetryPolicy, StageError, StageStats, with_retries


@dataclass(frozen=True)
class LayoutBlock:
    index: int
    box: Box
    """0-1000 frame of the page."""
    kind: str = "text"


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def group_lines(rects: list[Box], line_gap: float = 1.0) -> list[Box]:
    """Group text rectangles into blocks: pieces of one line first, then lines closer than `line_gap` line heights
    that overlap horizontally. Input and output in one frame with y growing downwards; output in reading order."""
    lines: list[Box] = []
    for rect in sorted(rects, key=lambda r: (round(r[1]), r[0])):
        height = rect[3] - rect[1]
        for i, line in enumerate(lines):
            same_row = min(line[3], rect[3]) - max(line[1], rect[1]) > 0.5 * min(height, line[3] - line[1])
            if same_row and rect[0] - line[2] < 2 * height:
                lines[i] = _union(line, rect)
                break
        else:
            lines.append(rect)
    blocks: list[Box] = []
    for line in sorted(lines, key=lambda r: (r[1], r[0])):
        height = line[3] - line[1]
        for i, block in enumerate(blocks):
            overlaps = min(block[2], line[2]) > max(block[0], line[0])
            if overlaps and 0 <= line[1] - block[3] < line_gap * height:
                blocks[i] = _union(block, line)
                break
        else:
            blocks.append(line)
    return sorted(blocks, key=lambda r: (r[1], r[0]))


_PDFIUM_LOCK = threading.Lock()
"""PDFium is not thread-safe: concurrent calls from several threads crash the process."""


def pdf_text_blocks(pdf_path: Path, page_number: int) -> list[LayoutBlock]:
    """Blocks from the text layer of one page (1-indexed) of a PDF, with pypdfium2 (one thread at a time)."""
    with _PDFIUM_LOCK:
        return _pdf_text_blocks(pdf_path, page_number)


def _pdf_text_blocks(pdf_path: Path, page_number: int) -> list[LayoutBlock]:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf_path))
    try:
        if not 1 <= page_number <= len(document):
            raise ValueError(f"{pdf_path.name} has {len(document)} pages, page {page_number} requested")
        page = document[page_number - 1]
        width, height = page.get_size()
        text_page = page.get_textpage()
        rects = []
        for i in range(text_page.count_rects()):
            left, bottom, right, top = text_page.get_rect(i)
            rects.append(
                (
                    left / width * 1000,
                    (height - top) / height * 1000,
                    right / width * 1000,
                    (height - bottom) / height * 1000,
                )
            )
    finally:
        document.close()
    return [LayoutBlock(index, box) for index, box in enumerate(group_lines(rects))]


class MinerULayoutParser:
    """Layout blocks from a MinerU `mineru-api` server (see the module docstring for the request)."""

    def __init__(self, url: str, policy: RetryPolicy, backend: str = "pipeline", server_url: str | None = None):
        self.url = url.rstrip("/")
        self.policy = policy
        self.backend = backend
        self.server_url = server_url
        self._http = httpx.AsyncClient(timeout=policy.timeout_s)

    async def blocks(self, page_id: str, image: Image.Image, stats: StageStats) -> list[LayoutBlock]:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        payload = buffer.getvalue()
        form = {"backend": self.backend, "return_middle_json": "true", "return_md": "false"}
        if self.server_url:
            form["server_url"] = self.server_url

        async def attempt():
            try:
                response = await self._http.post(
                    f"{self.url}/file_parse", data=form, files={"files": (f"{page_id}.png", payload, "image/png")}
                )
            except httpx.TransportError as error:
                raise Retryable(f"{type(error).__name__}: {error}") from None
            if response.status_code >= 500:
                raise Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise StageError("layout", f"HTTP {response.status_code}: {response.text[:300]}")
            try:
                return parse_mineru_blocks(response.json(), page_id)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                raise StageError("layout", f"unreadable MinerU answer: {error}") from None

        return await with_retries(self.policy, stats, "layout", attempt)

    async def aclose(self) -> None:
        await self._http.aclose()


def parse_mineru_blocks(answer: dict[str, Any], stem: str) -> list[LayoutBlock]:
    results = answer["results"]
    result = results.get(stem) or next(iter(results.values()))
    middle = result["middle_json"]
    if isinstance(middle, str):
        middle = json.loads(middle)
    page = middle["pdf_info"][0]
    width, height = page["page_size"]
    raw_blocks = page.get("para_blocks") or page.get("preproc_blocks") or []
    blocks = []
    for block in raw_blocks:
        x1, y1, x2, y2 = (float(v) for v in block["bbox"])
        box = (x1 / width * 1000, y1 / height * 1000, x2 / width * 1000, y2 / height * 1000)
        if box[2] > box[0] and box[3] > box[1]:
            blocks.append(LayoutBlock(len(blocks), box, str(block.get("type", "text"))))
    return blocks


def draw_blocks(image: Image.Image, blocks: list[LayoutBlock]) -> Image.Image:
    """The page with each block outlined in red and labelled with its number at its top-left corner."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, canvas.height // 60))
    for block in blocks:
        x1, y1, x2, y2 = (
            block.box[0] * canvas.width / 1000,
            block.box[1] * canvas.height / 1000,
            block.box[2] * canvas.width / 1000,
            block.box[3] * canvas.height / 1000,
        )
        draw.rectangle((x1, y1, x2, y2), outline=(220, 0, 0), width=2)
        label = str(block.index)
        left, top, right, bottom = draw.textbbox((x1, y1), label, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(220, 0, 0))
        draw.text((x1, y1), label, fill=(255, 255, 255), font=font)
    return canvas


def union_box(blocks: list[LayoutBlock]) -> Box:
    box = blocks[0].box
    for block in blocks[1:]:
        box = _union(box, block.box)
    return box
