"""OpenVLA image preprocessing (PrismaticImageProcessor, ``resize-naive``) on PIL, bit-exact with the official one.

WHY PIL on uint8: the official processor resizes the PIL image with Pillow's antialiased bicubic filter and
re-quantises to uint8 before normalising; a float-tensor bicubic moves normalised pixels by up to ~0.5 and changes
actions (see the parity fixture's negative controls). The 224 centre crop after the resize is a no-op and is skipped.

WHY two stages: :meth:`ImagePreprocessor.resize` is the only part that needs the CPU (Pillow), and yields uint8;
:meth:`ImagePreprocessor.normalize` maps each uint8 value through a 256-entry table per tower and channel, built
once with the official float32 arithmetic (``(v / 255 - mean) / std``), so it gives the same bits on any device. A
batch therefore crosses to the GPU as uint8 (8x fewer bytes than float32 for two towers) and is normalised there, and
the CPU work per image is one Pillow resize, run on a thread pool (Pillow releases the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from vla_node.config import ImagePreprocessConfig

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}

ImageLike = Image.Image | np.ndarray


class ImagePreprocessor:
    """RGB images -> uint8 resizes (B, R, H, W, 3) -> the (B, 3 * towers, H, W) float32 pixel_values the backbone takes.

    R = distinct interpolations among the towers (1 for openvla-7b: both towers share one bicubic 224 resize).
    """

    def __init__(self, config: ImagePreprocessConfig) -> None:
        if config.resize_strategy != "resize-naive":
            raise ValueError(f"image_resize_strategy {config.resize_strategy!r} is not supported "
                             "(openvla-7b uses 'resize-naive')")
        unknown = [i for i in config.interpolations if i not in _PIL_FILTERS]
        if unknown:
            raise ValueError(f"unsupported interpolation(s) {unknown}; supported: {sorted(_PIL_FILTERS)}")
        if len(set(config.sizes)) != 1:
            raise ValueError(f"towers with different input sizes {config.sizes} cannot share one pixel_values tensor")
        self.config = config
        self.size = config.sizes[0]  # (height, width)
        self.interpolations = tuple(dict.fromkeys(config.interpolations))
        self._resize_of_tower = [self.interpolations.index(i) for i in config.interpolations]
        # float32 like torchvision's normalize (0.485 -> 0.48500001430511475); the official op order, on all 256 values
        levels = torch.arange(256, dtype=torch.uint8).float().div(255)
        self.table = torch.stack([(levels.view(1, 256) - torch.tensor(mean, dtype=torch.float32).view(3, 1))
                                  / torch.tensor(std, dtype=torch.float32).view(3, 1)
                                  for mean, std in zip(config.means, config.stds)])  # (towers, 3, 256)
        self._tables: dict[torch.device, torch.Tensor] = {}

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images -> float32 pixel_values on the CPU (resize + normalize)."""
        return self.normalize(self.resize(images))

    def resize(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images -> (B, R, H, W, 3) uint8, exactly Pillow's resize of each (batches on a thread pool)."""
        if len(images) == 0:
            raise ValueError("no images: a batch needs at least one")
        if len(images) < 2:
            arrays = [self._resize_one(image) for image in images]
        else:
            arrays = list(_pool().map(self._resize_one, images))
        return torch.from_numpy(np.stack(arrays))

    def _resize_one(self, image: ImageLike) -> np.ndarray:
        pil = to_pil_rgb(image)
        height, width = self.size
        return np.stack([np.asarray(pil.resize((width, height), _PIL_FILTERS[interp]), dtype=np.uint8)
                         for interp in self.interpolations])

    def normalize(self, resized: torch.Tensor) -> torch.Tensor:
        """(B, R, H, W, 3) uint8 on any device -> (B, 3 * towers, H, W) float32 pixel_values on that device.

        A table lookup, not arithmetic, so the GPU gives the CPU's (and the official processor's) exact bits.
        """
        if resized.dtype != torch.uint8 or resized.dim() != 5 or resized.shape[1] != len(self.interpolations):
            raise ValueError(f"expected (B, {len(self.interpolations)}, H, W, 3) uint8, got {resized.dtype} "
                             f"{tuple(resized.shape)}")
        table = self._tables.get(resized.device)
        if table is None:
            table = self._tables.setdefault(resized.device, self.table.to(resized.device).flatten())
        channel_offsets = torch.arange(3, device=resized.device) * 256
        towers = []
        for tower, source in enumerate(self._resize_of_tower):
            index = resized[:, source].long() + (channel_offsets + tower * 3 * 256)
            towers.append(table[index].permute(0, 3, 1, 2))
        return torch.cat(towers, dim=1).contiguous()


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """One process-wide pool, made on first batched use (no threads for batch-1 users such as the node)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="openvla-preprocess")
    return _POOL


def to_pil_rgb(image: ImageLike) -> Image.Image:
    """Accepts a PIL image or an HxWx3 uint8 RGB array; anything else is a clear error."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype={array.dtype} shape={array.shape}")
    return Image.fromarray(array, mode="RGB")
