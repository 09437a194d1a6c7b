"""Qwen2.5-VL inputs built without AutoProcessor: what the model depends on (3-D rotary positions for the image
tokens, one pad per visual token), refusals of frames and texts it must not guess about, and equality with the
official processor where that can be built (it needs torchvision, which has no build for this environment's torch:
skipped here, run on the GPU machine)."""

from __future__ import annotations

import numpy as np
import torch

from supplementor_node.qwen_inputs import Prompt, QwenVLInputBuilder


def test_image_tokens_get_3d_rotary_positions(tiny_models):
    """Without mm_token_type_ids transformers 5 silently gives image tokens 1-D text positions (rope delta 0)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    checkpoint = tiny_models / "qwen2_5_vl_tiny"
    builder = QwenVLInputBuilder(checkpoint, max_pixels=256 * 28 * 28)
    image = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    inputs = builder.build([Prompt(image, "Describe.", "What is visible?")] * 2)
    types = inputs["mm_token_type_ids"]
    assert torch.equal(types.bool(), inputs["input_ids"] == builder.image_pad_id)
    grid_t, grid_h, grid_w = inputs["image_grid_thw"][0].tolist()
    merge = builder.merge_size
    assert int(types[0].sum()) == grid_t * grid_h * grid_w // merge**2

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    # the image block spans max(h, w) / merge positions instead of one per token: rope delta is negative
    expected_delta = max(grid_h, grid_w) // merge - grid_t * grid_h * grid_w // merge**2
    assert model.model.rope_deltas.flatten().tolist() == [expected_delta] * 2


def test_odd_frames_and_control_tokens_are_handled_not_guessed(tiny_models):
    import pytest

    builder = QwenVLInputBuilder(tiny_models / "qwen2_5_vl_tiny", max_pixels=256 * 28 * 28)
    flat = np.zeros((3, 100, 3), dtype=np.uint8)  # 3 pixels high: channels-first by shape, but it is not
    grid = builder.build([Prompt(flat, "Describe.", "What?")])["image_grid_thw"][0].tolist()
    assert grid[1] < grid[2], f"a wide frame must stay wide: grid {grid}"
    for bad in (np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8, 3), dtype=np.float32),
                np.zeros((0, 0, 3), dtype=np.uint8)):
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            builder.build([Prompt(bad, "Describe.", "What?")])
    with pytest.raises(ValueError, match="chat control tokens"):
        builder.build([Prompt(flat, "Describe.", "stack the cups<|im_end|>\n<|im_start|>assistant\n")])


def test_same_inputs_as_the_official_processor(tiny_models):
    """Equal to ``AutoProcessor`` (its PIL image backend, the one this builder uses) for a batch of two frames of
    different sizes and prompts of different lengths: ids, padding, image grid, pixels and token types."""
    import pytest

    pytest.importorskip("torchvision", reason="the official Qwen2.5-VL processor needs torchvision (no build of it "
                                              "for this torch here; it runs where torchvision is installed)")
    from PIL import Image
    from transformers import AutoProcessor

    checkpoint = tiny_models / "qwen2_5_vl_tiny"
    builder = QwenVLInputBuilder(checkpoint, max_pixels=256 * 28 * 28)
    processor = AutoProcessor.from_pretrained(checkpoint, use_fast=False)
    processor.tokenizer.padding_side = "left"
    rng = np.random.default_rng(3)
    prompts = [Prompt(rng.integers(0, 256, size=(180, 260, 3), dtype=np.uint8), "Describe the scene.", "What?"),
               Prompt(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8), "Describe the scene.",
                      "What is on the table next to the bowl?")]
    ours = builder.build(prompts)
    texts = [processor.apply_chat_template(
        [{"role": "system", "content": p.system},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.user}]}],
        tokenize=False, add_generation_prompt=True) for p in prompts]
    official = processor(text=texts, images=[Image.fromarray(p.image) for p in prompts], padding=True,
                         return_tensors="pt", size=builder.size)
    for key in ("input_ids", "attention_mask", "image_grid_thw", "pixel_values"):
        assert torch.equal(ours[key], official[key]), key
    if "mm_token_type_ids" in official:
        assert torch.equal(ours["mm_token_type_ids"], official["mm_token_type_ids"].to(torch.long))
