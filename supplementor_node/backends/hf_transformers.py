"""Default backend: ``Qwen2_5_VLForConditionalGeneration`` from transformers, greedy decoding.

On one CUDA device it decodes with :class:`FastQwenGreedy` (graph-captured vision tower and compiled, graph-captured
one-token step: the same greedy computation and the same logits processors, at a fraction of ``generate``'s per-frame
overhead; the compilation is paid at load time by a warm-up); elsewhere with plain ``model.generate``.
"""

from __future__ import annotations

from pathlib import Path

from supplementor_node.backends.base import BackendConfig, GenerationOutput, resolve_device_dtype
from supplementor_node.qwen_inputs import CheckpointError, Prompt, QwenVLInputBuilder


class TransformersBackend:
    def __init__(self, cfg: BackendConfig):
        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        path = Path(cfg.checkpoint)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: no config.json (missing or not a checkpoint directory)")
        self.device, dtype = resolve_device_dtype(cfg.device, cfg.dtype)
        self.inputs = QwenVLInputBuilder(path, max_pixels=cfg.image_max_pixels)
        self.tokenizer = self.inputs.tokenizer
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.constraint = None
        if cfg.json_schema is not None:
            from supplementor_node.constrained import JsonSchemaConstraint

            self.constraint = JsonSchemaConstraint(
                self.tokenizer, self.model.config.text_config.vocab_size, cfg.json_schema)
        self.fast = None
        if self.device.startswith("cuda"):
            from supplementor_node.fast_decode import FastQwenGreedy

            self.fast = FastQwenGreedy(self.model)
            self._warm_up()

    def _warm_up(self) -> None:
        """Compile and record the fast path now, while the model is still loading in the background.

        WHY: the first frame would otherwise pay the ~40-60 s compilation while the node is serving; done here, a live
        swap only goes live once the new model answers at full speed. Measured (H200, tiny model): load + warm-up
        15.8 s, then the first frame of a new image size 4.3 s (its vision graph is recorded), later frames 20 ms.
        """
        import numpy as np

        self.generate([Prompt(np.zeros((224, 224, 3), dtype=np.uint8), "Describe the image.", "warm-up")], 4)

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[GenerationOutput]:
        import torch

        batch = {k: v.to(self.device) for k, v in self.inputs.build(prompts).items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        processors = [self.constraint.logits_processor()] if self.constraint else None
        if self.fast is not None:
            new = self.fast.generate(batch, max_new_tokens, logits_processors=processors or ()).cpu()
        else:
            with torch.inference_mode():  # plain greedy, as the fast path and vLLM decode: the checkpoint's
                # generation_config (Qwen2.5-VL-3B-Instruct: repetition_penalty 1.05) would otherwise apply here only
                out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                          repetition_penalty=1.0, logits_processor=processors)
            new = out[:, batch["input_ids"].shape[1]:].cpu()
        results = []
        for row in new:
            special = torch.isin(row, torch.tensor(self.tokenizer.all_special_ids))
            n = int((~special).sum())
            results.append(GenerationOutput(self.tokenizer.decode(row, skip_special_tokens=True), n))
        return results
