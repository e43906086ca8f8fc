"""Adapters on the benchmarks' real annotation records (read from shared/benchmarks beside the repository)."""

from __future__ import annotations

import ast
import json

import pytest

from unidoc_rl.eval.adapters import convert_mmlongbench, convert_slidevqa, convert_vidoseek, main, read_records
from unidoc_rl.eval.samples import load_eval_samples, missing_from_index


@pytest.fixture(scope="module")
def benchmarks(repo_root):
    root = repo_root.parent / "shared" / "benchmarks"
    if not root.is_dir():
        pytest.skip(f"benchmark records not found at {root}")
    return root


@pytest.fixture(scope="module")
def mmlb_records(benchmarks):
    return json.loads((benchmarks / "MMLongBench-Doc" / "samples_first700.json").read_text())


def test_mmlongbench_conversion(mmlb_records, benchmarks, tmp_path):
    counts = json.loads((benchmarks / "MMLongBench-Doc" / "documents_pagecounts.json").read_text())["pages"]
    conversion = convert_mmlongbench(mmlb_records, counts)
    zero_page = [i for i, r in enumerate(mmlb_records) if 0 in ast.literal_eval(r["evidence_pages"])]
    assert sorted(conversion.skipped) == sorted(f"mmlongbench-{i}" for i in zero_page) and zero_page
    assert len(conversion.samples) == len(mmlb_records) - len(zero_page)
    first = conversion.samples[0]
    record = mmlb_records[0]
    assert first["meta_info"]["file_name"] == record["doc_id"]
    assert first["meta_info"]["reference_page"] == ast.literal_eval(record["evidence_pages"])
    assert first["meta_info"]["answer_format"] == record["answer_format"]
    path = tmp_path / "mmlb.json"
    path.write_text(json.dumps(conversion.samples))
    samples = load_eval_samples([path])
    by_uid = {s.uid: s for s in samples}
    stem = record["doc_id"][: -len(".pdf")]
    assert by_uid["mmlongbench-0"].gold_page_ids == tuple(
        f"{stem}_{p}" for p in ast.literal_eval(record["evidence_pages"])
    )
    kept = [r for i, r in enumerate(mmlb_records) if i not in zero_page]
    groups = [s.categories["evidence_pages"] for s in samples]
    assert sum("single-page" in g for g in groups) == sum(len(ast.literal_eval(r["evidence_pages"])) == 1 for r in kept)
    unanswerable = [s for s in samples if "unanswerable" in s.categories["evidence_pages"]]
    assert len(unanswerable) == sum(r["answer"] == "Not answerable" for r in kept)
    assert all(s.answer_format == "None" for s in unanswerable)
    assert sum("cross-page" in g for g in groups) == sum(
        len(ast.literal_eval(r["evidence_pages"])) != 1 and r["answer"] != "Not answerable" for r in kept
    )
    sources = {v for s in samples for v in s.categories["evidence_source"]}
    assert sources == {"text", "layout", "table", "chart", "figure"}


def test_mmlongbench_pages_beyond_the_document_are_left_out(mmlb_records):
    record = dict(mmlb_records[0], evidence_pages="[5, 31]")
    conversion = convert_mmlongbench([record], {record["doc_id"]: 30})
    assert conversion.samples == [] and "outside the document's pages (1..30)" in conversion.skipped["mmlongbench-0"]


def test_vidoseek_conversion(benchmarks, tmp_path):
    example = read_records(benchmarks / "ViDoSeek" / "vidorag_ExampleDataset_rag_dataset.json")
    readme = read_records(benchmarks / "ViDoSeek" / "vidorag_readme_example_record.json")
    conversion = convert_vidoseek(example + readme)
    assert conversion.skipped == {}
    first, second = conversion.samples
    assert first["meta_info"]["categories"] == {"query_type": ["content-extraction"], "source_type": ["layout"]}
    assert second["meta_info"]["categories"] == {"query_type": ["multi-hop"], "source_type": ["text"]}
    path = tmp_path / "vidoseek.json"
    path.write_text(json.dumps(conversion.samples))
    samples = load_eval_samples([path])
    stem = example[0]["meta_info"]["file_name"][: -len(".pdf")]
    assert samples[0].gold_page_ids == (f"{stem}_11",)
    assert samples[1].gold_page_ids == ("Pretreatment_of_Switchgrass_10", "Pretreatment_of_Switchgrass_11")
    # The corpus check names every evidence page the index lacks.
    assert missing_from_index(samples, {f"{stem}_11", "Pretreatment_of_Switchgrass_10"}) == {
        f"vidoseek/{samples[1].uid}": ["Pretreatment_of_Switchgrass_11"]
    }


def test_slidevqa_conversion_of_vrag_records_and_raw_rows(benchmarks):
    records = read_records(benchmarks / "ViDoSeek" / "vrag_examples" / "rag_dataset.json")
    slides = [r for r in records if "Hop" in str(r["meta_info"].get("query_type", ""))]
    conversion = convert_slidevqa(slides)
    assert [s["meta_info"]["categories"] for s in conversion.samples] == [
        {"hop": ["single-hop"], "answer_type": ["single-span"]},
        {"hop": ["multi-hop"], "answer_type": ["single-span"]},
    ]
    assert conversion.samples[1]["meta_info"]["reference_page"] == slides[1]["meta_info"]["reference_page"]
    raw = [
        {"deck_name": "deck-a_95", "qa_id": 7, "question": "q?", "answer": "a", "evidence_pages": [3, 9]},
        {"deck_name": "deck-b", "qa_id": 8, "question": "q?", "answer": "a", "evidence_pages": [21]},
        {
            "deck_name": "deck-c",
            "qa_id": 9,
            "question": "q?",
            "answer": "a",
            "evidence_pages": [2],
            "reasoning_type": "Multi-Hop",
            "answer_type": "Non-Span",
        },
    ]
    rows = convert_slidevqa(raw)
    assert list(rows.skipped) == ["slidevqa-test-8"]
    assert [s["meta_info"]["categories"] for s in rows.samples] == [
        {"hop": ["multi-hop"]},
        {"hop": ["multi-hop"], "answer_type": ["non-span"]},
    ]
    assert rows.samples[0]["meta_info"]["file_name"] == "deck-a_95.pdf"


def test_cli_writes_samples_and_exits_nonzero_when_records_were_left_out(mmlb_records, tmp_path):
    source = tmp_path / "samples.json"
    source.write_text(json.dumps(mmlb_records[140:150]))
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["mmlongbench", "--input", str(source), "--out", str(out)])
    assert exit_info.value.code == 1
    assert len(json.loads(out.read_text())) == 9
