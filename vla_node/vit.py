"""The two ViT towers of OpenVLA's fused vision backbone, in plain torch.

WHY not timm: timm >= 1.0 imports torchvision, which has no CPU build here, and the official code pins timm 0.9.x.
These modules reproduce exactly what OpenVLA uses of timm's VisionTransformer (pre-norm blocks, fused qkv with bias,
exact-erf GELU, DINOv2 LayerScale, DINOv2 cls + register prefix tokens without position embedding) and use the
official checkpoint's parameter names, so ``vision_backbone.featurizer.*`` / ``vision_backbone.fused_featurizer.*``
load one-to-one. Only the blocks up to the second-to-last are built: OpenVLA reads that block's output and discards
the last block, the final norm and SigLIP's pooling head (their checkpoint tensors are skipped by the loader).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_node.config import ViTSpec


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution -> (B, grid*grid, D) tokens in row-major order."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, spec.embed_dim, kernel_size=spec.patch_size, stride=spec.patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel residual gain; the parameter is named ``scale_factor`` as in OpenVLA's checkpoints."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU (timm default; OpenVLA passes act_layer=None)


class Block(nn.Module):
    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.attn = Attention(dim, spec.num_heads)
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.mlp = Mlp(dim, spec.mlp_hidden)
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTFeaturizer(nn.Module):
    """Patch features of the second-to-last block (prefix tokens dropped, no final norm): (B, grid^2, D)."""

    def __init__(self, spec: ViTSpec) -> None:
        super().__init__()
        if spec.depth < 2:
            raise ValueError(f"OpenVLA reads block depth-2, so a tower needs depth >= 2 (got {spec.depth})")
        self.spec = spec
        self.patch_embed = PatchEmbed(spec)
        dim = spec.embed_dim
        if spec.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if spec.reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, dim))
        pos_tokens = spec.grid ** 2 + (0 if spec.no_embed_class else spec.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_tokens, dim))
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.feature_block + 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        prefix = []
        if self.spec.class_token:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.spec.reg_tokens:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.spec.no_embed_class:
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, self.spec.num_prefix_tokens:]

    @staticmethod
    def unused_checkpoint_suffixes(spec: ViTSpec) -> tuple[str, ...]:
        """Checkpoint tensors of this tower that OpenVLA never uses (last block, final norm, MAP head)."""
        unused = tuple(f"blocks.{i}." for i in range(spec.feature_block + 1, spec.depth)) + ("norm.",)
        return unused + (("attn_pool.",) if spec.attn_pool else ())
