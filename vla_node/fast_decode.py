"""Whole-frame greedy action prediction as ONE CUDA graph per (batch size, prompt-length bucket).

WHY: at batch 1 OpenVLA-7B is launch-bound, not math-bound: eagerly the two ViTs + projector cost ~12 ms, the
~290-token prefill ~28 ms and each decode step ~4.7 ms on an H200, while the math and weight reads of the whole frame
take well under half of that. Recording the entire frame (vision towers, projector, embedding concat, prefill into a
static KV cache, the 6 further greedy steps and their argmaxes) into one ``torch.cuda.CUDAGraph`` replays thousands of
kernels with one launch and no host sync. Plain graph capture runs the very kernels of the eager code (no compiler,
no fusion), so the arithmetic is the eager model's.

Fixed shapes make that possible: the prompt part is left-padded to a multiple of ``bucket`` tokens with the runtime's
own scheme (``[first token][patches][padding][rest]``, padding masked, positions by cumsum), so the real tokens see
exactly the same keys and positions as unpadded; the attention masks are built explicitly as 4-D boolean masks
(no data-dependent checks inside the model), and the static cache's write counter is zeroed inside the graph.
Graphs (each with its own static cache) are kept per (batch, bucket), the least recently used dropped beyond
``max_graphs``. On CPU (or a model split over devices) the same function runs eagerly, which the tests compare with
:meth:`OpenVLARuntime.generate`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import StaticCache

from vla_node.prompting import with_empty_token

if TYPE_CHECKING:
    from vla_node.runtime import OpenVLARuntime


@dataclass
class _Graph:
    """One recorded frame: static input buffers, the cache it writes, the graph and its output buffer."""

    pixel_values: torch.Tensor
    text: torch.Tensor
    text_mask: torch.Tensor
    cache: StaticCache
    graph: torch.cuda.CUDAGraph | None
    tokens: torch.Tensor | None


def _zero_write_counters(cache: StaticCache) -> None:
    """StaticCache layers append at ``cumulative_length`` (a device tensor): restart every frame at slot 0.

    In place, so inside a graph it is part of the replay. Keys/values are not cleared: every slot a frame reads is
    written by that frame first or masked out (finite stale values times zero weight).
    """
    for layer in cache.layers:
        counter = getattr(layer, "cumulative_length", None)
        if isinstance(counter, torch.Tensor):
            counter.zero_()


class GraphedGreedyDecoder:
    """Images' pixel values + prompt ids -> (B, steps) greedy action token ids, like ``runtime.generate``."""

    def __init__(self, runtime: OpenVLARuntime, bucket: int = 16, use_graphs: bool | None = None,
                 max_graphs: int = 8) -> None:
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

    # ---- inputs --------------------------------------------------------------------------------------------
    def text_inputs(self, prompt_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and mask, L = longest prompt rounded up to the bucket: ``[first][padding][rest]`` per row."""
        prompt_ids = [with_empty_token(ids) for ids in prompt_ids]
        longest = max(len(ids) for ids in prompt_ids)
        width = -(-longest // self.bucket) * self.bucket
        text = torch.full((len(prompt_ids), width), self.runtime.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(text)
        for row, ids in enumerate(prompt_ids):
            text[row, 0], mask[row, 0] = ids[0], 1
            if len(ids) > 1:
                text[row, width - len(ids) + 1:] = torch.as_tensor(ids[1:])
                mask[row, width - len(ids) + 1:] = 1
        return text, mask

    # ---- the frame -----------------------------------------------------------------------------------------
    def _frame(self, pixel_values: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, cache: StaticCache,
               steps: int) -> torch.Tensor:
        """Vision, prefill and greedy decode with fixed shapes and no host sync (graph-capturable)."""
        _zero_write_counters(cache)
        device = text.device
        embed = self.llm.get_input_embeddings()
        text_embeds = embed(text)
        patches = self.model.image_embeddings(pixel_values).to(text_embeds.dtype)
        batch, num_patches = patches.shape[:2]
        embeds = torch.cat([text_embeds[:, :1], patches, text_embeds[:, 1:]], dim=1)
        mask = torch.cat([torch.ones(batch, 1 + num_patches, dtype=text_mask.dtype, device=device), text_mask[:, 1:]],
                         dim=1)
        length = mask.shape[1]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        keys = torch.cat([mask, torch.ones(batch, steps - 1, dtype=mask.dtype, device=device)], dim=1).bool()
        slots = torch.arange(keys.shape[1], device=device)
        causal = slots[None, :] <= torch.arange(length, device=device)[:, None]  # (T, KV)
        out = self.llm(inputs_embeds=embeds, attention_mask=(causal[None] & keys[:, None, :])[:, None],
                       position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1,
                       cache_position=slots[:length])
        token = out.logits[:, -1].argmax(dim=-1)
        tokens, position = [token], positions[:, -1:]
        for step in range(steps - 1):
            position = position + 1
            slot = length + step
            visible = (keys & (slots <= slot)[None, :])[:, None, None, :]
            out = self.llm(input_ids=token[:, None], attention_mask=visible, position_ids=position,
                           past_key_values=cache, use_cache=True, cache_position=slots[slot:slot + 1])
            token = out.logits[:, -1].argmax(dim=-1)
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
                       StaticCache(config=self.llm.config, max_cache_len=cache_len), None, None)
        if self.use_graphs:
            entry.text_mask[:, 0] = 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture: cache allocation, cuBLAS handles, autotuning
                for _ in range(2):
                    self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.cache, steps)
            torch.cuda.current_stream().wait_stream(side)
            entry.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(entry.graph, pool=self._pool):
                entry.tokens = self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.cache, steps)
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
            return self._frame(entry.pixel_values, entry.text, entry.text_mask, entry.cache, steps)
        entry.graph.replay()
        return entry.tokens.clone()
