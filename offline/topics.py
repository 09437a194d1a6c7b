"""Topic names inside converted bags, and the defaults replay maps them to in the live graph.

Bags keep BridgeData's own names (``/bridge/...``) so a bag says where it came from; replay remaps them onto
whatever the nodes subscribe to (``--remap FROM:=TO``), like ``ros2 bag play --remap``.
"""

from __future__ import annotations

BAG_PREFIX = "/bridge"
TASK = f"{BAG_PREFIX}/task"
ACTION = f"{BAG_PREFIX}/action"  # ground truth, task_supplementor_msgs/WidowXAction
STATE = f"{BAG_PREFIX}/state"  # sensor_msgs/JointState named after BridgeData's 7 state components


def camera_topic(camera: str, compressed: bool) -> str:
    return f"{BAG_PREFIX}/{camera}/compressed" if compressed else f"{BAG_PREFIX}/{camera}/image_raw"


def camera_frame_id(camera: str) -> str:
    return f"bridge_{camera}"


# What the live nodes publish (node-private topics ~/facts and ~/action of nodes named supplementor and vla).
FACTS_OUT = "/supplementor/facts"
ACTION_OUT = "/vla/action"
DIAGNOSTICS = "/diagnostics"
