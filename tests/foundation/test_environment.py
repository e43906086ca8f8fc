import importlib.util
import sys

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
