"""The gate/up GEMM with SwiGLU in its epilogue (vla_node/swiglu_gemm.py).

On CPU (CI) the op must be exactly the reference, also inside ``torch.compile`` (its fake implementation gives the
shapes). The Triton kernel itself needs a Hopper GPU: those tests skip elsewhere, with the reason; they run on a GPU
machine with ``python -m pytest tests/test_swiglu_gemm.py``.
"""

from __future__ import annotations

import pytest
import torch

from vla_node.swiglu_gemm import MIN_ROWS, fused_swiglu_available, swiglu_product, swiglu_reference

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
needs_hopper = pytest.mark.skipif(not HOPPER, reason="needs a Hopper CUDA GPU (the fused Triton SwiGLU GEMM)")


def _operands(rows: int, inner: int, width: int, device: str, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=generator).to(device, dtype)
    w = (torch.randn(2 * inner, width, generator=generator) * width ** -0.5).to(device, dtype)
    return x, w


def test_cpu_op_is_the_reference_also_when_compiled():
    x, w = _operands(40, 24, 16, "cpu", torch.float32)
    expected = torch.nn.functional.silu(x @ w[:24].T) * (x @ w[24:].T)
    torch.testing.assert_close(swiglu_reference(x, w), expected)
    assert torch.equal(swiglu_product(x, w), swiglu_reference(x, w))
    compiled = torch.compile(lambda a, b: swiglu_product(a, b) + 1, fullgraph=True)
    assert torch.equal(compiled(x.view(4, 10, 16), w), swiglu_reference(x, w).view(4, 10, 24) + 1)


def test_the_kernel_is_only_offered_for_bf16_weights_on_hopper():
    assert not fused_swiglu_available(torch.zeros(32, 16, dtype=torch.bfloat16))  # CPU
    if torch.cuda.is_available():
        assert not fused_swiglu_available(torch.zeros(32, 16, device="cuda"))  # float32
        assert not fused_swiglu_available(torch.zeros(32, 12, device="cuda", dtype=torch.bfloat16))  # 24-byte rows
        assert fused_swiglu_available(torch.zeros(32, 16, device="cuda", dtype=torch.bfloat16)) == HOPPER


@needs_hopper
@pytest.mark.parametrize("rows, inner, width", [(MIN_ROWS, 256, 128), (3000, 11008 // 8, 512), (1037, 200, 200)])
def test_kernel_matches_the_reference_within_bf16_rounding(rows, inner, width):
    """Tile-aligned and ragged shapes (rows, inner width and K not multiples of the 128/128/64 tiles: TMA pads)."""
    x, w = _operands(rows, inner, width, "cuda", torch.bfloat16, seed=rows)
    assert fused_swiglu_available(w)
    got = swiglu_product(x, w)
    exact = swiglu_reference(x.double(), w.double())
    unfused_error = (swiglu_reference(x, w).double() - exact).abs().max().item()
    fused_error = (got.double() - exact).abs().max().item()
    assert got.shape == (rows, inner) and got.dtype == torch.bfloat16
    assert fused_error <= 2 * unfused_error + 1e-6, (fused_error, unfused_error)


@needs_hopper
def test_kernel_serves_a_batched_view_and_cuda_graph_replay():
    x, w = _operands(2 * 700, 384, 256, "cuda", torch.bfloat16, seed=7)
    x = x.view(2, 700, 256)
    first = swiglu_product(x, w)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = swiglu_product(x, w)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(captured, swiglu_reference(x, w), rtol=1.6e-2, atol=1e-2)
    assert first.shape == (2, 700, 384)
