"""`llamafactory-cli`, with the environment of a machine without torchvision prepared first.

    .venv-sft/bin/python LLaMA-Factory/launch.py train LLaMA-Factory/examples/train_full/qwen2_5vl_full_sft.yaml \
        [key=value ...]

Arguments are llamafactory-cli's. Where torchvision and torchaudio import (GPU nodes) this changes nothing and
`llamafactory-cli` may be called directly. Where they do not (CPU machines: their registry wheels are CUDA-linked),
stock LLaMA-Factory 0.9.5 fails twice before training, and this launcher removes both causes:
- `llamafactory.data.mm_plugin` imports torchaudio at module level (it uses it only for audio): an empty module
  stands in for it.
- Its `AutoProcessor` call fails on Qwen2.5-VL's video processor (which needs torchvision) and the run dies later
  with "Processor was not found": the image-only Qwen2.5-VL processor of `unidoc_rl.compat` is supplied instead.
On CPU LLaMA-Factory trains in this process (no torchrun), so the patches reach it.

After a `train` run, the saved checkpoint is made loadable for rollouts: `use_cache` is switched back on (training
saves it off) and the processor class is recorded as the stock `Qwen2_5_VLProcessor`, so `AutoProcessor` loads it
on machines with torchvision.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STOCK_PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor"}


def stub_torchaudio() -> None:
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA-linked build raises OSError/RuntimeError, a missing one ImportError
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


class _ProcessorLoader:
    """Stands in for `AutoProcessor` inside LLaMA-Factory's loader: Qwen2/2.5-VL get the image-only processor."""

    def __init__(self, auto_processor):
        self._auto = auto_processor

    def from_pretrained(self, path, **kwargs):
        from transformers import AutoConfig

        model_type = getattr(AutoConfig.from_pretrained(path, trust_remote_code=True), "model_type", None)
        if model_type not in STOCK_PROCESSORS:
            return self._auto.from_pretrained(path, **kwargs)
        from unidoc_rl.compat import policy_processor_class

        kwargs.pop("use_fast", None)
        return policy_processor_class().from_pretrained(path, **kwargs)


def install_processor_loader() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    sys.path.insert(0, str(REPO_ROOT))
    from llamafactory.model import loader

    loader.AutoProcessor = _ProcessorLoader(loader.AutoProcessor)


def finalize_checkpoint(output_dir: Path) -> None:
    """Make a saved SFT checkpoint ready for rollouts (see the module docstring)."""
    config_path = output_dir / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    for section in (config, config.get("text_config") or {}):
        if "use_cache" in section:
            section["use_cache"] = True
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    stock = STOCK_PROCESSORS.get(config.get("model_type"))
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = output_dir / name
        if stock and path.is_file():
            values = json.loads(path.read_text())
            if "processor_class" in values:
                values["processor_class"] = stock
                path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def _output_dir(argv: list[str]) -> Path | None:
    """`output_dir` of a train command: a key=value override wins over the yaml file."""
    for argument in argv[1:]:
        if argument.startswith("output_dir="):
            return Path(argument.split("=", 1)[1])
    config = next((Path(a) for a in argv[1:] if a.endswith((".yaml", ".yml", ".json"))), None)
    if config is None or not config.is_file():
        return None
    import yaml

    value = (yaml.safe_load(config.read_text()) or {}).get("output_dir")
    return Path(value) if value else None


def main() -> None:
    stub_torchaudio()
    install_processor_loader()
    from llamafactory.cli import main as llamafactory_main

    argv = sys.argv[1:]
    llamafactory_main()
    if argv and argv[0] == "train":
        output_dir = _output_dir(argv)
        if output_dir is not None:
            finalize_checkpoint(output_dir)


if __name__ == "__main__":
    main()
