"""Qwen2-VL-family processors on machines without torchvision.

Why this module exists: the torchvision wheel on PyPI is CUDA-linked, so CPU machines run without torchvision.
transformers' torchvision image processor module (`image_processing_qwen2_vl`) and its video processor then fail
to import, which breaks `Qwen2_5_VLProcessor` (it always builds a video processor) and colpali-engine (it imports
`smart_resize` from that module). The PIL image processor computes the same pixels and needs no torchvision.

Everything here is a no-op when torchvision is importable, so GPU machines use the stock classes.
Import this module before colpali-engine; `unidoc_rl` imports it on package import. Programs that load a checkpoint
through stock code without importing `unidoc_rl` (vLLM's server and its engine processes) get it from a `.pth` line
that `make vllm-env` writes into that environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

from unidoc_rl.import_hooks import after_import

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

_TORCHVISION_IMAGE_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"


class _PilImageModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the torchvision image-processor module from the PIL one, when (and only when) it is imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TORCHVISION_IMAGE_MODULE:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil_module

        module.smart_resize = pil_module.smart_resize
        module.Qwen2VLImageProcessor = pil_module.Qwen2VLImageProcessorPil


def install_torchvision_free_image_module() -> None:
    """Stand the PIL Qwen2-VL image processor in for the torchvision one (same `smart_resize`, same pixels).

    Lazy: transformers is loaded only when something imports the module, so `import unidoc_rl` stays cheap.
    """
    if HAS_TORCHVISION or any(isinstance(finder, _PilImageModuleFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _PilImageModuleFinder())


def _image_only(processor_cls: type, name: str | None = None) -> type:
    """A subclass whose `__init__` has no `video_processor`: transformers derives sub-processors from it."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    namespace = {"__init__": __init__, "__module__": processor_cls.__module__, "image_only": True}
    return type(name or f"ImageOnly{processor_cls.__name__}", (processor_cls,), namespace)


_POLICY_PROCESSOR_MODULE = "transformers.models.qwen2_5_vl.processing_qwen2_5_vl"


def _make_policy_processor_image_only(module) -> None:
    stock = module.Qwen2_5_VLProcessor
    if not getattr(stock, "image_only", False):
        module.Qwen2_5_VLProcessor = _image_only(stock, name=stock.__name__)
    package = sys.modules.get(_POLICY_PROCESSOR_MODULE.rpartition(".")[0])
    if package is not None and "Qwen2_5_VLProcessor" in vars(package):  # the lazy package cached the stock class
        package.Qwen2_5_VLProcessor = module.Qwen2_5_VLProcessor


def install_image_only_policy_processor() -> None:
    """Replaces `Qwen2_5_VLProcessor` by its image-only subclass (same name) as its module is imported: stock code
    that loads a Qwen2.5-VL checkpoint (`Qwen2_5_VLProcessor.from_pretrained`, as vLLM does) otherwise builds the
    video processor, which needs torchvision. The policy takes page images only."""
    if not HAS_TORCHVISION:
        after_import(_POLICY_PROCESSOR_MODULE, _make_policy_processor_image_only)


install_torchvision_free_image_module()
install_image_only_policy_processor()


def policy_processor_class() -> type:
    from transformers import Qwen2_5_VLProcessor

    return Qwen2_5_VLProcessor


def retriever_processor_class(model_family: str = "colqwen2") -> type:
    if model_family == "colqwen2":
        from colpali_engine.models import ColQwen2Processor as processor_cls
    elif model_family == "colqwen2_5":
        from colpali_engine.models import ColQwen2_5_Processor as processor_cls
    else:
        raise ValueError(f"unknown retriever family {model_family!r}; expected 'colqwen2' or 'colqwen2_5'")
    return processor_cls if HAS_TORCHVISION else _image_only(processor_cls)


def load_policy_processor(path: str | Path, **kwargs):
    """Load a Qwen2.5-VL processor from a checkpoint directory, with or without torchvision."""
    if HAS_TORCHVISION:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(path), **kwargs)
    return policy_processor_class().from_pretrained(str(path), **kwargs)


def load_retriever_processor(path: str | Path, model_family: str = "colqwen2", **kwargs):
    return retriever_processor_class(model_family).from_pretrained(str(path), **kwargs)
