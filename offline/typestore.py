"""A rosbags typestore that knows the standard ROS 2 Jazzy messages plus ours (``task_supplementor_msgs``).

Bags embed the message definitions, so any reader (``ros2 bag``, rosbags' AnyReader, Foxglove) can decode our
custom types without our package installed. The .msg files are found in the source tree or in an installed
``share/task_supplementor_msgs/msg`` (workstation colcon install, or the venv prefix of the PyPI setup).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

MSG_PACKAGE = "task_supplementor_msgs"
# Registration order matters: nested types first.
MSG_NAMES = ("GripperState", "ObjectFact", "SpatialRelation", "VisualFacts", "WidowXAction")


def _msg_dirs() -> list[Path]:
    candidates = [Path(__file__).resolve().parents[1] / "ros_ws" / "src" / MSG_PACKAGE / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(prefix) / "share" / MSG_PACKAGE / "msg" for prefix in prefixes]
    return candidates


def find_msg_dir() -> Path:
    for candidate in _msg_dirs():
        if all((candidate / f"{name}.msg").is_file() for name in MSG_NAMES):
            return candidate
    searched = "\n  ".join(str(c) for c in _msg_dirs())
    raise FileNotFoundError(f"{MSG_PACKAGE} .msg definitions not found; searched:\n  {searched}")


@functools.cache
def typestore() -> Typestore:
    """Jazzy's standard types + ours. Bags written with it stay readable on Humble (same wire formats)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    msg_dir = find_msg_dir()
    types = {}
    for name in MSG_NAMES:
        types.update(get_types_from_msg((msg_dir / f"{name}.msg").read_text(), f"{MSG_PACKAGE}/msg/{name}"))
    store.register(types)
    return store
