"""verl's Qwen2.5-VL actor forward (`apply_monkey_patch`, as verl's FSDP engine loads the policy) over micro-batches
with and without images, with the plugin's fix of the dummy vision pass (unidoc_rl/verl_plugin/text_only_vision.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import verl.models.transformers.qwen2_vl as verl_qwen2_vl
from PIL import Image
from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLModel,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
)
from verl.models.transformers.monkey_patch import apply_monkey_patch

import unidoc_rl.verl_plugin  # noqa: F401  (installs the fix, as VERL_USE_EXTERNAL_MODULES does in verl's processes)
from unidoc_rl.compat import load_policy_processor
from unidoc_rl.verl_plugin import text_only_vision

# apply_monkey_patch replaces these classes' forwards process-wide; each test restores them.
PATCHED_CLASSES = (Qwen2VLModel, Qwen2_5_VLModel, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration)


@pytest.fixture(scope="module")
def processor(tiny_policy_dir):
    processor = load_policy_processor(tiny_policy_dir)
    processor.tokenizer.padding_side = "left"
    return processor


@pytest.fixture
def policy(tiny_policy_dir):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        tiny_policy_dir, attn_implementation="sdpa", dtype=torch.float32
    ).train()


@pytest.fixture
def verl_patch(monkeypatch):
    """Applies verl's patches to a model's classes (as its FSDP engine does on model load) for one test."""
    for cls in PATCHED_CLASSES:
        monkeypatch.setattr(cls, "forward", cls.forward)
    return lambda model: apply_monkey_patch(model, use_remove_padding=False)


def chat(processor, question: str, image: bool) -> str:
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def text_only_batch(processor) -> dict[str, torch.Tensor]:
    texts = [chat(processor, "What was Northwind's revenue in 2023?", False), chat(processor, "Who?", False)]
    batch = dict(processor(text=texts, padding=True, return_tensors="pt"))
    mask = batch["attention_mask"]
    count = (mask.cumsum(-1) - 1).clamp(min=0) * mask
    # verl's positions for text alone: the running count of attended tokens, on the text row and every M-RoPE row.
    batch["position_ids"] = count.unsqueeze(0).expand(4, -1, -1).contiguous()
    batch.pop("mm_token_type_ids", None)
    return batch


def image_batch(processor, model) -> dict[str, torch.Tensor]:
    """One row with a page image and one text-only row: a micro-batch where one trajectory searched."""
    texts = [chat(processor, "What is on the page?", True), chat(processor, "Who?", False)]
    page = Image.new("RGB", (112, 56), (200, 30, 30))
    batch = dict(processor(text=texts, images=[page], padding=True, return_tensors="pt"))
    mask = batch["attention_mask"]
    mrope, _ = model.model.get_rope_index(
        batch["input_ids"],
        batch.pop("mm_token_type_ids"),
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=mask,
    )
    text_row = ((mask.cumsum(-1) - 1).clamp(min=0) * mask).unsqueeze(0)
    batch["position_ids"] = torch.cat((text_row, mrope))  # (4, B, L), as verl passes them
    return batch


def next_token_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    log_probs = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["attention_mask"]
    return -log_probs[(mask[:, 1:] * mask[:, :-1]).bool()].mean()


def train_through_verls_forward(policy, batch, verl_patch):
    """Plain transformers logits of `batch`, then verl's patched forward and a backward of its next-token loss:
    (plain logits, verl's logits, loss)."""
    expected = plain_logits(policy, batch)
    verl_patch(policy)
    logits = policy(**batch).logits
    loss = next_token_loss(logits, batch)
    loss.backward()
    return expected, logits, loss


def plain_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """transformers' own forward on the same inputs (before verl patches the classes)."""
    with torch.no_grad():
        return model(**batch).logits


def vision_grads(model) -> dict[str, torch.Tensor | None]:
    return {name: param.grad for name, param in model.model.visual.named_parameters()}


def test_a_micro_batch_without_images_trains_with_a_zero_vision_contribution(policy, processor, verl_patch):
    batch = text_only_batch(processor)
    expected, logits, loss = train_through_verls_forward(policy, batch, verl_patch)

    attended = batch["attention_mask"].bool()
    assert attended.sum() < attended.numel()  # the shorter row is left-padded
    torch.testing.assert_close(logits[attended], expected[attended], rtol=0, atol=1e-5)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(next_token_loss(expected, batch).item(), abs=1e-5)
    grads = vision_grads(policy)
    # Every vision parameter is in the graph (what FSDP needs on every rank), and contributes nothing.
    assert grads and all(grad is not None for grad in grads.values())
    assert sum(torch.count_nonzero(grad).item() for grad in grads.values()) == 0
    assert torch.count_nonzero(policy.model.language_model.embed_tokens.weight.grad) > 0


def test_a_micro_batch_with_an_image_trains_the_vision_tower(policy, processor, verl_patch):
    batch = image_batch(processor, policy)
    assert batch["pixel_values"].shape[0] > 0
    expected, logits, loss = train_through_verls_forward(policy, batch, verl_patch)

    attended = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[attended], expected[attended], rtol=0, atol=1e-5)
    assert torch.isfinite(loss)
    grads = vision_grads(policy)
    assert all(grad is not None for grad in grads.values())
    for name in ("patch_embed.proj.weight", "merger.mlp.0.weight"):
        assert torch.count_nonzero(grads[name]) > 0, name


def test_verl_own_dummy_pass_fails_under_transformers_5(policy, processor, verl_patch, monkeypatch):
    """What the plugin fixes. When this fails, verl's own function works: the plugin's fix can go."""
    monkeypatch.setattr(verl_qwen2_vl, "_get_input_embeds", text_only_vision.VERL_GET_INPUT_EMBEDS)
    verl_patch(policy)
    with pytest.raises(AttributeError, match="'BaseModelOutputWithPooling' object has no attribute 'mean'"):
        policy(**text_only_batch(processor))


@pytest.mark.slow
def test_verl_loads_the_fix_wherever_it_loads_the_plugin():
    """verl's worker processes import the plugin through VERL_USE_EXTERNAL_MODULES when they import verl."""
    code = (
        "import verl.workers.engine_workers; from verl.models.transformers import qwen2_vl; "
        "print(qwen2_vl._get_input_embeds.__module__)"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "unidoc_rl.verl_plugin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "unidoc_rl.verl_plugin.text_only_vision"
