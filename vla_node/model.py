"""OpenVLA as one torch module: fused vision backbone -> projector -> Llama, with official parameter names.

WHY the layout: attribute names mirror the official checkpoint keys (``vision_backbone.featurizer``,
``vision_backbone.fused_featurizer``, ``projector.fc1..3``, ``language_model`` = transformers' LlamaForCausalLM),
so a state dict loads without renaming and the same loader serves the 7B checkpoint and the tiny ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vla_node.config import OpenVLAConfig
from vla_node.vit import BlockFn, ViTFeaturizer, block_forward

TOWER_NAMES = ("featurizer", "fused_featurizer")


class FusedVisionBackbone(nn.Module):
    """Runs each tower on its own 3 channels of the stacked (B, 3*n, H, W) input; concatenates features, DINOv2
    first."""

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__()
        if len(config.vision) not in (1, 2):
            raise ValueError(f"expected 1 or 2 vision towers, got {len(config.vision)}")
        for name, spec in zip(TOWER_NAMES, config.vision):
            self.add_module(name, ViTFeaturizer(spec))
        self.num_towers = len(config.vision)

    def forward(self, pixel_values: torch.Tensor, block_fn: BlockFn = block_forward) -> torch.Tensor:
        towers = [getattr(self, name) for name in TOWER_NAMES[: self.num_towers]]
        chunks = torch.split(pixel_values, 3, dim=1)
        return torch.cat([tower(chunk, block_fn) for tower, chunk in zip(towers, chunks)], dim=2)


class Projector(nn.Module):
    """``fused-gelu-mlp`` (fc1 D->4D, GELU, fc2 ->LLM, GELU, fc3 LLM->LLM) or ``gelu-mlp`` (fc1, GELU, fc2)."""

    def __init__(self, arch_specifier: str, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        if arch_specifier.endswith("fused-gelu-mlp"):
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        elif arch_specifier.endswith("gelu-mlp"):
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        else:
            raise ValueError(f"unsupported arch_specifier {arch_specifier!r} (need '...gelu-mlp')")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(F.gelu(self.fc1(features)))
        return self.fc3(F.gelu(x)) if hasattr(self, "fc3") else x


def llama_config(config: OpenVLAConfig, attn_implementation: str = "sdpa") -> LlamaConfig:
    """The LLM config: config.json's text_config over LlamaConfig defaults (= Llama-2-7B sizes, rms eps 1e-6)."""
    llm = LlamaConfig(**config.text_config)
    llm._attn_implementation = attn_implementation
    return llm


class OpenVLAModel(nn.Module):
    def __init__(self, config: OpenVLAConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = FusedVisionBackbone(config)
        llm_config = llama_config(config, attn_implementation)
        self.projector = Projector(config.arch_specifier, config.vision_dim, llm_config.hidden_size)
        self.language_model = LlamaForCausalLM(llm_config)

    def image_embeddings(self, pixel_values: torch.Tensor, block_fn: BlockFn = block_forward) -> torch.Tensor:
        """(B, 6, 224, 224) -> (B, 256, LLM width) patch embeddings, in the projector's dtype/device.

        ``block_fn``: how each ViT block runs (:func:`vla_node.vit.block_forward`, or a compiled version of it)."""
        first = self.projector.fc1.weight
        features = self.vision_backbone(pixel_values.to(self.vision_backbone_dtype()), block_fn)
        return self.projector(features.to(device=first.device, dtype=first.dtype))

    def vision_backbone_dtype(self) -> torch.dtype:
        return self.vision_backbone.featurizer.patch_embed.proj.weight.dtype

    def unused_checkpoint_prefixes(self) -> tuple[str, ...]:
        """Official checkpoint keys that inference never reads (skipped when loading, written by tiny makers)."""
        prefixes: list[str] = []
        for name, spec in zip(TOWER_NAMES, self.config.vision):
            prefixes += [f"vision_backbone.{name}.{s}" for s in ViTFeaturizer.unused_checkpoint_suffixes(spec)]
        return tuple(prefixes)
