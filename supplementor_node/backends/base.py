"""The interface every supplementor backend implements, and its configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from supplementor_node.qwen_inputs import Prompt
from task_supplementor.devices import DTYPES, ModelChoice, resolve_auto

BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class BackendConfig(ModelChoice):
    """What a backend needs to load a checkpoint. ``auto`` resolves to cuda/bf16 when a GPU exists, else cpu/fp32."""

    backend: str = "transformers"
    image_max_pixels: int = 256 * 28 * 28
    json_schema: dict[str, Any] | None = None   # constrain decoding to this schema when set


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    new_tokens: int


class Backend(Protocol):
    """Loaded model: greedy generation for a batch of prompts; exposes the tokenizer for the token-length rule."""

    tokenizer: Any

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[GenerationOutput]: ...


VLLM_DEVICES = ("auto", "cuda", "cuda:0")


def check_backend_device(backend: str, device: str) -> None:
    """ValueError for a device the backend cannot honour. vLLM's engine takes no device argument: it runs on the
    first GPU the process sees, so another GPU is chosen with ``CUDA_VISIBLE_DEVICES`` when the node starts."""
    if backend == "vllm" and device not in VLLM_DEVICES:
        raise ValueError(f"device {device!r} cannot be used with backend vllm (one of {', '.join(VLLM_DEVICES)}: "
                         "vLLM runs on the first visible GPU; start the node with CUDA_VISIBLE_DEVICES=N for GPU N)")


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Concrete device and dtype names (``auto`` resolved by :func:`task_supplementor.devices.resolve_auto`)."""
    device, dtype = resolve_auto(device, dtype)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {DTYPES}")
    return device, dtype
