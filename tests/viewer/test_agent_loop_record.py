"""A record written by the real agent loop (verl's AgentLoopWorker, scripted model, sample corpus pages) shows in
the viewer as the model saw it: the same turns, candidates and boxes, and a recomputed crop identical in pixels
to the image the model was given."""

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image
from verl.protocol import DataProto

from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend, unregister_inprocess_backend
from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config, rope_processor
from unidoc_rl.env.episode import ActionKind, EpisodeRecord
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.env.vision import PixelBudget
from unidoc_rl.episode_log import EpisodeLogLine
from unidoc_rl.standins.scripted_client import ScriptedLLMClient
from unidoc_rl.standins.tiny_models import tiny_policy_path
from unidoc_rl.viewer.app import Viewer, ViewerSettings
from unidoc_rl.viewer.links import ServerLinks

pytestmark = pytest.mark.slow  # builds verl's worker and the tiny policy (~25 s on 2 cores)

TINY_BUDGET = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
"""The tiny policy's processor budget, which the agent displays pages and zooms crops at."""
PAGES = ["northwind_annual_report_2023_2", "northwind_annual_report_2023_1", "lakeside_battery_study_2"]
SCRIPT = [
    "<think>Find the regional revenue table.</think><search>revenue by region</search>",
    "<select>0</select>",
    "<bbox>[20, 60, 150, 90]</bbox>",
    "<select>7</select>",
    "<answer>845</answer>",
]


@pytest.fixture(scope="module")
def agent_run(fixture_run):
    pages = {}
    for page_id in PAGES:
        with Image.open(fixture_run.pages_dir / f"{page_id}.png") as image:
            pages[page_id] = image.convert("RGB")
    policy = str(tiny_policy_path())
    processor = rope_processor(policy)
    name = "viewer-static"
    url = register_inprocess_backend(name, StaticSearchBackend(pages, {"revenue by region": PAGES}))
    try:
        config = compose_verl_config(
            [
                f"actor_rollout_ref.model.path={policy}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.prompt_length=512",
                "actor_rollout_ref.rollout.response_length=4096",
                "actor_rollout_ref.rollout.calculate_log_probs=True",
            ],
            {"unidoc_agent": {"search_url": url}},
        )
        client = ScriptedLLMClient(processor.tokenizer, SCRIPT)
        batch = DataProto.from_single_dict(
            {
                "raw_prompt": np.array(
                    [load_prompts().prompt_messages("What was the revenue in Asia in 2023?")], dtype=object
                ),
                "agent_name": np.array(["unidoc_agent"], dtype=object),
                "extra_info": np.array([{"uid": "nw-asia-2023"}], dtype=object),
            }
        )
        batch.meta_info["validate"] = False
        output = asyncio.run(build_agent_loop_worker(config, client, processor=processor).generate_sequences(batch))
    finally:
        unregister_inprocess_backend(name)
    record = EpisodeRecord.from_dict(output.non_tensor_batch["episode"][0])
    run_dir = fixture_run.root / "agent-run"
    run_dir.mkdir()
    line = EpisodeLogLine(uid=record.uid, episode=record, step=1).to_dict()
    (run_dir / "trajectories.jsonl").write_text(json.dumps(line) + "\n")
    viewer = Viewer(ViewerSettings(run_dir=run_dir, pages_dir=fixture_run.pages_dir, budget=TINY_BUDGET))
    return record, client, viewer


def test_the_viewer_follows_a_real_agent_loop_record(agent_run):
    record, client, viewer = agent_run
    assert record.actions == [
        ActionKind.SEARCH,
        ActionKind.SELECT,
        ActionKind.BBOX,
        ActionKind.INVALID,
        ActionKind.ANSWER,
    ]
    timeline = viewer.timeline(0, 0)
    assert [view.kind for view in timeline] == record.actions
    assert [c.page_id for c in timeline[0].candidates] == PAGES
    assert timeline[1].focus.page_id == PAGES[0]
    focus = timeline[2].focus
    assert focus.display_size == tuple(record.page_sizes[PAGES[0]]["display"])
    assert focus.model_boxes == [(20.0, 60.0, 150.0, 90.0)]
    assert timeline[3].turn.detail.startswith("index_out_of_range") and timeline[3].turn.observation

    model_crop = client.calls[3].images[-1]  # the zoomed crop, the last image before the fourth turn
    shown = Image.open(io.BytesIO(viewer.crop_png(0, 0, 0, 0))).convert("RGB")
    assert shown.size == model_crop.size == focus.recomputed_size
    assert np.array_equal(np.asarray(shown), np.asarray(model_crop.convert("RGB")))
    html = viewer.episode_html(0, 0, ServerLinks())
    assert "pass the run&#x27;s --min-pixels" not in html and html.count("<article class='turn") == 5


def test_a_wrong_pixel_budget_is_flagged(agent_run, fixture_run):
    record, _, viewer = agent_run
    other = Viewer(ViewerSettings(run_dir=viewer.run_dir, pages_dir=fixture_run.pages_dir, budget=PixelBudget()))
    html = other.episode_html(0, 0, ServerLinks())
    assert "but the model was shown" in html
