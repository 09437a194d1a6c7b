"""BridgeData v2 (synthetic, real TFDS files) -> rosbag2 (real rosbags files), read back and compared.

The expected values come from the TFDS dataset itself (read here with tensorflow_datasets directly), never from
the converter, so a converter that altered bytes or actions would fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from offline import topics
from offline.convert import ConvertConfig, convert
from offline.manifest import Manifest
from offline.synthetic_bridge import SyntheticConfig, write_synthetic_bridge

REPO = Path(__file__).resolve().parents[1]
CORRUPT_INDEX = 1
TRAIN_EPISODES = 6


@pytest.fixture(scope="session")
def synthetic_bridge(tmp_path_factory) -> Path:
    """Six tiny train episodes (train[1] has a truncated JPEG) and one val episode."""
    out = tmp_path_factory.mktemp("bridge")
    write_synthetic_bridge(SyntheticConfig(out=out, episodes=TRAIN_EPISODES, val_episodes=1, min_steps=16,
                                           max_steps=18, corrupt=(("train", CORRUPT_INDEX),)))
    return out


@pytest.fixture(scope="session")
def converted(synthetic_bridge, tmp_path_factory):
    return convert(ConvertConfig(data_dir=synthetic_bridge, out=tmp_path_factory.mktemp("bags"), progress=False))


def _tfds_episodes(data_dir: Path, split: str) -> list[dict]:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(data_dir / "bridge_dataset" / "1.0.0"))
    cams = ("image_0", "image_1", "image_2", "image_3")
    decoders = {"steps": {"observation": {cam: tfds.decode.SkipDecoding() for cam in cams}}}
    episodes = []
    for example in tfds.as_numpy(builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)):
        steps = list(example["steps"])
        episodes.append({
            "meta": example["episode_metadata"],
            "task": steps[0]["language_instruction"].decode(),
            "actions": np.stack([s["action"] for s in steps]),
            "states": np.stack([s["observation"]["state"] for s in steps]),
            "jpegs": {cam: [bytes(s["observation"][cam]) for s in steps] for cam in cams},
        })
    return episodes


def _read_bag(path: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    from offline.typestore import typestore

    by_topic: dict[str, list] = {}
    with AnyReader([path], default_typestore=typestore()) as reader:
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return by_topic


def test_bags_hold_the_original_jpeg_bytes_and_exact_actions(synthetic_bridge, converted):
    source = _tfds_episodes(synthetic_bridge, "train")
    good = [i for i in range(TRAIN_EPISODES) if i != CORRUPT_INDEX]
    assert sorted(r.index for r in converted.converted) == good
    for record in converted.converted:
        expected = source[record.index]
        present = [cam for cam in expected["jpegs"] if bool(expected["meta"][f"has_{cam}"])]
        assert record.cameras == present and record.task == expected["task"]
        bag = _read_bag(converted.manifest.bag_path(record))
        assert [m.data for _, m in bag[topics.TASK]] == [expected["task"]]
        for cam in present:
            frames = bag[topics.camera_topic(cam, compressed=True)]
            assert [bytes(m.data) for _, m in frames] == expected["jpegs"][cam]
        assert topics.camera_topic("image_2", compressed=True) not in bag  # absent camera: no zero images
        actions = np.stack([m.raw for _, m in bag[topics.ACTION]])
        np.testing.assert_array_equal(actions, expected["actions"])
        np.testing.assert_array_equal(
            np.stack([[m.delta_xyz.x, m.delta_xyz.y, m.delta_xyz.z, m.delta_rpy.x, m.delta_rpy.y, m.delta_rpy.z,
                       m.gripper] for _, m in bag[topics.ACTION]]), expected["actions"].astype(np.float64))
        np.testing.assert_array_equal(np.stack([m.position for _, m in bag[topics.STATE]]),
                                      expected["states"].astype(np.float64))
        stamps = [stamp for stamp, _ in bag[topics.ACTION]]
        assert np.all(np.diff(stamps) == 200_000_000)  # 5 Hz
        header_stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in bag[topics.ACTION]]
        assert header_stamps == stamps


def test_corrupt_episode_is_reported_and_skipped(converted):
    (failure,) = converted.failed
    assert failure.index == CORRUPT_INDEX and "JPEG" in failure.reason
    manifest = Manifest.load(converted.manifest.out_dir)
    assert failure.name in manifest.failed and failure.name not in manifest.episodes
    assert not (converted.manifest.out_dir / "bags" / "train" / failure.name).exists()


def test_conversion_killed_midway_resumes_to_identical_bags(synthetic_bridge, converted, tmp_path):
    out = tmp_path / "bags"
    command = [sys.executable, "-m", "task_supplementor.cli", "convert", "--data-dir", str(synthetic_bridge),
               "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest_file = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if manifest_file.exists() and manifest_file.read_text().count('"kind": "episode"') >= 1:
            break
        time.sleep(0.002)
    assert process.poll() is None, "conversion ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = Manifest.load(out).episodes
    assert 1 <= len(done_before) < TRAIN_EPISODES - 1

    resumed = convert(ConvertConfig(data_dir=synthetic_bridge, out=out, progress=False))
    assert resumed.skipped == len(done_before)
    assert len(resumed.converted) == TRAIN_EPISODES - 1 - len(done_before)
    final = Manifest.load(out)
    reference = {name: record.checksum for name, record in converted.manifest.episodes.items()}
    assert {name: record.checksum for name, record in final.episodes.items()} == reference
    assert not any((out / "bags" / ".partial" / "train").iterdir())


def test_bridge_orig_conventions_are_applied_and_recorded(synthetic_bridge, tmp_path):
    from offline.conventions import binarize_gripper

    result = convert(ConvertConfig(data_dir=synthetic_bridge, out=tmp_path / "orig", split="val",
                                   bridge_orig=True, storage="mcap", cameras=("image_0",), progress=False))
    assert result.manifest.settings["bridge_orig"] is True
    (record,) = result.converted
    expected = _tfds_episodes(synthetic_bridge, "val")[0]
    bag = _read_bag(result.manifest.bag_path(record))
    actions = np.stack([m.raw for _, m in bag[topics.ACTION]])
    states = expected["states"]
    assert record.steps == len(states) - 2 and record.cameras == ["image_0"]
    np.testing.assert_allclose(actions[:, :6], states[2:, :6] - states[1:-1, :6], rtol=0, atol=0)
    assert set(np.unique(actions[:, 6])) <= {0.0, 1.0}
    assert [bytes(m.data) for _, m in bag[topics.camera_topic("image_0", True)]] == expected["jpegs"]["image_0"][1:-1]
    np.testing.assert_array_equal(binarize_gripper(np.array([1.0, 0.5, 0.0, 0.02, 0.7, 0.99, 0.6])),
                                  np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.6], np.float32))


def test_wrong_dataset_dir_says_what_was_expected_and_found(synthetic_bridge, tmp_path):
    from offline.tfds_source import DatasetDirError

    with pytest.raises(DatasetDirError) as error:
        convert(ConvertConfig(data_dir=synthetic_bridge.parent, out=tmp_path / "x", progress=False))
    text = str(error.value)
    assert "bridge_orig/1.0.0/dataset_info.json" in text and str(synthetic_bridge / "bridge_dataset" / "1.0.0") in text


def test_inspect_reports_topics_tasks_and_draws_a_contact_sheet(converted, tmp_path):
    from PIL import Image

    from offline.inspect_bag import InspectConfig, inspect_bag

    record = converted.converted[0]
    report = inspect_bag(converted.manifest.bag_path(record), InspectConfig(contact_sheet=tmp_path / "s.png",
                                                                             frames=6, columns=3))
    counts = {t.topic: t.count for t in report.topics}
    assert counts[topics.ACTION] == record.steps and counts[topics.TASK] == 1
    assert counts[topics.camera_topic("image_0", True)] == record.steps
    assert report.tasks == [record.task]
    assert abs(report.duration_s - (record.steps - 1) * 0.2) < 1e-9
    with Image.open(report.contact_sheet) as sheet:
        assert sheet.size == (3 * 256, 2 * (256 + 120))
