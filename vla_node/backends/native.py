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


    def warm_up(self) -> None:
        """Record the CUDA graph (and compile the layers) for a one-frame, short-prompt call now.

        WHY: on CUDA the first call of each frame shape compiles and records (seconds); done at load time, in the
        background, a policy goes live (or is swapped in) answering at full speed. Other prompt-length buckets
        (e.g. long supplements) still pay once, on their first frame. Measured (H200, tiny model): load + warm-up
        15.2 s, then 3-7 ms per frame from the first one.
        """
        image = np.zeros((224, 224, 3), dtype=np.uint8)
        prompt = "In: What action should the robot take to put the red block on the blue plate?\nOut:"
        self.predict([image], [prompt], next(iter(self.norm_stats)))


def load(spec: PolicySpec) -> NativePolicy:
    device, dtype = resolve_device_dtype(spec)
    runtime = OpenVLARuntime.from_pretrained(spec.checkpoint, dtype=dtype, device_map=device)
    policy = NativePolicy(runtime, spec.checkpoint)
    if runtime.device.type == "cuda":
        policy.warm_up()
    return policy
