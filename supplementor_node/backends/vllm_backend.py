"""Optional backend for GPU workstations: vLLM's offline engine. Imported only when ``backend: vllm`` is chosen.

vLLM is a CUDA build pinning its own torch, so it lives in its own environment (see docs/supplementor.md). It gets
the same chat text as the transformers backend (one ``<|image_pad|>``; vLLM expands it itself) and constrains with
the same JSON Schema through its structured-output parameters (xgrammar engine).
"""

from __future__ import annotations

from supplementor_node.backends.base import BackendConfig, GenerationOutput, check_backend_device, resolve_device_dtype
from supplementor_node.qwen_inputs import Prompt, QwenVLInputBuilder


class VllmBackend:
    def __init__(self, cfg: BackendConfig):
        from vllm import LLM

        check_backend_device("vllm", cfg.device)
        _, dtype = resolve_device_dtype(cfg.device, cfg.dtype)
        self.inputs = QwenVLInputBuilder(cfg.checkpoint, max_pixels=cfg.image_max_pixels)
        self.tokenizer = self.inputs.tokenizer
        self.schema = cfg.json_schema
        self.llm = LLM(model=cfg.checkpoint, dtype=dtype, limit_mm_per_prompt={"image": 1}, max_model_len=4096,
                       mm_processor_kwargs={"max_pixels": cfg.image_max_pixels})

    def _sampling(self, max_new_tokens: int):
        from vllm import SamplingParams

        if self.schema is None:
            return SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        from vllm.sampling_params import StructuredOutputsParams

        # compact JSON only, as the transformers backend's grammar: the schema's bounds assume no free whitespace
        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                              structured_outputs=StructuredOutputsParams(json=self.schema, disable_any_whitespace=True))

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[GenerationOutput]:
        from PIL import Image

        requests = [{"prompt": self.inputs.render_text(p), "multi_modal_data": {"image": Image.fromarray(p.image)}}
                    for p in prompts]
        outputs = self.llm.generate(requests, self._sampling(max_new_tokens), use_tqdm=False)
        return [GenerationOutput(o.outputs[0].text, len(o.outputs[0].token_ids)) for o in outputs]
