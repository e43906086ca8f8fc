"""convert_to_llamafactory.py: ShareGPT records LLaMA-Factory accepts; bad samples rejected one by one, by uid."""

from __future__ import annotations

import copy
import json

from unidoc_rl.synthesis.convert_to_llamafactory import convert, main


def write_lines(path, lines, tail: str = "") -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + tail)


def test_converts_the_oracle_run(oracle_run, tmp_path, repo_root):
    target = tmp_path / "unidoc_sft.json"
    assert main(["--input-path", str(oracle_run.output), "--output-path", str(target)]) == 0
    records = json.loads(target.read_text())
    assert len(records) == len(oracle_run.lines)
    for record, line in zip(records, sorted(oracle_run.lines.values(), key=lambda line: line["uid"]), strict=True):
        assert set(record) == {"messages", "images"}
        assert record["messages"] == [{"role": m["role"], "content": m["content"]} for m in line["messages"]]
        assert [p.split("out_images/")[1] for p in record["images"]] == [
            p.split("out_images/")[1] for p in line["images"]
        ]
        assert all(p.startswith("/") for p in record["images"])
        assert "verdict" not in json.dumps(record["messages"])
    info = json.loads((repo_root / "LLaMA-Factory/data/dataset_info.json").read_text())
    assert info["unidoc_sft"]["file_name"] == target.name


def test_rejects_bad_samples_by_uid_and_keeps_the_rest(oracle_run, tmp_path):
    good = [copy.deepcopy(line) for line in oracle_run.lines.values()][:4]
    for line in good:  # the input folder moves: image paths stay relative to the output JSONL
        line["images"] = [str(oracle_run.output.parent / p) for p in line["images"]]
    extra_image = copy.deepcopy(good[0]) | {"uid": "extra-image"}
    extra_image["images"].append(extra_image["images"][0])
    in_assistant = copy.deepcopy(good[1]) | {"uid": "image-in-assistant"}
    in_assistant["messages"][2]["content"] += "<image>"
    in_assistant["images"].append(in_assistant["images"][0])
    two_users = copy.deepcopy(good[2]) | {"uid": "two-users"}
    two_users["messages"].insert(2, {"role": "user", "content": "again"})
    missing = copy.deepcopy(good[3]) | {"uid": "missing-image"}
    missing["images"][0] = str(tmp_path / "gone.png")
    wrong = copy.deepcopy(good[0]) | {"uid": "judged-wrong", "verdict": False}
    path = tmp_path / "mixed.jsonl"
    write_lines(path, [*good, extra_image, in_assistant, two_users, missing, wrong], tail='{"uid": "cut')

    result = convert(path)
    assert result.kept == sorted(line["uid"] for line in good)
    assert result.dropped_by_verdict == ["judged-wrong"]
    assert result.partial_last_line
    assert set(result.rejected) == {"extra-image", "image-in-assistant", "two-users", "missing-image"}
    assert "placeholders but" in result.rejected["extra-image"]
    assert "assistant turn 1 contains <image>" in result.rejected["image-in-assistant"]
    assert "expected 'assistant'" in result.rejected["two-users"]
    assert "does not exist" in result.rejected["missing-image"]
    assert sorted([line["uid"] for line in good] + ["judged-wrong"]) == convert(path, "any").kept


def test_the_dataset_does_not_depend_on_the_order_the_teacher_finished_in(oracle_run, tmp_path):
    folder = oracle_run.output.parent  # the input folder moves: image paths stay relative to the output JSONL
    lines = [line | {"images": [str(folder / p) for p in line["images"]]} for line in oracle_run.lines.values()]
    assert len({line["uid"] for line in lines}) > 1
    outputs = []
    for name, ordered in (("forward", lines), ("backward", lines[::-1])):
        source, target = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
        write_lines(source, ordered)
        assert main(["--input-path", str(source), "--output-path", str(target)]) == 0
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
