import json
import re
import subprocess
import sys

import pypdfium2 as pdfium
import pytest

SAMPLE_KEYS = {"uid", "query", "reference_answer", "meta_info"}
META_KEYS = {"file_name", "reference_page", "source_type", "query_type", "reference_boxes", "crop_required"}


@pytest.fixture(scope="module")
def samples(repo_root):
    return json.loads((repo_root / "examples/samples.json").read_text())


def _text_in_box(pdf_path, page_number: int, box_norm1000) -> str:
    page = pdfium.PdfDocument(str(pdf_path))[page_number - 1]
    width, height = page.get_size()
    x1, y1, x2, y2 = box_norm1000
    # PDF user space has its origin at the bottom left; the 0-1000 frame at the top left.
    left, right = x1 / 1000 * width, x2 / 1000 * width
    top, bottom = height - y1 / 1000 * height, height - y2 / 1000 * height
    return page.get_textpage().get_text_bounded(left=left - 1, bottom=bottom - 1, right=right + 1, top=top + 1)


def test_committed_corpus_is_exactly_what_the_script_generates(repo_root, tmp_path):
    subprocess.run(
        [sys.executable, str(repo_root / "scripts/make_sample_corpus.py"), "--out_dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = sorted((repo_root / "examples/corpus").glob("*.pdf"))
    assert [p.name for p in committed] == sorted(p.name for p in (tmp_path / "corpus").glob("*.pdf"))
    for path in committed:
        assert path.read_bytes() == (tmp_path / "corpus" / path.name).read_bytes(), path.name
    assert (repo_root / "examples/samples.json").read_text() == (tmp_path / "samples.json").read_text()


def test_corpus_has_multi_page_pdfs_covering_every_source_type(repo_root, samples):
    page_counts = {p.stem: len(pdfium.PdfDocument(str(p))) for p in (repo_root / "examples/corpus").glob("*.pdf")}
    assert len(page_counts) >= 4
    assert all(count >= 1 for count in page_counts.values())
    assert sum(count > 1 for count in page_counts.values()) >= 3
    assert {s["meta_info"]["source_type"] for s in samples} == {"text", "table", "chart", "layout"}
    assert any(s["meta_info"]["crop_required"][0] for s in samples)
    assert any(not s["meta_info"]["crop_required"][0] for s in samples)


def test_samples_are_well_formed_unified_json(repo_root, samples):
    assert len({s["uid"] for s in samples}) == len(samples)
    for sample in samples:
        assert set(sample) == SAMPLE_KEYS
        meta = sample["meta_info"]
        assert set(meta) == META_KEYS
        pdf = pdfium.PdfDocument(str(repo_root / "examples/corpus" / meta["file_name"]))
        assert all(1 <= page <= len(pdf) for page in meta["reference_page"])
        assert len(meta["reference_boxes"]) == len(meta["crop_required"]) == len(meta["reference_page"])
        for boxes in meta["reference_boxes"]:
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000


def test_every_reference_answer_is_printed_inside_its_gold_box(repo_root, samples):
    for sample in samples:
        meta = sample["meta_info"]
        pdf_path = repo_root / "examples/corpus" / meta["file_name"]
        key = re.search(r"[\d][\d.,]*", sample["reference_answer"]).group(0)
        for page, boxes in zip(meta["reference_page"], meta["reference_boxes"], strict=True):
            inside = " ".join(_text_in_box(pdf_path, page, box) for box in boxes)
            assert key in inside, (sample["uid"], key, inside)
            # The box is tight: the answer is not just somewhere on the page but in the drawn region.
            whole_page = _text_in_box(pdf_path, page, (0, 0, 1000, 1000))
            assert len(inside) < len(whole_page), sample["uid"]
