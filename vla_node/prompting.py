"""OpenVLA prompt templates and prompt -> token ids, as the official ``predict_action`` feeds them.

WHY the 29871 append: openvla-7b was trained on "...\\nOut: " followed by action tokens, and Llama's tokenizer turns
that trailing space into the lone "▁" token (id 29871). At inference the official code appends 29871 whenever the
prompt does not already end with it; without it the first action token is predicted from the wrong context.
"""

from __future__ import annotations

from collections.abc import Sequence

EMPTY_TOKEN_ID = 29871  # Llama-2's "▁"

OPENVLA_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"


def official_prompt(instruction: str, template: str = OPENVLA_TEMPLATE) -> str:
    """The official prompt: the instruction lower-cased inside the template."""
    return template.format(instruction=instruction.lower())


def with_empty_token(ids: Sequence[int]) -> list[int]:
    """Append Llama's "▁" unless the prompt already ends with it (official predict_action behaviour)."""
    ids = list(ids)
    if not ids:
        raise ValueError("empty prompt: a prompt needs at least the BOS token")
    return ids if ids[-1] == EMPTY_TOKEN_ID else ids + [EMPTY_TOKEN_ID]
