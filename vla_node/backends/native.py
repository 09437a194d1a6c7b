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
        self.tokenizer = runtime.tokenizer
        self.norm_stats = runtime.config.norm_stats

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str], unnorm_key: str) -> np.ndarray:
        return self.runtime.predict(images, prompts, unnorm_key).actions

    def warm_up(self) -> None:
        """Compile the layers and record CUDA graphs for one-frame calls at two prompt widths now.

        WHY: on CUDA the first call of a frame shape compiles and records; done at load time, in the background, a
        policy goes live (or is swapped in) answering at full speed. Two widths, because the second width is what
        makes torch.compile build its length-generic kernels: after that a new prompt width (a longer supplement)
        costs only a graph capture on its first frame. Measured (H100, OpenVLA-7B sizes, batch 1): first width
        5.5 s, second 9.6 s, every later new width 0.6-0.8 s once, then ~50 ms a frame (versus ~5 s for each new
        width with shape-specialised compilation).
        """
        image = np.zeros((224, 224, 3), dtype=np.uint8)
        task = "put the red block on the blue plate"
        official = f"In: What action should the robot take to {task}?\nOut:"
        supplemented = (f"In: What action should the robot take to {task}? Scene: objects: red block, blue plate, "
                        "gray table; relations: red block left of blue plate; gripper: open, empty\nOut:")
        for prompt in (official, supplemented):
            self.predict([image], [prompt], next(iter(self.norm_stats)))


def load(spec: PolicySpec) -> NativePolicy:
    device, dtype = resolve_device_dtype(spec)
    runtime = OpenVLARuntime.from_pretrained(spec.checkpoint, dtype=dtype, device_map=device)
    policy = NativePolicy(runtime, spec.checkpoint)
    if runtime.device.type == "cuda":
        policy.warm_up()
    return policy
