"""One BridgeData episode -> one rosbag2 directory (rosbags writer, metadata version 8 so Humble can play it).

Per kept step t (stamp = ``BASE_STAMP_NS`` + 200 ms x source step index, i.e. 5 Hz):
every present camera (``CompressedImage`` with the stored JPEG bytes, or a decoded rgb8 ``Image``), the state
(``JointState`` named after BridgeData's state components) and the ground-truth ``WidowXAction``. The task
(``std_msgs/String``) is written once at the first stamp, as a latched topic would deliver it. Stamps are a fixed
function of the step index, so converting twice gives identical bags (and checksums).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from offline import bridge_layout as layout
from offline import topics
from offline.conventions import apply_bridge_orig
from offline.tfds_source import SourceEpisode
from offline.typestore import typestore

BASE_STAMP_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z: any fixed origin; bags carry no recording time
STEP_NS = int(1e9 / layout.CONTROL_HZ)
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
BAG_VERSION = 8


@dataclasses.dataclass(frozen=True)
class BagOptions:
    storage: str = "sqlite3"  # sqlite3 | mcap
    image_format: str = "compressed"  # compressed (original JPEG bytes) | raw (decoded rgb8 Image)
    bridge_orig: bool = False  # apply OpenVLA's bridge_orig ground-truth conventions (offline.conventions)
    cameras: tuple[str, ...] = layout.CAMERAS  # wanted cameras; only those present in the episode are written


@dataclasses.dataclass(frozen=True)
class BagSummary:
    steps: int  # frames written per camera
    cameras: tuple[str, ...]
    task: str


def policy_id(options: BagOptions) -> str:
    """What ``WidowXAction.policy_id`` says for ground truth: the source and whether the conventions apply."""
    return f"ground_truth:{layout.DATASET_NAME}/{layout.VERSION}" + ("+bridge_orig" if options.bridge_orig else "")


def step_stamp_ns(step_index: int) -> int:
    return BASE_STAMP_NS + step_index * STEP_NS


def source_step(stamp_ns: int) -> int | None:
    """The source step index a converted bag's stamp stands for; None for a stamp not made by this converter."""
    step, rest = divmod(stamp_ns - BASE_STAMP_NS, STEP_NS)
    return step if rest == 0 and step >= 0 else None


def write_episode_bag(episode: SourceEpisode, path: Path, options: BagOptions) -> BagSummary:
    """Write ``episode`` to a new bag directory at ``path`` (which must not exist).

    Raises ValueError (before creating ``path``) for an episode the conventions leave without a frame.
    """
    ts = typestore()
    types = ts.types
    if options.bridge_orig:
        kept, states, actions = apply_bridge_orig(episode.states, episode.actions)
    else:
        kept, states, actions = np.arange(len(episode.states)), episode.states, episode.actions
    cameras = tuple(cam for cam in options.cameras if cam in episode.jpegs)
    compressed = options.image_format == "compressed"
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"

    def header(stamp_ns: int, frame_id: str):
        sec, nanosec = divmod(stamp_ns, 10**9)
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                            frame_id=frame_id)

    def vector3(values: np.ndarray):
        return types["geometry_msgs/msg/Vector3"](x=float(values[0]), y=float(values[1]), z=float(values[2]))

    with Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[options.storage]) as writer:
        conn_task = writer.add_connection(topics.TASK, "std_msgs/msg/String", typestore=ts)
        conn_state = writer.add_connection(topics.STATE, "sensor_msgs/msg/JointState", typestore=ts)
        conn_action = writer.add_connection(topics.ACTION, "task_supplementor_msgs/msg/WidowXAction", typestore=ts)
        conn_cams = {cam: writer.add_connection(topics.camera_topic(cam, compressed), image_type, typestore=ts)
                     for cam in cameras}
        task = ts.serialize_cdr(types["std_msgs/msg/String"](data=episode.instruction), "std_msgs/msg/String")
        writer.write(conn_task, step_stamp_ns(int(kept[0])), task)
        for k, step in enumerate(kept):
            stamp = step_stamp_ns(int(step))
            for cam in cameras:
                msg = _image_msg(types, header(stamp, topics.camera_frame_id(cam)), episode.jpegs[cam][step],
                                 compressed)
                writer.write(conn_cams[cam], stamp, ts.serialize_cdr(msg, image_type))
            state = types["sensor_msgs/msg/JointState"](
                header=header(stamp, "bridge_base"), name=list(layout.STATE_NAMES),
                position=states[k].astype(np.float64), velocity=np.zeros(0, np.float64),
                effort=np.zeros(0, np.float64))
            writer.write(conn_state, stamp, ts.serialize_cdr(state, "sensor_msgs/msg/JointState"))
            action = actions[k].astype(np.float32)
            gt = types["task_supplementor_msgs/msg/WidowXAction"](
                header=header(stamp, topics.camera_frame_id(layout.CAMERAS[0])), delta_xyz=vector3(action[:3]),
                delta_rpy=vector3(action[3:6]), gripper=float(action[6]), raw=action, clipped=False, dry_run=True,
                prompt_mode="ground_truth", policy_id=policy_id(options), facts_age_s=-1.0, latency_s=0.0)
            writer.write(conn_action, stamp, ts.serialize_cdr(gt, "task_supplementor_msgs/msg/WidowXAction"))
    return BagSummary(steps=len(kept), cameras=cameras, task=episode.instruction)


def _image_msg(types, header, jpeg: bytes, compressed: bool):
    if compressed:
        return types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                        data=np.frombuffer(jpeg, np.uint8))
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    return types["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding="rgb8",
                                          is_bigendian=0, step=width * 3, data=rgb.reshape(-1))
