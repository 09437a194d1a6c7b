"""The Triton kernel behind :func:`vla_node.swiglu_gemm.swiglu_product` (imported only on CUDA, where Triton is).

A persistent kernel: one program per SM walks the output tiles in groups of ``GROUP_M`` tile rows (so the A rows
and weight rows in flight stay in L2), loads operands with TMA (host-side tensor descriptors) and multiplies with
Hopper's warpgroup MMA through ``tl.dot`` with a ``STAGES``-deep software pipeline.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _swiglu_kernel(a_desc, w_desc, out_desc, rows, inner, width,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                   PROGRAMS: tl.constexpr, STAGES: tl.constexpr):
    tiles_m = tl.cdiv(rows, BLOCK_M)
    tiles_n = tl.cdiv(inner, BLOCK_N)
    steps_k = tl.cdiv(width, BLOCK_K)
    per_group = GROUP_M * tiles_n
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, PROGRAMS, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
        off_m = (first_m + (tile % per_group) % group_rows) * BLOCK_M
        off_n = ((tile % per_group) // group_rows) * BLOCK_N
        acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), tl.float32)
        for step in tl.range(steps_k, num_stages=STAGES):
            # (2, BLOCK_N, BLOCK_K): gate rows off_n.. and the same up rows, as one (2 * BLOCK_N, BLOCK_K) operand
            w = tl.reshape(w_desc.load([0, off_n, step * BLOCK_K]), (2 * BLOCK_N, BLOCK_K))
            acc = tl.dot(a_desc.load([off_m, step * BLOCK_K]), w.T, acc)
        gate, up = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N)), (0, 2, 1)))
        gate = gate.to(tl.bfloat16).to(tl.float32)
        up = up.to(tl.bfloat16).to(tl.float32)
        activated = (gate * tl.sigmoid(gate)).to(tl.bfloat16).to(tl.float32)
        out_desc.store([off_m, off_n], (activated * up).to(tl.bfloat16))


def fused_swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, block: tuple[int, int, int], stages: int, warps: int,
                 group_m: int) -> torch.Tensor:
    """(T, K) bf16 rows, (2I, K) stacked ``[gate; up]`` -> (T, I) ``silu(gate) * up``."""
    block_m, block_n, block_k = block
    rows, width = x.shape
    inner = w_gate_up.shape[0] // 2
    out = torch.empty(rows, inner, dtype=x.dtype, device=x.device)
    a_desc = TensorDescriptor.from_tensor(x, [block_m, block_k])
    w_desc = TensorDescriptor.from_tensor(w_gate_up.view(2, inner, width), [2, block_n, block_k])
    out_desc = TensorDescriptor.from_tensor(out, [block_m, block_n])
    programs = min(torch.cuda.get_device_properties(x.device).multi_processor_count,
                   triton.cdiv(rows, block_m) * triton.cdiv(inner, block_n))
    _swiglu_kernel[(programs,)](a_desc, w_desc, out_desc, rows, inner, width, block_m, block_n, block_k, group_m,
                                programs, stages, num_warps=warps)
    return out
