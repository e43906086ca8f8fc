"""A verl checkpoint's Hugging Face folder becomes a loadable policy once the processor files are added."""

import json

import pytest

from unidoc_rl.training.hf_checkpoint import complete_processor_files


def test_missing_processor_files_are_copied_and_present_ones_kept(tmp_path):
    base, checkpoint = tmp_path / "sft", tmp_path / "huggingface"
    base.mkdir()
    checkpoint.mkdir()
    (base / "processor_config.json").write_text(json.dumps({"image_processor": {"merge_size": 2}}))
    (base / "chat_template.jinja").write_text("base template")
    (base / "model.safetensors").write_bytes(b"base weights")
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "chat_template.jinja").write_text("checkpoint template")

    assert complete_processor_files(checkpoint, base) == ["processor_config.json"]
    assert json.loads((checkpoint / "processor_config.json").read_text()) == {"image_processor": {"merge_size": 2}}
    assert (checkpoint / "chat_template.jinja").read_text() == "checkpoint template"
    assert not (checkpoint / "model.safetensors").exists()
    assert complete_processor_files(checkpoint, base) == []


def test_folders_that_are_not_models_are_refused(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        complete_processor_files(tmp_path / "empty", tmp_path / "base")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds none of"):
        complete_processor_files(tmp_path / "empty", tmp_path / "base")
