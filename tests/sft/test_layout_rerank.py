"""Balanced reranking cancels position bias; layout blocks from the PDF text layer and from a MinerU server."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from fastapi import FastAPI, Request
from PIL import Image

from unidoc_rl.standins.serving import ThreadedUvicorn
from unidoc_rl.synthesis.layout import LayoutBlock, MinerULayoutParser, draw_blocks, group_lines, pdf_text_blocks
from unidoc_rl.synthesis.rerank import balanced_orders, tally, winner
from unidoc_rl.synthesis.services import RetryPolicy, StageStats


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_every_candidate_is_shown_at_every_position_once(n):
    orders = balanced_orders(n)
    assert len(orders) == n and all(sorted(order) == list(range(n)) for order in orders)
    for position in range(n):
        assert sorted(order[position] for order in orders) == list(range(n))


def test_position_bias_cancels_and_preference_wins():
    orders = balanced_orders(3)
    always_first = [0 for _ in orders]  # a teacher that only ever picks the first image shown
    assert tally(orders, always_first) == [1, 1, 1] and winner(tally(orders, always_first)) == 0
    # Prefers candidate 2 except when 2 is last, where it falls back to its favourite position, the first.
    picks = [order.index(2) if order.index(2) < 2 else 0 for order in orders]
    votes = tally(orders, picks)
    assert winner(votes) == 2 and votes[2] == 2
    with pytest.raises(ValueError):
        tally(orders, [0, 0, 3])


def test_group_lines_joins_words_and_lines_into_blocks():
    words = [(10, 10, 40, 20), (45, 10, 90, 20), (10, 24, 80, 34), (10, 80, 60, 90)]
    assert group_lines(words) == [(10, 10, 90, 34), (10, 80, 60, 90)]


def test_pdf_text_blocks_of_a_table_page(repo_root):
    blocks = pdf_text_blocks(repo_root / "examples/corpus/northwind_annual_report_2023.pdf", 2)
    assert [block.index for block in blocks] == list(range(len(blocks)))
    assert all(0 <= v <= 1000 for block in blocks for v in block.box)
    asia_row = (95, 189, 905, 215)  # the gold box of the Asia row
    inside = [b for b in blocks if b.box[1] >= asia_row[1] and b.box[3] <= asia_row[3]]
    assert len(inside) == 4  # the row's four cells: columns far apart are separate blocks
    assert min(b.box[0] for b in inside) < 200 and max(b.box[2] for b in inside) > 800
    with pytest.raises(ValueError, match="has 3 pages"):
        pdf_text_blocks(repo_root / "examples/corpus/northwind_annual_report_2023.pdf", 9)


def test_draw_blocks_outlines_each_block():
    page = Image.new("RGB", (200, 100), "white")
    drawn = draw_blocks(page, [LayoutBlock(0, (100.0, 200.0, 500.0, 800.0))])
    pixels = np.asarray(drawn)
    assert tuple(pixels[50, 20]) == (220, 0, 0)  # left edge of the outline at x = 0.1 * 200
    assert tuple(pixels[50, 60]) == (255, 255, 255)  # inside stays clear
    assert np.asarray(page).min() == 255  # the page itself is untouched


async def test_mineru_request_and_answer():
    seen = []
    api = FastAPI()

    @api.post("/file_parse")
    async def file_parse(request: Request):
        seen.append((request.headers["content-type"].split(";")[0], await request.body()))
        middle = {
            "pdf_info": [
                {
                    "page_idx": 0,
                    "page_size": [200, 400],
                    "para_blocks": [
                        {"type": "table", "bbox": [20, 40, 180, 120]},
                        {"type": "text", "bbox": [5, 5, 5, 9]},
                    ],
                }
            ]
        }
        return {"results": {"doc_3": {"middle_json": json.dumps(middle)}}}

    with ThreadedUvicorn(api) as server:
        parser = MinerULayoutParser(server.url, RetryPolicy(timeout_s=5, backoff_s=0.01), backend="pipeline")
        stats = StageStats()
        blocks = await parser.blocks("doc_3", Image.new("RGB", (50, 100), "white"), stats)
        await parser.aclose()
    assert blocks == [LayoutBlock(0, (100.0, 100.0, 900.0, 300.0), "table")]  # the empty block is dropped
    ((content_type, body),) = seen
    assert content_type == "multipart/form-data" and stats.calls == 1
    for field, value in (("backend", b"pipeline"), ("return_middle_json", b"true"), ("return_md", b"false")):
        assert f'name="{field}"'.encode() + b"\r\n\r\n" + value in body
    assert b'name="files"; filename="doc_3.png"' in body and b"\x89PNG\r\n\x1a\n" in body
    assert Counter(b.kind for b in blocks) == {"table": 1}
