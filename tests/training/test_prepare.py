import json

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from unidoc_rl.compat import load_policy_processor
from unidoc_rl.data.prepare import AGENT_NAME, SampleValidationError, main, prepare
from unidoc_rl.rewards.ground_truth import GroundTruth


@pytest.fixture(scope="module")
def samples(repo_root):
    return json.loads((repo_root / "examples/samples.json").read_text())


def test_rows_carry_prompt_agent_and_ground_truth(samples):
    split = prepare(samples, data_source="sample_corpus", val_size=3, seed=0)
    assert len(split.train) == len(samples) - 3 and len(split.val) == 3
    uids = [row["extra_info"]["uid"] for row in split.train + split.val]
    assert sorted(uids) == sorted(s["uid"] for s in samples)
    row = next(r for r in split.train + split.val if r["extra_info"]["uid"] == "nw-asia-2023")
    assert row["agent_name"] == AGENT_NAME == "unidoc_agent"
    assert row["data_source"] == "sample_corpus"
    assert row["prompt"][-1] == {
        "role": "user",
        "content": "Question: What was Northwind Energy's revenue in Asia in 2023, in million euros?",
    }
    truth = GroundTruth.from_dict(row["reward_model"]["ground_truth"])
    assert truth.gold_page_ids == ("northwind_annual_report_2023_2",)
    assert truth.boxes_for("northwind_annual_report_2023_2") == ((95.0, 189.0, 905.0, 215.0),)
    assert truth.requires_crop("northwind_annual_report_2023_2") is True
    assert truth.reference_answer == "845"


def test_split_is_seeded_and_disjoint(samples):
    first = prepare(samples, "s", val_size=0.25, seed=7)
    again = prepare(samples, "s", val_size=0.25, seed=7)
    other = prepare(samples, "s", val_size=0.25, seed=8)
    val_uids = [r["extra_info"]["uid"] for r in first.val]
    assert val_uids == [r["extra_info"]["uid"] for r in again.val]
    assert val_uids != [r["extra_info"]["uid"] for r in other.val]
    assert len(val_uids) == round(0.25 * len(samples))
    assert not set(val_uids) & {r["extra_info"]["uid"] for r in first.train}


def test_one_error_lists_every_bad_uid_and_nothing_is_written(samples, tmp_path):
    bad = [
        samples[0],
        {"uid": "no-answer", "query": "q", "meta_info": {"file_name": "a.pdf", "reference_page": [1]}},
        {**samples[2], "uid": "page-zero", "meta_info": {**samples[2]["meta_info"], "reference_page": [0]}},
        {**samples[3], "uid": "unindexed"},
    ]
    known = {"northwind_annual_report_2023_1"}
    with pytest.raises(SampleValidationError) as error:
        prepare(bad, "s", known_page_ids=known)
    assert set(error.value.problems) == {"no-answer", "page-zero", "unindexed"}
    assert "missing reference_answer" in error.value.problems["no-answer"][0]
    assert "absent from the index: northwind_annual_report_2023_2" in error.value.problems["unindexed"][0]

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="2 sample\\(s\\) cannot be used"):
        main(["--samples", str(path), "--out_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_parquet_loads_through_verls_dataset(repo_root, tmp_path, tiny_policy_dir):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    samples = json.loads((repo_root / "examples/samples.json").read_text())
    main(["--samples", str(repo_root / "examples/samples.json"), "--out_dir", str(tmp_path), "--val_size", "2"])
    assert pq.read_table(tmp_path / "val.parquet").num_rows == 2
    config = OmegaConf.create(
        {
            "max_prompt_length": 1024,
            "return_raw_chat": True,
            "filter_overlong_prompts": False,
            "cache_dir": str(tmp_path),
        }
    )
    dataset = RLHFDataset(
        data_files=[str(tmp_path / "train.parquet")],
        tokenizer=AutoTokenizer.from_pretrained(tiny_policy_dir),
        config=config,
        processor=load_policy_processor(tiny_policy_dir),
    )
    assert len(dataset) == len(samples) - 2
    item = dataset[0]
    assert item["agent_name"] == "unidoc_agent"
    # The row carries the question only; the agent loop renders the system prompt from its settings.
    assert [message["role"] for message in item["raw_prompt"]] == ["user"]
    assert item["raw_prompt"][0]["content"].startswith("Question: ")
    truth = GroundTruth.from_dict(item["reward_model"]["ground_truth"])
    assert truth.gold_page_ids[0].rsplit("_", 1)[1].isdigit()


def test_reference_pages_are_checked_against_a_real_index(repo_root, tmp_path):
    import subprocess
    import sys

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    indexed = ("northwind_annual_report_2023.pdf", "lakeside_battery_study.pdf")
    for name in indexed:
        (corpus / name).write_bytes((repo_root / "examples/corpus" / name).read_bytes())
    subprocess.run(
        [sys.executable, str(repo_root / "search_engine/ingestion.py"), "--dataset_dir", str(corpus),
         "--index_dir", str(tmp_path / "index"), "--no_progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    samples = repo_root / "examples/samples.json"
    with pytest.raises(SystemExit) as error:
        main(["--samples", str(samples), "--out_dir", str(tmp_path / "out"), "--index_dir", str(tmp_path / "index")])
    message = str(error.value)
    unindexed = [s["uid"] for s in json.loads(samples.read_text()) if s["meta_info"]["file_name"] not in indexed]
    assert f"{len(unindexed)} sample(s) cannot be used" in message
    assert {"ws-satisfaction", "ws-oldtown-use", "sp-350-price", "sp-handling-fee"} <= set(unindexed)
    for uid in unindexed:
        assert f"{uid}: reference pages absent from the index" in message
    assert "nw-asia-2023" not in message
