"""The camera input both nodes share: one subscription, decoding to RGB, and what happens to a frame that cannot be
decoded.

WHY one place: both nodes must follow the graph's camera names and sensor QoS, and treat a corrupt frame the same
way: count it by kind in /diagnostics, log each kind once (a broken camera would otherwise flood the log at frame
rate) and keep running. Both nodes also tell frames apart by ``header.stamp`` (a lockstep replay re-sends a frame
with its stamp, and it must not be acted on twice), so a camera that leaves the stamp at zero is warned about once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from task_supplementor.ros.diagnostics import Health
from task_supplementor.ros.images import ImageDecodeError, compressed_imgmsg_to_rgb, imgmsg_to_rgb
from task_supplementor.ros.qos import SENSOR_QOS


@dataclass(frozen=True)
class CameraFrame:
    rgb: np.ndarray  # HxWx3 uint8
    header: Header
    received: float  # time.monotonic() at receipt: latency_s = publication - receipt

    @property
    def stamp_ns(self) -> int:
        """The image stamp in nanoseconds: what links the outputs about this frame to it."""
        return int(self.header.stamp.sec) * 1_000_000_000 + int(self.header.stamp.nanosec)


class CameraInput:
    """Subscribes ``node`` to ``camera/image_raw/compressed`` (``compressed``) or ``camera/image_raw`` and hands each
    decoded frame to ``on_frame``; undecodable frames are counted in ``health`` as ``bad_images.<kind>``."""

    def __init__(self, node: Node, health: Health, compressed: bool,
                 on_frame: Callable[[CameraFrame], None]) -> None:
        self._node, self._health, self._on_frame = node, health, on_frame
        self._kinds_logged: set[str] = set()
        self._unstamped_logged = False
        if compressed:
            node.create_subscription(CompressedImage, "camera/image_raw/compressed",
                                     lambda msg: self._on_message(msg, compressed_imgmsg_to_rgb), SENSOR_QOS)
        else:
            node.create_subscription(Image, "camera/image_raw", lambda msg: self._on_message(msg, imgmsg_to_rgb),
                                     SENSOR_QOS)

    def _on_message(self, msg: Image | CompressedImage, decode: Callable[..., np.ndarray]) -> None:
        received = time.monotonic()
        self._health.count("frames_received")
        try:
            rgb = decode(msg)
        except ImageDecodeError as exc:
            self._health.count(f"bad_images.{exc.kind}")
            if exc.kind not in self._kinds_logged:  # once per kind; the counter keeps the rest
                self._kinds_logged.add(exc.kind)
                self._node.get_logger().warning(f"dropping undecodable frame ({exc}); further '{exc.kind}' frames "
                                                "are only counted in /diagnostics")
            return
        frame = CameraFrame(rgb, msg.header, received)
        if frame.stamp_ns == 0 and not self._unstamped_logged:
            self._unstamped_logged = True
            self._node.get_logger().warning(
                "camera frame with header.stamp 0: frames are told apart by their stamp, so later frames stamped 0 "
                "are taken for this one again and ignored (counted in frames_repeated); stamp the images in the "
                "camera driver")
        self._on_frame(frame)
