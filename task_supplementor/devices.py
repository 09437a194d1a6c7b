"""What ``device: auto`` and ``dtype: auto`` mean, for both nodes' backends (one rule, one place)."""

from __future__ import annotations


def resolve_auto(device: str, dtype: str) -> tuple[str, str]:
    """'auto' device -> cuda:0 when torch sees a GPU, else cpu; 'auto' dtype -> bfloat16 on a GPU (the checkpoints'
    dtype), float32 on CPU (bf16 matmuls are slow there). Other values pass through unchanged."""
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype
