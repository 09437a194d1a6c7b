"""The ``native`` backend: our OpenVLA runtime (current torch/transformers, batched, parity-tested)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_node.backends.base import PolicySpec, resolve_device_dtype
from vla_node.runtime import OpenVLARuntime


class NativePolicy:
    def __init__(self, runtime: OpenVLARuntime, policy_id: str) -> None:
        if runtime.tokenizer is None:
            raise ValueError(f"{policy_id} has no tokenizer files (tokenizer.json / tokenizer.model): text prompts "
                             "cannot be encoded")
        self.runtime = runtime
        self.policy_id = policy_id
        self.tokenizer = runtime.tokenizer
        self.norm_stats = runtime.config.norm_stats

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str], unnorm_key: str) -> np.ndarray:
        return self.runtime.predict(images, prompts, unnorm_key).actions


def load(spec: PolicySpec) -> NativePolicy:
    device, dtype = resolve_device_dtype(spec)
    runtime = OpenVLARuntime.from_pretrained(spec.checkpoint, dtype=dtype, device_map=device)
    return NativePolicy(runtime, spec.checkpoint)
