"""Curation: the SFT difficulty filter and the RL-set filter (written as RL parquet through data.prepare)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from unidoc_rl.eval.curate import main

# (benchmark, uid) -> episodes as (accuracy, recall@all); s2 has no episode in the run.
EPISODES = {
    ("slidevqa", "s1"): [(1.0, 1.0), (0.0, 1.0)],  # found, one wrong -> RL; not all wrong -> not SFT-hard
    ("vidoseek", "v1"): [(0.0, 0.0), (0.0, 0.0)],  # never found -> not RL; all wrong -> SFT-hard
    ("vidoseek", "v2"): [(0.0, 0.0), (0.0, 0.5)],  # found once, wrong -> RL and SFT-hard
    ("mmlongbench", "m1"): [(0.0, None), (0.0, None)],  # no evidence pages -> never RL; SFT-hard
    ("mmlongbench", "m2"): [(1.0, 1.0), (1.0, 1.0)],  # always right -> neither
}


@pytest.fixture
def run_dir(tmp_path):
    lines = [
        {
            "key": f"{bench}/{uid}/{i}",
            "benchmark": bench,
            "uid": uid,
            "sample_index": i,
            "accuracy": acc,
            "metrics": {"recall@all": recall},
        }
        for (bench, uid), episodes in EPISODES.items()
        for i, (acc, recall) in enumerate(episodes)
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tmp_path


def run(argv, capsys) -> dict:
    main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sft_difficulty_filter(world, run_dir, tmp_path, capsys):
    out = tmp_path / "hard.json"
    report = run(["sft", "--run", str(run_dir), "--samples", str(world.samples_path), "--out", str(out)], capsys)
    assert report == {"kept": 3, "dropped": 2, "not_evaluated": 1, "out": str(out)}
    assert [s["uid"] for s in json.loads(out.read_text())] == ["v1", "v2", "m1"]


def test_rl_set_filter_writes_rl_parquet(world, run_dir, tmp_path, capsys):
    out_dir = tmp_path / "rl"
    argv = [
        "rl",
        "--run",
        str(run_dir),
        "--samples",
        str(world.samples_path),
        "--out_dir",
        str(out_dir),
        "--val_size",
        "0",
    ]
    report = run(argv, capsys)
    assert (report["kept"], report["dropped"], report["not_evaluated"]) == (2, 3, 1)
    rows = pq.read_table(out_dir / "train.parquet").to_pylist()
    assert sorted(row["extra_info"]["uid"] for row in rows) == ["s1", "v2"]
    by_uid = {row["extra_info"]["uid"]: row for row in rows}
    assert by_uid["v2"]["reward_model"]["ground_truth"]["gold_pages"][0]["page_id"] == "guide_3"
    assert by_uid["s1"]["agent_name"] == "unidoc_agent"
    assert pq.read_table(out_dir / "val.parquet").num_rows == 0
