"""The two ViT towers of OpenVLA's fused vision backbone, in plain torch.

WHY not timm: timm >= 1.0 imports torchvision, which has no CPU build here, and the official code pins timm 0.9.x.
These modules reproduce exactly what OpenVLA uses of timm's VisionTransformer (pre-norm blocks, fused qkv with bias,
exact-erf GELU, DINOv2 LayerScale, DINOv2 cls + register prefix tokens without position embedding) and use the
official checkpoint's parameter names, so ``vision_backbone.featurizer.*`` / ``vision_backbone.fused_featurizer.*``
load one-to-one. Only the blocks up to the second-to-last are built: OpenVLA reads that block's output and discards
the last block, the final norm and SigLIP's pooling head (their checkpoint tensors are skipped by the loader).
"""

from __future__ import annotations

from collections.abc import Callable

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
    """Holds the fused qkv and output projections (official names); the arithmetic is in :func:`block_forward`."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


def block_forward(x: torch.Tensor, norm1_w: torch.Tensor, norm1_b: torch.Tensor, qkv_w: torch.Tensor,
                  qkv_b: torch.Tensor, proj_w: torch.Tensor, proj_b: torch.Tensor, ls1: torch.Tensor | None,
                  norm2_w: torch.Tensor, norm2_b: torch.Tensor, fc1_w: torch.Tensor, fc1_b: torch.Tensor,
                  fc2_w: torch.Tensor, fc2_b: torch.Tensor, ls2: torch.Tensor | None, eps: float,
                  heads: int) -> torch.Tensor:
    """One pre-norm ViT block as a function of tensors (``ls*`` None: no LayerScale), so one ``torch.compile`` of it
    serves every block of a tower (see :mod:`vla_node.fast_decode`); :class:`Block` runs the same function eagerly."""
    batch, tokens, dim = x.shape
    h = F.layer_norm(x, (dim,), norm1_w, norm1_b, eps)
    qkv = F.linear(h, qkv_w, qkv_b).view(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    h = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    h = F.linear(h.transpose(1, 2).reshape(batch, tokens, dim), proj_w, proj_b)
    x = x + (h * ls1 if ls1 is not None else h)
    h = F.layer_norm(x, (dim,), norm2_w, norm2_b, eps)
    # fc1's bias is added in GELU's pass (exact erf GELU: timm's default, act_layer=None), not by the GEMM: compiled,
    # the GEMM writes into a preallocated output, and with a bias and SigLIP's 4304 columns cuBLAS then first copies
    # the bias into it (H100, batch 128: SigLIP tower 67.0 -> 61.5 ms without it); GELU's pass reads the product anyway
    h = F.linear(F.gelu(F.linear(h, fc1_w) + fc1_b), fc2_w, fc2_b)
    return x + (h * ls2 if ls2 is not None else h)


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

    def arguments(self) -> tuple:
        """This block's tensors and constants in :func:`block_forward`'s order (after ``x``)."""
        ls1 = self.ls1.scale_factor if isinstance(self.ls1, LayerScale) else None
        ls2 = self.ls2.scale_factor if isinstance(self.ls2, LayerScale) else None
        return (self.norm1.weight, self.norm1.bias, self.attn.qkv.weight, self.attn.qkv.bias, self.attn.proj.weight,
                self.attn.proj.bias, ls1, self.norm2.weight, self.norm2.bias, self.mlp.fc1.weight, self.mlp.fc1.bias,
                self.mlp.fc2.weight, self.mlp.fc2.bias, ls2, self.norm1.eps, self.attn.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_forward(x, *self.arguments())


BlockFn = Callable[..., torch.Tensor]  # block_forward's signature


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

    def forward(self, images: torch.Tensor, block_fn: BlockFn = block_forward) -> torch.Tensor:
        """``block_fn``: :func:`block_forward` or a compiled version of it."""
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
            x = block_fn(x, *block.arguments())
        return x[:, self.spec.num_prefix_tokens:]

    @staticmethod
    def unused_checkpoint_suffixes(spec: ViTSpec) -> tuple[str, ...]:
        """Checkpoint tensors of this tower that OpenVLA never uses (last block, final norm, MAP head)."""
        unused = tuple(f"blocks.{i}." for i in range(spec.feature_block + 1, spec.depth)) + ("norm.",)
        return unused + (("attn_pool.",) if spec.attn_pool else ())
