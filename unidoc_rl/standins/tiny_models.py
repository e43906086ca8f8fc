"""Tiny random-weight models built offline: a Qwen2.5-VL policy and a ColQwen2 retriever.

They stand in for hub checkpoints wherever none can be downloaded (tests, the CPU demo, benchmarks). Both are
built deterministically from a seed, saved with `save_pretrained`, and reloaded by the normal transformers /
colpali-engine calls, so every code path that loads a real checkpoint from a directory is exercised unchanged.

Builds are cached: `tiny_policy_path()` builds once into `<cache>/tiny_models/<name>-<fingerprint>` (atomically,
so concurrent test workers never see a half-written model) and returns that directory afterwards.
The cache root is `$UNIDOC_CACHE_DIR`, else `.cache/` in the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from unidoc_rl.common.atomic import atomic_directory
from unidoc_rl.env.actions import AnswerAction, format_action

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

ACTION_TAGS = ["think", "search", "select", "bbox", "answer"]

# The Qwen2.5-VL conversation format: a default system turn, `<|im_start|>role\n...<|im_end|>\n` per message,
# and `<|vision_start|><|image_pad|><|vision_end|>` where an image goes (the processor expands `<|image_pad|>`).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "the of and to in is for on with by from as at revenue table figure chart page document report annual total "
    "growth year quarter market share sales profit cost value percent rate number data source note see above below "
    "left right top bottom small print footnote section summary result results method model agent search select "
    "crop zoom answer question image region box what which how many when where who is was are were does did "
    "increase decrease million billion 2019 2020 2021 2022 2023 2024 europe asia america africa product service "
    "customer energy water carbon emission battery solar wind plant factory employee staff"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes shared by the tiny policy and retriever (a Qwen2-VL-family text tower and vision tower)."""

    kind: ClassVar[str] = "model"
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_heads: int = 2
    min_pixels: int = 8 * 28 * 28
    max_pixels: int = 64 * 28 * 28
    max_position_embeddings: int = 8192
    vocabulary_samples: str | None = None
    """Unified samples (a JSON file, relative to the repository) whose questions and answers join the tokenizer's
    training text, so that a corpus's words tokenize compactly, as they do with Qwen's own 150k-token vocabulary."""

    def fingerprint(self) -> str:
        payload = {"kind": self.kind, "format": 2, **asdict(self)}
        if self.vocabulary_samples:
            payload["vocabulary_sha256"] = hashlib.sha256(_repo_path(self.vocabulary_samples).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TinyPolicySpec(TinyModelSpec):
    kind: ClassVar[str] = "policy"
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    """Text head size hidden_size / num_attention_heads = 32: vLLM's CPU attention takes 32, 64, 80, ... (not 16)."""


@dataclass(frozen=True)
class TinyRetrieverSpec(TinyModelSpec):
    kind: ClassVar[str] = "retriever"


DEMO_POLICY = TinyPolicySpec(
    vocab_size=2048,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocabulary_samples="examples/samples.json",
)
"""The policy `make demo` trains: big enough to learn the action grammar from the bundled corpus's trajectories in a
few CPU minutes, with a vocabulary that knows the corpus's words."""


def _repo_path(relative: str) -> Path:
    return Path(__file__).resolve().parents[2] / relative


def _sample_text(relative: str, repeats: int = 10) -> list[str]:
    """The samples' questions and answers, repeated so that their words outrank the generated sentences' pairs."""
    samples = json.loads(_repo_path(relative).read_text())
    texts = [f"{sample['query']} {format_action(AnswerAction(sample['reference_answer']))}" for sample in samples]
    return texts * repeats


def default_cache_dir() -> Path:
    env = os.environ.get("UNIDOC_CACHE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache"


def _tokenizer_training_text(seed: int, lines: int = 4000) -> list[str]:
    """Document-like sentences and well-formed actions, so action tags and numbers tokenize compactly."""
    rng = random.Random(seed)
    text = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
        tag = rng.choice(ACTION_TAGS)
        if tag == "bbox":
            box = sorted(rng.sample(range(0, 1000), 2)) + sorted(rng.sample(range(0, 1000), 2))
            body = f"[{box[0]}, {box[2]}, {box[1]}, {box[3]}]"
        elif tag == "select":
            body = str(rng.randint(0, 4))
        else:
            body = sentence
        text.append(f"{sentence.capitalize()}. <{tag}>{body}</{tag}>")
    return text


def build_tokenizer(vocab_size: int, seed: int, extra_text: list[str] = ()):
    """A byte-level BPE trained locally (on `extra_text` too), with Qwen's special tokens and the Qwen2.5-VL chat
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_training_text(seed) + list(extra_text), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def _image_processor(min_pixels: int, max_pixels: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def _text_config(spec, tokenizer, special: dict[str, int]) -> dict:
    head_dim = spec.hidden_size // spec.num_attention_heads
    quarter = head_dim // 4
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        # The M-RoPE sections (temporal, height, width) must sum to head_dim / 2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter],
        },
        "bos_token_id": special["bos_token_id"],
        "eos_token_id": special["eos_token_id"],
        "pad_token_id": special["pad_token_id"],
    }


def _atomic_build(target: Path, build) -> Path:
    if (target / "READY").exists():
        return target

    def build_ready(staging: Path) -> None:
        build(staging)
        (staging / "READY").write_text("ok\n")

    try:
        atomic_directory(target, build_ready)
    except OSError:
        if not (target / "READY").exists():  # else a concurrent builder finished first: use its model
            raise
    return target


def build_tiny_policy(out_dir: Path, spec: TinyPolicySpec = TinyPolicySpec()) -> None:
    """Write a tiny Qwen2.5-VL checkpoint (model, tokenizer, image processor, chat template) into `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from unidoc_rl.compat import policy_processor_class

    extra_text = _sample_text(spec.vocabulary_samples) if spec.vocabulary_samples else []
    tokenizer = build_tokenizer(spec.vocab_size, spec.seed, extra_text)
    special = _special_ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(spec, tokenizer, special),
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_hidden_size * 2,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        image_token_id=special["image_token_id"],
        video_token_id=special["video_token_id"],
        vision_start_token_id=special["vision_start_token_id"],
        vision_end_token_id=special["vision_end_token_id"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=special["bos_token_id"],
        eos_token_id=[special["eos_token_id"], special["bos_token_id"]],
        pad_token_id=special["pad_token_id"],
    )
    model.save_pretrained(out_dir)
    processor = policy_processor_class()(
        image_processor=_image_processor(spec.min_pixels, spec.max_pixels),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    _declare_stock_processor_class(out_dir, "Qwen2_5_VLProcessor")


def build_tiny_retriever(out_dir: Path, spec: TinyRetrieverSpec = TinyRetrieverSpec()) -> None:
    """Write a tiny ColQwen2 checkpoint and its processor into `out_dir` (colpali-engine loads it as usual)."""
    import torch
    from colpali_engine.models import ColQwen2
    from transformers import Qwen2VLConfig

    from unidoc_rl.compat import retriever_processor_class

    tokenizer = build_tokenizer(spec.vocab_size, spec.seed)
    tokenizer.padding_side = "left"
    special = _special_ids(tokenizer)
    config = Qwen2VLConfig(
        text_config=_text_config(spec, tokenizer, special),
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_hidden_size,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=special["image_token_id"],
        video_token_id=special["video_token_id"],
        vision_start_token_id=special["vision_start_token_id"],
        vision_end_token_id=special["vision_end_token_id"],
    )
    torch.manual_seed(spec.seed)
    model = ColQwen2(config).eval()
    # A zero projection bias turns left-padded rows into 0/0 = NaN after normalization.
    with torch.no_grad():
        model.custom_text_proj.bias.normal_(0.0, 0.02)
    model.save_pretrained(out_dir)
    processor = retriever_processor_class("colqwen2")(
        image_processor=_image_processor(spec.min_pixels, spec.max_pixels),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(out_dir)
    _declare_stock_processor_class(out_dir, "ColQwen2Processor")


def _declare_stock_processor_class(out_dir: Path, class_name: str) -> None:
    """Record the stock processor class, so GPU machines (with torchvision) load the checkpoint with AutoProcessor."""
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = out_dir / name
        config = json.loads(path.read_text())
        config["processor_class"] = class_name
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def tiny_policy_path(cache_dir: Path | None = None, spec: TinyPolicySpec = TinyPolicySpec()) -> Path:
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / "tiny_models" / f"qwen2_5_vl-{spec.fingerprint()}"
    return _atomic_build(target, lambda out: build_tiny_policy(out, spec))


def tiny_retriever_path(cache_dir: Path | None = None, spec: TinyRetrieverSpec = TinyRetrieverSpec()) -> Path:
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / "tiny_models" / f"colqwen2-{spec.fingerprint()}"
    return _atomic_build(target, lambda out: build_tiny_retriever(out, spec))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Build (once) the tiny offline policy and retriever and print their directories as JSON."
    )
    parser.add_argument(
        "--cache_dir", type=Path, default=None, help="cache root (default: $UNIDOC_CACHE_DIR, else .cache)"
    )
    args = parser.parse_args(argv)
    print(
        json.dumps(
            {
                "policy": str(tiny_policy_path(args.cache_dir)),
                "retriever": str(tiny_retriever_path(args.cache_dir)),
            }
        )
    )


if __name__ == "__main__":
    main()
