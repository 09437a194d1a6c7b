"""Reshard a bridge_dataset train split into two unordered shards, then print the episode ids our reader returns
for the whole range and one index at a time (JSON). Its own process: TensorFlow stays out of the test process (it
aborts a process that also loads torch's compiler stack).
Usage: python bridge_read_order.py VERSION_DIR FIRST_SHARD_LENGTH
"""

import json
import sys
from pathlib import Path

import tensorflow as tf

from offline.tfds_source import BridgeSource


def reshard_unordered(version_dir: Path, first_shard: int) -> int:
    """The train split as two shard files (``first_shard`` records, then the rest), with no ordered flag."""
    single = version_dir / "bridge_dataset-train.tfrecord-00000-of-00001"
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(single))]
    single.unlink()
    parts = [records[:first_shard], records[first_shard:]]
    for number, part in enumerate(parts):
        with tf.io.TFRecordWriter(str(version_dir / f"bridge_dataset-train.tfrecord-{number:05d}-of-00002")) as out:
            for record in part:
                out.write(record)
    info = json.loads((version_dir / "dataset_info.json").read_text())
    info.pop("disableShuffling", None)
    for split in info["splits"]:
        if split["name"] == "train":
            split["shardLengths"] = [str(len(part)) for part in parts]
    (version_dir / "dataset_info.json").write_text(json.dumps(info))
    return len(records)


if __name__ == "__main__":
    version_dir = Path(sys.argv[1])
    count = reshard_unordered(version_dir, int(sys.argv[2]))
    source = BridgeSource(version_dir)
    print(json.dumps({"range": [e.episode_id for e in source.read("train", list(range(count)))],
                      "one_by_one": [next(iter(source.read("train", [i]))).episode_id for i in range(count)]}))
