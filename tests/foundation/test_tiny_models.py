import json

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from unidoc_rl.compat import load_policy_processor, load_retriever_processor
from unidoc_rl.standins.tiny_models import (
    QWEN_SPECIAL_TOKENS,
    TinyPolicySpec,
    build_tiny_policy,
    tiny_policy_path,
)


def _page(width: int, height: int, seed: int) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for row in range(8):
        draw.rectangle([10, 10 + row * 30, 10 + (row * 37 + seed * 13) % (width - 20), 30 + row * 30], fill="black")
    return image


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_policy_dir).eval()
    return model, load_policy_processor(tiny_policy_dir)


def _two_image_chat(processor):
    images = [_page(300, 400, 0), _page(200, 100, 1)]
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What is the total revenue?"}],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return images, text, processor(text=[text], images=images, return_tensors="pt")


def test_cached_build_is_reused_and_rebuild_is_identical(tiny_policy_dir, tmp_path):
    assert tiny_policy_path() == tiny_policy_dir
    assert (tiny_policy_dir / "READY").exists()

    build_tiny_policy(tmp_path / "again", TinyPolicySpec())
    first, second = load_file(tiny_policy_dir / "model.safetensors"), load_file(tmp_path / "again/model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert (tiny_policy_dir / "tokenizer.json").read_text() == (tmp_path / "again/tokenizer.json").read_text()

    other_seed = tmp_path / "seed1"
    build_tiny_policy(other_seed, TinyPolicySpec(seed=1))
    assert not torch.equal(load_file(other_seed / "model.safetensors")["lm_head.weight"], first["lm_head.weight"])


def test_reload_round_trip_through_standard_transformers_calls(tiny_policy_dir, policy):
    model, processor = policy
    config = AutoConfig.from_pretrained(tiny_policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    assert config.model_type == "qwen2_5_vl"
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for token in QWEN_SPECIAL_TOKENS:
        assert tokenizer.tokenize(token) == [token]
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    saved = json.loads((tiny_policy_dir / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"
    assert processor.image_processor.size["longest_edge"] == TinyPolicySpec().max_pixels


def test_chat_template_is_qwen2_5_vl_format(policy):
    _, processor = policy
    _, text, _ = _two_image_chat(processor)
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{image}{image}What is the total revenue?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_two_image_chat_has_expected_image_token_count(policy):
    model, processor = policy
    images, _, inputs = _two_image_chat(processor)
    spec = TinyPolicySpec()
    expected_tokens, expected_rows = 0, 0
    for image in images:
        height, width = smart_resize(image.height, image.width, 28, spec.min_pixels, spec.max_pixels)
        expected_rows += (height // 14) * (width // 14)
        expected_tokens += (height // 28) * (width // 28)
    assert expected_tokens == 54 + 28
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == expected_tokens
    assert inputs["pixel_values"].shape == (expected_rows, 1176)
    assert inputs["image_grid_thw"].tolist() == [[1, 18, 12], [1, 8, 14]]


def test_generate_and_teacher_forced_logprobs_match_with_mrope(policy):
    model, processor = policy
    _, _, inputs = _two_image_chat(processor)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    response = out.sequences[0, prompt_len:]
    assert response.shape == (12,)
    gen_logprobs = torch.stack(
        [torch.log_softmax(step[0].float(), -1)[token] for step, token in zip(out.logits, response, strict=True)]
    )

    def teacher_forced(with_mm_token_type_ids: bool) -> torch.Tensor:
        kwargs = {
            "input_ids": out.sequences,
            "attention_mask": torch.ones_like(out.sequences),
            "pixel_values": inputs["pixel_values"],
            "image_grid_thw": inputs["image_grid_thw"],
        }
        if with_mm_token_type_ids:
            kwargs["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(response)[None]], dim=1
            )
        with torch.no_grad():
            logits = model(**kwargs).logits[0, prompt_len - 1 : -1].float()
        return torch.log_softmax(logits, -1).gather(-1, response[:, None])[:, 0]

    torch.testing.assert_close(teacher_forced(True), gen_logprobs, atol=1e-4, rtol=1e-4)
    # Without the image-token types the model silently uses 1-D positions: the log-probs no longer agree.
    assert (teacher_forced(False) - gen_logprobs).abs().max() > 1e-3


def test_tiny_retriever_embeds_pages_and_queries_with_finite_scores(tiny_retriever_dir):
    from colpali_engine.models import ColQwen2

    model = ColQwen2.from_pretrained(tiny_retriever_dir).eval()
    processor = load_retriever_processor(tiny_retriever_dir)
    pages = [_page(300, 400, 0), _page(400, 300, 1)]
    queries = ["total revenue in 2023", "small print footnote"]
    with torch.no_grad():
        page_embeddings = model(**processor.process_images(pages))
        query_embeddings = model(**processor.process_queries(queries))
    assert page_embeddings.shape[0] == 2 and page_embeddings.shape[-1] == 128
    assert torch.isfinite(page_embeddings).all() and torch.isfinite(query_embeddings).all()
    scores = processor.score_multi_vector(list(query_embeddings), list(page_embeddings))
    assert scores.shape == (2, 2)
    assert torch.isfinite(scores).all()
    assert scores.abs().sum() > 0
