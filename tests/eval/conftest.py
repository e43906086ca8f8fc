"""Evaluation fixtures: a small three-benchmark world (pages, samples, search results) served on loopback.

Search (a static search service), judge (scripted exact-match OpenAI server) and policy (a scripted
`ScriptedLLMClient` behind the OpenAI-compatible policy server) are real HTTP servers on loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from unidoc_rl.agent.verl_worker import rope_processor
from unidoc_rl.env.vision import PixelBudget, display_size
from unidoc_rl.standins.eval_policies import oracle_plan, plan_policy, unknown_plan
from unidoc_rl.standins.policy_server import PolicyServer
from unidoc_rl.standins.scripted_client import ScriptedLLMClient
from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge
from unidoc_rl.standins.static_search_server import StaticSearchServer

RAW_SIZE = (600, 800)
AGENT_OVERRIDES = ["unidoc_agent.max_turns=6", "unidoc_agent.max_tokens_per_turn=160", "unidoc_agent.search_top_k=5"]
CROP_BOX = [100.0, 150.0, 700.0, 450.0]
"""Gold box (0-1000 frame) of the one sample that requires a crop."""


def pattern_page(seed: int) -> Image.Image:
    width, height = RAW_SIZE
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([(x * 3 + seed) % 256, (y * 5 + seed) % 256, (x + y + 40 * seed) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def sample(uid, benchmark, query, answer, file_name, pages, categories, **meta) -> dict:
    return {
        "uid": uid,
        "query": query,
        "reference_answer": answer,
        "meta_info": {
            "file_name": file_name,
            "reference_page": pages,
            "benchmark": benchmark,
            "categories": categories,
            **meta,
        },
    }


# (sample, ranking the search returns for its question). Gold ranks: 1, 3 (rank 2), 1, 2 (rank 1), none, 1.
WORLD = [
    (
        sample("s1", "slidevqa", "What is the profit in 2011?", "12.5 bn", "deck.pdf", [2], {"hop": ["single-hop"]}),
        ["deck_2", "deck_1", "deck_3"],
    ),
    (
        sample("s2", "slidevqa", "Which year had the most growth?", "2009", "deck.pdf", [3], {"hop": ["multi-hop"]}),
        ["deck_1", "deck_2", "deck_3"],
    ),
    (
        sample(
            "v1",
            "vidoseek",
            "Which areas are on the coast?",
            "Kent",
            "guide.pdf",
            [1],
            {"query_type": ["single-hop"], "source_type": ["layout"]},
            reference_boxes=[[CROP_BOX]],
            crop_required=[True],
        ),
        ["guide_1", "guide_2", "guide_3"],
    ),
    (
        sample(
            "v2",
            "vidoseek",
            "What temperature is used?",
            "195 C",
            "guide.pdf",
            [3],
            {"query_type": ["multi-hop"], "source_type": ["text"]},
        ),
        ["guide_2", "guide_3", "guide_1"],
    ),
    (
        sample(
            "m1",
            "mmlongbench",
            "How many charts are there?",
            "Not answerable",
            "report.pdf",
            [],
            {"evidence_pages": ["unanswerable"], "evidence_source": []},
            answer_format="None",
        ),
        ["report_1", "report_2", "report_3"],
    ),
    (
        sample(
            "m2",
            "mmlongbench",
            "How many references are there?",
            "8",
            "report.pdf",
            [2],
            {"evidence_pages": ["single-page"], "evidence_source": ["text"]},
            answer_format="Int",
        ),
        ["report_2", "report_1", "report_3"],
    ),
]


@pytest.fixture(scope="session")
def processor(tiny_policy_dir):
    return rope_processor(tiny_policy_dir)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-world")
    pages = {
        f"{doc}_{page}": pattern_page(seed)
        for seed, (doc, page) in enumerate((doc, page) for doc in ("deck", "guide", "report") for page in (1, 2, 3))
    }
    samples = [entry for entry, _ in WORLD]
    rankings = {entry["query"]: ranking for entry, ranking in WORLD}
    # The oracle's query finds the gold pages first (then the rest of the question's ranking).
    for entry, ranking in WORLD:
        gold = gold_pages(entry)
        rankings[ORACLE_PREFIX + entry["query"]] = gold + [page for page in ranking if page not in gold]
    path = root / "samples.json"
    path.write_text(json.dumps(samples))
    with StaticSearchServer(pages, rankings, root / "pages") as search, ScriptedLLMServer(exact_match_judge()) as judge:
        yield SimpleNamespace(samples=samples, rankings=rankings, samples_path=path, search=search, judge=judge)


ORACLE_PREFIX = "oracle: "


def gold_pages(entry) -> list[str]:
    meta = entry["meta_info"]
    return [f"{Path(meta['file_name']).stem}_{page}" for page in meta["reference_page"]]


def crop_box_display(processor) -> list[float]:
    size = processor.image_processor.size
    width, height = display_size(RAW_SIZE, PixelBudget(size["shortest_edge"], size["longest_edge"]))
    x1, y1, x2, y2 = CROP_BOX
    return [x1 * width / 1000, y1 * height / 1000, x2 * width / 1000, y2 * height / 1000]


def oracle_plans(world, processor) -> dict:
    plans = {}
    for entry in world.samples:
        query = ORACLE_PREFIX + entry["query"]
        crop = crop_box_display(processor) if entry["meta_info"].get("crop_required") else None
        plans[entry["query"]] = oracle_plan(
            query, world.rankings[query], gold_pages(entry), entry["reference_answer"], crop
        )
    return plans


def unknown_plans(world) -> dict:
    return {entry["query"]: unknown_plan(entry["query"]) for entry in world.samples}


@pytest.fixture
def serve_policy(processor):
    """Serve a plan policy on loopback; yields a factory returning the policy server."""
    servers = []

    def make(plans):
        client = ScriptedLLMClient(processor.tokenizer, plan_policy(processor.tokenizer, plans))
        server = PolicyServer(client, processor).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def eval_argv(world, policy_url: str, tiny_policy_dir, out_dir: Path, *extra: str) -> list[str]:
    argv = [
        "--samples",
        str(world.samples_path),
        "--out_dir",
        str(out_dir),
        "--search-url",
        world.search.url,
        "--merged-corpus",
        "--judge-url",
        world.judge.base_url,
        "--policy-url",
        policy_url,
        "--policy-model",
        "scripted",
        "--tokenizer-path",
        str(tiny_policy_dir),
        "--experiment",
        "local_cpu",
        "--concurrency",
        "4",
    ]
    for override in AGENT_OVERRIDES:
        argv += ["--override", override]
    return argv + list(extra)


@pytest.fixture(scope="session")
def kit(processor):
    return SimpleNamespace(
        oracle_plans=oracle_plans,
        unknown_plans=unknown_plans,
        eval_argv=eval_argv,
        crop_box_display=crop_box_display,
        exact_match_judge=exact_match_judge,
        processor=processor,
    )
