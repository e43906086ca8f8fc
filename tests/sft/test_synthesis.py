"""An oracle teacher run over the bundled samples: what each output line holds, and that it is the agent's view."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from unidoc_rl.data.prepare import ground_truth_of
from unidoc_rl.env import prompts
from unidoc_rl.env.actions import BBoxAction, parse_action
from unidoc_rl.env.vision import CoordinateConvention, PixelBudget, from_norm1000, model_box_to_raw, to_display
from unidoc_rl.rewards.components import box_iou
from unidoc_rl.synthesis.synthesize import model_box

BUDGET = PixelBudget(6272, 50176)


def test_every_sample_yields_a_correct_trajectory(oracle_run):
    assert sorted(oracle_run.lines) == sorted(sample["uid"] for sample in oracle_run.samples)
    summary = json.loads(oracle_run.output.with_name("out.summary.json").read_text())
    assert summary["succeeded"] == summary["correct"] == len(oracle_run.samples) and summary["failed"] == 0
    assert not oracle_run.output.with_name("out.failures.jsonl").read_text()
    for sample in oracle_run.samples:
        line = oracle_run.lines[sample["uid"]]
        assert line["verdict"] is True
        assert line["generated_answer"] == line["reference_answer"] == sample["reference_answer"]
        stages = line["stages"]
        assert stages["plan"] == {"calls": 1, "retries": 0, "failure": None}
        # n candidates, each shown at each of n positions: n requests per search
        assert stages["rerank"]["calls"] == sum(len(step["candidates"]) for step in line["episode"]["searches"])
        assert stages["judge"]["calls"] == 1
        assert all(stage["failure"] is None and stage["retries"] == 0 for stage in stages.values())


def test_messages_are_the_agent_chat_with_one_placeholder_per_image(oracle_run):
    system = prompts.load_prompts().system_prompt(CoordinateConvention.ABSOLUTE, 3)
    for sample in oracle_run.samples:
        line = oracle_run.lines[sample["uid"]]
        messages = line["messages"]
        assert messages[0] == {"role": "system", "content": system}
        assert messages[1] == {"role": "user", "content": "Question: " + sample["query"]}
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * ((len(messages) - 1) // 2)
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        assert all("<image>" not in text for text in assistant)
        assert sum(m["content"].count("<image>") for m in messages) == len(line["images"])
        assert assistant[-1].endswith(f"<answer>{sample['reference_answer']}</answer>")
        assert messages[3]["content"].startswith(f"Results for: {sample['query']}\nImage 0: <image>")
        # Per search: select, then a crop exactly when the selected page needs one; then the answer.
        truth = ground_truth_of(sample)
        expected = []
        for step in line["episode"]["searches"]:
            expected += ["search", "select", *(["bbox"] if truth.requires_crop(step["selected"]) else [])]
        assert [parse_action(text).kind.value for text in assistant] == [*expected, "answer"]


def test_page_images_are_the_display_versions_of_the_indexed_pages(oracle_run, corpus_dir):
    root = oracle_run.output.parent
    for line in oracle_run.lines.values():
        episode = line["episode"]
        shown = [path for path in line["images"] if "/pages/" in path]
        for path in shown:
            page_id = re.fullmatch(r".*/pages/(.+)_\d+x\d+\.png", path).group(1)
            with Image.open(corpus_dir / "pages" / f"{page_id}.png") as raw:
                expected = to_display(raw, BUDGET)
            with Image.open(root / path) as saved:
                assert saved.size == tuple(episode["page_sizes"][page_id]["display"])
                assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(expected))


def test_boxes_are_written_in_the_display_frame_of_the_focus_page(oracle_run):
    crops = 0
    for sample in oracle_run.samples:
        line = oracle_run.lines[sample["uid"]]
        truth = ground_truth_of(sample)
        bboxes = [parse_action(m["content"]) for m in line["messages"] if m["role"] == "assistant"]
        bboxes = [action for action in bboxes if isinstance(action, BBoxAction)]
        recorded = [crop for step in line["episode"]["searches"] for crop in step["crops"]]
        assert len(bboxes) == len(recorded)
        for action, crop in zip(bboxes, recorded, strict=True):
            page_id = crop["page_id"]
            assert truth.requires_crop(page_id)
            sizes = line["episode"]["page_sizes"][page_id]
            mapped = model_box_to_raw(action.boxes[0], CoordinateConvention.ABSOLUTE, sizes["display"], sizes["raw"])
            assert max(box_iou(mapped.norm1000, gold) for gold in truth.boxes_for(page_id)) >= 0.5
            assert crop["boxes_display"] == [list(action.boxes[0])]
            crops += 1
    assert crops >= 10


@pytest.mark.parametrize("convention", list(CoordinateConvention))
def test_model_box_rounds_to_keep_thin_regions(convention):
    display = (168, 252)
    thin = (95.0, 909.0, 619.0, 916.0)  # 1.8 display pixels tall
    box = model_box(thin, display, convention)
    exact = from_norm1000(thin, display) if convention is CoordinateConvention.ABSOLUTE else thin
    assert all(isinstance(value, int) for value in box)
    naive = tuple(round(value) for value in exact)
    assert box_iou(box, exact) >= box_iou(naive, exact)
    assert box_iou(box, exact) > 0.6
