"""Small helpers for reading our bags with rosbags (standard types + task_supplementor_msgs)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from offline.typestore import typestore

if TYPE_CHECKING:
    from rosbags.highlevel import AnyReader

IMAGE_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image")
ACTION_TYPE = "task_supplementor_msgs/msg/WidowXAction"
FACTS_TYPE = "task_supplementor_msgs/msg/VisualFacts"
TASK_TYPE = "std_msgs/msg/String"


@dataclasses.dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_ns: int  # the bag's receive/record time
    raw: bytes  # CDR, as stored (publishable as is with rclpy)
    msg: object | None  # deserialized (rosbags dataclass) when asked for


def stamp_ns(msg) -> int:
    """header.stamp of a message in nanoseconds (the link between frames and the outputs about them)."""
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


class BagReadError(ValueError):
    """A folder rosbags cannot open as a bag (no metadata.yaml, a storage file missing, ...) or a message in it that
    cannot be decoded: said in one line."""


@contextlib.contextmanager
def _open_reader(path: Path) -> Iterator[AnyReader]:
    """An opened AnyReader; rosbags' own errors become BagReadError naming the folder (not a traceback)."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError

    if not Path(path).exists():
        raise BagReadError(f"{path} does not exist")
    if not Path(path).is_dir():  # rosbags would read a file as a ROS 1 bag and fail on its format
        raise BagReadError(f"{path} is a file: a rosbag2 is a folder holding metadata.yaml and its .db3/.mcap "
                           "storage files")
    if not (Path(path) / "metadata.yaml").is_file():  # rosbags says only "the folder"
        raise BagReadError(f"{path} is not a rosbag2 folder: it has no metadata.yaml (a bag folder holds its "
                           "metadata.yaml beside the .db3/.mcap storage files)")
    try:
        reader = AnyReader([Path(path)], default_typestore=typestore())
        reader.open()
    except (AnyReaderError, ReaderError, FileNotFoundError) as exc:  # one line: a YAML error spans several
        raise BagReadError(f"{path} is not a readable rosbag2 folder: {' '.join(str(exc).split())}") from exc
    try:
        yield reader
    finally:
        reader.close()


def read_bag(path: Path, topics: set[str] | None = None, deserialize: bool = True) -> Iterator[BagMessage]:
    """Messages of ``path`` in log-time order (optionally only ``topics``); a message that cannot be decoded raises
    BagReadError naming it."""
    with _open_reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, log_ns, raw in reader.messages(connections=connections):
            msg = None
            if deserialize:
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:  # noqa: BLE001 - rosbags raises several kinds for damaged CDR
                    raise BagReadError(
                        f"{path}: the message on {conn.topic} at log time {log_ns} ns cannot be decoded as "
                        f"{conn.msgtype} ({type(exc).__name__}: {exc}); the bag is damaged (a converted bag: "
                        "`task-supplementor convert` with --verify rewrites it)") from exc
            yield BagMessage(conn.topic, conn.msgtype, log_ns, bytes(raw), msg)


def bag_topics(path: Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, count), from the bag's metadata."""
    with _open_reader(path) as reader:
        counts: dict[str, tuple[str, int]] = {}
        for conn in reader.connections:
            msgtype, count = counts.get(conn.topic, (conn.msgtype, 0))
            counts[conn.topic] = (msgtype, count + conn.msgcount)
        return counts
