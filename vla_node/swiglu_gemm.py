"""The Llama MLP's gate/up product with SwiGLU applied in the GEMM's epilogue (one Triton kernel on Hopper GPUs).

WHY: in a batched prefill (128 frames, ~36k tokens) the gate/up product writes a (T, 22016) bf16 tensor that a
second kernel reads back to compute ``silu(gate) * up``: ~2.4 GB of memory traffic a layer, ~0.8 ms on an H100.
This kernel computes both halves of a (T, 2 x 128) output tile at once (the stacked ``[gate; up]`` weight is read as
a 3-D TMA tensor, so one load brings 128 gate rows and the matching 128 up rows), applies SwiGLU to the fp32
accumulators and writes only the (T, 11008) result. Measured on an H100 (docs/vla.md, "Fifth probe"): at that shape
8.7-9.8 ms against 9.6-11.5 ms for cuBLAS plus the separate pass; a whole batch of 128 frames 1.1-1.6% faster.

The epilogue rounds like the unfused path (gate and up to bf16, SiLU in fp32 rounded to bf16, the product rounded
to bf16), so only the GEMM's summation order differs from cuBLAS, as it does between any two GEMM kernels.
Everything else (CPU, other GPUs, small row counts such as decode steps, shapes TMA cannot address) takes
:func:`swiglu_reference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_ROWS = 1024  # decode steps and batch 1 stay on cuBLAS: the kernel was tuned and measured only for big prefills

_BLOCK_M, _BLOCK_N, _BLOCK_K = 128, 128, 64  # output tile 128 x 128 (a 128 x 256 accumulator), K in steps of 64
_STAGES, _WARPS, _GROUP_M = 3, 8, 12  # T=36096: 4 stages no faster; 12-row tile groups >= 8 in 4 of 4 runs (H100, H200)


def swiglu_reference(x: torch.Tensor, w_gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(x @ gate.T) * (x @ up.T)`` for the stacked (2I, K) ``[gate; up]`` weight, as Llama's MLP computes it."""
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    return F.silu(gate) * up


def fused_swiglu_available(w_gate_up: torch.Tensor) -> bool:
    """Whether the Triton kernel can serve this stacked weight: bf16 on a Hopper GPU, TMA-addressable strides."""
    if not (w_gate_up.is_cuda and w_gate_up.dtype == torch.bfloat16 and w_gate_up.is_contiguous()):
        return False
    if torch.cuda.get_device_capability(w_gate_up.device)[0] != 9:  # tuned and tested on Hopper only
        return False
    return w_gate_up.dim() == 2 and w_gate_up.shape[0] % 16 == 0 and w_gate_up.shape[1] % 8 == 0


@torch.library.custom_op("task_supplementor::swiglu_product", mutates_args=())
def swiglu_product(x: torch.Tensor, w_gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU of the stacked gate/up product: the fused Triton kernel for bf16 rows on a Hopper GPU (see
    :func:`fused_swiglu_available`), else :func:`swiglu_reference`. Callers use it from ``MIN_ROWS`` rows on.

    A custom op so that ``torch.compile`` treats it as one opaque call inside the compiled Llama layer.
    """
    if x.dtype != w_gate_up.dtype or x.device != w_gate_up.device or not fused_swiglu_available(w_gate_up):
        return swiglu_reference(x, w_gate_up)
    from vla_node.swiglu_triton import fused_swiglu  # Triton ships with CUDA builds of torch only

    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = fused_swiglu(rows, w_gate_up, block=(_BLOCK_M, _BLOCK_N, _BLOCK_K), stages=_STAGES, warps=_WARPS,
                       group_m=_GROUP_M)
    return out.view(*x.shape[:-1], out.shape[-1])


@swiglu_product.register_fake
def _(x: torch.Tensor, w_gate_up: torch.Tensor) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], w_gate_up.shape[0] // 2)
