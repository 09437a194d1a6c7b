"""BridgeData v2 (synthetic, real TFDS files) -> rosbag2 (real rosbags files), read back and compared.

The expected values come from the TFDS dataset itself (read here with tensorflow_datasets directly), never from
the converter, so a converter that altered bytes or actions would fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from node_process import start_node, stop_nodes
from polling import poll
from offline import topics
from offline.manifest import Manifest

REPO = Path(__file__).resolve().parents[1]
CORRUPT_INDEX = 1
TRAIN_EPISODES = 6


def _cli(*args: str, check_rc: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """``task-supplementor ...`` as a process: TensorFlow must stay out of this (torch-importing) test process."""
    done = subprocess.run([sys.executable, "-m", "task_supplementor.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in check_rc, done.stdout + done.stderr
    return done


def _convert(data_dir: Path, out: Path, *options: str) -> Manifest:
    _cli("convert", "--data-dir", str(data_dir), "--out", str(out), "--no-progress", *options, check_rc=(0, 1))
    return Manifest.load(out)


@pytest.fixture(scope="session")
def synthetic_bridge(tmp_path_factory) -> Path:
    """Six tiny train episodes (train[1] has a truncated JPEG) and one val episode."""
    out = tmp_path_factory.mktemp("bridge")
    _cli("make-synthetic-bridge", "--out", str(out), "--episodes", str(TRAIN_EPISODES), "--val-episodes", "1",
         "--min-steps", "16", "--max-steps", "18", "--corrupt", f"train:{CORRUPT_INDEX}")
    return out


@pytest.fixture(scope="session")
def converted(synthetic_bridge, tmp_path_factory) -> Manifest:
    return _convert(synthetic_bridge, tmp_path_factory.mktemp("bags"))


@pytest.fixture(scope="session")
def tfds_episodes(synthetic_bridge, tmp_path_factory):
    """split -> episodes as read by tensorflow_datasets itself (in a separate process)."""
    import pickle

    out = tmp_path_factory.mktemp("tfds_dump")
    result = {}
    for split in ("train", "val"):
        subprocess.run([sys.executable, str(REPO / "tests" / "peers" / "dump_bridge_episodes.py"),
                        str(synthetic_bridge / "bridge_dataset" / "1.0.0"), split, str(out / f"{split}.pkl")],
                       check=True, timeout=300, capture_output=True)
        result[split] = pickle.loads((out / f"{split}.pkl").read_bytes())
    return result


def _read_bag(path: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    from offline.typestore import typestore

    by_topic: dict[str, list] = {}
    with AnyReader([path], default_typestore=typestore()) as reader:
        for conn, stamp, raw in reader.messages():
            by_topic.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return by_topic


def _records(manifest: Manifest):
    return sorted(manifest.episodes.values(), key=lambda r: r.index)


def test_bags_hold_the_original_jpeg_bytes_and_exact_actions(converted, tfds_episodes):
    source = tfds_episodes["train"]
    assert [r.index for r in _records(converted)] == [i for i in range(TRAIN_EPISODES) if i != CORRUPT_INDEX]
    for record in _records(converted):
        expected = source[record.index]
        assert record.cameras == expected["present"] and record.task == expected["task"]
        bag = _read_bag(converted.bag_path(record))
        assert [m.data for _, m in bag[topics.TASK]] == [expected["task"]]
        for cam in expected["present"]:
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
    (failure,) = converted.failed.values()
    assert failure.index == CORRUPT_INDEX and "JPEG" in failure.reason
    assert failure.name not in converted.episodes
    assert not (converted.out_dir / "bags" / "train" / failure.name).exists()



def test_a_damaged_tfrecord_names_its_shard_and_the_rest_converts(synthetic_bridge, converted, tmp_path):
    """A byte flipped inside the train shard (a CRC failure, as a bad disk or an interrupted copy gives): that record's
    episode is journalled as failed with the shard's file named (TensorFlow's own text gives only a byte offset),
    and every other episode still converts to the same bags."""
    data = tmp_path / "bridge"
    shutil.copytree(synthetic_bridge, data)
    (shard,) = (data / "bridge_dataset" / "1.0.0").glob("bridge_dataset-train.tfrecord-*")
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))

    manifest = _convert(data, tmp_path / "bags")
    read_failures = [f for f in manifest.failed.values() if f.index != CORRUPT_INDEX]
    assert len(read_failures) == 1, manifest.failed
    reason = read_failures[0].reason
    assert reason.startswith(f"DataLossError reading {shard}: corrupted record at "), reason
    assert "function_node" not in reason
    expected = {name: r.checksum for name, r in converted.episodes.items() if r.index != read_failures[0].index}
    assert {name: r.checksum for name, r in manifest.episodes.items()} == expected

def _kill_once(*args: str, when) -> None:
    """Run ``task-supplementor ARGS`` and SIGKILL it (no clean-up of its own) as soon as ``when()`` holds."""
    process = subprocess.Popen([sys.executable, "-m", "task_supplementor.cli", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not when():
        time.sleep(0.002)
    assert process.poll() is None, f"{args[0]} ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_conversion_killed_midway_resumes_to_identical_bags(synthetic_bridge, converted, tmp_path):
    out = tmp_path / "bags"
    manifest_file = out / "manifest.jsonl"
    _kill_once("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
               when=lambda: manifest_file.exists() and manifest_file.read_text().count('"kind": "episode"') >= 1)
    done_before = Manifest.load(out).episodes
    assert 1 <= len(done_before) < TRAIN_EPISODES - 1

    resumed = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
                   check_rc=(1,))  # 1: the corrupt episode failed again
    assert f"converted {TRAIN_EPISODES - 1 - len(done_before)}, already done {len(done_before)}, failed 1" \
        in resumed.stdout
    final = Manifest.load(out)
    reference = {name: record.checksum for name, record in converted.episodes.items()}
    assert {name: record.checksum for name, record in final.episodes.items()} == reference
    assert not any((out / "bags" / ".partial" / "train").iterdir())


def test_bridge_orig_conventions_are_applied_and_recorded(synthetic_bridge, tfds_episodes, tmp_path):
    from offline.conventions import binarize_gripper

    manifest = _convert(synthetic_bridge, tmp_path / "orig", "--split", "val", "--bridge-orig", "--storage", "mcap",
                        "--cameras", "image_0")
    assert manifest.settings["bridge_orig"] is True and manifest.settings["storage"] == "mcap"
    (record,) = manifest.episodes.values()
    expected = tfds_episodes["val"][0]
    bag = _read_bag(manifest.bag_path(record))
    actions = np.stack([m.raw for _, m in bag[topics.ACTION]])
    states = expected["states"]
    assert record.steps == len(states) - 2 and record.cameras == ["image_0"]
    np.testing.assert_array_equal(actions[:, :6], states[2:, :6] - states[1:-1, :6])
    assert set(np.unique(actions[:, 6])) <= {0.0, 1.0}
    assert [bytes(m.data) for _, m in bag[topics.camera_topic("image_0", True)]] == expected["jpegs"]["image_0"][1:-1]
    np.testing.assert_array_equal(binarize_gripper(np.array([1.0, 0.5, 0.0, 0.02, 0.7, 0.99, 0.6])),
                                  np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.6], np.float32))


def test_bridge_orig_refuses_an_episode_too_short_to_keep_a_frame(tfds_episodes, tmp_path):
    from offline.episode_bag import BagOptions, write_episode_bag
    from offline.tfds_source import SourceEpisode

    full = tfds_episodes["val"][0]
    short = SourceEpisode(split="val", index=0, episode_id=0, file_path="val/0", instruction=full["task"],
                          states=full["states"][:2], actions=full["actions"][:2],
                          jpegs={cam: jpegs[:2] for cam, jpegs in full["jpegs"].items()})
    with pytest.raises(ValueError, match="2 step.*need at least 3"):
        write_episode_bag(short, tmp_path / "short", BagOptions(bridge_orig=True))
    assert not (tmp_path / "short").exists()  # no empty bag to journal as converted


def test_resume_redoes_missing_or_damaged_bags_and_replay_refuses_them(synthetic_bridge, converted, tmp_path):
    from offline.replay import ReplayConfig, replay

    out = tmp_path / "bags"
    first = _convert(synthetic_bridge, out, "--episodes", "2:5")
    missing, damaged, intact = (first.episodes[f"train_{i:06d}"] for i in (2, 3, 4))
    shutil.rmtree(first.bag_path(missing))
    with (first.bag_path(damaged) / "metadata.yaml").open("a") as handle:
        handle.write("# changed on disk\n")
    with pytest.raises(ValueError, match=f"{damaged.name}: .*checksum"):
        replay(ReplayConfig(manifest=out, episodes="3", discovery_timeout_s=1.0))
    with pytest.raises(ValueError, match=f"{missing.name}: .*missing"):
        replay(ReplayConfig(manifest=out, episodes="2:4", discovery_timeout_s=1.0))

    cheap = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
                 "--episodes", "2:4")  # without --verify: the missing bag is redone, a changed one is not hashed
    assert "converted 1 (1 redone: bag missing or damaged), already done 1, failed 0" in cheap.stdout
    shutil.rmtree(first.bag_path(missing))
    resumed = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
                   "--episodes", "2:5", "--verify")
    assert "converted 2 (2 redone: bag missing or damaged), already done 1, failed 0" in resumed.stdout
    assert f"redoing {missing.name}: its folder" in resumed.stderr
    assert f"redoing {damaged.name}: its files" in resumed.stderr
    final = Manifest.load(out)
    assert {name: r.checksum for name, r in final.episodes.items()} == \
        {r.name: converted.episodes[r.name].checksum for r in (missing, damaged, intact)}
    assert all(final.bag_damage(r) is None for r in final.episodes.values())


def test_a_damaged_manifest_line_is_refused_and_deletes_nothing(synthetic_bridge, tmp_path):
    out = tmp_path / "bags"
    manifest = _convert(synthetic_bridge, out, "--episodes", "2:5")
    lines = manifest.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"  # the second episode line, not the last line
    manifest.path.write_bytes(b"".join(lines))
    before = manifest.path.read_bytes()
    done = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
                "--episodes", "2:5", check_rc=(2,))
    assert "manifest.jsonl line 3 is damaged" in done.stderr and "Traceback" not in done.stderr
    assert manifest.path.read_bytes() == before
    assert all(manifest.bag_path(r).is_dir() for r in manifest.episodes.values())


def test_convert_refuses_bad_input_before_writing(synthetic_bridge, tmp_path):
    done = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(tmp_path / "x"), "--episodes", "9:12",
                check_rc=(2,))
    assert f"out of range: the split has {TRAIN_EPISODES} episodes" in done.stderr
    assert not (tmp_path / "x").exists()
    (tmp_path / "afile").write_text("not a folder")
    done = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(tmp_path / "afile"), check_rc=(2,))
    assert "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr


def test_wrong_dataset_dir_says_what_was_expected_and_found(synthetic_bridge, tmp_path):
    done = _cli("convert", "--data-dir", str(synthetic_bridge.parent), "--out", str(tmp_path / "x"), check_rc=(2,))
    assert "bridge_orig/1.0.0/dataset_info.json" in done.stderr
    assert str(synthetic_bridge / "bridge_dataset" / "1.0.0") in done.stderr
    assert not (tmp_path / "x").exists()


def test_another_tfds_dataset_is_refused_before_anything_is_written(synthetic_bridge, tmp_path):
    import json
    import shutil

    other = tmp_path / "bridge" / "0.1.0"
    shutil.copytree(synthetic_bridge / "bridge_dataset" / "1.0.0", other)
    info = json.loads((other / "dataset_info.json").read_text())
    (other / "dataset_info.json").write_text(json.dumps({**info, "name": "bridge", "version": "0.1.0"}))
    done = _cli("convert", "--data-dir", str(other), "--out", str(tmp_path / "x"), check_rc=(2,))
    assert "holds the TFDS dataset bridge 0.1.0" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_a_damaged_copy_of_the_dataset_is_named_as_such(synthetic_bridge, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_bridge, data)
    version = data / "bridge_dataset" / "1.0.0"
    (version / "features.json").unlink()
    done = _cli("convert", "--data-dir", str(data), "--out", str(tmp_path / "x"), check_rc=(2,))
    assert f"{version} lacks features.json: an incomplete copy" in done.stderr and "Traceback" not in done.stderr
    shutil.copy(synthetic_bridge / "bridge_dataset" / "1.0.0" / "features.json", version)
    info = version / "dataset_info.json"
    info.write_text(info.read_text()[:100])  # cut short
    done = _cli("convert", "--data-dir", str(data), "--out", str(tmp_path / "x"), check_rc=(2,))
    assert "cannot read the dataset's description files (JSONDecodeError" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()


def test_convert_without_its_manifest_leaves_bags_outside_the_selection(synthetic_bridge, converted, tmp_path):
    out = tmp_path / "bags"
    shutil.copytree(converted.out_dir, out)
    (out / "manifest.jsonl").unlink()
    (out / "bags" / "train" / "my_notes").mkdir()
    before = sorted(p.name for p in (out / "bags" / "train").iterdir())
    done = _cli("convert", "--data-dir", str(synthetic_bridge), "--out", str(out), "--no-progress",
                "--episodes", "0")
    assert "converted 1, already done 0, failed 0" in done.stdout
    assert sorted(p.name for p in (out / "bags" / "train").iterdir()) == before
    assert Manifest.load(out).episodes["train_000000"].checksum == converted.episodes["train_000000"].checksum


def test_an_interrupted_overwrite_keeps_the_old_synthetic_dataset(tmp_path):
    data = tmp_path / "data"
    small = ("--val-episodes", "1", "--min-steps", "16", "--max-steps", "16")
    _cli("make-synthetic-bridge", "--out", str(data), "--episodes", "1", *small)
    version = data / "bridge_dataset" / "1.0.0"
    before = {p.name: p.read_bytes() for p in version.iterdir()}
    process = subprocess.Popen([sys.executable, "-m", "task_supplementor.cli", "make-synthetic-bridge", "--out",
                                str(data), "--overwrite", "--episodes", "4", *small], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert poll(lambda: any(data.glob(".synthetic-bridge-*")) or process.poll() is not None, 60)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted; the dataset in" in stderr, stderr
    assert {p.name: p.read_bytes() for p in version.iterdir()} == before
    assert sorted(p.name for p in data.iterdir()) == ["bridge_dataset"]


def test_an_episode_without_instruction_is_a_recorded_failure_not_a_bag(tmp_path):
    _cli("make-synthetic-bridge", "--out", str(tmp_path / "data"), "--episodes", "2", "--val-episodes", "1",
         "--min-steps", "16", "--max-steps", "16", "--unlabeled", "train:1")
    manifest = _convert(tmp_path / "data", tmp_path / "bags")
    assert sorted(r.index for r in manifest.episodes.values()) == [0]
    assert [(f.index, "no language instruction" in f.reason) for f in manifest.failed.values()] == [(1, True)]


def test_inspect_reports_topics_tasks_and_draws_a_contact_sheet(converted, tmp_path):
    from PIL import Image

    from offline.inspect_bag import InspectConfig, inspect_bag

    record = _records(converted)[0]
    report = inspect_bag(converted.bag_path(record), InspectConfig(contact_sheet=tmp_path / "s.png",
                                                                             frames=6, columns=3))
    counts = {t.topic: t.count for t in report.topics}
    assert counts[topics.ACTION] == record.steps and counts[topics.TASK] == 1
    assert counts[topics.camera_topic("image_0", True)] == record.steps
    assert report.tasks == [record.task]
    assert abs(report.duration_s - (record.steps - 1) * 0.2) < 1e-9
    with Image.open(report.contact_sheet) as sheet:
        assert sheet.size == (3 * 256, 2 * (256 + 120))


def test_a_bag_folder_without_its_files_or_camera_is_a_one_line_error(converted, tmp_path):
    bag = tmp_path / "no_db3"
    bag.mkdir()
    shutil.copy(converted.bag_path(_records(converted)[0]) / "metadata.yaml", bag)
    for command in (("inspect", str(bag)), ("replay", str(bag), "--discovery-timeout", "1")):
        done = _cli(*command, check_rc=(2,))
        assert "is not a readable rosbag2 folder" in done.stderr and "Traceback" not in done.stderr, done.stderr
    no_metadata = tmp_path / "no_metadata"
    no_metadata.mkdir()
    shutil.copy(next(converted.bag_path(_records(converted)[0]).glob("*.db3")), no_metadata)
    for command in (("inspect", str(no_metadata)), ("replay", str(no_metadata), "--discovery-timeout", "1")):
        done = _cli(*command, check_rc=(2,))
        assert f"{no_metadata} is not a rosbag2 folder: it has no metadata.yaml" in done.stderr, done.stderr
    record = _records(converted)[0]
    missing = next(cam for cam in ("image_0", "image_1", "image_2", "image_3") if cam not in record.cameras)
    done = _cli("replay", str(converted.bag_path(record)), "--camera", missing, "--discovery-timeout", "1",
                check_rc=(2,))
    listed = ", ".join(sorted(topics.camera_topic(cam, True) for cam in record.cameras))
    assert f"camera {missing!r} is not in the bag (image topics: {listed})" in done.stderr, done.stderr
    done = _cli("inspect", str(converted.bag_path(record)), "--frames", "0", "--contact-sheet",
                str(tmp_path / "s.png"), check_rc=(2,))
    assert "argument --frames: must be >= 1" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s.png").exists()


def test_inspect_refuses_a_topic_without_images_and_a_sheet_it_cannot_write(converted, tmp_path):
    from offline.inspect_bag import InspectConfig, inspect_bag

    bag = converted.bag_path(_records(converted)[0])
    (tmp_path / "afile").write_text("")
    for camera, sheet, message in (
            (topics.STATE, tmp_path / "s.png",
             f"{topics.STATE} holds sensor_msgs/msg/JointState, not images (image topics: /bridge/image_0/"),
            (None, tmp_path, "is a folder; give a file name"),
            (None, tmp_path / "afile" / "s.png", f"{tmp_path / 'afile'} is a file, not a folder"),
            (None, tmp_path / "s.pngx", ".pngx extension is not an image format")):
        with pytest.raises(ValueError) as refused:
            inspect_bag(bag, InspectConfig(contact_sheet=sheet, camera_topic=camera))
        assert message in str(refused.value)
    for path, message in ((tmp_path / "nothing", "does not exist"),
                          (tmp_path / "afile", "is a file: a rosbag2 is a folder holding metadata.yaml")):
        with pytest.raises(ValueError, match=message):
            inspect_bag(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_bag_with_an_undecodable_message_is_a_one_line_error_and_leaves_no_record(converted, tmp_path):
    import sqlite3

    bag = tmp_path / "damaged"
    shutil.copytree(converted.bag_path(_records(converted)[0]), bag)
    with sqlite3.connect(next(bag.glob("*.db3"))) as db:  # three camera frames overwritten with two bytes
        db.execute("UPDATE messages SET data = X'0001' WHERE id IN (SELECT m.id FROM messages m JOIN topics t "
                   "ON m.topic_id = t.id WHERE t.name LIKE '%image_0%' ORDER BY m.timestamp LIMIT 3)")
    done = _cli("inspect", str(bag), check_rc=(2,))
    assert "cannot be decoded as sensor_msgs/msg/CompressedImage" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    out = tmp_path / "run"
    done = _cli("replay", str(bag), "--out", str(out), "--discovery-timeout", "1", check_rc=(2,))
    assert "message on /bridge/image_0/compressed at log time" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not any((out / "records").iterdir())  # nothing half-written: the same command runs again once mended


def test_replay_episodes_are_indices_in_the_split_as_in_the_bag_names(converted, capsys):
    from offline.replay import ReplayConfig, select_bags
    from task_supplementor.demo import DemoConfig, replay_config

    def names(config: ReplayConfig) -> list[str]:
        return [name for name, _ in select_bags(config)]

    assert names(ReplayConfig(manifest=converted.out_dir, episodes="2:4")) == ["train_000002", "train_000003"]
    assert names(ReplayConfig(manifest=converted.out_dir, split="train", episodes="4")) == ["train_000004"]
    assert names(ReplayConfig(manifest=converted.out_dir, episodes="0:3")) == ["train_000000", "train_000002"]
    assert f"not replaying train_{CORRUPT_INDEX:06d}: its conversion failed" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"no converted episode in the selection .*; train_{CORRUPT_INDEX:06d}: its "
                                         "conversion failed"):
        select_bags(ReplayConfig(manifest=converted.out_dir, episodes=str(CORRUPT_INDEX)))
    demo = replay_config(DemoConfig(episodes="3:5"), converted.out_dir, Path("run"))  # the demo replays its own
    assert names(demo) == ["train_000003", "train_000004"]


def test_replay_refuses_remaps_of_topics_it_does_not_publish(converted):
    from offline.replay import ReplayConfig, replay

    bag = converted.bag_path(_records(converted)[0])
    for source in (topics.ACTION, "/bridge/stat"):  # the ground truth is recorded, not published; a typo
        with pytest.raises(ValueError, match=f"--remap {source} .*remappable topics: .*{topics.STATE}"):
            replay(ReplayConfig(bags=[bag], remaps={source: "/elsewhere"}, discovery_timeout_s=1.0))


def _lateness(start_ns: int, published_ns: list[int], bag_stamps: list[int], rate: float) -> list[float]:
    """Per frame: seconds it went out after its place in the bag's schedule divided by ``rate``, counted from the
    bag's first publication (``start_ns``, scheduled at the first frame's stamp); negative = ahead of schedule."""
    return [(p - start_ns) / 1e9 - (b - bag_stamps[0]) / 1e9 / rate for p, b in zip(published_ns, bag_stamps)]


def test_realtime_replay_publishes_every_frame_at_the_rate_with_stamps_unique_in_the_run(converted, tmp_path):
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from offline.replay import ReplayConfig, replay
    from task_supplementor.ros.qos import LATCHED_QOS, SENSOR_QOS

    records = [_records(converted)[0], _records(converted)[1]]  # both converted from the same first stamp
    other = _records(converted)[2]
    rate = 4.0
    received: list[int] = []
    tasks: list[str] = []
    rclpy.init()
    node = rclpy.create_node("camera_listener")
    node.create_subscription(CompressedImage, "/camera/image_raw/compressed",
                             lambda m: received.append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
                             SENSOR_QOS)
    node.create_subscription(String, "/task", lambda m: tasks.append(m.data), LATCHED_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = replay(ReplayConfig(bags=[converted.bag_path(r) for r in records], mode="realtime", rate=rate,
                                     out=tmp_path / "rt"))
        time.sleep(0.3)
        frames_file = (tmp_path / "rt" / "frames.jsonl").read_bytes()
        with pytest.raises(FileExistsError, match="already holds a replay"):  # a second run never mixes into it
            replay(ReplayConfig(bags=[converted.bag_path(other)], mode="realtime", rate=rate, out=tmp_path / "rt"))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    assert (tmp_path / "rt" / "frames.jsonl").read_bytes() == frames_file
    assert not (tmp_path / "rt" / "records" / other.name).exists()
    assert tasks == [r.task for r in records]
    assert len(set(received)) == len(received), "two frames of one run were published with the same stamp"
    assert received == [f["stamp_ns"] for f in result.frames]
    stamps = {}
    for record in records:
        bag_stamps = [stamp for stamp, _ in _read_bag(converted.bag_path(record))[topics.camera_topic("image_0", True)]]
        mine = [f for f in result.frames if f["bag"] == record.name]
        assert [f["bag_stamp_ns"] for f in mine] == bag_stamps and [f["step"] for f in mine] == list(range(len(mine)))
        recorded = _read_bag(tmp_path / "rt" / "records" / record.name)  # inputs at their publish time
        started = min(log_ns for messages in recorded.values() for log_ns, _ in messages)
        lateness = _lateness(started, [f["timing"]["published_ns"] for f in mine], bag_stamps, rate)
        assert min(lateness) > -0.005, f"published ahead of the bag's schedule: {lateness}"
        assert max(lateness) < 0.25, f"fell behind the bag's schedule at rate {rate}: {lateness}"
        stamps[record.name] = [f["stamp_ns"] for f in mine]
        truth = recorded[topics.ACTION]
        assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in truth] == stamps[record.name]
    first, second = (stamps[r.name] for r in records)
    assert first == [f["bag_stamp_ns"] for f in result.frames if f["bag"] == records[0].name]  # first bag: as is
    assert min(second) > max(first)


def test_a_replay_killed_midway_resumes_to_the_record_of_an_uninterrupted_run(converted, tmp_path):
    """Killed during its second bag, ``replay --resume`` keeps the first bag's record, plays the rest again with the
    stamps an uninterrupted run gives them (they seed placeholder prompts), and ends with the same per-frame record;
    resuming with other options is refused before anything is touched."""
    import json
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage

    from offline.replay import ReplayConfig, replay
    from task_supplementor.ros.qos import SENSOR_QOS

    bags = [converted.bag_path(r) for r in _records(converted)[:3]]
    run = tmp_path / "run"
    rclpy.init()
    node = rclpy.create_node("camera_listener")  # the camera subscriber the replay waits for
    node.create_subscription(CompressedImage, "/camera/image_raw/compressed", lambda m: None, SENSOR_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        reference = replay(ReplayConfig(bags=bags, mode="realtime", rate=1000.0, out=tmp_path / "reference"))
        journal = run / "bags.jsonl"
        _kill_once("replay", *map(str, bags), "--mode", "realtime", "--rate", "1000", "--out", str(run),
                   "--no-progress", when=lambda: journal.is_file() and journal.read_text().count("\n") >= 1)
        assert journal.read_text().count("\n") < len(bags)
        with pytest.raises(ValueError, match=r"other settings \(rate differ\)"):
            replay(ReplayConfig(bags=bags, mode="realtime", rate=2.0, out=run, resume=True))
        resumed = replay(ReplayConfig(bags=bags, mode="realtime", rate=1000.0, out=run, resume=True))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()

    def deterministic(frames):
        return [{k: f[k] for k in ("bag", "frame", "stamp_ns", "bag_stamp_ns", "step", "task")} for f in frames]

    on_disk = [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]
    assert deterministic(on_disk) == deterministic(resumed.frames) == deterministic(reference.frames)
    assert [json.loads(line)["bag"] for line in journal.read_text().splitlines()] == [b.name for b in bags]
    assert sorted(p.name for p in (run / "records").iterdir()) == sorted(b.name for b in bags)
    camera = "/camera/image_raw/compressed"  # the records hold what was published, on its live topic
    for bag in bags:  # each record whole: the interrupted bag's partial one was replaced
        assert len(_read_bag(run / "records" / bag.name)[camera]) == \
            len(_read_bag(tmp_path / "reference" / "records" / bag.name)[camera])
    assert json.loads((run / "summary.json").read_text())["frames"] == len(reference.frames)


def test_ctrl_c_on_a_replay_says_how_to_finish_it_without_a_traceback(converted, tmp_path):
    import rclpy

    bag = converted.bag_path(_records(converted)[0])
    process = subprocess.Popen([sys.executable, "-m", "task_supplementor.cli", "replay", str(bag), "--out",
                                str(tmp_path / "run"), "--discovery-timeout", "120"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rclpy.init()
    try:  # Ctrl-C once the replay is in the graph, waiting for a camera subscriber that never comes (a signal in the
        # first moments, while the middleware starts, can end the process by the signal itself: not what this tests)
        watcher = rclpy.create_node("replay_watcher")
        in_graph = poll(lambda: "task_supplementor_replay" in watcher.get_node_names(), 60)
        watcher.destroy_node()
    finally:
        rclpy.shutdown()
    assert in_graph and (tmp_path / "run" / "run.json").is_file(), "the replay never started"
    time.sleep(0.3)  # past the subscriber check's first round
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()  # never left running to answer the next tests' nodes (a no-op once it has exited)
    assert process.returncode == 130, err
    assert "replay: interrupted" in err and "--resume" in err and "Traceback" not in err, err


def _start_suite(tiny_models: Path, logs: Path, **vla_parameters: str):
    """Both nodes as processes on the tiny checkpoints (CPU), the vla with ``vla_parameters`` on top."""
    supplementor = start_node("supplementor_node.node", "supplementor.yaml",
                              {"checkpoint": str(tiny_models / "qwen2_5_vl_tiny"), "device": "cpu",
                               "max_new_tokens": "256", "rate_hz": "30.0"}, logs / "supplementor.log")
    vla = start_node("vla_node.node", "vla.yaml",
                     {"checkpoint": str(tiny_models / "openvla_tiny"), "device": "cpu", **vla_parameters},
                     logs / "vla.log")
    return supplementor, vla


def test_lockstep_replay_through_the_running_nodes_records_one_output_per_frame(converted, tiny_models, tmp_path):
    """Two bags with different tasks: the supplementor answers the second task by describing the frame it holds
    (the first bag's last) under that frame's stamp; the second bag's record must not take those facts."""
    from offline.bag_io import read_bag, stamp_ns
    from offline.inspect_bag import inspect_bag
    from offline.replay import ReplayConfig, replay

    frames = 3
    first = _records(converted)[0]
    second = next(r for r in _records(converted) if r.task != first.task)
    supplementor, vla = _start_suite(tiny_models, tmp_path, prompt_mode="none", control_rate_hz="10.0")
    try:
        result = replay(ReplayConfig(bags=[converted.bag_path(first), converted.bag_path(second)],
                                     max_frames=frames, out=tmp_path / "lockstep", wait_facts=True,
                                     action_timeout_s=20.0, startup_timeout_s=60.0))
    finally:
        stopped = stop_nodes({"supplementor": (supplementor, tmp_path / "supplementor.log"),
                              "vla": (vla, tmp_path / "vla.log")}, signal.SIGINT)
    logs = "\n".join(f"--- {name} (exit {s.code})\n{s.log_tail[-3000:]}" for name, s in stopped.items())
    assert all(s.clean for s in stopped.values()), f"a node did not exit cleanly on SIGINT:\n{logs}"
    assert result.summary["timeouts"] == 0, logs
    assert [f["actions_for_frame"] for f in result.frames] == [1] * 2 * frames, logs
    assert [f["facts_for_frame"] for f in result.frames] == [1] * 2 * frames, logs
    assert result.summary["actions_by_prompt_mode"] == {"none": 2 * frames}
    assert result.summary["actions_by_policy"] == {str(tiny_models / "openvla_tiny"): 2 * frames}
    nodes = result.summary["nodes"]  # which checkpoints and settings made the record
    assert nodes["/vla: actions"] == {"policy_id": str(tiny_models / "openvla_tiny"), "prompt_mode": "none",
                                      "unnorm_key": "bridge_orig", "dry_run": "true"}, nodes
    assert nodes["/supplementor: visual facts"] == {"model_id": str(tiny_models / "qwen2_5_vl_tiny")}, nodes
    for entry in result.frames:
        assert entry["action"]["prompt_mode"] == "none" and entry["ground_truth"] is not None
        sent = entry["action"]["sent"]  # what went out: the policy's vector clipped to the WidowX bounds
        assert all(abs(v) <= 0.05 + 1e-9 for v in sent[:3]) and all(abs(v) <= 0.25 + 1e-9 for v in sent[3:6])
        moved = any(abs(a - b) > 1e-6 for a, b in zip(sent, entry["action"]["raw"]))
        assert moved == entry["action"]["clipped"], entry["action"]
    for bag in result.summary["bags"]:
        record_bag = result.out / "records" / bag
        counts = {t.topic: t.count for t in inspect_bag(record_bag).topics}
        assert counts["/vla/action"] == frames and counts["/camera/image_raw/compressed"] == frames
        assert counts["/supplementor/facts"] == frames, counts
        own = {f["stamp_ns"] for f in result.frames if f["bag"] == bag}
        about = {stamp_ns(m.msg) for m in read_bag(record_bag, topics={"/supplementor/facts", "/vla/action"})}
        assert about == own, f"{bag}'s record holds outputs about other frames"
    lines = (result.out / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 2 * frames


def test_a_lockstep_replay_nothing_answers_ends_at_the_first_frame_with_the_nodes_diagnostics(converted, tiny_models,
                                                                                             tmp_path):
    """A vla node holding its checkpoint back (an unnorm key it lacks) never acts: the replay must not wait the
    start-up timeout on every frame, but end at once with what the node says is wrong."""
    from offline.replay import ReplayConfig, replay

    vla = start_node("vla_node.node", "vla.yaml", {"checkpoint": str(tiny_models / "openvla_tiny"), "device": "cpu",
                                                   "unnorm_key": "bridge"}, tmp_path / "vla.log")
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="for the first frame within --startup-timeout 5 s") as raised:
            replay(ReplayConfig(manifest=converted.out_dir, episodes="0:1", max_frames=3, out=tmp_path / "run",
                                startup_timeout_s=5.0, action_timeout_s=5.0))
    finally:
        stopped = stop_nodes({"vla": (vla, tmp_path / "vla.log")}, signal.SIGINT)
    assert stopped["vla"].clean, stopped["vla"].log_tail
    assert "/vla: actions [ERROR]" in str(raised.value) and "unnorm_key 'bridge'" in str(raised.value), raised.value
    assert time.monotonic() - started < 60  # one start-up timeout, not one per frame


def test_a_vla_waiting_for_facts_no_supplementor_sends_is_named_as_such(converted, tiny_models, tmp_path):
    from offline.replay import ReplayConfig, replay

    vla = start_node("vla_node.node", "vla.yaml", {"checkpoint": str(tiny_models / "openvla_tiny"), "device": "cpu",
                                                   "prompt_mode": "supplement", "require_frame_facts": "true"},
                     tmp_path / "vla.log")
    try:
        with pytest.raises(TimeoutError) as raised:
            replay(ReplayConfig(manifest=converted.out_dir, episodes="0:1", max_frames=2, startup_timeout_s=25.0))
    finally:
        stopped = stop_nodes({"vla": (vla, tmp_path / "vla.log")}, signal.SIGINT)
    assert stopped["vla"].clean, stopped["vla"].log_tail
    assert ("/vla: actions waits for each frame's facts (require_frame_facts) and has heard none: no supplementor "
            "was heard") in str(raised.value), raised.value


def test_a_one_frame_run_replayed_again_is_told_to_restart_the_nodes(converted, tiny_models, tmp_path):
    """Nodes answer a frame stamp once (a lockstep replay re-sends a frame it heard nothing about; a live camera
    may repeat a frame): a second one-frame run of the same bag sends the very frame they answered last, and they
    stay silent. The replay must say so within seconds, not wait out --startup-timeout and blame the nodes."""
    from offline.replay import ReplayConfig, replay

    supplementor, vla = _start_suite(tiny_models, tmp_path, prompt_mode="none", control_rate_hz="10.0")
    try:
        first = replay(ReplayConfig(manifest=converted.out_dir, episodes="0:1", max_frames=1, out=tmp_path / "one",
                                    action_timeout_s=20.0, startup_timeout_s=60.0))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="answered a frame stamped") as raised:
            replay(ReplayConfig(manifest=converted.out_dir, episodes="0:1", max_frames=1, out=tmp_path / "again",
                                action_timeout_s=60.0, startup_timeout_s=60.0))
        waited = time.monotonic() - started
    finally:
        stop_nodes({"supplementor": (supplementor, tmp_path / "supplementor.log"),
                    "vla": (vla, tmp_path / "vla.log")}, signal.SIGINT)
    assert first.summary["timeouts"] == 0 and first.frames[0]["actions_for_frame"] == 1
    message = str(raised.value)
    assert f"/supplementor: visual facts and /vla: actions answered a frame stamped {first.frames[0]['stamp_ns']} ns" \
        in message and "Restart the nodes" in message, message
    assert waited < 30, f"{waited:.0f} s: the replay waited for the start-up timeout"


def test_lockstep_replay_of_two_bags_with_one_task_fuses_only_each_frames_own_facts(converted, tiny_models, tmp_path):
    """Converted bags all start at the same stamp: replayed in one run, the second bag's frames must not be
    answered with the facts the first bag's frames got (same task, same stamps) nor linked to its outputs. Nor may
    a second run of the same bags, against the same running nodes, be answered with the first run's facts; and it
    gives the first run's record."""
    import shutil

    from offline.replay import ReplayConfig, replay

    record = _records(converted)[0]
    bags = [tmp_path / "take_1", tmp_path / "take_2"]  # the same episode twice: one task, one set of stamps
    for bag in bags:
        shutil.copytree(converted.bag_path(record), bag)
    frames = 2
    supplementor, vla = _start_suite(tiny_models, tmp_path, prompt_mode="supplement", require_frame_facts="true",
                                     fuse_invalid_facts="true", control_rate_hz="30.0")
    try:
        runs = [replay(ReplayConfig(bags=bags, max_frames=frames, out=tmp_path / name, action_timeout_s=20.0,
                                    startup_timeout_s=60.0)) for name in ("lockstep", "again")]
    finally:
        stopped = stop_nodes({"supplementor": (supplementor, tmp_path / "supplementor.log"),
                              "vla": (vla, tmp_path / "vla.log")}, signal.SIGINT)
    logs = "\n".join(f"--- {name} (exit {s.code})\n{s.log_tail[-3000:]}" for name, s in stopped.items())
    for result in runs:
        timing = [(f["bag"], f["frame"], f["timing"]) for f in result.frames]
        assert result.summary["timeouts"] == 0, logs
        for entry in result.frames:
            assert entry["facts_for_frame"] == 1 and entry["actions_for_frame"] == 1, (timing, logs)
            assert entry["action"]["prompt_mode"] == "supplement"
            # require_frame_facts: the VLA acts on a frame only once its facts exist, so they are heard first
            assert entry["timing"]["facts_wait_s"] < entry["timing"]["action_wait_s"], \
                f"{result.out.name}: {entry['bag']} frame {entry['frame']} was acted on before its facts came: {timing}"
    first, again = ([(f["stamp_ns"], f["action"]["raw"]) for f in result.frames] for result in runs)
    assert again == first, "the same bags replayed again gave another record"
    result = runs[0]
    stamps = [f["stamp_ns"] for f in result.frames]
    assert len(set(stamps)) == len(stamps) == 2 * frames
    assert [(f["bag"], f["step"]) for f in result.frames] == [(b.name, s) for b in bags for s in range(frames)]
