"""Quick checks that a checkpoint directory can possibly load, run before a live swap is accepted.

Why: a swap to a missing or corrupt checkpoint must be rejected with a clear reason while the old model keeps
serving. A full load takes seconds and happens in the background, so the parameter callback can only afford cheap
checks: the directory and its files exist, the JSON files parse, and every safetensors file is whole (its header
parses and the file is exactly as long as the header says). Anything subtler fails the background load, which also
keeps the old model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# Files a Qwen2.5-VL checkpoint directory needs besides its weights (the input builder reads them).
REQUIRED_JSON = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
_MAX_HEADER = 100 * 1024 * 1024


def check_safetensors(path: Path) -> None:
    """Raise ValueError unless ``path`` is a complete safetensors file (header parses, length matches)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise ValueError(f"{path}: corrupt safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > min(size - 8, _MAX_HEADER):
            raise ValueError(f"{path}: corrupt safetensors file (header length {header_len} of a {size}-byte file)")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: corrupt safetensors header ({exc})") from None
    try:
        end = max((int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"),
                  default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path}: malformed safetensors header (every tensor needs data_offsets [begin, end])") \
            from None
    expected = 8 + header_len + end
    if size != expected:
        raise ValueError(f"{path}: truncated or padded safetensors file ({size} bytes, header says {expected})")


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{index}: corrupt shard index ({type(exc).__name__}: {exc})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(s, str) for s in weight_map.values()):
            raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ValueError(f"{directory}: shards listed in the index are missing: {missing}")
        return [directory / s for s in shards]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"{directory}: no model.safetensors or model.safetensors.index.json")


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
    for name in REQUIRED_JSON:
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{directory}: missing {name} (not a Qwen2.5-VL checkpoint directory)")
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: corrupt JSON ({exc})") from None
    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.json").is_file():
        raise ValueError(f"{directory}: no tokenizer.json or vocab.json")
    for weights in _weight_files(directory):
        check_safetensors(weights)
