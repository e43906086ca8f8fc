"""`make demo`'s job, end to end on loopback: ingest, serve, prepare, train, summarize."""

import pytest
from transformers import Qwen2_5_VLForConditionalGeneration

from unidoc_rl.demo import main
from unidoc_rl.episode import FinishReason
from unidoc_rl.jsonl import read_jsonl


@pytest.mark.slow
def test_demo_trains_the_tiny_policy_against_the_live_search_service(tmp_path):
    summary = main(["--out_dir", str(tmp_path), "--steps", "2", "local_trainer.save_freq=1"])

    assert summary["steps"] == 2
    trajectories = read_jsonl(tmp_path / "logs/trajectories.jsonl")
    assert len(trajectories) == 2 * 2 * 4  # steps x prompts x group size
    assert {t["step"] for t in trajectories} == {1, 2}
    # The untrained tiny policy writes no valid action: every episode runs out of turns with format 0, so the
    # format gate zeroes every reward and the judge is never asked.
    for trajectory in trajectories:
        episode = trajectory["episode"]
        assert episode["finish_reason"] == FinishReason.MAX_TURNS
        assert episode["actions"] == ["invalid"] * 4
        assert trajectory["reward"] == 0.0 and trajectory["components"]["format"] == 0.0
        assert trajectory["components"]["judge_called"] == 0.0
        assert episode["question"] and trajectory["ground_truth"]["reference_answer"]
        assert trajectory["ground_truth"]["gold_pages"][0]["page_id"]
    assert summary["last_step"] == {
        "reward": 0.0,
        "turns": 4.0,
        "crop_rate": 0.0,
        "invalid_actions": 4.0,
        "answered": 0.0,
    }
    assert summary["reward_mean_over_steps"]["reward_format"] == 0.0

    assert summary["checkpoint"].endswith("global_step_2")
    assert (tmp_path / "checkpoints/latest").read_text().strip() == "global_step_2"
    assert Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "checkpoints/global_step_2/model")
    assert [m["step"] for m in read_jsonl(tmp_path / "logs/metrics.jsonl")] == [1, 2]
    assert sorted(p.stem for p in (tmp_path / "data").glob("*.parquet")) == ["train", "val"]
    assert "GET /health" in (tmp_path / "search_service.log").read_text()
