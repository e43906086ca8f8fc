"""bm25 over the text layer finds the reference page of every sample question of the sample corpus."""

from __future__ import annotations

import json
from pathlib import Path

from search_engine.ingestion import IngestConfig, ingest
from search_engine.searcher import Searcher

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "samples.json"


def test_sample_questions_rank_their_reference_page_first(sample_corpus: Path):
    ingest(IngestConfig(dataset_dir=sample_corpus, dpi=72, progress=False))
    samples = json.loads(SAMPLES.read_text())
    searcher = Searcher(sample_corpus / "index")
    results = searcher.search([s["query"] for s in samples], 3)
    for sample, hits in zip(samples, results, strict=True):
        meta = sample["meta_info"]
        gold = [f"{Path(meta['file_name']).stem}_{page}" for page in meta["reference_page"]]
        # A multi-hop question names one of its pages; the other is found through what that page says.
        assert hits[0].page_id in gold, (sample["query"], [h.page_id for h in hits])
        assert hits[0].image_file == str((sample_corpus / "pages" / f"{hits[0].page_id}.png").resolve())
        assert hits[0].score > hits[1].score


def test_known_phrases_and_unknown_words(make_pdf, tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_pdf(corpus / "fleet.pdf", ["The fleet has 48 turbines near Harbour Point.", "Maintenance costs fell."])
    make_pdf(corpus / "survey.pdf", ["Residents used 131 litres of water per day."])
    ingest(IngestConfig(dataset_dir=corpus, dpi=72, progress=False))
    searcher = Searcher(corpus / "index")
    turbines, litres, nothing = searcher.search(["Harbour Point turbines", "litres per day", "zzzz qqqq"], 3)
    assert turbines[0].page_id == "fleet_1" and litres[0].page_id == "survey_1"
    # No known term: every page scores 0 and ties keep index order.
    assert [(h.page_id, h.score) for h in nothing] == [("fleet_1", 0.0), ("fleet_2", 0.0), ("survey_1", 0.0)]
    assert [h.idx for h in nothing] == [0, 1, 2]
