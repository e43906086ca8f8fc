"""A stand-in MinerU server (`mineru-api`'s `POST /file_parse`) on loopback, for tests and the CPU demo.

It answers the request `unidoc_rl.synthesis.layout.MinerULayoutParser` sends (one page image named `{page_id}.png`)
with a `middle_json` whose blocks are that page's PDF text-layer blocks, in the units of a `page_size` of
1000 x 1000, read from the PDFs in `pdf_dir`. It parses only what it needs of the multipart body (the file name),
so it runs without python-multipart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request

from unidoc_rl.synthesis.layout import pdf_text_blocks

_FILENAME = re.compile(rb'name="files"; filename="([^"]+)"')


def create_app(pdf_dir: Path) -> FastAPI:
    app = FastAPI(title="scripted MinerU")
    app.state.requests = []

    @app.post("/file_parse")
    async def file_parse(request: Request) -> dict:
        body = await request.body()
        match = _FILENAME.search(body)
        if match is None:
            raise HTTPException(400, "no file in field 'files'")
        name = match.group(1).decode()
        stem, _, number = Path(name).stem.rpartition("_")
        pdf = Path(pdf_dir) / f"{stem}.pdf"
        if not number.isdigit() or not pdf.is_file():
            raise HTTPException(404, f"no PDF page for {name}")
        app.state.requests.append(name)
        blocks = pdf_text_blocks(pdf, int(number))
        middle = {
            "pdf_info": [
                {
                    "page_idx": 0,
                    "page_size": [1000, 1000],
                    "para_blocks": [{"type": block.kind, "bbox": list(block.box)} for block in blocks],
                }
            ]
        }
        return {"backend": "pipeline", "results": {Path(name).stem: {"middle_json": json.dumps(middle)}}}

    return app
