"""OpenVLA image preprocessing (PrismaticImageProcessor, ``resize-naive``) on PIL, bit-exact with the official one.

WHY PIL on uint8: the official processor resizes the PIL image with Pillow's antialiased bicubic filter and
re-quantises to uint8 before normalising; a float-tensor bicubic moves normalised pixels by up to ~0.5 and changes
actions (see the parity fixture's negative controls). The 224 centre crop after the resize is a no-op and is skipped.
Batches are preprocessed image by image on a small thread pool: Pillow's resize and the tensor arithmetic release the
GIL, so a batch of 64 costs about what a few images cost serially (~1.6 ms each), with the same per-image results.
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
    """Turns RGB images into the (B, 3 * towers, H, W) float32 pixel_values the vision backbone takes."""

    def __init__(self, config: ImagePreprocessConfig) -> None:
        if config.resize_strategy != "resize-naive":
            raise ValueError(f"image_resize_strategy {config.resize_strategy!r} is not supported "
                             "(openvla-7b uses 'resize-naive')")
        unknown = [i for i in config.interpolations if i not in _PIL_FILTERS]
        if unknown:
            raise ValueError(f"unsupported interpolation(s) {unknown}; supported: {sorted(_PIL_FILTERS)}")
        self.config = config
        # float32 like torchvision's normalize (0.485 -> 0.48500001430511475)
        self._means = [torch.tensor(m, dtype=torch.float32).view(3, 1, 1) for m in config.means]
        self._stds = [torch.tensor(s, dtype=torch.float32).view(3, 1, 1) for s in config.stds]

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        if len(images) < 2:
            return torch.stack([self.one(image) for image in images])
        return torch.stack(list(_pool().map(self.one, images)))

    def one(self, image: ImageLike) -> torch.Tensor:
        pil = to_pil_rgb(image)
        resized: dict[tuple[tuple[int, int], str], torch.Tensor] = {}
        channels = []
        for size, interp, mean, std in zip(self.config.sizes, self.config.interpolations, self._means, self._stds):
            key = (size, interp)
            if key not in resized:  # both towers usually share one resize
                height, width = size
                array = np.asarray(pil.resize((width, height), _PIL_FILTERS[interp]), dtype=np.uint8)
                resized[key] = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)
            channels.append((resized[key] - mean) / std)
        return torch.cat(channels, dim=0)


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
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype={array.dtype} shape={array.shape}")
    return Image.fromarray(array, mode="RGB")
