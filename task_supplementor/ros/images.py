"""sensor_msgs Image / CompressedImage <-> RGB numpy arrays, with cv_bridge's conventions but no cv_bridge.

Why our own converter: apt cv_bridge exists only on ROS installs (and breaks with NumPy 2 on Humble), and the PyPI
``cv-bridge`` is ROS 1's, working only with numpy<2.3 and opencv<5 (this environment has numpy 2.4 and opencv 5).
The nodes need just rgb8/bgr8/mono8 and JPEG/PNG, which numpy + OpenCV do in a few lines, identically on PyPI and
apt installs. Unlike cv_bridge, every result is RGB (what the models take) and every failure is an
:class:`ImageDecodeError` whose ``kind`` lets a node count and log each kind of bad input once.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# encoding -> channels, for the encodings the nodes accept (8 bits per channel).
CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_MAGIC, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND"


class ImageDecodeError(ValueError):
    """A frame that cannot be turned into pixels. ``kind`` is a short stable label (for counters and log-once)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _as_bytes(data) -> memoryview:
    return memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)


def _to_uint8_array(buf: bytes) -> array.array:
    """rclpy's uint8[] fields take array.array('B') as is; a bytes object would be checked element by element."""
    out = array.array("B")
    out.frombytes(buf)
    return out


def imgmsg_to_rgb(msg: Image) -> np.ndarray:
    """An rgb8 / bgr8 / mono8 ``Image`` as an HxWx3 uint8 RGB array (a copy; row padding in ``step`` is honoured)."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ImageDecodeError("unsupported_encoding",
                               f"encoding {msg.encoding!r} not supported (use one of {sorted(CHANNELS)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0 or step < width * channels:
        raise ImageDecodeError("bad_size", f"{width}x{height} {msg.encoding} with step {step}")
    data = _as_bytes(msg.data)
    if len(data) < step * height:
        raise ImageDecodeError("truncated", f"{len(data)} bytes for {height} rows of {step} bytes")
    if len(data) > step * height:  # sensor_msgs/Image: data is step * height bytes; more means a wrong step or size
        raise ImageDecodeError("bad_size", f"{len(data)} bytes, but {height} rows of {step} bytes make {step * height}")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if msg.encoding == "rgb8":
        return pixels.copy()
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return np.repeat(pixels, 3, axis=2)


def compressed_imgmsg_to_rgb(msg: CompressedImage) -> np.ndarray:
    """A JPEG or PNG ``CompressedImage`` as HxWx3 uint8 RGB. The container is recognised by its magic bytes, so
    both cv_bridge's ``jpeg`` and image_transport's ``rgb8; jpeg compressed bgr8`` formats work."""
    data = bytes(_as_bytes(msg.data))
    if not data:
        raise ImageDecodeError("empty", "CompressedImage with no data")
    if data.startswith(_JPEG_SOI):
        # libjpeg "decodes" a truncated JPEG into a grey-padded image with only a warning: check the end marker.
        if not data.rstrip(b"\x00").endswith(_JPEG_EOI):
            raise ImageDecodeError("truncated", f"JPEG of {len(data)} bytes has no end-of-image marker")
    elif data.startswith(_PNG_MAGIC):
        if _PNG_IEND not in data[-16:]:
            raise ImageDecodeError("truncated", f"PNG of {len(data)} bytes has no IEND chunk")
    else:
        raise ImageDecodeError("unsupported_format",
                               f"format {msg.format!r}: data is neither JPEG nor PNG (starts {data[:4].hex()})")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as error:  # e.g. a header claiming more pixels than OpenCV's limit (2^30) allows
        reason = str(error).strip().splitlines()[-1]
        raise ImageDecodeError("corrupt", f"{msg.format or 'image'} of {len(data)} bytes: {reason}") from None
    if decoded is None:
        raise ImageDecodeError("corrupt", f"{msg.format or 'image'} of {len(data)} bytes could not be decoded")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.dtype} {rgb.shape}")


def rgb_to_imgmsg(rgb: np.ndarray, encoding: str = "rgb8", header: Header | None = None) -> Image:
    """An HxWx3 uint8 RGB array as an ``Image`` in ``encoding`` (rgb8, bgr8 or mono8), rows unpadded."""
    _check_rgb(rgb)
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"encoding {encoding!r} not supported (use one of {sorted(CHANNELS)})")
    height, width = rgb.shape[:2]
    return Image(header=header or Header(), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=width * CHANNELS[encoding], data=_to_uint8_array(np.ascontiguousarray(pixels).tobytes()))


def rgb_to_compressed_imgmsg(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None,
                             jpeg_quality: int = 90) -> CompressedImage:
    """An HxWx3 uint8 RGB array as a JPEG or PNG ``CompressedImage`` (``format`` = 'jpeg'/'png', as cv_bridge)."""
    _check_rgb(rgb)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format {fmt!r} not supported (jpeg or png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return CompressedImage(header=header or Header(), format=fmt, data=_to_uint8_array(encoded.tobytes()))
