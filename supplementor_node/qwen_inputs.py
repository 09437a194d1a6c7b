"""Chat prompt + image -> Qwen2.5-VL model inputs, without ``AutoProcessor``.

Why not ``AutoProcessor``: in this environment there is no torchvision, and the Qwen2.5-VL processor insists on a
video processor that needs it. The processor's image half is ``Qwen2VLImageProcessorPil`` (no torchvision); its text
half is the tokenizer plus the rule that each ``<|image_pad|>`` stands for ``grid_t*grid_h*grid_w / merge_size**2``
visual tokens, plus ``mm_token_type_ids`` (1 on image tokens, 0 on text) as the official processor returns them:
transformers 5 computes Qwen2.5-VL's 3-D (t, h, w) rotary positions of the image tokens only when they are given, and
otherwise silently gives the image tokens plain 1-D text positions. This module does exactly that, from the files of
the checkpoint directory, so the tiny test model and the real ``Qwen/Qwen2.5-VL-3B-Instruct`` directory go through
one code path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_PAD = "<|image_pad|>"


class CheckpointError(RuntimeError):
    """The checkpoint directory is missing or lacks a file the model needs."""


@dataclass(frozen=True)
class Prompt:
    """One frame's request: RGB image (H, W, 3 uint8) and the system/user texts."""

    image: np.ndarray
    system: str
    user: str


def _chat_template(checkpoint: Path, tokenizer) -> str:
    """The processor's chat template (chat_template.json) when shipped, else the tokenizer's."""
    path = checkpoint / "chat_template.json"
    if path.is_file():
        return json.loads(path.read_text())["chat_template"]
    if tokenizer.chat_template:
        return tokenizer.chat_template
    raise CheckpointError(f"{checkpoint}: no chat template (neither chat_template.json nor in the tokenizer)")


class QwenVLInputBuilder:
    """Tokenizer + image processor of one checkpoint; builds (batched, left-padded) generation inputs."""

    def __init__(self, checkpoint: str | Path, max_pixels: int, min_pixels: int | None = None):
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        self.checkpoint = Path(checkpoint)
        if not (self.checkpoint / "preprocessor_config.json").is_file():
            raise CheckpointError(f"{self.checkpoint}: not a Qwen2.5-VL checkpoint (no preprocessor_config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        self.tokenizer.padding_side = "left"   # generation continues from the right end of every row
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(self.checkpoint)
        self.chat_template = _chat_template(self.checkpoint, self.tokenizer)
        self.merge_size = int(self.image_processor.merge_size)
        self.size = {"shortest_edge": int(min_pixels or self.image_processor.size["shortest_edge"]),
                     "longest_edge": int(max_pixels)}
        self.image_pad_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)

    def render_text(self, prompt: Prompt) -> str:
        """Chat-formatted text with a single ``<|image_pad|>`` (the vLLM input form; expanded in :meth:`build`).

        The user text carries the task, which arrives on a ROS topic: a chat control token in it (``<|im_end|>``,
        ``<|image_pad|>``, ...) would be tokenised as that token and reshape the conversation, so it is refused.
        """
        control = [token for token in self.tokenizer.all_special_tokens + [IMAGE_PAD] if token in prompt.user]
        if control:
            raise ValueError(f"the prompt text contains chat control tokens {sorted(set(control))}: refused")
        messages = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user}]},
        ]
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True)

    def build(self, prompts: list[Prompt]) -> dict:
        """Tensors for ``model.generate``: input_ids, attention_mask, mm_token_type_ids, pixel_values,
        image_grid_thw."""
        for prompt in prompts:
            image = prompt.image
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                    and image.shape[2] == 3 and image.size):
                raise ValueError(f"expected an HxWx3 uint8 RGB image, got {getattr(image, 'dtype', type(image))} "
                                 f"{getattr(image, 'shape', '')}")
        # channels_last said, not guessed: a frame 3 (or 1) pixels high would otherwise be read as channels-first
        images = self.image_processor([p.image for p in prompts], size=self.size, return_tensors="pt",
                                      input_data_format="channels_last")
        grid = images["image_grid_thw"]
        texts = []
        for prompt, thw in zip(prompts, grid):
            n_tokens = int(thw.prod()) // self.merge_size**2
            text = self.render_text(prompt)
            if text.count(IMAGE_PAD) != 1:
                raise CheckpointError(f"chat template produced {text.count(IMAGE_PAD)} image pads, expected 1")
            texts.append(text.replace(IMAGE_PAD, IMAGE_PAD * n_tokens))
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        input_ids = encoded["input_ids"]
        return {"input_ids": input_ids, "attention_mask": encoded["attention_mask"],
                "mm_token_type_ids": (input_ids == self.image_pad_id).long(),
                "pixel_values": images["pixel_values"], "image_grid_thw": grid}
