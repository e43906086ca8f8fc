"""Generate the bundled sample corpus: eight small PDFs and unified-JSON samples that are true of them.

Questions cover running text, table rows, chart bars and 4.5-pt small print; multi-hop questions need a bridge
fact on one page and the answer on another page of the same document. Every gold box in the samples is the
rectangle the generator actually drew (converted to the 0-1000 frame of the page), so the samples cannot drift
from the pages. Besides samples.json (every question) it writes a stratified train / held-out partition. The
output is deterministic: running it again rewrites the same bytes.

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


def transit_report() -> Document:
    doc = _new_document("castleton_transit_report_2024", "Castleton Transit Service Report 2024")
    page = doc.new_page()
    _heading(doc, page, "Castleton Transit - Service Report 2024")
    _paragraphs(
        doc,
        page,
        "overview",
        [
            "Castleton Transit carried 47.9 million passengers in 2024 on four bus lines. The fleet grew to "
            "412 buses, of which 138 are battery electric.",
            "Every line is run from one depot: the Riverside line is operated from the Kestrel Road depot, the "
            "Hilltop line from the Ashgrove depot and the Canal line from the Northgate depot.",
            "The new Airport Express line started service on 3 June 2024. It links the central bus station "
            "with Castleton airport in 26 minutes.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Passenger trips by line (millions)")
    _table(
        doc,
        page,
        "trips_table",
        ["Line", "2022", "2023", "2024"],
        [
            ["Riverside", "18.2", "19.5", "21.3"],
            ["Hilltop", "12.7", "13.1", "13.9"],
            ["Canal", "9.8", "10.4", "10.6"],
            ["Airport Express", "-", "-", "2.1"],
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Punctuality")
    bottom = _bar_chart(
        doc,
        page,
        "ontime_chart",
        "On-time departures by line, 2024 (percent)",
        [("Riverside", 91), ("Hilltop", 84), ("Canal", 88)],
        y=40,
    )
    _small_print(
        doc,
        page,
        "ontime_note",
        "Note 3: a departure counts as on time when it leaves no more than 2 minutes late. Airport Express "
        "journeys are excluded because the line ran for only seven months of the year.",
        y=bottom + 120,
    )
    page = doc.new_page()
    _heading(doc, page, "Depots")
    _table(
        doc,
        page,
        "depot_table",
        ["Depot", "Buses", "Staff", "Opened"],
        [
            ["Kestrel Road", "164", "520", "1998"],
            ["Ashgrove", "131", "415", "2006"],
            ["Northgate", "117", "388", "2015"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "staff_note",
        "Depot staff include drivers, mechanics and cleaners. The 46 control-room staff at head office are "
        "counted separately and are not assigned to any depot.",
        y=262,
    )
    return doc


def climate_bulletin() -> Document:
    doc = _new_document("koldal_climate_bulletin_2024", "Koldal Ridge Observatory Climate Bulletin 2024")
    page = doc.new_page()
    _heading(doc, page, "Koldal Ridge Observatory - Climate Bulletin")
    _paragraphs(
        doc,
        page,
        "overview",
        [
            "The Koldal Ridge Observatory stands at 2,310 metres. It recorded a mean annual temperature of "
            "1.8 degrees Celsius in 2024, 0.6 degrees above the 1991-2020 average.",
            "Four automatic weather stations are named after trees and each overlooks one valley: Birch "
            "overlooks the Lenna valley, Fir the Orsa valley, Larch the Tamsen valley and Pine the Vella valley.",
            "The longest dry spell of the year lasted 23 days, from 4 to 26 August.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Snowfall")
    _bar_chart(
        doc,
        page,
        "snowfall_chart",
        "Snowfall by month, winter 2023/24 (cm)",
        [("November", 48), ("December", 95), ("January", 122), ("February", 87), ("March", 64)],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Automatic weather stations, 2024")
    _table(
        doc,
        page,
        "station_table",
        ["Station", "Altitude m", "Mean temp C", "Max gust km/h"],
        [
            ["Birch", "1,840", "3.9", "118"],
            ["Fir", "2,120", "2.4", "131"],
            ["Larch", "2,480", "0.7", "156"],
            ["Pine", "1,560", "5.2", "97"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "outage_note",
        "Station Pine was out of service from 2 to 17 March 2024 after a lightning strike; its mean temperature "
        "is computed from the remaining 350 days of the year.",
        y=262,
    )
    page = doc.new_page()
    _heading(doc, page, "Glacier and snow cover")
    _paragraphs(
        doc,
        page,
        "glacier",
        [
            "Glacier monitoring. The Koldal glacier retreated 31 metres in 2024, the largest annual loss since "
            "measurements began in 1962.",
            "Snow cover. The snow depth at the observatory peaked on 18 February, and the ground was free of snow "
            "from 9 June to 30 September.",
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "calibration_note",
        "Calibration: the gust sensors at Station Larch were replaced on 9 October 2024. Readings taken before "
        "that date may under-report gusts by up to 4 percent.",
        y=262,
    )
    return doc


def admissions_report() -> Document:
    doc = _new_document("greenfield_admissions_2025", "Greenfield University Admissions Report 2025")
    page = doc.new_page()
    _heading(doc, page, "Greenfield University - Admissions 2025")
    _paragraphs(
        doc,
        page,
        "overview",
        [
            "Greenfield University received 18,420 applications for the 2025 intake and admitted 4,960 students.",
            "Each faculty is housed in one campus building: Engineering in the Corran Building, Medicine in the "
            "Hale Building, Law in the Marsh Building and Arts in the Tilde Building.",
            "The median entry grade of admitted students rose to 86.5 points.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Applications and offers by faculty")
    _table(
        doc,
        page,
        "faculty_table",
        ["Faculty", "Applications", "Offers", "Enrolled"],
        [
            ["Engineering", "5,210", "1,480", "1,302"],
            ["Medicine", "6,940", "610", "598"],
            ["Law", "3,180", "920", "811"],
            ["Arts", "3,090", "1,950", "1,612"],
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "International students")
    bottom = _bar_chart(
        doc,
        page,
        "international_chart",
        "International students enrolled by faculty, 2025",
        [("Engineering", 412), ("Medicine", 96), ("Law", 158), ("Arts", 233)],
        y=40,
    )
    _small_print(
        doc,
        page,
        "residence_note",
        "International students are those whose permanent address is outside the country. The 27 students "
        "with dual residence are counted once, under their first faculty.",
        y=bottom + 120,
    )
    page = doc.new_page()
    _heading(doc, page, "Campus buildings")
    _table(
        doc,
        page,
        "building_table",
        ["Building", "Opened", "Lecture halls", "Seats"],
        [
            ["Corran", "1971", "12", "2,400"],
            ["Hale", "1988", "9", "1,650"],
            ["Marsh", "2003", "6", "980"],
            ["Tilde", "2019", "8", "1,320"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "scholarship_note",
        "Scholarships: applicants from households with an income below 32,000 euros qualify for a tuition fee "
        "waiver of 75 percent. Waiver applications close on 15 March.",
        y=262,
    )
    return doc


def harvest_report() -> Document:
    doc = _new_document("orchard_valley_harvest_2024", "Orchard Valley Cooperative Harvest Report 2024")
    page = doc.new_page()
    _heading(doc, page, "Orchard Valley Cooperative - Harvest 2024")
    _paragraphs(
        doc,
        page,
        "overview",
        [
            "The Orchard Valley Cooperative has 64 member farms. Together they harvested 11,800 tonnes of fruit "
            "in 2024.",
            "Each crop is packed at one site: apples at the Dunmore packhouse, pears at Elm Cross, cherries at "
            "Fenwick and plums at Garlow.",
            "A late frost on 22 April damaged the cherry blossom across the upper valley.",
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Harvest by crop (tonnes)")
    _table(
        doc,
        page,
        "harvest_table",
        ["Crop", "2022", "2023", "2024"],
        [
            ["Apples", "6,150", "6,420", "6,900"],
            ["Pears", "2,310", "2,240", "2,480"],
            ["Cherries", "1,120", "1,340", "860"],
            ["Plums", "1,470", "1,510", "1,560"],
        ],
        y=40,
    )
    page = doc.new_page()
    _heading(doc, page, "Prices paid to members")
    bottom = _bar_chart(
        doc,
        page,
        "price_chart",
        "Average price paid to members, 2024 (euros per kg)",
        [("Apples", 0.62), ("Pears", 0.71), ("Cherries", 3.4), ("Plums", 0.95)],
        y=40,
    )
    _small_print(
        doc,
        page,
        "levy_note",
        "Prices are shown before the cooperative's marketing levy of 1.5 percent, which is deducted from each "
        "member's payment at the end of the season.",
        y=bottom + 120,
    )
    page = doc.new_page()
    _heading(doc, page, "Packhouses")
    _table(
        doc,
        page,
        "packhouse_table",
        ["Packhouse", "Staff", "Cold store t", "Packing lines"],
        [
            ["Dunmore", "210", "4,200", "6"],
            ["Elm Cross", "85", "1,500", "3"],
            ["Fenwick", "40", "300", "2"],
            ["Garlow", "62", "900", "2"],
        ],
        y=40,
    )
    _small_print(
        doc,
        page,
        "packhouse_note",
        "Fenwick runs only from June to August; its staff figure is the seasonal peak, of whom 28 are students. "
        "The Dunmore cold store is held at 0.5 degrees Celsius.",
        y=262,
    )
    return doc


DOCUMENTS = [
    annual_report,
    battery_study,
    water_survey,
    product_catalog,
    transit_report,
    climate_bulletin,
    admissions_report,
    harvest_report,
]


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

    @property
    def query_type(self) -> str:
        return "multi-hop" if len(self.hops) > 1 else "single-hop"

    def evidence(self, hop: Hop) -> tuple[str, ...]:
        return hop.evidence or answer_keys(self.answer)


def answer_keys(answer: str) -> tuple[str, ...]:
    """What must be printed on the page for `answer` to be read there: its numbers, or the whole answer."""
    return tuple(re.findall(r"\d[\d.,]*\d|\d", answer)) or (answer,)


def single(
    uid: str, stem: str, page: int, regions: list[str], crop: bool, source_type: str, query: str, answer: str
) -> Question:
    return Question(uid, stem, source_type, query, answer, (Hop(page, tuple(regions), crop),))


def multi(uid: str, stem: str, source_type: str, query: str, answer: str, *hops: Hop) -> Question:
    """A question whose evidence sits on two or more pages; `source_type` is that of the page holding the answer."""
    return Question(uid, stem, source_type, query, answer, hops)


NW, LB, WS, SP = "northwind_annual_report_2023", "lakeside_battery_study", "city_water_survey", "solar_product_catalog"
CT, KR, GU, OV = (
    "castleton_transit_report_2024",
    "koldal_climate_bulletin_2024",
    "greenfield_admissions_2025",
    "orchard_valley_harvest_2024",
)

QUESTIONS = [
    single("nw-dividend", NW, 1, ["letter"], False, "text",
           "What dividend per share does the Northwind Energy board propose for 2023?", "1.35 euros per share"),
    single("nw-turbines", NW, 1, ["letter"], False, "text",
           "How many turbines does the Harbour Point offshore wind farm have?", "48"),
    single("nw-asia-2023", NW, 2, ["revenue_table.row.Asia"], True, "table",
           "What was Northwind Energy's revenue in Asia in 2023, in million euros?", "845"),
    single("nw-total-2022", NW, 2, ["revenue_table.row.Total"], True, "table",
           "What was Northwind Energy's total revenue in 2022, in million euros?", "2,689"),
    single("nw-solar-capacity", NW, 3, ["capacity_chart.bar.Solar"], True, "chart",
           "How many MW of solar capacity did Northwind Energy have installed in 2023?", "1650 MW"),
    single("nw-lakeside-output", NW, 3, ["capacity_footnote"], True, "layout",
           "What is the rated output of the Lakeside pilot plant mentioned in the footnote on installed capacity?",
           "35 MW"),
    single("lb-efficiency", LB, 1, ["summary"], False, "text",
           "What round-trip efficiency did the Lakeside battery study measure over twelve months?", "87 percent"),
    single("lb-summer-cycles", LB, 2, ["season_table.row.Summer"], True, "table",
           "How many cycles did the Lakeside battery complete in summer?", "92"),
    single("lb-warranty", LB, 2, ["warranty_note"], True, "layout",
           "After how many full cycles does the supplier guarantee 80 percent of rated capacity?", "6,000"),
    single("ws-satisfaction", WS, 1, ["intro"], False, "text",
           "What overall satisfaction did the 2024 city water survey report?", "78 percent"),
    single("ws-oldtown-use", WS, 2, ["use_chart.bar.Old Town"], True, "chart",
           "What is the average daily water use per person in Old Town in litres?", "141"),
    single("sp-350-price", SP, 1, ["product_table.row.SP-350"], True, "table",
           "What is the price of the SP-350 solar panel in euros?", "239"),
    single("sp-handling-fee", SP, 1, ["shipping_note"], True, "layout",
           "What handling fee is charged for partial pallets of solar panels?", "45 euros"),
    # Further questions on the first four documents, with one paragraph per text answer.
    single("nw-employees", NW, 1, ["letter.2"], False, "text",
           "How many employees did Northwind Energy's workforce grow to in 2023?", "3,150"),
    single("nw-europe-2023", NW, 2, ["revenue_table.row.Europe"], True, "table",
           "What was Northwind Energy's revenue in Europe in 2023, in million euros?", "1,512"),
    single("nw-lakeside-commissioned", NW, 3, ["capacity_footnote"], True, "layout",
           "On what date was the Lakeside pilot plant commissioned, according to footnote 7?", "14 November 2023"),
    single("lb-chemistry", LB, 1, ["summary.2"], False, "text",
           "Which cell chemistry does the Lakeside battery pilot use?", "lithium iron phosphate"),
    single("lb-winter-efficiency", LB, 2, ["season_table.row.Winter"], True, "table",
           "What was the winter season efficiency in the Lakeside test results?", "84%"),
    single("ws-households", WS, 1, ["intro.1"], False, "text",
           "How many households did the city water survey cover?", "1,200"),
    single("ws-millford-use", WS, 2, ["use_chart.bar.Millford"], True, "chart",
           "What is the average daily water use per person in Millford in litres?", "118"),
    single("sp-500-weight", SP, 1, ["product_table.row.SP-500"], True, "table",
           "How much does the SP-500 solar panel weigh in kg?", "24.8 kg"),
    # Castleton Transit.
    single("ct-passengers", CT, 1, ["overview.1"], False, "text",
           "How many passengers did Castleton Transit carry in 2024?", "47.9 million"),
    single("ct-airport-minutes", CT, 1, ["overview.3"], False, "text",
           "How many minutes does the Airport Express take from the central bus station to Castleton airport?",
           "26 minutes"),
    single("ct-canal-2024", CT, 2, ["trips_table.row.Canal"], True, "table",
           "How many million passenger trips did the Canal line carry in 2024?", "10.6"),
    single("ct-canal-ontime", CT, 3, ["ontime_chart.bar.Canal"], True, "chart",
           "What percentage of Canal line departures were on time in 2024?", "88"),
    single("ct-ontime-rule", CT, 3, ["ontime_note"], True, "layout",
           "According to note 3, how many minutes late may a departure leave and still count as on time?", "2 minutes"),
    single("ct-northgate-opened", CT, 4, ["depot_table.row.Northgate"], True, "table",
           "In which year was the Northgate depot opened?", "2015"),
    single("ct-control-room", CT, 4, ["staff_note"], True, "layout",
           "How many control-room staff does Castleton Transit have at head office?", "46"),
    multi("ct-riverside-buses", CT, "table",
          "How many buses are based at the depot that operates the Riverside line?", "164",
          Hop(1, ("overview.2",), False, ("Riverside", "Kestrel Road")),
          Hop(4, ("depot_table.row.Kestrel Road",), True, ("Kestrel Road", "164"))),
    multi("ct-canal-depot-staff", CT, "table",
          "How many staff work at the depot from which the Canal line is run?", "388",
          Hop(1, ("overview.2",), False, ("Canal", "Northgate")),
          Hop(4, ("depot_table.row.Northgate",), True, ("Northgate", "388"))),
    multi("ct-ashgrove-ontime", CT, "chart",
          "What percentage of departures were on time in 2024 on the line operated from the Ashgrove depot?", "84",
          Hop(1, ("overview.2",), False, ("Hilltop", "Ashgrove")),
          Hop(3, ("ontime_chart.bar.Hilltop",), True, ("Hilltop", "84"))),
    # Koldal Ridge Observatory.
    single("kr-mean-temp", KR, 1, ["overview.1"], False, "text",
           "What mean annual temperature did the Koldal Ridge Observatory record in 2024?", "1.8 degrees Celsius"),
    single("kr-glacier", KR, 4, ["glacier.1"], False, "text",
           "How many metres did the Koldal glacier retreat in 2024?", "31 metres"),
    single("kr-january-snow", KR, 2, ["snowfall_chart.bar.January"], True, "chart",
           "How many centimetres of snow fell at Koldal Ridge in January of winter 2023/24?", "122"),
    single("kr-pine-altitude", KR, 3, ["station_table.row.Pine"], True, "table",
           "At what altitude in metres does the Pine weather station stand?", "1,560"),
    single("kr-larch-gust", KR, 3, ["station_table.row.Larch"], True, "table",
           "What maximum gust in km/h did the Larch weather station measure in 2024?", "156"),
    single("kr-pine-outage", KR, 3, ["outage_note"], True, "layout",
           "From how many days of the year is Station Pine's mean temperature computed after the lightning strike?",
           "350"),
    single("kr-gust-underreport", KR, 4, ["calibration_note"], True, "layout",
           "By up to how many percent may gust readings taken before the sensor replacement under-report?",
           "4 percent"),
    multi("kr-lenna-altitude", KR, "table",
          "What is the altitude in metres of the weather station that overlooks the Lenna valley?", "1,840",
          Hop(1, ("overview.2",), False, ("Birch", "Lenna")),
          Hop(3, ("station_table.row.Birch",), True, ("Birch", "1,840"))),
    multi("kr-tamsen-sensors", KR, "layout",
          "On what date were the gust sensors replaced at the weather station that overlooks the Tamsen valley?",
          "9 October 2024",
          Hop(1, ("overview.2",), False, ("Larch", "Tamsen")),
          Hop(4, ("calibration_note",), True, ("Larch", "9 October 2024"))),
    multi("kr-peak-month-snow", KR, "chart",
          "How many centimetres of snow fell at Koldal Ridge in the month in which the snow depth peaked?", "87",
          Hop(2, ("snowfall_chart.bar.February",), True, ("February", "87")),
          Hop(4, ("glacier.2",), False, ("peaked on 18 February",))),
    # Greenfield University.
    single("gu-applications", GU, 1, ["overview.1"], False, "text",
           "How many applications did Greenfield University receive for the 2025 intake?", "18,420"),
    single("gu-entry-grade", GU, 1, ["overview.3"], False, "text",
           "What was the median entry grade of students admitted to Greenfield University?", "86.5 points"),
    single("gu-law-offers", GU, 2, ["faculty_table.row.Law"], True, "table",
           "How many offers did the Law faculty make?", "920"),
    single("gu-medicine-applications", GU, 2, ["faculty_table.row.Medicine"], True, "table",
           "How many applications did the Medicine faculty receive?", "6,940"),
    single("gu-arts-international", GU, 3, ["international_chart.bar.Arts"], True, "chart",
           "How many international students are enrolled in Greenfield's Arts faculty?", "233"),
    single("gu-dual-residence", GU, 3, ["residence_note"], True, "layout",
           "How many Greenfield students with dual residence are counted once among the international students?",
           "27"),
    single("gu-fee-waiver", GU, 4, ["scholarship_note"], True, "layout",
           "What tuition fee waiver do Greenfield scholarship applicants from low-income households qualify for?",
           "75 percent"),
    multi("gu-medicine-halls", GU, "table",
          "How many lecture halls does the building that houses Greenfield's Medicine faculty have?", "9",
          Hop(1, ("overview.2",), False, ("Medicine", "Hale Building")),
          Hop(4, ("building_table.row.Hale",), True, ("Hale", "9"))),
    multi("gu-marsh-international", GU, "chart",
          "How many international students are enrolled in the faculty housed in the Marsh Building?", "158",
          Hop(1, ("overview.2",), False, ("Law", "Marsh Building")),
          Hop(3, ("international_chart.bar.Law",), True, ("Law", "158"))),
    multi("gu-most-applied-building", GU, "text",
          "In which building is the Greenfield faculty that received the most applications housed?",
          "Hale Building",
          Hop(1, ("overview.2",), False, ("Medicine in the Hale Building",)),
          Hop(2, ("faculty_table",), True, ("Medicine", "6,940"))),
    # Orchard Valley Cooperative.
    single("ov-member-farms", OV, 1, ["overview.1"], False, "text",
           "How many member farms does the Orchard Valley Cooperative have?", "64"),
    single("ov-frost-date", OV, 1, ["overview.3"], False, "text",
           "On what date did a late frost damage the cherry blossom in Orchard Valley?", "22 April"),
    single("ov-pears-2023", OV, 2, ["harvest_table.row.Pears"], True, "table",
           "How many tonnes of pears were harvested in 2023?", "2,240"),
    single("ov-cherries-price", OV, 3, ["price_chart.bar.Cherries"], True, "chart",
           "What average price per kg was paid to Orchard Valley members for cherries in 2024?", "3.4 euros per kg"),
    single("ov-levy", OV, 3, ["levy_note"], True, "layout",
           "What marketing levy does the Orchard Valley Cooperative deduct from members' payments?", "1.5 percent"),
    single("ov-elmcross-storage", OV, 4, ["packhouse_table.row.Elm Cross"], True, "table",
           "How many tonnes of cold storage does the Elm Cross packhouse have?", "1,500"),
    single("ov-dunmore-cold", OV, 4, ["packhouse_note"], True, "layout",
           "At what temperature is the Dunmore cold store held?", "0.5 degrees Celsius"),
    multi("ov-apple-packhouse-staff", OV, "table",
          "How many staff work at the packhouse where Orchard Valley's apples are packed?", "210",
          Hop(1, ("overview.2",), False, ("apples", "Dunmore")),
          Hop(4, ("packhouse_table.row.Dunmore",), True, ("Dunmore", "210"))),
    multi("ov-garlow-price", OV, "chart",
          "What average price per kg was paid to members in 2024 for the crop packed at Garlow?", "0.95 euros",
          Hop(1, ("overview.2",), False, ("plums", "Garlow")),
          Hop(3, ("price_chart.bar.Plums",), True, ("Plums", "0.95"))),
    multi("ov-cherry-students", OV, "layout",
          "How many students are among the peak staff of the packhouse where cherries are packed?", "28",
          Hop(1, ("overview.2",), False, ("cherries", "Fenwick")),
          Hop(4, ("packhouse_note",), True, ("Fenwick", "28"))),
]  # fmt: skip

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
    for make in DOCUMENTS:
        doc = make()
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
