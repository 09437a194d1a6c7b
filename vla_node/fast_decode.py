"""Whole-frame greedy action prediction as ONE CUDA graph per (batch size, prompt-length bucket).

WHY: at batch 1 OpenVLA-7B is launch-bound, not math-bound: eagerly the two ViTs + projector cost ~12 ms, the
~290-token prefill ~28 ms and each decode step ~4.7 ms on an H200, while the math and weight reads of the whole frame
take well under half of that. Recording the entire frame (vision towers, projector, embedding concat, prefill into
per-layer K/V buffers, the 6 further greedy steps and their argmaxes) into one ``torch.cuda.CUDAGraph`` replays
thousands of kernels with one launch and no host sync. Batched (64 frames, ~18k prefill tokens) the GEMMs dominate
and the eager elementwise passes (RMSNorm fp32 upcasts, rotary, residuals, SiLU) cost ~20%: the Llama layers are
therefore written out as one function of tensors that ``torch.compile`` fuses once for all layers (on CUDA).

Fixed shapes make that possible: the prompt is right-padded to a multiple of ``bucket`` tokens
(``[first][patches][rest][padding]``), so the real tokens keep exactly the positions and keys of the runtime's layout
and the prefill is plain causal attention (flash kernel, no mask); decode steps mask the padding slots. Graphs (each
with its own K/V buffers) are kept per (batch, bucket), the least recently used dropped beyond ``max_graphs``. On CPU
(or a model split over devices) the same layer code runs eagerly, which the tests compare with
:meth:`OpenVLARuntime.generate`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vla_node.prompting import with_empty_token

if TYPE_CHECKING:
    from vla_node.runtime import OpenVLARuntime


@dataclass
class _KV:
    """Per-layer key/value buffers (B, heads, slots, head_dim) of one frame shape."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic: fp32 statistics, result cast back before the weight."""
    normed = hidden.float()
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(hidden.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def _decoder_layer(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: torch.Tensor | None,
                   slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, norm1: torch.Tensor,
                   norm2: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor,
                   w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, eps: float, heads: int,
                   kv_heads: int) -> torch.Tensor:
    """A Llama decoder layer (pre-norm attention + SwiGLU MLP) as one function of tensors, so that one
    ``torch.compile`` serves all layers (weights are arguments, not guarded module attributes)."""
    batch, length, _ = hidden.shape
    x = _rms_norm(hidden, norm1, eps)
    q = F.linear(x, wq).view(batch, length, heads, -1).transpose(1, 2)
    k = F.linear(x, wk).view(batch, length, kv_heads, -1).transpose(1, 2)
    v = F.linear(x, wv).view(batch, length, kv_heads, -1).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    keys.index_copy_(2, slots, k)
    values.index_copy_(2, slots, v)
    if attend is None:  # prefill: the tokens attend causally among themselves (flash kernel)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads)
    else:
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, enable_gqa=heads != kv_heads)
    hidden = hidden + F.linear(out.transpose(1, 2).reshape(batch, length, -1), wo)
    x = _rms_norm(hidden, norm2, eps)
    return hidden + F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


@dataclass
class _Graph:
    """One recorded frame: static input buffers, the cache it writes, the graph and its output buffer."""

    pixel_values: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    kv: _KV
    graph: torch.cuda.CUDAGraph | None
    tokens: torch.Tensor | None


class GraphedGreedyDecoder:
    """Images' pixel values + prompt ids -> (B, steps) greedy action token ids, like ``runtime.generate``."""

    def __init__(self, runtime: OpenVLARuntime, bucket: int = 16, use_graphs: bool | None = None,
                 max_graphs: int = 8, compile_layers: bool | None = None) -> None:
        if bucket < 1:
            raise ValueError(f"bucket must be >= 1, got {bucket}")
        self.runtime = runtime
        self.model = runtime.model
        self.llm = runtime.model.language_model
        self.bucket = bucket
        devices = {p.device for p in runtime.model.parameters()}
        one_cuda_device = len(devices) == 1 and next(iter(devices)).type == "cuda"
        self.use_graphs = one_cuda_device if use_graphs is None else (use_graphs and one_cuda_device)
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple[int, int, int], _Graph] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        config = self.llm.config
        if config.hidden_act != "silu" or getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError("GraphedGreedyDecoder writes out Llama layers: SiLU MLP, no biases")
        self._eps = float(self.llm.model.layers[0].input_layernorm.variance_epsilon)
        self._heads, self._kv_heads = config.num_attention_heads, config.num_key_value_heads
        self._head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        compile_layers = self.use_graphs if compile_layers is None else compile_layers
        self._layer_fn = torch.compile(_decoder_layer, dynamic=False) if compile_layers else _decoder_layer

    def _kv_buffers(self, batch: int, slots: int) -> _KV:
        dtype = self.llm.get_input_embeddings().weight.dtype
        shape = (batch, self._kv_heads, slots, self._head_dim)
        layers = range(len(self.llm.model.layers))
        make = lambda: torch.zeros(shape, dtype=dtype, device=self.runtime.device)  # noqa: E731
        return _KV([make() for _ in layers], [make() for _ in layers])

    # ---- inputs --------------------------------------------------------------------------------------------
    def text_inputs(self, prompt_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and mask, L = longest prompt rounded up to the bucket: ``[first][rest][padding]`` per row."""
        prompt_ids = [with_empty_token(ids) for ids in prompt_ids]
        longest = max(len(ids) for ids in prompt_ids)
        width = -(-longest // self.bucket) * self.bucket
        text = torch.full((len(prompt_ids), width), self.runtime.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(text)
        for row, ids in enumerate(prompt_ids):
            text[row, :len(ids)] = torch.as_tensor(ids)
            mask[row, :len(ids)] = 1
        return text, mask

    # ---- the language model, written out ------------------------------------------------------------------
    def _layer(self, index: int, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               attend: torch.Tensor | None, slots: torch.Tensor, kv: _KV) -> torch.Tensor:
        """One Llama decoder layer over the model's own weights; writes its keys/values at ``slots`` of the buffers.

        ``attend`` None = causal over the ``hidden`` tokens themselves (prefill, flash kernel); else a (B, 1, 1, S)
        boolean mask over the whole buffer (decode). Compiled on CUDA so the norms, rotary, residuals and SiLU fuse.
        """
        layer = self.llm.model.layers[index]
        attn, mlp = layer.self_attn, layer.mlp
        return self._layer_fn(hidden, cos, sin, attend, slots, kv.keys[index], kv.values[index],
                              layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                              attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight,
                              mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight,
                              self._eps, self._heads, self._kv_heads)

    def _llm(self, embeds: torch.Tensor, positions: torch.Tensor, attend: torch.Tensor | None,
             slots: torch.Tensor, kv: _KV, last: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (B, T, H) -> greedy token (B,) after the last (or ``last``-indexed) position."""
        cos, sin = self.llm.model.rotary_emb(embeds, positions)
        hidden = embeds
        for index in range(len(self.llm.model.layers)):
            hidden = self._layer(index, hidden, cos, sin, attend, slots, kv)
        if last is None:
            hidden = hidden[:, -1]
        else:
            hidden = hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1]))[:, 0]
        return self.llm.lm_head(self.llm.model.norm(hidden)).argmax(dim=-1)

    # ---- the frame -----------------------------------------------------------------------------------------
    def _frame(self, pixel_values: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, kv: _KV,
               steps: int) -> torch.Tensor:
        """Vision, prefill and greedy decode with fixed shapes and no host sync (graph-capturable).

        Sequence ``[first][patches][rest][right padding]``: the real tokens sit at positions 0..n-1 exactly as in
        the runtime's (masked, cumsum-positioned) layout, and the padding comes after them, so the prefill is
        plainly causal; the decode steps mask the padding slots.
        """
        device = text.device
        embed = self.llm.get_input_embeddings()
        text_embeds = embed(text)
        patches = self.model.image_embeddings(pixel_values).to(text_embeds.dtype)
        batch, num_patches = patches.shape[:2]
        embeds = torch.cat([text_embeds[:, :1], patches, text_embeds[:, 1:]], dim=1)
        length = embeds.shape[1]
        real = text_mask.sum(dim=1) + num_patches  # (B,) real tokens per row
        slots = torch.arange(length + steps - 1, device=device)
        positions = slots[None, :length].expand(batch, -1)
        token = self._llm(embeds, positions, None, slots[:length], kv, last=real - 1)
        keys = (slots[None, :] < real[:, None]) | (slots[None, :] >= length)  # (B, S): real prompt + generated
        tokens, position = [token], real[:, None] - 1
        for step in range(steps - 1):
            position = position + 1
            slot = length + step
            visible = (keys & (slots <= slot)[None, :])[:, None, None, :]
            token = self._llm(embed(token[:, None]), position, visible, slots[slot:slot + 1], kv)
            tokens.append(token)
        return torch.stack(tokens, dim=1)

    def _entry(self, pixel_values: torch.Tensor, text: torch.Tensor, steps: int) -> _Graph:
        key = (text.shape[0], text.shape[1], steps)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            return entry
        device = self.runtime.device
        cache_len = self.runtime.config.num_patches + text.shape[1] + steps - 1  # [first][patches][rest][steps-1]
        entry = _Graph(torch.zeros(pixel_values.shape, dtype=pixel_values.dtype, device=device),
                       torch.zeros(text.shape, dtype=torch.long, device=device),
                       torch.zeros(text.shape, dtype=torch.long, device=device),
                       self._kv_buffers(text.shape[0], cache_len), None, None)
        if self.use_graphs:
            entry.text_mask[:, 0] = 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: cache allocation, cuBLAS handles, autotuning
                for _ in range(2):
                    self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.kv, steps)
            torch.cuda.current_stream().wait_stream(side)
            entry.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(entry.graph, pool=self._pool):
                entry.tokens = self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.kv, steps)
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    @torch.inference_mode()
    def generate(self, pixel_values: torch.Tensor, prompt_ids: Sequence[Sequence[int]], steps: int = 7,
                 ) -> torch.Tensor:
        """(B, steps) greedy token ids on the model's device, like ``OpenVLARuntime.generate(...).token_ids``."""
        if len(prompt_ids) != pixel_values.shape[0]:
            raise ValueError(f"{len(prompt_ids)} prompts for {pixel_values.shape[0]} images")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        text, text_mask = self.text_inputs(prompt_ids)
        entry = self._entry(pixel_values, text, steps)
        entry.pixel_values.copy_(pixel_values, non_blocking=True)
        entry.text.copy_(text, non_blocking=True)
        entry.text_mask.copy_(text_mask, non_blocking=True)
        if entry.graph is None:
            return self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.kv, steps)
        entry.graph.replay()
        return entry.tokens.clone()
