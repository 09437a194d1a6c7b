"""Where and in what precision a node's model runs: the ``backend``/``device``/``dtype`` parameters both nodes share.

One rule, one place: what ``auto`` means, and which values are accepted (checked before any load, so a typo is
rejected in the set-parameters callback with the accepted values instead of failing minutes into a load).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

DTYPES = ("auto", "bfloat16", "float16", "float32")
_ONE_DEVICE = r"auto|cpu|cuda(:\d+)?"
_TWO_DEVICES = r"cuda(:\d+)?,cuda(:\d+)?"


@dataclass(frozen=True)
class ModelChoice:
    """What a node loads: its ``checkpoint``, ``backend``, ``device`` and ``dtype`` parameters. Each node's spec
    derives from this, giving ``backend`` its own default and adding what only it needs."""

    checkpoint: str
    backend: str
    device: str = "auto"
    dtype: str = "auto"


def check_load_choices(backend: str, backends: Sequence[str], device: str, dtype: str,
                       two_devices: bool = False, visible_gpus: int | None = None) -> None:
    """ValueError naming the first bad value and what is accepted. ``two_devices``: the backend can split the model
    over two GPUs given as ``cuda:0,cuda:1``. A GPU this machine does not have is refused too (``visible_gpus``:
    how many there are; None: ask torch), so a node says so when the value is set, not in a failed load later."""
    if backend not in backends:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(backends)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    pattern = f"^({_ONE_DEVICE}|{_TWO_DEVICES})$" if two_devices else f"^({_ONE_DEVICE})$"
    if not re.match(pattern, device):
        accepted = "auto, cpu, cuda, cuda:N" + (" or two of them (cuda:0,cuda:1)" if two_devices else "")
        raise ValueError(f"device {device!r} is not {accepted}")
    gpus = [int(name.partition(":")[2] or 0) for name in device.split(",") if name.startswith("cuda")]
    if gpus:
        visible = _visible_gpus() if visible_gpus is None else visible_gpus
        if max(gpus) >= visible:
            seen = ("no CUDA GPU is visible" if visible == 0
                    else f"{visible} CUDA GPU(s) visible (cuda:0..{visible - 1})")
            raise ValueError(f"device {device!r}: {seen} on this machine")


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_auto(device: str, dtype: str) -> tuple[str, str]:
    """'auto' device -> cuda:0 when torch sees a GPU, else cpu; 'auto' dtype -> bfloat16 on a GPU (the checkpoints'
    dtype), float32 on CPU (bf16 matmuls are slow there). Other values pass through unchanged."""
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype
