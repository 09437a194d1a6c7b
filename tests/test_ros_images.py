"""Image conversion: every supported encoding round-trips exactly; each kind of bad input raises its own kind."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from task_supplementor.ros.images import (ImageDecodeError, compressed_imgmsg_to_rgb, imgmsg_to_rgb,
                                          rgb_to_compressed_imgmsg, rgb_to_imgmsg)


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 17, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_colour_encodings_round_trip(rgb, encoding):
    msg = rgb_to_imgmsg(rgb, encoding)
    assert (msg.width, msg.height, msg.step) == (17, 12, 51)
    np.testing.assert_array_equal(imgmsg_to_rgb(msg), rgb)


def test_bgr8_bytes_are_blue_first(rgb):
    msg = rgb_to_imgmsg(rgb, "bgr8")
    assert bytes(msg.data[:3]) == bytes(rgb[0, 0, ::-1])


def test_mono8_becomes_grey_rgb(rgb):
    out = imgmsg_to_rgb(rgb_to_imgmsg(rgb, "mono8"))
    assert out.shape == rgb.shape
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_row_padding_in_step_is_skipped(rgb):
    padded = np.zeros((12, 17 * 3 + 5), dtype=np.uint8)
    padded[:, :51] = rgb.reshape(12, 51)
    msg = Image(height=12, width=17, encoding="rgb8", step=56, data=padded.tobytes())
    np.testing.assert_array_equal(imgmsg_to_rgb(msg), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(rgb, fmt):
    msg = rgb_to_compressed_imgmsg(rgb, fmt)
    out = compressed_imgmsg_to_rgb(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)   # lossless


def test_jpeg_keeps_a_smooth_picture_and_its_channel_order():
    """JPEG is lossy: on a smooth picture with a different ramp per channel it stays close (a swapped R/B would not)."""
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([x * 5, y * 7, np.full_like(x, 30)], axis=2).astype(np.uint8)
    out = compressed_imgmsg_to_rgb(rgb_to_compressed_imgmsg(rgb, "jpeg", jpeg_quality=95))
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4


def test_image_transport_format_string_is_accepted(rgb):
    msg = rgb_to_compressed_imgmsg(rgb, "png")
    msg.format = "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_imgmsg_to_rgb(msg), rgb)


def _kind(fn, msg) -> str:
    with pytest.raises(ImageDecodeError) as info:
        fn(msg)
    return info.value.kind


def test_bad_raw_images_name_their_kind(rgb):
    good = rgb_to_imgmsg(rgb)
    assert _kind(imgmsg_to_rgb, Image(height=12, width=17, encoding="16UC1", step=34, data=b"\0" * 408)) \
        == "unsupported_encoding"
    assert _kind(imgmsg_to_rgb, Image(height=12, width=17, encoding="rgb8", step=51,
                                      data=bytes(good.data)[:-10])) == "truncated"
    assert _kind(imgmsg_to_rgb, Image(height=12, width=17, encoding="rgb8", step=10, data=b"\0" * 612)) \
        == "bad_size"
    assert _kind(imgmsg_to_rgb, Image(height=12, width=17, encoding="rgb8", step=51,
                                      data=bytes(good.data) + b"\0" * 51)) == "bad_size"  # a row more than it says


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_compressed_images_are_rejected(rgb, fmt):
    data = bytes(rgb_to_compressed_imgmsg(rgb, fmt).data)
    assert _kind(compressed_imgmsg_to_rgb, CompressedImage(format=fmt, data=data[: len(data) // 2])) == "truncated"


def test_unknown_and_empty_compressed_data(rgb):
    assert _kind(compressed_imgmsg_to_rgb, CompressedImage(format="jpeg", data=b"GIF89a....")) \
        == "unsupported_format"
    assert _kind(compressed_imgmsg_to_rgb, CompressedImage(format="jpeg", data=b"")) == "empty"


def test_corrupt_jpeg_body_is_rejected():
    data = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"
    assert _kind(compressed_imgmsg_to_rgb, CompressedImage(format="jpeg", data=data)) == "corrupt"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_headers_claiming_huge_images_are_rejected_not_raised(rgb):
    """OpenCV raises (not returns None) for a header over its pixel limit: that must not escape a camera callback."""
    png = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
           + _png_chunk(b"IDAT", zlib.compress(b"\0" * 10)) + _png_chunk(b"IEND", b""))
    jpeg = bytearray(rgb_to_compressed_imgmsg(rgb, "jpeg").data)
    start_of_frame = jpeg.index(b"\xff\xc0")
    jpeg[start_of_frame + 5:start_of_frame + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    for fmt, data in (("png", png), ("jpeg", bytes(jpeg))):
        with pytest.raises(ImageDecodeError, match="CV_IO_MAX_IMAGE_PIXELS") as caught:
            compressed_imgmsg_to_rgb(CompressedImage(format=fmt, data=data))
        assert caught.value.kind == "corrupt"
