"""Whole-frame greedy action prediction as ONE CUDA graph per (batch size, prompt-length bucket).

WHY: at batch 1 OpenVLA-7B is launch-bound, not math-bound: eagerly the two ViTs + projector cost ~12 ms, the
~290-token prefill ~28 ms and each decode step ~4.7 ms on an H200, while the math and weight reads of the whole frame
take well under half of that. Recording the entire frame (uint8 -> pixel normalisation, vision towers, projector,
embedding concat, prefill into per-layer K/V buffers, the 6 further greedy steps and their argmaxes) into one
``torch.cuda.CUDAGraph`` replays thousands of kernels with one launch and no host sync.

Batched (64 frames, ~18k prefill tokens) the GEMMs are ~80% of the time and already run at ~725 TFLOP/s on an H100
(measured), so the rest is about doing less around them: q/k/v and gate/up are one product each (:func:`fuse_weights`),
the SwiGLU runs in the gate/up GEMM's epilogue on Hopper (:mod:`vla_node.swiglu_gemm`);
the Llama layers and the ViT blocks are functions of tensors that one ``torch.compile`` each fuses (norms, rotary,
residuals, SiLU/GELU, LayerScale); the last layer computes queries, attention and MLP only at the one position per row
whose logits are read (:func:`_last_prefill_layer`, ~1/32 of the prefill); and batches are padded to a multiple of 2
tokens instead of 16.

Fixed shapes make that possible: the prompt is right-padded (``[first][patches][rest][padding]``), so the real tokens
keep exactly the positions and keys of the runtime's layout and the prefill is plain causal attention (a fused SDPA
kernel, no mask); decode steps mask the padding slots. Graphs (each with its own K/V buffers) are kept per frame
shape, the least recently used dropped beyond ``max_graphs``. On CPU (or a model split over devices) the same code
runs eagerly, which the tests compare with :meth:`OpenVLARuntime.generate`.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from task_supplementor.cuda_graphs import capture_graph, capture_lock
from vla_node.prompting import with_empty_token
from vla_node.swiglu_gemm import MIN_ROWS, fused_swiglu_available, swiglu_product, swiglu_reference
from vla_node.vit import block_forward

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


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads * D) -> (B, heads, L, D)."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _mlp_block(hidden: torch.Tensor, norm2: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
               eps: float, fused_mlp: bool = False) -> torch.Tensor:
    """The residual SwiGLU half of a Llama layer; ``fused_mlp``: SwiGLU in the gate/up GEMM's epilogue (one kernel)."""
    x = _rms_norm(hidden, norm2, eps)
    activated = swiglu_product(x, w_gate_up) if fused_mlp else swiglu_reference(x, w_gate_up)
    return hidden + F.linear(activated, w_down)


def _decoder_layer(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: torch.Tensor | None,
                   slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, norm1: torch.Tensor,
                   norm2: torch.Tensor, w_qkv: torch.Tensor, wo: torch.Tensor, w_gate_up: torch.Tensor,
                   w_down: torch.Tensor, eps: float, heads: int, kv_heads: int,
                   fused_mlp: bool = False) -> torch.Tensor:
    """A Llama decoder layer (pre-norm attention + SwiGLU MLP) as one function of tensors, so that one
    ``torch.compile`` serves all layers (weights are arguments, not guarded module attributes).

    ``w_qkv`` / ``w_gate_up``: the q, k, v (gate, up) weights stacked along the output dim (see :func:`fuse_weights`).
    ``fused_mlp``: compute the MLP's SwiGLU with :func:`swiglu_product` (batched prefills on Hopper).
    """
    batch, length, _ = hidden.shape
    x = _rms_norm(hidden, norm1, eps)
    head_dim = w_qkv.shape[0] // (heads + 2 * kv_heads)
    q, k, v = F.linear(x, w_qkv).split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k, v = _rotate(_heads(q, heads), cos, sin), _rotate(_heads(k, kv_heads), cos, sin), _heads(v, kv_heads)
    keys.index_copy_(2, slots, k)
    values.index_copy_(2, slots, v)
    if attend is None:  # prefill: the tokens attend causally among themselves (SDPA picks cuDNN on Hopper)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=heads != kv_heads)
    else:
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, enable_gqa=heads != kv_heads)
    hidden = hidden + F.linear(out.transpose(1, 2).reshape(batch, length, -1), wo)
    return _mlp_block(hidden, norm2, w_gate_up, w_down, eps, fused_mlp)


def _last_prefill_layer(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, last: torch.Tensor,
                        slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, norm1: torch.Tensor,
                        norm2: torch.Tensor, w_qkv: torch.Tensor, wo: torch.Tensor, w_gate_up: torch.Tensor,
                        w_down: torch.Tensor, eps: float, heads: int, kv_heads: int) -> torch.Tensor:
    """The last layer during prefill -> (B, 1, H) outputs at the ``last`` position of each row.

    Nothing after the last layer reads any other position (the first action token comes from ``last``), but the
    decode steps attend to every position's keys and values: so those are computed for all tokens, and the query,
    attention, output projection and MLP only at ``last``. Per position it is :func:`_decoder_layer`'s arithmetic;
    it saves ~1/32 of a Llama-2-7B prefill.
    """
    batch, length, width = hidden.shape
    x = _rms_norm(hidden, norm1, eps)
    head_dim = w_qkv.shape[0] // (heads + 2 * kv_heads)
    q_width = heads * head_dim
    k, v = F.linear(x, w_qkv[q_width:]).split(kv_heads * head_dim, dim=-1)
    keys.index_copy_(2, slots, _rotate(_heads(k, kv_heads), cos.unsqueeze(1), sin.unsqueeze(1)))
    values.index_copy_(2, slots, _heads(v, kv_heads))
    pick = last.view(-1, 1, 1)
    hidden = hidden.gather(1, pick.expand(-1, 1, width))
    cos, sin = (t.gather(1, pick.expand(-1, 1, t.shape[-1])).unsqueeze(1) for t in (cos, sin))
    q = _rotate(_heads(F.linear(x.gather(1, pick.expand(-1, 1, width)), w_qkv[:q_width]), heads), cos, sin)
    visible = (slots[None, :] <= last[:, None])[:, None, None, :]  # causal for the one query row
    out = F.scaled_dot_product_attention(q, keys[:, :, :length], values[:, :, :length], attn_mask=visible,
                                         enable_gqa=heads != kv_heads)
    hidden = hidden + F.linear(out.transpose(1, 2).reshape(batch, 1, -1), wo)
    return _mlp_block(hidden, norm2, w_gate_up, w_down, eps)


def fuse_weights(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-seat a Llama layer's q/k/v and gate/up weights as views of one stacked tensor each; returns the two.

    WHY: one (T x 4096) @ (4096 x 12288) product instead of three, and one of 22016 columns instead of two of 11008,
    run closer to the GPU's GEMM peak and read ``x`` once. The module keeps working unchanged (its weights are views
    of the same values) and no memory is added: the separate tensors are released as the views replace them.
    Idempotent while the weights stay where they are (a later ``.to()`` that moves them is fused anew).
    """
    attn, mlp = layer.self_attn, layer.mlp
    groups = ((attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj))
    previous = getattr(layer, "_stacked_weights", None)
    if previous is not None and all(stack.data_ptr() == projections[0].weight.data_ptr()
                                    for stack, projections in zip(previous, groups)):
        return previous
    stacked = []
    for projections in groups:
        whole = torch.cat([p.weight.detach() for p in projections])
        for projection, part in zip(projections, whole.split([p.weight.shape[0] for p in projections])):
            projection.weight = torch.nn.Parameter(part, requires_grad=False)
        stacked.append(whole)
    layer._stacked_weights = (stacked[0], stacked[1])
    return layer._stacked_weights


@dataclass
class _Graph:
    """One recorded frame: static input buffers, the cache it writes, the graph and its output buffer."""

    images: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    kv: _KV
    graph: torch.cuda.CUDAGraph | None
    tokens: torch.Tensor | None


class GraphedGreedyDecoder:
    """Images + prompt ids -> (B, steps) greedy action token ids, like ``runtime.generate``.

    Images come either as float pixel_values (B, 3 * towers, H, W) or as the preprocessor's uint8 resizes
    (B, R, H, W, 3), normalised on the device inside the graph (:meth:`ImagePreprocessor.normalize`).
    ``fused_mlp`` (default on) lets batched prefills on a Hopper GPU compute each MLP's SwiGLU inside the gate/up GEMM
    (:mod:`vla_node.swiglu_gemm`); elsewhere it has no effect.
    """

    BATCHED_ROWS = 8  # from this many frames on, pad prompts to ``batched_bucket`` (padding costs more than graphs)

    def __init__(self, runtime: OpenVLARuntime, bucket: int = 16, batched_bucket: int = 2,
                 use_graphs: bool | None = None, max_graphs: int = 8, compile_layers: bool | None = None,
                 fused_mlp: bool = True) -> None:
        if bucket < 1 or batched_bucket < 1:
            raise ValueError(f"buckets must be >= 1, got {bucket} and {batched_bucket}")
        self.runtime = runtime
        self.model = runtime.model
        self.llm = runtime.model.language_model
        self.bucket, self.batched_bucket = bucket, batched_bucket
        devices = {p.device for p in runtime.model.parameters()}
        one_cuda_device = len(devices) == 1 and next(iter(devices)).type == "cuda"
        self.use_graphs = one_cuda_device if use_graphs is None else (use_graphs and one_cuda_device)
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        config = self.llm.config
        if (config.hidden_act != "silu" or getattr(config, "attention_bias", False)
                or getattr(config, "mlp_bias", False)):
            raise ValueError("GraphedGreedyDecoder writes out Llama layers: SiLU MLP, no biases")
        self._eps = float(self.llm.model.layers[0].input_layernorm.variance_epsilon)
        self._heads, self._kv_heads = config.num_attention_heads, config.num_key_value_heads
        self._head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self._stacked = [fuse_weights(layer) for layer in self.llm.model.layers]
        self.fused_mlp = fused_mlp and all(fused_swiglu_available(w_gate_up) for _, w_gate_up in self._stacked)
        compile_layers = self.use_graphs if compile_layers is None else compile_layers
        if compile_layers:
            # compiled entries per function: prefill and decode variants, one per batch size for the ViT blocks (two
            # towers); past dynamo's default limit of 8 it would silently run these functions uncompiled
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 8 * max_graphs)
        # Llama layers: dynamic=None (automatic) specialises on the first shape and, once a second prompt width or
        # batch size appears, builds one kernel set generic in those dims, so later shapes cost only a graph capture
        # (~0.7 s at 7B, batch 1) instead of a recompile (~5 s), at the same speed (H100, batch 64: 492.5 vs 489.0
        # ms). ViT blocks: static; automatic would make the hidden width generic once the second tower (of another
        # width) runs.
        compiled = (lambda fn, dynamic: torch.compile(fn, dynamic=dynamic)) if compile_layers else (  # noqa: E731
            lambda fn, dynamic: fn)
        self._layer_fn = compiled(_decoder_layer, None)
        self._last_layer_fn = compiled(_last_prefill_layer, None)
        self._block_fn = compiled(block_forward, False)

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
        step = self.bucket if len(prompt_ids) < self.BATCHED_ROWS else self.batched_bucket
        width = -(-longest // step) * step
        text = torch.full((len(prompt_ids), width), self.runtime.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(text)
        for row, ids in enumerate(prompt_ids):
            text[row, :len(ids)] = torch.as_tensor(ids)
            mask[row, :len(ids)] = 1
        return text, mask

    # ---- the language model, written out ------------------------------------------------------------------
    def _layer_weights(self, index: int) -> tuple:
        layer = self.llm.model.layers[index]
        w_qkv, w_gate_up = self._stacked[index]
        return (layer.input_layernorm.weight, layer.post_attention_layernorm.weight, w_qkv,
                layer.self_attn.o_proj.weight, w_gate_up, layer.mlp.down_proj.weight,
                self._eps, self._heads, self._kv_heads)

    def _llm(self, embeds: torch.Tensor, positions: torch.Tensor, attend: torch.Tensor | None,
             slots: torch.Tensor, kv: _KV, last: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (B, T, H) -> greedy token (B,) after the last position (decode) or at ``last`` (prefill).

        Each layer writes its keys/values at ``slots`` of the buffers. Prefill (``attend`` None): causal over the
        ``hidden`` tokens themselves (fused SDPA kernel), the last layer only at ``last``; decode: ``attend`` is a
        (B, 1, 1, S) boolean mask over the whole buffer.
        """
        cos, sin = self.llm.model.rotary_emb(embeds, positions)
        hidden = embeds
        layers = len(self.llm.model.layers)
        fused_mlp = self.fused_mlp and attend is None and embeds.shape[0] * embeds.shape[1] >= MIN_ROWS
        for index in range(layers if last is None else layers - 1):
            hidden = self._layer_fn(hidden, cos, sin, attend, slots, kv.keys[index], kv.values[index],
                                    *self._layer_weights(index), fused_mlp)
        if last is not None:
            hidden = self._last_layer_fn(hidden, cos, sin, last, slots, kv.keys[-1], kv.values[-1],
                                         *self._layer_weights(layers - 1))
        return self.llm.lm_head(self.llm.model.norm(hidden[:, -1])).argmax(dim=-1)

    # ---- the frame -----------------------------------------------------------------------------------------
    def _frame(self, images: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, kv: _KV,
               steps: int) -> torch.Tensor:
        """Vision, prefill and greedy decode with fixed shapes and no host sync (graph-capturable).

        Sequence ``[first][patches][rest][right padding]``: the real tokens sit at positions 0..n-1 exactly as in
        the runtime's (masked, cumsum-positioned) layout, and the padding comes after them, so the prefill is
        plainly causal; the decode steps mask the padding slots.
        """
        device = text.device
        pixel_values = images if images.is_floating_point() else self.runtime.preprocessor.normalize(images)
        embed = self.llm.get_input_embeddings()
        text_embeds = embed(text)
        patches = self.model.image_embeddings(pixel_values, self._block_fn).to(text_embeds.dtype)
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

    def _entry(self, images: torch.Tensor, text: torch.Tensor, steps: int) -> _Graph:
        key = (tuple(images.shape), images.dtype, text.shape[1], steps)
        entry = self._graphs.get(key)
        if entry is not None:
            self._graphs.move_to_end(key)
            return entry
        device = self.runtime.device
        cache_len = self.runtime.config.num_patches + text.shape[1] + steps - 1  # [first][patches][rest][steps-1]
        self._make_room(text.shape[0], cache_len, text.shape[1] + self.runtime.config.num_patches)
        entry = _Graph(torch.zeros(images.shape, dtype=images.dtype, device=device),
                       torch.zeros(text.shape, dtype=torch.long, device=device),
                       torch.zeros(text.shape, dtype=torch.long, device=device),
                       self._kv_buffers(text.shape[0], cache_len), None, None)
        if self.use_graphs:
            entry.text_mask[:, 0] = 1
            entry.tokens, entry.graph = capture_graph(
                lambda: self._frame(entry.images, entry.text, entry.text_mask, entry.kv, steps), self._pool)
        self._graphs[key] = entry
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry

    def _make_room(self, batch: int, cache_len: int, prefill_len: int) -> None:
        """Drops least recently used graphs (and their K/V buffers) until a new frame shape fits in GPU memory.

        WHY: one batch-256 shape alone holds ~40 GB of K/V for OpenVLA-7B, so a count limit (``max_graphs``) is
        not enough when a process runs several batch sizes (the benchmark, an offline run with a short last batch).
        The need is estimated as the K/V buffers plus the prefill's largest activations (the gate/up product).
        """
        if not self.use_graphs:
            return
        config = self.llm.config
        element = self.llm.get_input_embeddings().weight.element_size()
        kv_bytes = 2 * len(self.llm.model.layers) * batch * self._kv_heads * cache_len * self._head_dim * element
        activation_bytes = 4 * batch * prefill_len * (2 * config.intermediate_size + config.hidden_size) * element
        need = kv_bytes + activation_bytes
        device = self.runtime.device
        available = lambda: (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)  # noqa: E731
                             - torch.cuda.memory_allocated(device))  # free on the card + cached by torch, unused
        with capture_lock:  # emptying the cache while another thread records a graph is refused
            while self._graphs and available() < need:
                self._graphs.popitem(last=False)
                gc.collect()
                torch.cuda.empty_cache()
        if not self._graphs:  # the shared pool died with its last graph; capturing into it again is an error
            self._pool = torch.cuda.graph_pool_handle()

    def _staged(self, tensor: torch.Tensor) -> torch.Tensor:
        """A CPU tensor in page-locked memory when graphs run, so its copy to the GPU does not block the host."""
        return tensor.pin_memory() if self.use_graphs and tensor.device.type == "cpu" else tensor

    @torch.inference_mode()
    def generate(self, images: torch.Tensor, prompt_ids: Sequence[Sequence[int]], steps: int = 7) -> torch.Tensor:
        """(B, steps) greedy token ids on the model's device, like ``OpenVLARuntime.generate(...).token_ids``.

        With graphs this only enqueues work and returns at once (the result is ready when it is read), so a caller
        can prepare the next batch while the GPU runs this one (see :meth:`OpenVLARuntime.predict_stream`).
        """
        if len(prompt_ids) != images.shape[0]:
            raise ValueError(f"{len(prompt_ids)} prompts for {images.shape[0]} images")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not self.use_graphs:
            return self._generate(images, prompt_ids, steps)
        # streams, graphs and their memory pool belong to the current device: make it the model's (e.g. cuda:1)
        with torch.cuda.device(self.runtime.device):
            return self._generate(images, prompt_ids, steps)

    def _generate(self, images: torch.Tensor, prompt_ids: Sequence[Sequence[int]], steps: int) -> torch.Tensor:
        text, text_mask = self.text_inputs(prompt_ids)
        entry = self._entry(images, text, steps)
        entry.images.copy_(self._staged(images), non_blocking=True)
        entry.text.copy_(self._staged(text), non_blocking=True)
        entry.text_mask.copy_(self._staged(text_mask), non_blocking=True)
        if entry.graph is None:
            return self._frame(entry.images, entry.text, entry.text_mask, entry.kv, steps)
        entry.graph.replay()
        return entry.tokens.clone()
