"""Loads the policy's tokenizer from a checkpoint directory (openvla-7b ships Llama-2's tokenizer files).

WHY not AutoTokenizer: it reads config.json first, and openvla-7b's config.json carries an ``auto_map`` to the
official remote code, so AutoTokenizer asks for ``trust_remote_code`` (an interactive prompt in a ROS node). The
tokenizer class is declared in tokenizer_config.json (``LlamaTokenizer``); we load exactly that class.

WHY optional: the parity fixture has no tokenizer (its prompts are token ids); such a runtime still predicts from
ids and says clearly that text prompts need tokenizer files.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def has_tokenizer(checkpoint_dir: str | Path) -> bool:
    return any((Path(checkpoint_dir) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(checkpoint_dir: str | Path):
    """The tokenizer class named in tokenizer_config.json (default LlamaTokenizer), or None without tokenizer files."""
    checkpoint_dir = Path(checkpoint_dir)
    if not has_tokenizer(checkpoint_dir):
        return None
    import transformers

    config_path = checkpoint_dir / "tokenizer_config.json"
    declared = json.loads(config_path.read_text()).get("tokenizer_class") if config_path.is_file() else None
    name = (declared or "LlamaTokenizer").removesuffix("Fast")
    tokenizer_class = getattr(transformers, name, None)
    if tokenizer_class is None:
        raise ValueError(f"{config_path}: tokenizer_class {declared!r} is not a transformers tokenizer")
    return tokenizer_class.from_pretrained(str(checkpoint_dir))
