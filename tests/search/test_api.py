"""The service contract over real HTTP on loopback: GET/POST /search, /health, /image, bad input, API key,
and searches during an ingest that see the old or the new index, never a mix."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from search_engine.client import AsyncSearchClient, SearchClient, SearchError
from search_engine.ingestion import IngestConfig, ingest
from search_engine.search_engine_api import ServiceConfig, build_parser, create_app
from search_engine.types import SearchHit
from search_engine.vector_index import DEFAULT_CANDIDATES


@pytest.fixture
def corpus(make_pdf, tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    make_pdf(root / "fleet.pdf", ["The fleet has 48 turbines near Harbour Point.", "Maintenance costs fell."])
    make_pdf(root / "survey.pdf", ["Residents used 131 litres of water per day."])
    ingest(IngestConfig(dataset_dir=root, dpi=72, progress=False))
    return root


@pytest.fixture
def service(corpus: Path, run_service):
    with run_service(create_app(ServiceConfig(dataset_dir=str(corpus), max_queries=4, max_query_chars=50))) as url:
        yield url


def test_get_search_is_vrag_compatible(service: str, corpus: Path):
    response = httpx.get(f"{service}/search", params={"queries": ["turbines Harbour", "litres water"], "top_k": 2})
    assert response.status_code == 200
    body = response.json()
    assert [[hit["page_id"] for hit in hits] for hits in body] == [["fleet_1", "fleet_2"], ["survey_1", "fleet_1"]]
    first = body[0][0]
    assert set(first) == {"idx", "image_file", "page_id", "score"}
    assert first["idx"] == 0 and first["image_file"] == str((corpus / "pages" / "fleet_1.png").resolve())


def test_post_search_health_and_client(service: str):
    response = httpx.post(f"{service}/search", json={"queries": ["litres"], "top_k": 1})
    assert response.json()["results"][0][0]["page_id"] == "survey_1"
    health = httpx.get(f"{service}/health").json()
    assert (health["num_pages"], health["backend"], health["model"]) == (3, "bm25", "bm25s")
    with SearchClient(service) as client:
        hits = client.search(["turbines"], top_k=3)
        assert isinstance(hits[0][0], SearchHit) and hits[0][0].page_id == "fleet_1" and len(hits[0]) == 3
        assert len(client.search(["turbines"])[0]) == 3  # default top_k 10, capped by the index size


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"queries": []}, 422, "at least one query"),
        ({"queries": ["  "]}, 422, "queries.0: query is empty"),
        ({"queries": [3]}, 422, "queries.0: Input should be a valid string"),
        ({"queries": "turbines"}, 422, "queries: Input should be a valid list"),
        ({"queries": ["a"] * 5}, 413, "5 queries exceed the limit of 4"),
        ({"queries": ["x" * 51]}, 413, "51 characters exceed 50"),
        ({"queries": ["a"], "top_k": 0}, 422, "top_k: 0 is not in [1, 100]"),
        ({"queries": ["a"], "top_k": 101}, 422, "top_k: 101 is not in [1, 100]"),
        ({"queries": ["a"], "top_k": "3"}, 422, "top_k: Input should be a valid integer"),
        ({"queries": ["a"], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_requests_get_4xx_with_a_message_and_the_service_keeps_serving(service, body, status, message):
    response = httpx.post(f"{service}/search", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert httpx.post(f"{service}/search", json={"queries": ["litres"]}).status_code == 200


def test_bad_get_requests_and_oversized_body(service: str):
    assert httpx.get(f"{service}/search").status_code == 422
    response = httpx.get(f"{service}/search", params={"queries": "a", "top_k": "many"})
    assert response.status_code == 422 and "top_k" in response.json()["detail"]
    response = httpx.post(f"{service}/search", content=b'{"queries": ["' + b"a" * 300_000 + b'"]}')
    assert response.status_code == 413 and "exceeds" in response.json()["detail"]
    with SearchClient(service, retries=3) as client:
        with pytest.raises(SearchError, match="HTTP 422: top_k: 0 is not in") as raised:
            client.search(["a"], top_k=0)
        assert raised.value.status_code == 422


def test_image_endpoint_serves_pngs_of_known_pages_only(service: str, corpus: Path):
    response = httpx.get(f"{service}/image/survey_1")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (corpus / "pages" / "survey_1.png").read_bytes()
    for bad in ("survey_9", "..%2Fsurvey.pdf", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "fleet.pdf"):
        assert httpx.get(f"{service}/image/{bad}").status_code == 404
    with SearchClient(service) as client:
        hit = SearchHit(idx=2, image_file="/nonexistent/elsewhere.png", page_id="survey_1", score=1.0)
        assert client.load_image(hit).size == (300, 200)


async def test_async_client_from_a_running_loop(service: str):
    client = AsyncSearchClient(service)
    try:
        hits = await client.search(["turbines", "litres"], top_k=1)
        assert [h[0].page_id for h in hits] == ["fleet_1", "survey_1"]
        image = await client.load_image(SearchHit(idx=2, image_file="/missing.png", page_id="survey_1", score=0.0))
        assert image.size == (300, 200)
        with pytest.raises(SearchError, match="422"):
            await client.search([""])
    finally:
        await client.aclose()


def test_api_key_is_required_when_configured_and_for_non_loopback_binds(corpus: Path, run_service):
    with pytest.raises(ValueError, match="API key"):
        create_app(ServiceConfig(dataset_dir=str(corpus), host="0.0.0.0"))
    with run_service(create_app(ServiceConfig(dataset_dir=str(corpus), api_key="s3cret"))) as url:
        assert httpx.post(f"{url}/search", json={"queries": ["a"]}).status_code == 401
        assert httpx.get(f"{url}/image/survey_1").status_code == 401
        with SearchClient(url, api_key="s3cret") as client:
            assert client.search(["litres"], top_k=1)[0][0].page_id == "survey_1"


def test_searches_during_an_ingest_see_old_or_new_index_never_a_mix(make_pdf, corpus: Path, run_service):
    new_docs = [f"zz{n:02d}" for n in range(12)]
    for stem in new_docs:
        make_pdf(corpus / f"{stem}.pdf", [f"{stem} first page about turbines", f"{stem} second page"])
    states = {frozenset(["fleet", "survey"] + new_docs[:n]) for n in range(len(new_docs) + 1)}
    seen: list[frozenset] = []
    errors: list[str] = []
    done = threading.Event()
    with run_service(create_app(ServiceConfig(dataset_dir=str(corpus)))) as url:

        def hammer() -> None:
            with SearchClient(url) as client:
                while not done.is_set():
                    try:
                        hits = client.search(["turbines"], top_k=100)[0]
                    except SearchError as error:
                        errors.append(str(error))
                        continue
                    docs = frozenset(h.page_id.rsplit("_", 1)[0] for h in hits)
                    pages = {h.page_id for h in hits}
                    expected_pages = {"fleet_1", "fleet_2", "survey_1"} | {
                        f"{d}_{n}" for d in docs - {"fleet", "survey"} for n in (1, 2)
                    }
                    if pages != expected_pages or len(hits) != len(pages):
                        errors.append(f"half-visible document in {sorted(pages)}")
                    seen.append(docs)

        readers = [threading.Thread(target=hammer) for _ in range(3)]
        for reader in readers:
            reader.start()
        ingest(IngestConfig(dataset_dir=corpus, dpi=72, shard_pages=1, progress=False))
        done.set()
        for reader in readers:
            reader.join(timeout=30)
        final = SearchClient(url).search(["turbines"], top_k=100)[0]
    assert errors == []
    assert set(seen) <= states
    assert len(set(seen)) >= 3, "the searches did not overlap the ingest"
    assert len(final) == 3 + 2 * len(new_docs)


def test_residency_and_candidates_reach_the_searcher(corpus: Path, monkeypatch: pytest.MonkeyPatch):
    args = build_parser().parse_args(["--dataset_dir", str(corpus), "--residency", "mmap", "--residual_bits", "4"])
    app = create_app(ServiceConfig(**vars(args)))
    assert app.state.searcher.settings.residency == "mmap"
    assert app.state.searcher.settings.candidates == DEFAULT_CANDIDATES == 512
    assert app.state.searcher.settings.residual_bits == 4
    monkeypatch.setenv("UNIDOC_SEARCH_RESIDENCY", "fp32")
    assert build_parser().parse_args([]).residency == "fp32"
    assert build_parser().parse_args(["--residency", "fp16"]).residency == "fp16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--residency", "bf16"])
