"""Typed view of an OpenVLA checkpoint directory's ``config.json`` and ``preprocessor_config.json``.

WHY: the official code builds its two vision towers with ``timm.create_model(variant_id, ...)``, so the tower sizes are
not in config.json; they are implied by the timm variant names. timm cannot be installed here (it imports
torchvision), so the variant defaults we need are written down in :data:`VIT_VARIANTS`. Anything in config.json's
``parity_fixture_timm_overrides`` (the kwargs the tiny parity fixture and our tiny checkpoints pass on top of the
variant, like timm's ``create_model(**kwargs)``) overrides those defaults; the real ``openvla/openvla-7b`` has no such
key and therefore gets the real sizes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# config.json key holding per-variant timm kwargs that override the variant defaults (tiny models only).
TIMM_OVERRIDES_KEY = "parity_fixture_timm_overrides"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTSpec:
    """One ViT tower as timm builds it for OpenVLA (img 224, no classifier head)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int = 14
    img_size: int = 224
    class_token: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False  # True: pos_embed covers the patch tokens only (DINOv2 reg4)
    layer_scale: bool = False
    attn_pool: bool = False  # SigLIP MAP head: stored in the checkpoint, unused by OpenVLA
    norm_eps: float = 1e-6

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)  # timm's Mlp rounds the same way (so400m: 4304)

    @property
    def feature_block(self) -> int:
        """Index of the block whose output OpenVLA uses: the second-to-last one."""
        return self.depth - 2


VIT_VARIANTS: dict[str, ViTSpec] = {
    "vit_large_patch14_reg4_dinov2.lvd142m": ViTSpec(
        embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, class_token=True, reg_tokens=4,
        no_embed_class=True, layer_scale=True),
    "vit_so400m_patch14_siglip_224": ViTSpec(
        embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, attn_pool=True),
}

_VIT_OVERRIDABLE = {"embed_dim", "depth", "num_heads", "mlp_ratio"}


@dataclass(frozen=True)
class ImagePreprocessConfig:
    """``preprocessor_config.json`` of the PrismaticImageProcessor (one entry per tower)."""

    resize_strategy: str = "resize-naive"
    sizes: tuple[tuple[int, int], ...] = ((224, 224), (224, 224))
    interpolations: tuple[str, ...] = ("bicubic", "bicubic")
    means: tuple[tuple[float, float, float], ...] = (IMAGENET_MEAN, (0.5, 0.5, 0.5))
    stds: tuple[tuple[float, float, float], ...] = (IMAGENET_STD, (0.5, 0.5, 0.5))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImagePreprocessConfig:
        return cls(
            resize_strategy=raw.get("image_resize_strategy", "resize-naive"),
            sizes=tuple((int(s[1]), int(s[2])) for s in raw["input_sizes"]),
            interpolations=tuple(raw["interpolations"]),
            means=tuple(tuple(float(v) for v in m) for m in raw["means"]),
            stds=tuple(tuple(float(v) for v in s) for s in raw["stds"]),
        )


@dataclass(frozen=True)
class OpenVLAConfig:
    """Everything the runtime needs from an OpenVLA checkpoint directory."""

    vision: tuple[ViTSpec, ...]
    arch_specifier: str
    text_config: dict[str, Any]
    norm_stats: dict[str, Any]
    pad_to_multiple_of: int = 64
    n_action_bins: int = 256
    preprocess: ImagePreprocessConfig = field(default_factory=ImagePreprocessConfig)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def vision_dim(self) -> int:
        return sum(spec.embed_dim for spec in self.vision)

    @property
    def num_patches(self) -> int:
        return self.vision[0].grid ** 2

    @property
    def llm_vocab_size(self) -> int:
        return int(self.text_config.get("vocab_size", 32000))

    @property
    def action_vocab_size(self) -> int:
        """The tokenizer vocabulary size V the action tokens count down from (32064 - 64 = 32000)."""
        return self.llm_vocab_size - self.pad_to_multiple_of

    @classmethod
    def from_dict(cls, raw: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> OpenVLAConfig:
        ids = tuple(raw["timm_model_ids"])
        overrides = raw.get(TIMM_OVERRIDES_KEY, {}) or {}
        vision = tuple(_vit_spec(model_id, overrides.get(model_id, {}), raw) for model_id in ids)
        if len({spec.grid for spec in vision}) != 1:
            raise ValueError(f"vision towers disagree on the patch grid: {[s.grid for s in vision]}")
        text = {k: v for k, v in raw.get("text_config", {}).items()
                if k not in ("model_type", "torch_dtype", "transformers_version", "architectures")}
        text.setdefault("pad_token_id", raw.get("pad_token_id", 32000))
        return cls(
            vision=vision,
            arch_specifier=raw["arch_specifier"],
            text_config=text,
            norm_stats=raw.get("norm_stats") or {},
            pad_to_multiple_of=int(raw.get("pad_to_multiple_of", 64)),
            n_action_bins=int(raw.get("n_action_bins", 256)),
            preprocess=(ImagePreprocessConfig.from_dict(preprocessor) if preprocessor
                        else _default_preprocess(raw, vision)),
            raw=raw,
        )

    @classmethod
    def from_dir(cls, checkpoint_dir: str | Path) -> OpenVLAConfig:
        checkpoint_dir = Path(checkpoint_dir)
        config_path = checkpoint_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{checkpoint_dir} is not an OpenVLA checkpoint directory: no config.json")
        pre_path = checkpoint_dir / "preprocessor_config.json"
        raw, pre = read_json(config_path), (read_json(pre_path) if pre_path.is_file() else None)
        if not isinstance(raw.get("text_config"), dict) or not raw["text_config"]:
            raise ValueError(f"{config_path} has no text_config (the Llama settings an OpenVLA config carries)")
        raw = dict(raw, norm_stats=read_norm_stats(checkpoint_dir, raw))
        try:
            return cls.from_dict(raw, pre)
        except (KeyError, TypeError, IndexError) as exc:  # a field the official layout always has
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
            raise ValueError(f"{config_path} or {pre_path.name} is not an OpenVLA config ({detail})") from None


DATASET_STATISTICS = "dataset_statistics.json"


def read_norm_stats(checkpoint_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The un-normalisation statistics of a checkpoint: those of its ``dataset_statistics.json`` when it has one,
    else ``config``'s (config.json) ``norm_stats``, as OpenVLA's evaluation code (``get_vla``) does.

    WHY: a checkpoint fine-tuned with OpenVLA's ``finetune.py`` keeps the pretraining statistics in config.json and
    writes its own dataset's to dataset_statistics.json; acting on a pretraining key (e.g. the default
    ``bridge_orig``) with it would be wrong, so only the file's keys are offered. The released openvla-7b ships the
    same statistics in both.
    """
    extra_path = checkpoint_dir / DATASET_STATISTICS
    return read_json(extra_path) if extra_path.is_file() else dict(config.get("norm_stats") or {})


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object")
    return value


def _vit_spec(model_id: str, overrides: dict[str, Any], raw: dict[str, Any]) -> ViTSpec:
    if model_id not in VIT_VARIANTS:
        raise ValueError(f"unsupported vision tower {model_id!r}; supported: {sorted(VIT_VARIANTS)}")
    unknown = set(overrides) - _VIT_OVERRIDABLE
    if unknown:
        raise ValueError(f"{TIMM_OVERRIDES_KEY}[{model_id!r}] has unsupported keys {sorted(unknown)}")
    act_layers = raw.get("timm_override_act_layers") or []
    if any(a is not None for a in act_layers):
        raise ValueError(f"timm_override_act_layers={act_layers} is not supported (openvla-7b uses [null, null])")
    spec = dataclasses.replace(VIT_VARIANTS[model_id], **overrides)
    image_size = int((raw.get("image_sizes") or [224])[0])
    return dataclasses.replace(spec, img_size=image_size)


def _default_preprocess(raw: dict[str, Any], vision: tuple[ViTSpec, ...]) -> ImagePreprocessConfig:
    """openvla-7b's processor values, used when a directory has no preprocessor_config.json."""
    n = len(vision)
    means = [IMAGENET_MEAN if "dinov2" in mid else (0.5, 0.5, 0.5) for mid in raw["timm_model_ids"]]
    stds = [IMAGENET_STD if "dinov2" in mid else (0.5, 0.5, 0.5) for mid in raw["timm_model_ids"]]
    return ImagePreprocessConfig(
        resize_strategy=raw.get("image_resize_strategy", "resize-naive"),
        sizes=tuple((s.img_size, s.img_size) for s in vision),
        interpolations=("bicubic",) * n, means=tuple(means), stds=tuple(stds))
