"""Batched greedy action prediction on the native OpenVLA model.

WHY this sequence layout: each row is ``[first token][256 image embeddings][left padding][rest of the prompt]``.
Padding goes after the image block (masked out, position ids skip it), so every row's real tokens keep the official
order and contiguous positions 0..T-1, the image block sits at the same columns for every row (one vectorised
concat, no per-row copies), and no query row is ever fully masked (no NaN rows in SDPA). The last column is always
a real token, so decoding appends the 7 action tokens to all rows at once with a KV cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache

from vla_node.actions import ActionDecoder
from vla_node.checkpoint import load_openvla
from vla_node.config import OpenVLAConfig
from vla_node.model import OpenVLAModel
from vla_node.preprocessing import ImageLike, ImagePreprocessor
from vla_node.prompting import with_empty_token

ACTION_TOKENS = 7  # one per dimension of a WidowX action, generated after the prompt


@dataclass
class Prefill:
    """State after the multimodal forward: last-position logits and what decoding continues from."""

    logits: torch.Tensor  # (B, logits_to_keep, V)
    attention_mask: torch.Tensor  # (B, T) long
    position_ids: torch.Tensor  # (B, T)
    cache: DynamicCache


@dataclass
class Generation:
    token_ids: torch.Tensor  # (B, steps) long, on the first device
    step_logits: list[torch.Tensor] | None  # per step (B, V) float32, when requested


@dataclass
class ActionPrediction:
    token_ids: np.ndarray  # (B, 7) int64
    normalized: np.ndarray  # (B, 7) float64 bin centres
    actions: np.ndarray  # (B, 7) float64, un-normalised with norm_stats[unnorm_key]


class OpenVLARuntime:
    """OpenVLA inference: images + prompts -> 7-D actions, for any batch size and mixed prompt lengths."""

    def __init__(self, model: OpenVLAModel, tokenizer=None, graphs: bool | None = None) -> None:
        """``graphs``: predict through :class:`vla_node.fast_decode.GraphedGreedyDecoder` (one CUDA graph per frame
        shape); default: when the whole model sits on one CUDA device. Otherwise :meth:`generate` runs eagerly."""
        from vla_node.fast_decode import GraphedGreedyDecoder

        self.model = model
        self.config: OpenVLAConfig = model.config
        self.tokenizer = tokenizer
        self.preprocessor = ImagePreprocessor(self.config.preprocess)
        self.decoder = ActionDecoder(self.config.action_vocab_size, self.config.n_action_bins, self.config.norm_stats)
        self.pad_token_id = int(self.config.text_config.get("pad_token_id", 32000))
        graphed = GraphedGreedyDecoder(self, use_graphs=graphs)
        self.graphed: GraphedGreedyDecoder | None = graphed if graphed.use_graphs else None

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, dtype: torch.dtype = torch.bfloat16,
                        device_map: str | Sequence[str] = "auto", attn_implementation: str = "sdpa",
                        graphs: bool | None = None) -> OpenVLARuntime:
        from vla_node.tokenizer import load_tokenizer

        model = load_openvla(checkpoint_dir, dtype=dtype, device_map=device_map,
                             attn_implementation=attn_implementation)
        return cls(model, load_tokenizer(checkpoint_dir), graphs=graphs)

    @property
    def device(self) -> torch.device:
        return self.model.projector.fc1.weight.device

    # ---- prompts -------------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt texts -> ids with BOS, as the official processor + predict_action produce them.

        BOS is ensured here because whether a tokenizer adds it depends on its saved post-processor and
        ``add_bos_token`` flag (transformers versions differ), and OpenVLA was trained with BOS first.
        """
        if self.tokenizer is None:
            raise RuntimeError("this checkpoint directory has no tokenizer files; pass token ids instead")
        bos = self.tokenizer.bos_token_id
        # WHY a limit: past the length it was trained on (config.json's llm_max_length, 2048 for openvla-7b) the
        # model still returns an action, one nobody should let move a robot (e.g. a runaway task text)
        limit = int(self.config.raw.get("llm_max_length") or 0)
        encoded = []
        for prompt in prompts:
            ids = list(self.tokenizer(prompt).input_ids)
            ids = with_empty_token(ids if bos is None or ids[:1] == [bos] else [bos] + ids)
            if limit and self.config.num_patches + len(ids) + ACTION_TOKENS > limit:
                raise ValueError(f"a prompt of {len(ids)} tokens ({len(prompt)} characters) is too long: with the "
                                 f"{self.config.num_patches} image patches and {ACTION_TOKENS} action tokens it "
                                 f"passes the policy's llm_max_length of {limit}")
            encoded.append(ids)
        return encoded

    # ---- model passes --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, pixel_values: torch.Tensor, prompt_ids: Sequence[Sequence[int]],
                logits_to_keep: int = 1, cache: Cache | None = None) -> Prefill:
        """The multimodal forward over ``prompt_ids`` exactly as given (no 29871 append).

        ``cache``: an empty cache to fill (e.g. a reused StaticCache, see :mod:`vla_node.fast_decode`); default a
        new DynamicCache.
        """
        if len(prompt_ids) != pixel_values.shape[0]:
            raise ValueError(f"{len(prompt_ids)} prompts for {pixel_values.shape[0]} images")
        device = self.device
        longest = max(len(ids) for ids in prompt_ids)
        rest = torch.full((len(prompt_ids), longest - 1), self.pad_token_id, dtype=torch.long)
        rest_mask = torch.zeros_like(rest)
        for row, ids in enumerate(prompt_ids):
            if len(ids) > 1:
                rest[row, longest - len(ids):] = torch.as_tensor(ids[1:])
                rest_mask[row, longest - len(ids):] = 1
        first = torch.as_tensor([ids[0] for ids in prompt_ids]).view(-1, 1)
        text = torch.cat([first, rest], dim=1).to(device)
        embed = self.model.language_model.get_input_embeddings()
        text_embeds = embed(text)
        patches = self.model.image_embeddings(pixel_values.to(device)).to(text_embeds.dtype)
        embeds = torch.cat([text_embeds[:, :1], patches, text_embeds[:, 1:]], dim=1)
        mask = torch.cat([torch.ones(len(prompt_ids), 1 + patches.shape[1], dtype=torch.long), rest_mask],
                         dim=1).to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.language_model.config) if cache is None else cache
        out = self.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                        past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep,
                                        cache_position=torch.arange(mask.shape[1], device=device))
        return Prefill(out.logits, mask, positions, out.past_key_values)

    @torch.inference_mode()
    def generate(self, pixel_values: torch.Tensor, prompt_ids: Sequence[Sequence[int]], steps: int = ACTION_TOKENS,
                 return_logits: bool = False) -> Generation:
        """Greedy (unconstrained argmax over the full vocabulary, as official) decoding with a KV cache."""
        state = self.prefill(pixel_values, [with_empty_token(ids) for ids in prompt_ids])
        logits = state.logits[:, -1]
        mask, positions = state.attention_mask, state.position_ids[:, -1:]
        tokens, step_logits = [], []
        for step in range(steps):
            if return_logits:
                step_logits.append(logits.float().to(self.device))
            token = logits.argmax(dim=-1).to(self.device)
            tokens.append(token)
            if step == steps - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions + 1
            out = self.model.language_model(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                                            past_key_values=state.cache, use_cache=True)
            logits = out.logits[:, -1]
        return Generation(torch.stack(tokens, dim=1), step_logits if return_logits else None)

    # ---- public API ----------------------------------------------------------------------------------------
    def predict_from_ids(self, images: Sequence[ImageLike] | torch.Tensor, prompt_ids: Sequence[Sequence[int]],
                         unnorm_key: str | None) -> ActionPrediction:
        """Images (or a tensor: float pixel_values, or the uint8 output of ``preprocessor.resize``) + token ids ->
        actions, on every path. Checks unnorm_key before any compute."""
        return self._finish(self._launch(images, prompt_ids, unnorm_key), unnorm_key)

    def predict(self, images: Sequence[ImageLike], prompts: Sequence[str], unnorm_key: str | None,
                ) -> ActionPrediction:
        """Images + full prompt texts (see :mod:`vla_node.prompt_fusion`) -> actions, one row per image."""
        self.decoder.resolve_key(unnorm_key)
        return self.predict_from_ids(images, self.encode(prompts), unnorm_key)

    def predict_stream(self, batches: Iterable[tuple[Sequence[ImageLike], Sequence[str]]], unnorm_key: str | None,
                       ) -> Iterator[ActionPrediction]:
        """(images, prompts) batches -> one ActionPrediction per batch, in order, for offline runs over many frames.

        WHY: on a GPU the next batch's Pillow resizes and tokenisation run while the current batch is on the GPU
        (:meth:`GraphedGreedyDecoder.generate` returns before the GPU is done), so the CPU half of a frame costs no
        throughput. Results equal :meth:`predict` on each batch. Elsewhere it is simply :meth:`predict` in a loop.
        A batch that fails (bad image, unknown prompt), or ``batches`` itself raising (a reader hitting a corrupt
        file), raises after every batch before it has been yielded.
        """
        self.decoder.resolve_key(unnorm_key)
        pending = None
        source = iter(batches)
        while True:
            try:
                images, prompts = next(source)
                launched = self._launch(images, self.encode(prompts), unnorm_key)
            except StopIteration:
                break
            except Exception:
                if pending is not None:  # the failure must not take the finished batch with it
                    yield self._finish(pending, unnorm_key)
                raise
            if pending is not None:
                yield self._finish(pending, unnorm_key)
            pending = launched
        if pending is not None:
            yield self._finish(pending, unnorm_key)

    def _launch(self, images: Sequence[ImageLike] | torch.Tensor, prompt_ids: Sequence[Sequence[int]],
                unnorm_key: str | None) -> _PendingIds:
        """Starts the 7 (or action_dim) greedy tokens of a batch; with graphs returns before the GPU is done."""
        self.decoder.resolve_key(unnorm_key)
        steps = self.decoder.action_dim(unnorm_key)
        if self.graphed is None:
            if not isinstance(images, torch.Tensor):
                pixel_values = self.preprocessor(images)
            else:
                pixel_values = images if images.is_floating_point() else self.preprocessor.normalize(images)
            return _PendingIds(self.generate(pixel_values, prompt_ids, steps=steps).token_ids, None)
        # uint8 resizes cross to the GPU and are normalised in the graph
        frames = images if isinstance(images, torch.Tensor) else self.preprocessor.resize(images)
        with torch.cuda.device(self.device):  # the copy and its event on the model's device's stream
            token_ids = self.graphed.generate(frames, prompt_ids, steps=steps)
            # copied out right behind this batch's graph, so waiting for it never waits for a batch launched later
            host = torch.empty(token_ids.shape, dtype=token_ids.dtype, pin_memory=True)
            host.copy_(token_ids, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        return _PendingIds(host, ready)

    def _finish(self, pending: _PendingIds, unnorm_key: str | None) -> ActionPrediction:
        if pending.ready is not None:
            pending.ready.synchronize()
        ids = pending.token_ids.cpu().numpy()
        normalized = self.decoder.normalized(ids)
        return ActionPrediction(ids, normalized, self.decoder.unnormalize(normalized, unnorm_key))


@dataclass
class _PendingIds:
    """A launched batch: its token ids (device, or pinned host filled by an async copy) and when they are ready."""

    token_ids: torch.Tensor
    ready: torch.cuda.Event | None
