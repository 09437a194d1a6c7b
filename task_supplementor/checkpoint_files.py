"""The weight files of a Hugging Face checkpoint directory, and a cheap check that they are whole.

Why here, shared: both nodes accept a checkpoint swap (``ros2 param set ... checkpoint``) only after a check that
must be quick, since it runs in the parameter callback, and both loaders resolve the same layouts (a sharded
``model.safetensors.index.json`` or a single ``model.safetensors``). A missing, truncated or corrupt weight file is
then refused at once with its name, while the serving model keeps serving, instead of failing the background load
minutes later. The check reads each file's header only (a few hundred kB for a 15 GB checkpoint), never the tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


def weight_map(directory: Path) -> dict[str, str] | None:
    """The index's tensor name -> shard file name; None for a single-file checkpoint (ValueError when corrupt)."""
    index = directory / INDEX
    if not index.is_file():
        return None
    try:
        mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{index}: not a shard index ({type(exc).__name__}: {exc})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
    return mapping


def weight_files(directory: Path, mapping: dict[str, str] | None) -> list[Path]:
    """The weight files: the shards ``mapping`` (:func:`weight_map`) names, else the single model.safetensors."""
    if mapping is not None:
        shards = [directory / name for name in sorted(set(mapping.values()))]
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise ValueError(f"{directory}: shards named in the index are missing: {missing}")
        return shards
    single = directory / SINGLE
    if single.is_file():
        return [single]
    raise ValueError(f"{directory}: no {SINGLE} or {INDEX} (PyTorch .bin checkpoints are not supported)")


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


def check_weights(directory: Path) -> None:
    """Raise ValueError with the reason unless every weight file of ``directory`` is there and whole."""
    try:
        for path in weight_files(directory, weight_map(directory)):
            check_safetensors(path)
    except OSError as exc:  # unreadable file, a directory where a file should be, ...
        raise ValueError(f"{directory}: cannot read the checkpoint's weights ({exc})") from None
