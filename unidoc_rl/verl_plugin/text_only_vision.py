"""verl 0.9.1 with transformers 5.x: Qwen2/2.5-VL actor forwards over micro-batches without images.

For a micro-batch without images or videos, verl's `_get_input_embeds` (verl/models/transformers/qwen2_vl.py) runs
the vision tower on a dummy patch and adds `0.0 * output.mean()` to the text embeddings, so that every vision
parameter takes part in each backward (FSDP expects the same parameters to get gradients on every rank) while the
logits stay those of the text. Under transformers 5.x the tower returns a `BaseModelOutputWithPooling`, which has no
`mean`, so that forward raises. `get_input_embeds` takes the merged features (`pooler_output`, as verl's image path
does through `unpack_visual_output`) and hands micro-batches with images or videos to verl's own function.

verl's `qwen2_vl_base_forward`, which `apply_monkey_patch` installs as `Qwen2VLModel.forward` and
`Qwen2_5_VLModel.forward`, looks `_get_input_embeds` up in its module on every call, so replacing that module
attribute when the plugin is imported fixes the forward in every process verl runs in (docs/training.md).
"""

from __future__ import annotations

import torch
import verl.models.transformers.qwen2_vl as verl_qwen2_vl
from verl.utils.transformers_compat import unpack_visual_output

VERL_GET_INPUT_EMBEDS = verl_qwen2_vl._get_input_embeds


def dummy_vision_features(model, like: torch.Tensor) -> torch.Tensor:
    """The vision tower's merged features of verl's dummy image: one zero image of 4x4 patches."""
    config = model.config.vision_config
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixel_values = torch.zeros((16, patch_dim), dtype=like.dtype, device=like.device)
    grid_thw = torch.tensor([[1, 4, 4]], dtype=torch.long, device=like.device)
    features, _ = unpack_visual_output(model.visual(pixel_values, grid_thw=grid_thw))
    return features


def get_input_embeds(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.FloatTensor | None = None,
    pixel_values_videos: torch.FloatTensor | None = None,
    image_grid_thw: torch.LongTensor | None = None,
    video_grid_thw: torch.LongTensor | None = None,
):
    """verl's `_get_input_embeds`, with a dummy vision pass that works under transformers 5.x."""
    if pixel_values is not None or pixel_values_videos is not None:
        return VERL_GET_INPUT_EMBEDS(
            model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw, video_grid_thw
        )
    inputs_embeds = model.get_input_embeddings()(input_ids)
    inputs_embeds = inputs_embeds + 0.0 * dummy_vision_features(model, inputs_embeds).mean()
    if attention_mask is not None:
        attention_mask = attention_mask.to(inputs_embeds.device)
    return inputs_embeds, attention_mask


def install() -> None:
    verl_qwen2_vl._get_input_embeds = get_input_embeds
