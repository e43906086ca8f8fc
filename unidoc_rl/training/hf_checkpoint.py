"""Make a verl checkpoint's Hugging Face folder loadable as a policy: add the processor files it lacks.

verl writes the actor's weights, config and tokenizer to `global_step_N/actor/huggingface/` (with
`actor.checkpoint.save_contents` including `hf_model`), but on its engine path it saves the tokenizer as the
processing class, so the image processor's settings (`processor_config.json` and the like) are missing, and
the evaluation harness, the local engine and vLLM cannot build the Qwen2.5-VL processor from that folder. The
missing files are taken from the model training started from (MODEL_PATH of train.sh), whose processor GRPO does
not change.

    python -m unidoc_rl.training.hf_checkpoint CHECKPOINT/global_step_N/actor/huggingface --base-model SFT_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unidoc_rl.common.atomic import atomic_write_bytes

PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
)
"""Files that describe the processor rather than the weights or the tokenizer."""


def complete_processor_files(checkpoint_dir: Path, base_model_dir: Path) -> list[str]:
    """Copies into `checkpoint_dir` every processor file of `base_model_dir` it lacks; returns their names."""
    if not (checkpoint_dir / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} holds no config.json: not a Hugging Face model folder")
    present = [name for name in PROCESSOR_FILES if (base_model_dir / name).is_file()]
    if not present:
        raise FileNotFoundError(f"{base_model_dir} holds none of {', '.join(PROCESSOR_FILES)}")
    copied = []
    for name in present:
        if not (checkpoint_dir / name).exists():
            atomic_write_bytes(checkpoint_dir / name, (base_model_dir / name).read_bytes())
            copied.append(name)
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", type=Path, help="a verl checkpoint's actor/huggingface folder")
    parser.add_argument("--base-model", type=Path, required=True, help="the model the run started from")
    args = parser.parse_args(argv)
    copied = complete_processor_files(args.checkpoint_dir, args.base_model)
    print(json.dumps({"checkpoint": str(args.checkpoint_dir), "copied": copied}))


if __name__ == "__main__":
    main()
