"""The BridgeData v2 TFDS/RLDS layout (``bridge_dataset`` 1.0.0, the copy OpenVLA trains on as ``bridge_orig``).

One place for the names the converter and the synthetic writer must agree on. ``features()`` imports
tensorflow_datasets lazily because TensorFlow takes seconds to import.
"""

from __future__ import annotations

DATASET_NAME = "bridge_dataset"
DATASET_ALIASES = ("bridge_dataset", "bridge_orig")  # OpenVLA renames the folder to bridge_orig
VERSION = "1.0.0"
SPLITS = ("train", "val")
CAMERAS = ("image_0", "image_1", "image_2", "image_3")  # image_0 fixed main camera, image_3 wrist camera
IMAGE_SHAPE = (256, 256, 3)
STATE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
CONTROL_HZ = 5.0


def features():
    """The FeaturesDict of bridge_dataset 1.0.0 (same keys, shapes, dtypes and encodings as the release)."""
    import numpy as np
    import tensorflow_datasets as tfds

    f = tfds.features
    image = {cam: f.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg") for cam in CAMERAS}
    return f.FeaturesDict({
        "steps": f.Dataset({
            "observation": f.FeaturesDict({
                **image,
                "state": f.Tensor(shape=(7,), dtype=np.float32,
                                  doc="[x, y, z, roll, pitch, yaw, gripper] of the end effector"),
            }),
            "action": f.Tensor(shape=(7,), dtype=np.float32,
                               doc="[dx, dy, dz, droll, dpitch, dyaw, gripper (absolute)]"),
            "discount": f.Scalar(dtype=np.float32),
            "reward": f.Scalar(dtype=np.float32),
            "is_first": f.Scalar(dtype=np.bool_),
            "is_last": f.Scalar(dtype=np.bool_),
            "is_terminal": f.Scalar(dtype=np.bool_),
            "language_instruction": f.Text(),
            "language_embedding": f.Tensor(shape=(512,), dtype=np.float32),
        }),
        "episode_metadata": f.FeaturesDict({
            "file_path": f.Text(),
            "episode_id": f.Scalar(dtype=np.int32),
            **{f"has_{cam}": f.Scalar(dtype=np.bool_) for cam in CAMERAS},
            "has_language": f.Scalar(dtype=np.bool_),
        }),
    })
