"""Generate the bundled sample corpus: eight small PDFs and unified-JSON samples that are true of them.

The content is data beside this script: scripts/sample_corpus/documents.yaml holds each document's pages (headings,
running text, tables, bar charts, small print) and scripts/sample_corpus/questions.yaml the questions, the regions
that hold their evidence and their answers; this script draws the pages and writes the samples. Questions cover
running text, table rows, chart bars and 4.5-pt small print; multi-hop questions need a bridge fact on one page and
the answer on another page of the same document. Every gold box in the samples is the rectangle the generator
actually drew (converted to the 0-1000 frame of the page), so the samples cannot drift from the pages. Besides
samples.json (every question) it writes a stratified train / held-out partition. The output is deterministic:
running it again rewrites the same bytes.

    python scripts/make_sample_corpus.py --out_dir examples
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from fpdf import FPDF

PAGE_WIDTH_MM, PAGE_HEIGHT_MM = 210.0, 297.0
FIXED_DATE = datetime(2026, 1, 1, tzinfo=UTC)
"""Every PDF's creation date, so that the output is the same bytes on every run."""
DATA_DIR = Path(__file__).with_name("sample_corpus")
"""The corpus's content: documents.yaml (the pages' texts, tables, charts and small print) and questions.yaml."""


@dataclass
class Page:
    regions: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    """Named rectangles drawn on the page, in millimetres (x1, y1, x2, y2)."""


@dataclass
class Document:
    stem: str
    pdf: FPDF
    pages: list[Page] = field(default_factory=list)

    def new_page(self) -> Page:
        self.pdf.add_page()
        page = Page()
        self.pages.append(page)
        return page


def _new_document(stem: str, title: str) -> Document:
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("UniDoc-RL sample corpus")
    pdf.set_creator("scripts/make_sample_corpus.py")
    pdf.set_producer("fpdf2")
    return Document(stem=stem, pdf=pdf)


def _heading(doc: Document, page: Page, text: str, y: float = 20.0) -> None:
    doc.pdf.set_font("Helvetica", "B", 18)
    doc.pdf.set_xy(20, y)
    doc.pdf.cell(170, 10, text)
    page.regions["heading"] = (20, y, 190, y + 10)


def _paragraphs(doc: Document, page: Page, name: str, texts: list[str], y: float, size: float = 11) -> float:
    """Running text; the block is region `name` and its n-th paragraph (from 1) region `name.n`."""
    doc.pdf.set_font("Helvetica", "", size)
    doc.pdf.set_xy(20, y)
    for number, text in enumerate(texts, start=1):
        top = doc.pdf.get_y()
        doc.pdf.set_x(20)  # `ln` returns to the page margin; every paragraph starts at the region's edge
        doc.pdf.multi_cell(170, size * 0.5, text)
        page.regions[f"{name}.{number}"] = (20, top, 190, doc.pdf.get_y())
        doc.pdf.ln(3)
    bottom = doc.pdf.get_y()
    page.regions[name] = (20, y, 190, bottom)
    return bottom


def _table(doc: Document, page: Page, name: str, header: list[str], rows: list[list[str]], y: float) -> float:
    pdf = doc.pdf
    column_width = 170 / len(header)
    row_height = 8.0
    pdf.set_xy(20, y)
    pdf.set_font("Helvetica", "B", 10)
    for cell in header:
        pdf.cell(column_width, row_height, cell, border=1, align="C")
    pdf.ln(row_height)
    pdf.set_font("Helvetica", "", 10)
    for row_index, row in enumerate(rows):
        pdf.set_x(20)
        for cell in row:
            pdf.cell(column_width, row_height, cell, border=1, align="C")
        top = y + row_height * (row_index + 1)
        page.regions[f"{name}.row.{row[0]}"] = (20, top, 190, top + row_height)
        pdf.ln(row_height)
    bottom = y + row_height * (len(rows) + 1)
    page.regions[name] = (20, y, 190, bottom)
    return bottom


def _bar_chart(doc: Document, page: Page, name: str, title: str, bars: list[tuple[str, float]], y: float) -> float:
    """A chart-like figure: axes, filled bars with value labels, category labels under the axis."""
    pdf = doc.pdf
    left, width, height = 30.0, 150.0, 80.0
    pdf.set_font("Helvetica", "B", 12)
    pdf.set_xy(left, y)
    pdf.cell(width, 8, title, align="C")
    axis_top, axis_bottom = y + 12, y + 12 + height
    pdf.set_draw_color(0, 0, 0)
    pdf.line(left, axis_top, left, axis_bottom)
    pdf.line(left, axis_bottom, left + width, axis_bottom)
    peak = max(value for _, value in bars)
    slot = width / len(bars)
    shades = [(40, 90, 160), (200, 120, 40), (60, 150, 80), (150, 60, 120), (110, 110, 110)]
    pdf.set_font("Helvetica", "", 9)
    for index, (label, value) in enumerate(bars):
        bar_height = (height - 10) * value / peak
        x = left + index * slot + slot * 0.2
        pdf.set_fill_color(*shades[index % len(shades)])
        pdf.rect(x, axis_bottom - bar_height, slot * 0.6, bar_height, style="F")
        pdf.set_xy(x - 2, axis_bottom - bar_height - 6)
        pdf.cell(slot * 0.6 + 4, 5, f"{value:g}", align="C")
        pdf.set_xy(x - 4, axis_bottom + 1)
        pdf.cell(slot * 0.6 + 8, 5, label, align="C")
        page.regions[f"{name}.bar.{label}"] = (x, axis_bottom - bar_height - 6, x + slot * 0.6, axis_bottom + 6)
    bottom = axis_bottom + 8
    page.regions[name] = (left, y, left + width, bottom)
    return bottom


def _small_print(doc: Document, page: Page, name: str, text: str, y: float) -> float:
    """Text at 4.5 pt: unreadable at the display budget of a whole page, legible once cropped and zoomed."""
    pdf = doc.pdf
    pdf.set_font("Helvetica", "", 4.5)
    pdf.set_xy(20, y)
    pdf.multi_cell(110, 2.0, text)
    page.regions[name] = (20, y, 130, pdf.get_y())
    return pdf.get_y()


BLOCKS = ("paragraphs", "table", "bar_chart", "small_print")
"""The kinds of block a page of documents.yaml draws under its heading."""


def _strings(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: expected a list of strings (quote numbers), got {value!r}")
    return value


def _string(value, where: str) -> str:
    return _strings([value], where)[0]


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return value


def _draw(doc: Document, page: Page, block: dict, previous_bottom: float | None) -> float:
    """Draw one block of documents.yaml on `page`; returns its bottom in millimetres."""
    kinds = [kind for kind in BLOCKS if kind in block]
    if len(kinds) != 1:
        raise ValueError(f"{doc.stem}: a block names exactly one of {BLOCKS}, got {sorted(block)}")
    kind = kinds[0]
    name = _string(block[kind], f"{doc.stem}: {kind}")
    where = f"{doc.stem}: {name}"
    if ("y" in block) == ("below_previous" in block) or ("y" not in block and previous_bottom is None):
        raise ValueError(f"{where}: give `y`, or `below_previous` after another block")
    y = _number(block["y"], where) if "y" in block else previous_bottom + _number(block["below_previous"], where)
    if kind == "paragraphs":
        return _paragraphs(doc, page, name, _strings(block["texts"], where), y)
    if kind == "table":
        rows = [_strings(row, where) for row in block["rows"]]
        return _table(doc, page, name, _strings(block["header"], where), rows, y)
    if kind == "bar_chart":
        bars = [(_string(label, where), _number(value, where)) for label, value in block["bars"].items()]
        return _bar_chart(doc, page, name, _string(block["title"], where), bars, y)
    return _small_print(doc, page, name, _string(block["text"], where), y)


def render(spec: dict) -> Document:
    """One document of documents.yaml, drawn page by page; its pages keep the regions the questions point at."""
    doc = _new_document(spec["stem"], _string(spec["title"], spec["stem"]))
    for page_spec in spec["pages"]:
        page = doc.new_page()
        _heading(doc, page, _string(page_spec["heading"], doc.stem))
        bottom = None
        for block in page_spec.get("blocks", []):
            bottom = _draw(doc, page, block, bottom)
    return doc


@dataclass(frozen=True)
class Hop:
    """The evidence a question needs on one page: the regions that hold it and whether reading it needs a crop."""

    page: int
    regions: tuple[str, ...]
    crop_required: bool
    evidence: tuple[str, ...] = ()
    """Strings printed inside the regions; empty means the answer's own key strings (`answer_keys`)."""


@dataclass(frozen=True)
class Question:
    uid: str
    stem: str
    source_type: str
    query: str
    answer: str
    hops: tuple[Hop, ...]
    """One hop per page; a multi-hop question's `source_type` is that of the page holding the answer."""

    @property
    def query_type(self) -> str:
        return "multi-hop" if len(self.hops) > 1 else "single-hop"

    def evidence(self, hop: Hop) -> tuple[str, ...]:
        return hop.evidence or answer_keys(self.answer)


def answer_keys(answer: str) -> tuple[str, ...]:
    """What must be printed on the page for `answer` to be read there: its numbers, or the whole answer."""
    return tuple(re.findall(r"\d[\d.,]*\d|\d", answer)) or (answer,)


def _question(spec: dict) -> Question:
    uid = _string(spec["uid"], "a question's uid")
    hops = []
    for hop in spec["hops"]:
        page, crop_required = hop["page"], hop["crop_required"]
        if isinstance(page, bool) or not isinstance(page, int) or not isinstance(crop_required, bool):
            raise ValueError(f"{uid}: a hop's page is an integer and its crop_required true or false")
        evidence = tuple(_strings(hop.get("evidence", []), uid))
        hops.append(Hop(page, tuple(_strings(hop["regions"], uid)), crop_required, evidence))
    fields = [_string(spec[key], f"{uid}: {key}") for key in ("document", "source_type", "query", "answer")]
    return Question(uid, *fields, tuple(hops))


def _load(name: str) -> list[dict]:
    return yaml.safe_load((DATA_DIR / name).read_text(encoding="utf-8"))


DOCUMENTS: list[dict] = _load("documents.yaml")
QUESTIONS: list[Question] = [_question(spec) for spec in _load("questions.yaml")]

HELDOUT_SHARE = 0.25
"""Share of each (source_type, query_type) stratum held out from training."""


def to_norm1000(box_mm: tuple[float, float, float, float]) -> list[int]:
    x1, y1, x2, y2 = box_mm
    return [
        round(x1 / PAGE_WIDTH_MM * 1000),
        round(y1 / PAGE_HEIGHT_MM * 1000),
        round(x2 / PAGE_WIDTH_MM * 1000),
        round(y2 / PAGE_HEIGHT_MM * 1000),
    ]


def unified_sample(question: Question, document: Document) -> dict:
    meta = {
        "file_name": f"{question.stem}.pdf",
        "reference_page": [hop.page for hop in question.hops],
        "source_type": question.source_type,
        "query_type": question.query_type,
        "reference_boxes": [
            [to_norm1000(document.pages[hop.page - 1].regions[name]) for name in hop.regions] for hop in question.hops
        ],
        "crop_required": [hop.crop_required for hop in question.hops],
    }
    return {"uid": question.uid, "query": question.query, "reference_answer": question.answer, "meta_info": meta}


def heldout_uids(questions: list[Question], share: float = HELDOUT_SHARE) -> set[str]:
    """Hold out `share` of every (source_type, query_type) stratum, rounded half up, picked in uid-hash order."""
    strata: dict[tuple[str, str], list[str]] = {}
    for question in questions:
        strata.setdefault((question.source_type, question.query_type), []).append(question.uid)
    heldout = set()
    for uids in strata.values():
        ordered = sorted(uids, key=lambda uid: hashlib.sha256(uid.encode("utf-8")).hexdigest())
        heldout.update(ordered[: math.floor(len(uids) * share + 0.5)])
    return heldout


def _write_json(path: Path, samples: list[dict]) -> None:
    path.write_text(json.dumps(samples, indent=2) + "\n")


def build(out_dir: Path) -> tuple[list[Path], dict[str, Path]]:
    """Write corpus/*.pdf, samples.json (every question) and its train / held-out partition under `out_dir`."""
    corpus_dir = out_dir / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    documents = {}
    pdf_paths = []
    for spec in DOCUMENTS:
        doc = render(spec)
        path = corpus_dir / f"{doc.stem}.pdf"
        doc.pdf.output(str(path))
        documents[doc.stem] = doc
        pdf_paths.append(path)

    samples = [unified_sample(question, documents[question.stem]) for question in QUESTIONS]
    heldout = heldout_uids(QUESTIONS)
    outputs = {
        "samples": (out_dir / "samples.json", samples),
        "train": (out_dir / "samples_train.json", [s for s in samples if s["uid"] not in heldout]),
        "heldout": (out_dir / "samples_heldout.json", [s for s in samples if s["uid"] in heldout]),
    }
    for path, subset in outputs.values():
        _write_json(path, subset)
    return pdf_paths, {name: path for name, (path, _) in outputs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out_dir",
        type=Path,
        default=Path("examples"),
        help="writes corpus/*.pdf, samples.json, samples_train.json and samples_heldout.json",
    )
    args = parser.parse_args(argv)
    pdf_paths, sample_paths = build(args.out_dir)
    print(json.dumps({"pdfs": [str(p) for p in pdf_paths], **{k: str(p) for k, p in sample_paths.items()}}))


if __name__ == "__main__":
    main()
