"""Generate the bundled sample corpus: a few multi-page PDFs and unified-JSON samples that are true of them.

Every gold box in the samples is the rectangle the generator actually drew (converted to the 0-1000 frame of the
page), so the samples cannot drift from the pages. The output is deterministic: running it again rewrites the same
bytes.

    python scripts/make_sample_corpus.py --out_dir examples
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

PAGE_WIDTH_MM, PAGE_HEIGHT_MM = 210.0, 297.0
FIXED_DATE = datetime(2026, 1, 1, tzinfo=UTC)


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
    doc.pdf.set_font("Helvetica", "", size)
    doc.pdf.set_xy(20, y)
    for text in texts:
        doc.pdf.multi_cell(170, size * 0.5, text)
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


def _small_print(doc: Document, page: Page, name: str, text: str, y: float) -> None:
    """Text at 4.5 pt: unreadable at the display budget of a whole page, legible once cropped and zoomed."""
    pdf = doc.pdf
    pdf.set_font("Helvetica", "", 4.5)
    pdf.set_xy(20, y)
    pdf.multi_cell(110, 2.0, text)
    page.regions[name] = (20, y, 130, pdf.get_y())


def annual_report() -> Document:
    doc = _new_document("northwind_annual_report_2023", "Northwind Energy Annual Report 2023")
    page = doc.new_page()
    _heading(doc, page, "Northwind Energy - Annual Report 2023")
    _paragraphs(
        doc,
        page,
        "letter",
        [
            "Letter from the chief executive. In 2023 Northwind Energy connected its first offshore wind farm, "
            "Harbour Point, to the grid. The farm has 48 turbines and supplies power to about 210,000 homes.",
            "Our workforce grew to 3,150 employees across nine countries. Safety remained our first priority: "
            "the lost-time injury rate fell to 0.21 per million hours worked.",
            "The board proposes a dividend of 1.35 euros per share, up from 1.10 euros in 2022.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Revenue by region (million euros)")
    _table(
        doc,
        page,
        "revenue_table",
        ["Region", "2021", "2022", "2023"],
        [
            ["Europe", "1,240", "1,385", "1,512"],
            ["Asia", "610", "702", "845"],
            ["America", "455", "498", "530"],
            ["Africa", "88", "104", "131"],
            ["Total", "2,393", "2,689", "3,018"],
        ],
        y=40,
    )
    _paragraphs(
        doc,
        page,
        "table_note",
        ["Asia was the fastest growing region, with revenue up 20 percent compared with 2022."],
        y=100,
    )
    page = doc.new_page()
    _heading(doc, page, "Installed capacity")
    bottom = _bar_chart(
        doc,
        page,
        "capacity_chart",
        "Installed capacity by source, 2023 (MW)",
        [("Wind", 2400), ("Solar", 1650), ("Hydro", 900), ("Battery", 420)],
        y=40,
    )
    _small_print(
        doc,
        page,
        "capacity_footnote",
        "Footnote 7: battery capacity excludes the Lakeside pilot plant, commissioned on 14 November 2023 "
        "with a rated output of 35 MW, which enters commercial service in 2024.",
        y=bottom + 150,
    )
    return doc


def battery_study() -> Document:
    doc = _new_document("lakeside_battery_study", "Lakeside Battery Storage Study")
    page = doc.new_page()
    _heading(doc, page, "Lakeside battery storage study")
    _paragraphs(
        doc,
        page,
        "summary",
        [
            "Summary. The Lakeside pilot stores surplus solar power during the day and releases it during the "
            "evening peak. The study measured a round-trip efficiency of 87 percent over twelve months.",
            "The cells use lithium iron phosphate chemistry, chosen for its long cycle life and thermal stability.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Test results by season")
    _table(
        doc,
        page,
        "season_table",
        ["Season", "Cycles", "Efficiency", "Peak MW"],
        [
            ["Winter", "61", "84%", "29"],
            ["Spring", "88", "88%", "33"],
            ["Summer", "92", "89%", "35"],
            ["Autumn", "74", "87%", "31"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "warranty_note",
        "Warranty terms: the cell supplier guarantees 80 percent of rated capacity after 6,000 full cycles "
        "or 12 years, whichever comes first. Claims must be filed within 90 days of detection.",
        y=260,
    )
    return doc


def water_survey() -> Document:
    doc = _new_document("city_water_survey", "City Water Survey 2024")
    page = doc.new_page()
    _heading(doc, page, "City water survey 2024")
    _paragraphs(
        doc,
        page,
        "intro",
        [
            "The survey covered 1,200 households in the districts of Eastbank, Millford and Old Town. Residents "
            "were asked about tap water taste, pressure and the number of supply interruptions in the past year.",
            "Overall satisfaction reached 78 percent, the highest value since the survey began in 2016.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Daily use per person (litres)")
    _bar_chart(
        doc,
        page,
        "use_chart",
        "Average daily water use per person by district, 2024",
        [("Eastbank", 132), ("Millford", 118), ("Old Town", 141)],
        y=40,
    )
    return doc


def product_catalog() -> Document:
    doc = _new_document("solar_product_catalog", "Solar Product Catalog")
    page = doc.new_page()
    _heading(doc, page, "Solar product catalog")
    _table(
        doc,
        page,
        "product_table",
        ["Model", "Power W", "Price EUR", "Weight kg"],
        [
            ["SP-200", "200", "149", "11.5"],
            ["SP-350", "350", "239", "18.2"],
            ["SP-500", "500", "329", "24.8"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "shipping_note",
        "Shipping: orders above 1,000 euros ship free within the EU. Panels are delivered on pallets of 20 units; "
        "partial pallets carry a handling fee of 45 euros.",
        y=270,
    )
    return doc


DOCUMENTS = [annual_report, battery_study, water_survey, product_catalog]

# (uid, document stem, page, region names, crop_required, source_type, query, reference answer)
SAMPLES = [
    ("nw-dividend", "northwind_annual_report_2023", 1, ["letter"], False, "text",
     "What dividend per share does the Northwind Energy board propose for 2023?", "1.35 euros per share"),
    ("nw-turbines", "northwind_annual_report_2023", 1, ["letter"], False, "text",
     "How many turbines does the Harbour Point offshore wind farm have?", "48"),
    ("nw-asia-2023", "northwind_annual_report_2023", 2, ["revenue_table.row.Asia"], True, "table",
     "What was Northwind Energy's revenue in Asia in 2023, in million euros?", "845"),
    ("nw-total-2022", "northwind_annual_report_2023", 2, ["revenue_table.row.Total"], True, "table",
     "What was Northwind Energy's total revenue in 2022, in million euros?", "2,689"),
    ("nw-solar-capacity", "northwind_annual_report_2023", 3, ["capacity_chart.bar.Solar"], True, "chart",
     "How many MW of solar capacity did Northwind Energy have installed in 2023?", "1650 MW"),
    ("nw-lakeside-output", "northwind_annual_report_2023", 3, ["capacity_footnote"], True, "layout",
     "What is the rated output of the Lakeside pilot plant mentioned in the footnote on installed capacity?",
     "35 MW"),
    ("lb-efficiency", "lakeside_battery_study", 1, ["summary"], False, "text",
     "What round-trip efficiency did the Lakeside battery study measure over twelve months?", "87 percent"),
    ("lb-summer-cycles", "lakeside_battery_study", 2, ["season_table.row.Summer"], True, "table",
     "How many cycles did the Lakeside battery complete in summer?", "92"),
    ("lb-warranty", "lakeside_battery_study", 2, ["warranty_note"], True, "layout",
     "After how many full cycles does the supplier guarantee 80 percent of rated capacity?", "6,000"),
    ("ws-satisfaction", "city_water_survey", 1, ["intro"], False, "text",
     "What overall satisfaction did the 2024 city water survey report?", "78 percent"),
    ("ws-oldtown-use", "city_water_survey", 2, ["use_chart.bar.Old Town"], True, "chart",
     "What is the average daily water use per person in Old Town in litres?", "141"),
    ("sp-350-price", "solar_product_catalog", 1, ["product_table.row.SP-350"], True, "table",
     "What is the price of the SP-350 solar panel in euros?", "239"),
    ("sp-handling-fee", "solar_product_catalog", 1, ["shipping_note"], True, "layout",
     "What handling fee is charged for partial pallets of solar panels?", "45 euros"),
]  # fmt: skip


def to_norm1000(box_mm: tuple[float, float, float, float]) -> list[int]:
    x1, y1, x2, y2 = box_mm
    return [
        round(x1 / PAGE_WIDTH_MM * 1000),
        round(y1 / PAGE_HEIGHT_MM * 1000),
        round(x2 / PAGE_WIDTH_MM * 1000),
        round(y2 / PAGE_HEIGHT_MM * 1000),
    ]


def build(out_dir: Path) -> tuple[list[Path], Path]:
    corpus_dir = out_dir / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    documents = {}
    pdf_paths = []
    for make in DOCUMENTS:
        doc = make()
        path = corpus_dir / f"{doc.stem}.pdf"
        doc.pdf.output(str(path))
        documents[doc.stem] = doc
        pdf_paths.append(path)

    samples = []
    for uid, stem, page_number, regions, crop_required, source_type, query, answer in SAMPLES:
        page = documents[stem].pages[page_number - 1]
        samples.append(
            {
                "uid": uid,
                "query": query,
                "reference_answer": answer,
                "meta_info": {
                    "file_name": f"{stem}.pdf",
                    "reference_page": [page_number],
                    "source_type": source_type,
                    "query_type": "single-hop",
                    "reference_boxes": [[to_norm1000(page.regions[name]) for name in regions]],
                    "crop_required": [crop_required],
                },
            }
        )
    samples_path = out_dir / "samples.json"
    samples_path.write_text(json.dumps(samples, indent=2) + "\n")
    return pdf_paths, samples_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", type=Path, default=Path("examples"), help="writes corpus/*.pdf and samples.json")
    args = parser.parse_args(argv)
    pdf_paths, samples_path = build(args.out_dir)
    print(json.dumps({"pdfs": [str(p) for p in pdf_paths], "samples": str(samples_path)}))


if __name__ == "__main__":
    main()
