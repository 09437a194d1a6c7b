"""Quick checks that a checkpoint directory can possibly load, run before a live swap is accepted.

Why: a swap to a missing or corrupt checkpoint must be rejected with a clear reason while the old model keeps
serving. A full load takes seconds and happens in the background, so the parameter callback can only afford cheap
checks: the directory and its files exist, the JSON files parse, and every safetensors file is whole
(:mod:`task_supplementor.checkpoint_files`). Anything subtler fails the background load, which also keeps the old
model.
"""

from __future__ import annotations

import json
from pathlib import Path

from task_supplementor.checkpoint_files import check_weights

# Files a Qwen2.5-VL checkpoint directory needs besides its weights (the input builder reads them).
REQUIRED_JSON = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
MODEL_TYPE = "qwen2_5_vl"  # config.json of Qwen2.5-VL and of checkpoints fine-tuned or distilled from it


def check_checkpoint_dir(checkpoint: str) -> None:
    """Raise ValueError with the reason unless ``checkpoint`` looks like a complete Qwen2.5-VL checkpoint."""
    if not checkpoint:
        raise ValueError("checkpoint is empty: set it to a Qwen2.5-VL checkpoint directory")
    directory = Path(checkpoint)
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such checkpoint directory")
    try:
        _check_files(directory)
    except OSError as exc:  # unreadable file, a directory where a file should be, ...
        raise ValueError(f"{directory}: cannot read the checkpoint ({exc})") from None


def _check_files(directory: Path) -> None:
    parsed = {}
    for name in REQUIRED_JSON:
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{directory}: missing {name} (not a Qwen2.5-VL checkpoint directory)")
        try:
            parsed[name] = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: corrupt JSON ({exc})") from None
    config = parsed["config.json"]
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:  # e.g. the OpenVLA checkpoint given to the wrong node
        raise ValueError(f"{directory}: config.json says model_type {model_type!r}, not {MODEL_TYPE!r} "
                         "(not a Qwen2.5-VL checkpoint)")
    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.json").is_file():
        raise ValueError(f"{directory}: no tokenizer.json or vocab.json")
    check_weights(directory)
