"""Loads the policy's tokenizer from a checkpoint directory (openvla-7b ships Llama-2's tokenizer.json/.model).

WHY optional: the parity fixture has no tokenizer (its prompts are token ids); such a runtime still predicts from
ids and says clearly that text prompts need tokenizer files.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def has_tokenizer(checkpoint_dir: str | Path) -> bool:
    return any((Path(checkpoint_dir) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(checkpoint_dir: str | Path):
    """transformers' AutoTokenizer for the directory, or None when it holds no tokenizer files."""
    if not has_tokenizer(checkpoint_dir):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(checkpoint_dir))
