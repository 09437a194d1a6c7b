"""Greedy Qwen2.5-VL generation with a graph-captured vision tower and one-token step (the ``fast`` path).

WHY: at batch 1 a 3B model is launch-bound, not math-bound. transformers' vision tower runs every 112-pixel window as
its own attention call (about 290 calls for one 256x256 frame) and syncs with the host in each of its 32 blocks
(``lengths.tolist()``), and ``generate()`` spends milliseconds per call on setup and per token on Python. Here:

- the vision tower runs the model's own modules (norms, qkv, rotary, proj, MLP, merger) block by block, with ONE
  attention call per block whose boolean block-diagonal mask is exactly the windows (or images) transformers attends
  within separately; everything that depends only on the image grid (window order, rotary angles, masks) is computed
  once per grid, so the 32 blocks have no host sync and are recorded as one CUDA graph per grid;
- the prompt is prefilled eagerly, its K/V copied into preallocated per-layer buffers, then each new token is one
  replay of a recorded one-token step whose inputs (token, position, visible slots) live in device buffers. The step
  is written out here over the model's own modules (at batch 1 a 3B decoder is ~1,100 tiny kernels in transformers'
  layer code): q/k/v and gate/up projections each as ONE matmul (the model's weights re-pointed into one shared
  tensor, no copy), text rotary computed once per step (decode positions are equal on all three M-RoPE axes), grouped
  query attention without ``repeat_kv`` copies (the query heads of a K/V head become that head's query rows), and on
  CUDA the step is ``torch.compile``d (norms, rotary, residuals fused) before it is recorded.

The arithmetic is the model's: the same weights and modules, greedy argmax over the same logits, the same 3-D rotary
positions (``get_rope_index``) and text positions after the prompt. Logits processors (the xgrammar JSON constraint,
a minimum length) are applied eagerly between replays, like ``generate`` does. On CPU, or with graphs off, the same
functions run eagerly; the tests compare the ids with ``model.generate`` there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers.cache_utils import DynamicCache
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_attention_seqlens, get_vision_position_ids, get_vision_window_index

from task_supplementor.cuda_graphs import capture_graph

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _segment_mask(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor | None:
    """(length, length) bool: token i sees token j iff both lie in the same [cu[k], cu[k+1]) span; None if one span."""
    bounds = cu_seqlens.to(torch.long)
    segment = torch.searchsorted(bounds[1:], torch.arange(length, device=bounds.device), right=True)
    if int(segment.max()) == int(segment.min()):
        return None
    return segment[:, None] == segment[None, :]


@dataclass
class _VisionPlan:
    """Everything of the vision forward that depends on the image grid alone, plus its graph and buffers."""

    window_index: torch.Tensor
    reverse_index: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    full_mask: torch.Tensor | None
    window_mask: torch.Tensor | None
    pixels: torch.Tensor | None = None
    output: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None


@dataclass
class _StepGraph:
    """One recorded one-token step for a (batch, cache length): its K/V buffers, input buffers, logits and graph."""

    keys_cache: list[torch.Tensor]    # per layer (B, kv heads, C, head dim)
    values_cache: list[torch.Tensor]
    token: torch.Tensor       # (B,) id fed this step
    position: torch.Tensor    # (B,) text position of that token
    slot: torch.Tensor        # () cache slot it is written to
    keys: torch.Tensor        # (B, C) bool: which cache slots are real tokens (prompt padding is False)
    logits: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None


def _fuse_rows(linears: Sequence[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One weight (and bias) holding the linears' rows; each linear's parameters become views of it (no extra memory).

    WHY: at batch 1 each projection is a separate matrix-vector kernel; one matmul over the stacked rows computes the
    same dot products in one launch, and the model's own modules (used by the prefill) keep working on the views.
    """
    weight = torch.cat([lin.weight.data for lin in linears])
    bias = None if linears[0].bias is None else torch.cat([lin.bias.data for lin in linears])
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = weight[start:start + rows]
        if bias is not None:
            lin.bias.data = bias[start:start + rows]
        start += rows
    return weight, bias


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FastQwenGreedy:
    """``Qwen2_5_VLForConditionalGeneration`` inputs -> greedy new token ids, like
    ``model.generate(do_sample=False)``."""

    def __init__(self, model, use_graphs: bool | None = None, compile_step: bool | None = None,
                 cache_bucket: int = 128, max_graphs: int = 4) -> None:
        self.model = model
        self.visual = model.model.visual
        self.text = model.model.language_model
        self.config = model.config
        devices = {p.device for p in model.parameters()}
        one_cuda_device = len(devices) == 1 and next(iter(devices)).type == "cuda"
        self.device = next(iter(devices))
        self.use_graphs = one_cuda_device if use_graphs is None else (use_graphs and one_cuda_device)
        self.cache_bucket = cache_bucket
        self.max_graphs = max_graphs
        self._vision: OrderedDict[tuple, _VisionPlan] = OrderedDict()
        self._steps: OrderedDict[tuple[int, int], _StepGraph] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        with torch.no_grad():
            self._fused = [(_fuse_rows([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                            _fuse_rows([layer.mlp.gate_proj, layer.mlp.up_proj])[0]) for layer in self.text.layers]
        compile_step = self.use_graphs if compile_step is None else compile_step
        self._decode = torch.compile(self._decode_forward, dynamic=None) if compile_step else self._decode_forward
        eos = model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad = model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)

    # ---- vision ----------------------------------------------------------------------------------------------
    def _plan(self, grid_thw: torch.Tensor) -> _VisionPlan:
        visual, cfg = self.visual, self.visual.config
        grid = grid_thw.to(self.device)
        position_ids = get_vision_position_ids(grid, visual.spatial_merge_size)
        cu_seqlens, _ = get_vision_attention_seqlens(grid, cfg)
        window_index, cu_windows = get_vision_window_index(
            grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size)
        window_index, cu_seqlens, cu_windows = (t.to(self.device) for t in (window_index, cu_seqlens, cu_windows))
        length = int(grid.prod(-1).sum())
        probe = torch.empty(0, device=self.device, dtype=visual.dtype)
        cos, sin = visual.rotary_pos_emb(probe, position_ids)
        cos, sin = (self._window_order(t, window_index) for t in (cos, sin))
        return _VisionPlan(window_index, torch.argsort(window_index), cos, sin,
                           _segment_mask(cu_seqlens, length), _segment_mask(cu_windows, length))

    def _window_order(self, tensor: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
        unit = self.visual.spatial_merge_unit
        return tensor.reshape(-1, unit, tensor.shape[-1])[window_index].reshape(-1, tensor.shape[-1])

    def _vision_forward(self, plan: _VisionPlan, pixels: torch.Tensor) -> torch.Tensor:
        """The vision tower's blocks with one masked attention call each; no host sync (graph-capturable)."""
        hidden = self._window_order(self.visual.patch_embed(pixels), plan.window_index)
        length = hidden.shape[0]
        for index, block in enumerate(self.visual.blocks):
            mask = plan.full_mask if index in self.visual.fullatt_block_indexes else plan.window_mask
            attn = block.attn
            q, k, v = attn.qkv(block.norm1(hidden)).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            q, k = apply_rotary_pos_emb_vision(q, k, plan.cos, plan.sin)
            q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
            hidden = hidden + attn.proj(out.squeeze(0).transpose(0, 1).reshape(length, -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return self.visual.merger(hidden)[plan.reverse_index]

    def image_embeddings(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """(image tokens, hidden) like ``get_image_features``'s concatenated pooler output."""
        key = tuple(map(tuple, grid_thw.tolist()))
        plan = self._vision.get(key)
        if plan is None:
            plan = self._vision[key] = self._plan(grid_thw)
            while len(self._vision) > self.max_graphs:
                self._vision.popitem(last=False)
        self._vision.move_to_end(key)  # least recently used goes first: a size in use is never re-captured
        pixel_values = pixel_values.to(self.device, self.visual.dtype)
        if not self.use_graphs:
            return self._vision_forward(plan, pixel_values)
        if plan.graph is None:
            plan.pixels = pixel_values.clone()
            plan.output, plan.graph = capture_graph(lambda: self._vision_forward(plan, plan.pixels), self._pool)
        plan.pixels.copy_(pixel_values)
        plan.graph.replay()
        return plan.output.clone()

    # ---- text --------------------------------------------------------------------------------------------------
    def _rotary(self, hidden: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 1, head dim) cos/sin of a text token: its three M-RoPE position components are equal."""
        cos, sin = self.text.rotary_emb(hidden, position.view(1, -1, 1).expand(3, -1, 1))
        if cos.ndim == 4:   # transformers versions that leave the M-RoPE sections to the attention layers
            cos, sin = cos[0], sin[0]
        return cos[:, None], sin[:, None]

    def _decode_forward(self, token: torch.Tensor, position: torch.Tensor, slot: torch.Tensor, keys: torch.Tensor,
                        keys_cache: list[torch.Tensor], values_cache: list[torch.Tensor]) -> torch.Tensor:
        """One token per row through the decoder (writing its K/V at ``slot``) -> the lm head's logits (B, vocab)."""
        batch = token.shape[0]
        hidden = self.text.get_input_embeddings()(token[:, None])
        cos, sin = self._rotary(hidden, position)
        slots = torch.arange(keys.shape[1], device=keys.device)
        visible = (keys & (slots <= slot)[None, :])[:, None, None, :]
        where = slot.view(1)
        for layer, (qkv_w, qkv_b), gate_up_w, k_cache, v_cache in zip(
                self.text.layers, (f[0] for f in self._fused), (f[1] for f in self._fused), keys_cache, values_cache):
            attn = layer.self_attn
            kv_heads, dim = k_cache.shape[1], k_cache.shape[3]
            qkv = F.linear(layer.input_layernorm(hidden), qkv_w, qkv_b)
            q, k, v = qkv.split([attn.num_heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
            q = q.view(batch, -1, dim)[:, None]          # (B, 1, heads, D): heads as rows, one position
            k = k.view(batch, kv_heads, 1, dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k_cache.index_copy_(2, where, k)
            v_cache.index_copy_(2, where, v.view(batch, kv_heads, 1, dim))
            # grouped-query attention without repeat_kv: the heads sharing a K/V head are its query rows
            out = F.scaled_dot_product_attention(q.view(batch, kv_heads, -1, dim), k_cache, v_cache,
                                                 attn_mask=visible, scale=attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(batch, 1, -1))
            gate, up = F.linear(layer.post_attention_layernorm(hidden), gate_up_w).chunk(2, dim=-1)
            hidden = hidden + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        return self.model.lm_head(self.text.norm(hidden)[:, -1])

    def _step_forward(self, step: _StepGraph) -> torch.Tensor:
        return self._decode(step.token, step.position, step.slot, step.keys, step.keys_cache, step.values_cache)

    def _step(self, batch: int, capacity: int) -> _StepGraph:
        key = (batch, capacity)
        step = self._steps.get(key)
        if step is not None:
            self._steps.move_to_end(key)
            return step
        device, text_cfg = self.device, self.config.text_config
        kv_heads = text_cfg.num_key_value_heads
        dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
        dtype = self.text.get_input_embeddings().weight.dtype
        layers = len(self.text.layers)
        step = _StepGraph([torch.zeros(batch, kv_heads, capacity, dim, dtype=dtype, device=device)
                           for _ in range(layers)],
                          [torch.zeros(batch, kv_heads, capacity, dim, dtype=dtype, device=device)
                           for _ in range(layers)],
                          torch.zeros(batch, dtype=torch.long, device=device),
                          torch.zeros(batch, dtype=torch.long, device=device),
                          torch.zeros((), dtype=torch.long, device=device),
                          torch.ones(batch, capacity, dtype=torch.bool, device=device))
        if self.use_graphs:
            step.logits, step.graph = capture_graph(lambda: self._step_forward(step), self._pool)
        self._steps[key] = step
        while len(self._steps) > self.max_graphs:
            self._steps.popitem(last=False)
        return step

    @torch.inference_mode()
    def generate(self, inputs: dict, max_new_tokens: int, min_new_tokens: int = 0,
                 logits_processors: Sequence[LogitsProcessor] = (), streamer=None) -> torch.Tensor:
        """(B, <= max_new_tokens) new ids, rows padded after their EOS, stopping when every row has ended.

        ``inputs``: what :class:`QwenVLInputBuilder` builds (input_ids, attention_mask, mm_token_type_ids,
        pixel_values, image_grid_thw). ``streamer`` gets ``put(prompt ids)`` then ``put(new ids)`` per step.
        """
        if not self.use_graphs:
            return self._generate(inputs, max_new_tokens, min_new_tokens, logits_processors, streamer)
        # streams, graphs and their memory pool belong to the current device: make it the model's (e.g. cuda:1)
        with torch.cuda.device(self.device):
            return self._generate(inputs, max_new_tokens, min_new_tokens, logits_processors, streamer)

    def _generate(self, inputs: dict, max_new_tokens: int, min_new_tokens: int,
                  logits_processors: Sequence[LogitsProcessor], streamer) -> torch.Tensor:
        device = self.device
        input_ids = inputs["input_ids"].to(device)
        attention = inputs["attention_mask"].to(device)
        batch, length = input_ids.shape
        if streamer is not None:
            streamer.put(inputs["input_ids"].cpu())
        embeds = self.text.get_input_embeddings()(input_ids)
        image = self.image_embeddings(inputs["pixel_values"], inputs["image_grid_thw"]).to(embeds.dtype)
        image_slots = (input_ids == self.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(image_slots, image)
        positions, _ = self.model.model.get_rope_index(
            input_ids, image_grid_thw=inputs["image_grid_thw"].to(device), attention_mask=attention,
            mm_token_type_ids=inputs["mm_token_type_ids"].to(device))

        capacity = -(-(length + max_new_tokens) // self.cache_bucket) * self.cache_bucket
        step = self._step(batch, capacity)
        step.keys.fill_(True)
        step.keys[:, :length] = attention.bool()
        slots = torch.arange(length, device=device)
        causal = slots[None, :] <= slots[:, None]
        prompt_cache = DynamicCache(config=self.config.text_config)
        hidden = self.text(inputs_embeds=embeds, position_ids=positions,
                           attention_mask=(causal[None] & step.keys[:, None, :length])[:, None],
                           past_key_values=prompt_cache, use_cache=True).last_hidden_state
        logits = self.model.lm_head(hidden[:, -1])
        for layer, k_cache, v_cache in zip(prompt_cache.layers, step.keys_cache, step.values_cache):
            k_cache[:, :, :length].copy_(layer.keys)
            v_cache[:, :, :length].copy_(layer.values)

        sequences = torch.cat([input_ids, torch.full((batch, max_new_tokens), self.pad_id, device=device)], dim=1)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        eos = torch.tensor(self.eos_ids, device=device, dtype=torch.long)
        step.position.copy_(positions[0, :, -1] + 1)
        step.slot.fill_(length)
        for index in range(max_new_tokens):
            scores = logits.float()
            if index < min_new_tokens and len(eos):
                scores[:, eos] = float("-inf")
            for processor in logits_processors:
                scores = processor(sequences[:, :length + index], scores)
            token = scores.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            sequences[:, length + index] = token
            if streamer is not None:
                streamer.put(token.cpu())
            finished |= torch.isin(token, eos)
            if index + 1 == max_new_tokens or bool(finished.all()):
                break
            step.token.copy_(token)
            if step.graph is None:
                logits = self._step_forward(step)
            else:
                step.graph.replay()
                logits = step.logits
            step.position.add_(1)
            step.slot.add_(1)
        if streamer is not None:
            streamer.end()
        return sequences[:, length:length + index + 1]
