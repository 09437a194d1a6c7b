"""Dump a TFDS bridge_dataset split (stored JPEG bytes, actions, states, metadata) to a pickle, read with
tensorflow_datasets directly: the reference the converter's bags are compared with.

Runs as its own process because TensorFlow loaded before torch's compiler stack aborts the process (LLVM options
registered twice), and the test process also loads torch.
Usage: python dump_bridge_episodes.py VERSION_DIR SPLIT OUT.pkl
"""

import pickle
import sys

import numpy as np
import tensorflow_datasets as tfds

CAMERAS = ("image_0", "image_1", "image_2", "image_3")


def main(version_dir: str, split: str, out: str) -> None:
    builder = tfds.builder_from_directory(version_dir)
    decoders = {"steps": {"observation": {cam: tfds.decode.SkipDecoding() for cam in CAMERAS}}}
    episodes = []
    for example in tfds.as_numpy(builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)):
        steps = list(example["steps"])
        meta = example["episode_metadata"]
        episodes.append({
            "present": [cam for cam in CAMERAS if bool(meta[f"has_{cam}"])],
            "task": steps[0]["language_instruction"].decode(),
            "actions": np.stack([s["action"] for s in steps]),
            "states": np.stack([s["observation"]["state"] for s in steps]),
            "jpegs": {cam: [bytes(s["observation"][cam]) for s in steps] for cam in CAMERAS},
        })
    with open(out, "wb") as handle:
        pickle.dump(episodes, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
