"""Greedy action decoding with a static KV cache, the one-token step compiled into CUDA graphs on GPU.

WHY: at batch 1 a 7B decode step is ~4 ms of weight reads on an H100 but an eager HF Llama step launches hundreds of
small kernels from Python, which costs more than the math; OpenVLA decodes 7 tokens per action, so launch overhead
caps actions/s. A static cache (fixed tensor addresses, fixed shapes: a full-length attention mask whose future
slots are hidden by the causal rule anyway) lets ``torch.compile(mode="reduce-overhead")`` replay each step as one
CUDA graph. Caches are kept per (batch size, sequence length) and reset in place between calls, so graphs recorded
once are replayed for every later frame. Same prefill and same greedy rule as :meth:`OpenVLARuntime.generate`, so the
ids match it (tested on CPU, where the step runs eagerly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import StaticCache

from vla_node.prompting import with_empty_token
from vla_node.runtime import OpenVLARuntime


class StaticGreedyDecoder:
    def __init__(self, runtime: OpenVLARuntime, compile_step: bool | None = None) -> None:
        self.runtime = runtime
        self.llm = runtime.model.language_model
        self.compiled = runtime.device.type == "cuda" if compile_step is None else compile_step
        step = self._decode_step
        self._step = torch.compile(step, mode="reduce-overhead", fullgraph=False, dynamic=False) if self.compiled \
            else step
        self._caches: dict[tuple[int, int], StaticCache] = {}

    def _decode_step(self, token: torch.Tensor, position_ids: torch.Tensor, cache_position: torch.Tensor,
                     attention_mask: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        out = self.llm(input_ids=token[:, None], position_ids=position_ids, cache_position=cache_position,
                       attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        return out.logits[:, -1].argmax(dim=-1)

    def _cache(self, batch: int, length: int) -> StaticCache:
        cache = self._caches.get((batch, length))
        if cache is None:
            cache = self._caches[(batch, length)] = StaticCache(config=self.llm.config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    @torch.inference_mode()
    def generate(self, pixel_values: torch.Tensor, prompt_ids: Sequence[Sequence[int]], steps: int = 7,
                 ) -> torch.Tensor:
        """(B, steps) greedy token ids, like ``OpenVLARuntime.generate(...).token_ids``."""
        prompt_ids = [with_empty_token(ids) for ids in prompt_ids]
        batch = len(prompt_ids)
        prefix = max(len(ids) for ids in prompt_ids) + self.runtime.config.num_patches
        cache = self._cache(batch, prefix + steps)
        state = self.runtime.prefill(pixel_values, prompt_ids, cache=cache)
        device = state.attention_mask.device
        mask = torch.cat([state.attention_mask, torch.ones(batch, steps, dtype=torch.long, device=device)], dim=1)
        token = state.logits[:, -1].argmax(dim=-1)
        positions = state.position_ids[:, -1:]
        tokens = [token]
        for step in range(steps - 1):
            positions = positions + 1
            cache_position = torch.tensor([prefix + step], device=device)
            token = self._step(token, positions, cache_position, mask, cache).clone()
            tokens.append(token)
        return torch.stack(tokens, dim=1)
