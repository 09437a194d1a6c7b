"""Load an OpenVLA checkpoint directory (official ``openvla/openvla-7b`` layout) into :class:`OpenVLAModel`.

WHY build on the meta device and assign: the 7B model is built without allocating or random-initialising 15 GB,
and every tensor goes straight from the safetensors file to its target device in the target dtype. Sharded
(``model.safetensors.index.json``) and single-file checkpoints take the same path. Tensors OpenVLA never reads (last
ViT block, final ViT norms, SigLIP MAP head) are skipped; anything else missing or unexpected is a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from task_supplementor import checkpoint_files
from vla_node.config import OpenVLAConfig
from vla_node.model import OpenVLAModel


class CheckpointError(RuntimeError):
    """The directory is not a loadable OpenVLA checkpoint (says which file/keys are wrong)."""


def parse_device_map(device_map: str | Sequence[str]) -> list[torch.device]:
    """``"cpu"``, ``"cuda"``, ``"cuda:0,cuda:1"`` or a list; ``"auto"`` = cuda:0 if available, else cpu."""
    if isinstance(device_map, str):
        if device_map == "auto":
            device_map = "cuda:0" if torch.cuda.is_available() else "cpu"
        device_map = [d.strip() for d in device_map.split(",") if d.strip()]
    devices = [torch.device(d) for d in device_map]
    if not 1 <= len(devices) <= 2:
        raise ValueError(f"device_map needs one or two devices, got {list(device_map)}")
    return devices


def place_modules(model: OpenVLAModel, devices: list[torch.device]) -> dict[str, torch.device]:
    """Module-prefix -> device. Two devices: vision, projector, embeddings and the first half of the LLM layers on
    the first; the other layers, final norm and lm_head on the second (activations move between them by hooks)."""
    first = devices[0]
    placement = {"vision_backbone.": first, "projector.": first, "language_model.model.embed_tokens.": first}
    layers = model.language_model.config.num_hidden_layers
    split = layers if len(devices) == 1 else (layers + 1) // 2
    for i in range(layers):
        placement[f"language_model.model.layers.{i}."] = first if i < split else devices[-1]
    placement["language_model.model.norm."] = devices[-1]
    placement["language_model.lm_head."] = devices[-1]
    return placement


def load_openvla(checkpoint_dir: str | Path, dtype: torch.dtype = torch.bfloat16,
                 device_map: str | Sequence[str] = "auto", attn_implementation: str = "sdpa") -> OpenVLAModel:
    checkpoint_dir = Path(checkpoint_dir)
    try:
        config = OpenVLAConfig.from_dir(checkpoint_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    devices = parse_device_map(device_map)
    with torch.device("meta"):
        model = OpenVLAModel(config, attn_implementation)
    placement = place_modules(model, devices)
    expected = dict(model.state_dict())
    skipped = model.unused_checkpoint_prefixes()
    try:  # the same layouts and messages as the parameter callback's quick check
        mapping = checkpoint_files.weight_map(checkpoint_dir)
        files = checkpoint_files.weight_files(checkpoint_dir, mapping)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    state: dict[str, torch.Tensor] = {}
    found_in: dict[str, str] = {}  # key -> the shard it came from
    unexpected: list[str] = []
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    _check_shard_of(key, path.name, found_in, mapping)
                    if key.startswith(skipped):
                        continue
                    if key not in expected:
                        unexpected.append(key)
                        continue
                    tensor = handle.get_tensor(key)
                    if tuple(tensor.shape) != tuple(expected[key].shape):
                        raise CheckpointError(f"{path.name}: {key} has shape {tuple(tensor.shape)}, the config "
                                              f"implies {tuple(expected[key].shape)}")
                    device = next(d for prefix, d in placement.items() if key.startswith(prefix))
                    state[key] = tensor.to(device=device,
                                           dtype=dtype if tensor.is_floating_point() else tensor.dtype)
        except (SafetensorError, OSError) as exc:  # truncated or corrupt shard
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint_dir}: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}; "
                              f"unexpected keys {sorted(unexpected)[:8]}")
    model.load_state_dict(state, strict=True, assign=True)
    llm = model.language_model.model
    llm.rotary_emb = LlamaRotaryEmbedding(config=model.language_model.config).to(devices[0])
    if len(devices) > 1:
        _hook_device_transfers(model, placement)
    return model.eval().requires_grad_(False)


def _check_shard_of(key: str, shard: str, found_in: dict[str, str], mapping: dict[str, str] | None) -> None:
    """A tensor must be in exactly one shard, the one the index names: otherwise which copy loads is an accident."""
    if key in found_in:
        raise CheckpointError(f"{key} is in both {found_in[key]} and {shard}")
    found_in[key] = shard
    if mapping is not None and mapping.get(key) != shard:
        raise CheckpointError(f"{shard} holds {key}, which the index places in {mapping.get(key) or 'no shard'}")


def _hook_device_transfers(model: OpenVLAModel, placement: dict[str, torch.device]) -> None:
    """Move a module's tensor inputs to its device before it runs (the job accelerate's hooks do in HF)."""
    modules = dict(model.named_modules())
    for prefix, device in placement.items():
        if prefix.startswith("language_model."):
            modules[prefix.rstrip(".")].register_forward_pre_hook(_mover(device), with_kwargs=True)


def _mover(device: torch.device):
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        return value

    def hook(_module: nn.Module, args: tuple, kwargs: dict):
        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    return hook
