"""What every policy backend offers the node and the experiments, and the checks made before any load.

WHY a preflight that reads config.json and the weight files' headers only: a wrong path, a missing or truncated shard
or a wrong unnorm key must be rejected in the set-parameters callback, with the reason (and the list of available
keys), before a multi-minute 7B load starts; anything subtler (a tensor of the wrong shape) fails that load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from task_supplementor.checkpoint_files import check_weights
from task_supplementor.devices import ModelChoice, check_load_choices, resolve_auto
from vla_node.config import read_json, read_norm_stats

BACKENDS = ("native", "hf-official")
MODEL_TYPE = "openvla"  # config.json of openvla/openvla-7b and of checkpoints fine-tuned from it


class BackendUnavailable(ValueError):
    """The chosen backend cannot run in this environment (says what is missing and what to do)."""


@dataclass(frozen=True)
class PolicySpec(ModelChoice):
    """What the VLA node loads (its ``checkpoint``, ``backend``, ``device`` and ``dtype`` parameters)."""

    backend: str = "native"


class Policy(Protocol):
    """A loaded policy: images + full prompt texts -> un-normalised 7-D actions, one row per image."""

    tokenizer: Any  # the policy's tokenizer (placeholder prompts are measured with it)
    norm_stats: dict[str, Any]

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str], unnorm_key: str) -> np.ndarray: ...


def norm_stats_of(checkpoint: str | Path) -> dict[str, Any]:
    """The checkpoint's un-normalisation statistics (:func:`vla_node.config.read_norm_stats`); ValueError when the
    directory is not a checkpoint or has none."""
    config = Path(checkpoint) / "config.json"
    if not str(checkpoint) or not config.is_file():
        raise ValueError(f"checkpoint {str(checkpoint)!r} is not an OpenVLA checkpoint directory (no config.json)")
    raw = read_json(config)
    model_type = raw.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:  # e.g. the Qwen2.5-VL checkpoint given to the wrong node
        raise ValueError(f"{config} says model_type {model_type!r}, not {MODEL_TYPE!r} (not an OpenVLA checkpoint)")
    stats = read_norm_stats(Path(checkpoint), raw)
    if not stats:
        raise ValueError(f"{config} has no norm_stats (nor is there a dataset_statistics.json): actions cannot be "
                         "un-normalised")
    return stats


def check_unnorm_key(norm_stats: dict[str, Any], unnorm_key: str, checkpoint: str) -> None:
    """ValueError unless ``norm_stats`` has ``unnorm_key`` with the action quantiles un-normalisation reads."""
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} is not in {checkpoint}'s norm_stats; available unnorm keys: "
                         f"{', '.join(sorted(norm_stats))}")
    action = norm_stats[unnorm_key].get("action") if isinstance(norm_stats[unnorm_key], dict) else None
    if not isinstance(action, dict) or not all(isinstance(action.get(q), list) for q in ("q01", "q99")):
        raise ValueError(f"{checkpoint}'s norm_stats[{unnorm_key!r}] has no action q01/q99 lists: actions cannot "
                         "be un-normalised with it")


def check_choices(spec: PolicySpec) -> None:
    """ValueError for a backend, device or dtype that cannot load any checkpoint here (checked when they are set,
    before a checkpoint is)."""
    if spec.backend == "hf-official" and "," in spec.device:
        raise ValueError("backend 'hf-official' runs on one device; use backend 'native' for two GPUs")
    check_load_choices(spec.backend, BACKENDS, spec.device, spec.dtype, two_devices=True)
    if spec.backend == "hf-official":
        from vla_node.backends.hf_official import unavailable_reason  # cheap: package metadata and file names

        reason = unavailable_reason(spec.checkpoint or None)
        if reason:
            raise BackendUnavailable(reason)


def preflight(spec: PolicySpec) -> None:
    """Reject (ValueError with the reason) a spec that cannot load; the node checks its ``unnorm_key`` separately
    (a key belongs to a checkpoint, and may change without a load)."""
    check_choices(spec)
    norm_stats_of(spec.checkpoint)
    if spec.backend == "native" or not any(Path(spec.checkpoint).glob("pytorch_model*.bin")):
        check_weights(Path(spec.checkpoint))  # the official code also loads PyTorch .bin checkpoints: left to it


def resolve_device_dtype(spec: PolicySpec):
    """The device name and torch dtype of ``spec`` (``auto`` resolved by
    :func:`task_supplementor.devices.resolve_auto`)."""
    import torch

    device, dtype = resolve_auto(spec.device, spec.dtype)
    return device, getattr(torch, dtype)
