"""``task-supplementor replay``: publish converted bags into the live graph and record what the nodes answer.

Two modes:
- ``realtime``: like ``ros2 bag play`` with ``--rate``: messages go out at their bag times / rate.
- ``lockstep``: publish frame t, wait for the VLA's ``/vla/action`` whose header.stamp is frame t's stamp (or a
  timeout, recorded), then frame t+1. The node's speed then never decides which frames it sees, so the same bags
  give the same frame-by-frame record every run (with ``require_frame_facts`` for the facts).

Bag topics are remapped onto the live names (graph contract): the chosen camera's ``/bridge/<cam>/compressed`` ->
``/camera/image_raw/compressed`` (``/image_raw`` -> ``/camera/image_raw``), ``/bridge/task`` -> ``/task``; more
``--remap FROM:=TO`` pairs publish further bag topics. Everything the nodes publish (facts, actions,
diagnostics) is recorded, with the published inputs and the bag's ground truth, into one record bag per input bag;
outputs are linked to their input frame by header.stamp (graph contract), and ``frames.jsonl`` spells the link out
per frame, with ``summary.json`` beside it.

Python API: ``replay(ReplayConfig(...)) -> ReplayResult``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

from offline import topics
from offline.bag_io import BagMessage, bag_topics, read_bag, stamp_ns
from offline.typestore import typestore

LIVE_CAMERA = "/camera/image_raw"
LIVE_TASK = "/task"
OUTPUT_TOPICS = {  # what the nodes publish -> (type, reliable)
    topics.FACTS_OUT: "task_supplementor_msgs/msg/VisualFacts",
    topics.ACTION_OUT: "task_supplementor_msgs/msg/WidowXAction",
    topics.DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}
MATCH_SETTLE_S = 0.5  # discovery says "matched" a little before the first best-effort sample is surely delivered
GROUND_TRUTH_TOPIC = topics.ACTION  # copied into the record (not published): predictions vs. truth per frame


@dataclasses.dataclass
class ReplayConfig:
    bags: list[Path] = dataclasses.field(default_factory=list)  # bag folders, replayed in order
    manifest: Path | None = None  # or a conversion's folder / manifest.jsonl (its episodes, in order)
    split: str | None = None  # manifest selection: only this split
    episodes: str | None = None  # manifest selection: "START:STOP" over the selected records
    out: Path | None = None  # record folder (records/<bag>/, frames.jsonl, summary.json); None: no files
    mode: str = "lockstep"  # lockstep | realtime
    rate: float = 1.0  # realtime: speed factor
    camera: str = "image_0"  # the bag camera that feeds the live camera topic
    camera_topic: str = LIVE_CAMERA  # live camera topic (the compressed stream goes to <camera_topic>/compressed)
    task_topic: str = LIVE_TASK  # live task topic
    remaps: dict[str, str] = dataclasses.field(default_factory=dict)  # extra bag topic -> live topic
    max_frames: int | None = None  # per bag (quick runs)
    action_timeout_s: float = 10.0  # lockstep: wait this long for the action of a frame
    wait_facts: bool = False  # lockstep: also wait for the frame's facts (VLA in mode none + supplementor running)
    startup_timeout_s: float = 120.0  # lockstep: the very first action may wait for models to load
    discovery_timeout_s: float = 30.0  # wait this long for a node to subscribe to the camera
    task_settle_s: float = 0.3  # after a new task: let the nodes receive it before the first frame
    republish_after_s: float = 3.0  # lockstep: a frame nothing was heard about (no facts, no action) for this
    #                                 long was probably lost (best-effort camera QoS): publish it again
    drain_s: float = 0.5  # after each bag: wait for late outputs before closing its record
    storage: str = "sqlite3"


@dataclasses.dataclass
class ReplayResult:
    frames: list[dict]  # one entry per published frame (see _frame_entry)
    summary: dict
    out: Path | None


def default_remaps(camera: str, types: dict[str, tuple[str, int]], camera_topic: str = LIVE_CAMERA,
                   task_topic: str = LIVE_TASK) -> dict[str, str]:
    """The chosen bag camera onto the live camera topic (compressed or raw, as stored) and the task onto /task."""
    remaps = {topics.TASK: task_topic}
    compressed, raw = topics.camera_topic(camera, True), topics.camera_topic(camera, False)
    if compressed in types:
        remaps[compressed] = f"{camera_topic}/compressed"
    elif raw in types:
        remaps[raw] = camera_topic
    else:
        cams = sorted(t for t, (msgtype, _) in types.items() if msgtype.startswith("sensor_msgs/msg/"))
        raise ValueError(f"camera {camera!r} is not in the bag (image topics: {', '.join(cams) or 'none'})")
    return remaps


def select_bags(config: ReplayConfig) -> list[tuple[str, Path]]:
    """(name, bag folder) pairs from the explicit bags and/or the manifest selection."""
    chosen = [(Path(bag).name, Path(bag)) for bag in config.bags]
    if config.manifest is not None:
        from offline.convert import select_indices
        from offline.manifest import Manifest

        manifest = Manifest.load(config.manifest)
        records = sorted((r for r in manifest.episodes.values() if config.split in (None, r.split)),
                         key=lambda r: (r.split, r.index))
        picks = select_indices(len(records), config.episodes, None, 0)
        chosen += [(records[i].name, manifest.bag_path(records[i])) for i in picks]
    if not chosen:
        raise ValueError("nothing to replay: give bag folders and/or --manifest (with a selection that matches)")
    missing = [str(path) for _, path in chosen if not (path / "metadata.yaml").is_file()]
    if missing:
        raise FileNotFoundError(f"not rosbag2 folders (no metadata.yaml): {', '.join(missing)}")
    return chosen


def _msg_class(msgtype: str):
    """rclpy message class for 'pkg/msg/Name' (no rosidl_runtime_py in the PyPI wheels)."""
    import importlib

    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class _Recorder:
    """Collects the nodes' outputs (raw CDR, from the executor thread) and the published inputs of one bag.

    Everything is written when the record is closed, from the caller's thread, in receive-time order: rosbags'
    sqlite3 writer may only be used by the thread that opened it, and one bag's record is small.
    """

    def __init__(self, storage: str):
        self.storage = storage
        self.lock = threading.Condition()
        self.path: Path | None = None
        self.input_topics: dict[str, str] = {}
        self.inputs: list[tuple[str, int, bytes]] = []  # (live topic, publish ns, raw) of the open record
        self.outputs: list[tuple[str, int, object, bytes]] = []  # (topic, receive ns, deserialized, raw)

    def open(self, path: Path | None, input_topics: dict[str, str]) -> None:
        with self.lock:
            self.path, self.input_topics, self.inputs, self.outputs = path, input_topics, [], []

    def close(self) -> list[tuple[str, int, object, bytes]]:
        """Write the record (when it has a path) and hand back this bag's outputs."""
        from rosbags.rosbag2 import Writer

        from offline.episode_bag import BAG_VERSION, STORAGES

        with self.lock:
            path, inputs, outputs = self.path, self.inputs, self.outputs
            self.path, self.inputs, self.outputs = None, [], []
        if path is not None:
            with Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[self.storage]) as writer:
                connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore())
                               for topic, msgtype in {**self.input_topics, **OUTPUT_TOPICS}.items()}
                records = inputs + [(topic, ns, raw) for topic, ns, _, raw in outputs]
                for topic, ns, raw in sorted(records, key=lambda r: r[1]):
                    writer.write(connections[topic], ns, raw)
        return outputs

    def write(self, topic: str, log_ns: int, raw: bytes) -> None:
        with self.lock:
            if self.path is not None:
                self.inputs.append((topic, log_ns, raw))

    def on_output(self, topic: str, raw: bytes) -> None:
        received = time.time_ns()
        raw = bytes(raw)
        msg = typestore().deserialize_cdr(raw, OUTPUT_TOPICS[topic])
        with self.lock:
            self.outputs.append((topic, received, msg, raw))
            self.lock.notify_all()

    def wait_outputs(self, stamp: int, required: tuple[str, ...], timeout: float, republish_after: float,
                     republish) -> bool:
        """Wait until every ``required`` output topic has a message stamped ``stamp``; call ``republish()`` while
        nothing at all about the frame was heard. False on timeout."""
        def heard(topic_filter: tuple[str, ...]) -> set[str]:
            return {topic for topic, _, msg, _ in self.outputs if topic in topic_filter and stamp_ns(msg) == stamp}

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            with self.lock:
                if self.lock.wait_for(lambda: heard(required) == set(required), max(0.0, min(left, republish_after))):
                    return True
                anything = heard((topics.ACTION_OUT, topics.FACTS_OUT))
            if time.monotonic() >= deadline:
                return False
            if not anything:
                republish()


class _Player:
    """The ROS side: one node with the publishers and the output subscriptions, spun in a background thread."""

    def __init__(self, recorder: _Recorder):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from task_supplementor.ros.qos import RELIABLE_QOS

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("task_supplementor_replay", context=self.context)
        for topic, msgtype in OUTPUT_TOPICS.items():
            qos = 10 if topic == topics.DIAGNOSTICS else RELIABLE_QOS
            self.node.create_subscription(_msg_class(msgtype), topic,
                                          lambda raw, topic=topic: recorder.on_output(topic, raw), qos, raw=True)
        self.publishers: dict[str, object] = {}
        self.matched: set[str] = set()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="replay-spin", daemon=True)
        self.thread.start()

    def publisher(self, topic: str, msgtype: str):
        from task_supplementor.ros.qos import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS

        if topic not in self.publishers:
            qos = (LATCHED_QOS if msgtype == "std_msgs/msg/String"
                   else SENSOR_QOS if msgtype.startswith("sensor_msgs/msg/") else RELIABLE_QOS)
            self.publishers[topic] = self.node.create_publisher(_msg_class(msgtype), topic, qos)
        return self.publishers[topic]

    def wait_for_subscriber(self, topic: str, msgtype: str, timeout: float, need_action_publisher: bool) -> None:
        pub = self.publisher(topic, msgtype)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = pub.get_subscription_count() > 0
            if need_action_publisher:
                ready = ready and self.node.count_publishers(topics.ACTION_OUT) > 0
            if ready:
                if topic not in self.matched:
                    self.matched.add(topic)
                    time.sleep(MATCH_SETTLE_S)
                return
            time.sleep(0.05)
        wanted = f"a subscriber on {topic}" + (f" and a publisher of {topics.ACTION_OUT}" if need_action_publisher
                                               else "")
        raise TimeoutError(f"no {wanted} after {timeout:.0f} s: are the nodes running (task-supplementor up) in "
                           f"this ROS_DOMAIN_ID, with image_compressed matching the bag's images?")

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)


def _frame_entry(bag: str, index: int, frame: BagMessage, task: str, published_ns: int, outputs, truth,
                 timed_out: bool | None) -> dict:
    """The per-frame record: the outputs whose header.stamp equals the frame's stamp."""
    stamp = stamp_ns(frame.msg)
    actions = [(t, m) for topic, t, m, _ in outputs if topic == topics.ACTION_OUT and stamp_ns(m) == stamp]
    facts = [(t, m) for topic, t, m, _ in outputs if topic == topics.FACTS_OUT and stamp_ns(m) == stamp]
    entry = {"bag": bag, "frame": index, "stamp_ns": stamp, "task": task, "timed_out": timed_out,
             "ground_truth": [float(v) for v in truth.raw] if truth is not None else None,
             "action": None, "facts": None, "actions_for_frame": len(actions), "facts_for_frame": len(facts),
             "timing": {"published_ns": published_ns}}
    if actions:
        received, action = actions[0]
        entry["action"] = {"raw": [float(v) for v in action.raw], "gripper": float(action.gripper),
                           "clipped": bool(action.clipped), "prompt_mode": action.prompt_mode,
                           "policy_id": action.policy_id, "facts_age_s": float(action.facts_age_s)}
        entry["timing"].update(action_wait_s=(received - published_ns) / 1e9, action_latency_s=float(action.latency_s))
    if facts:
        received, fact = facts[0]
        entry["facts"] = {"valid": bool(fact.valid), "supplement": fact.supplement,
                          "violations": list(fact.violations), "model_id": fact.model_id}
        entry["timing"].update(facts_wait_s=(received - published_ns) / 1e9, facts_latency_s=float(fact.latency_s))
    return entry


def _replay_bag(player: _Player, recorder: _Recorder, name: str, path: Path, config: ReplayConfig,
                first_action_pending: bool) -> list[dict]:
    types = bag_topics(path)
    remaps = {**default_remaps(config.camera, types, config.camera_topic, config.task_topic), **config.remaps}
    camera_live = next(live for bag_topic, live in remaps.items() if live.startswith(config.camera_topic))
    camera_bag = next(bag_topic for bag_topic, live in remaps.items() if live == camera_live)
    input_topics = {live: types[bag_topic][0] for bag_topic, live in remaps.items() if bag_topic in types}
    if GROUND_TRUTH_TOPIC in types:
        input_topics[GROUND_TRUTH_TOPIC] = types[GROUND_TRUTH_TOPIC][0]
    lockstep = config.mode == "lockstep"
    player.wait_for_subscriber(camera_live, types[camera_bag][0], config.discovery_timeout_s, lockstep)
    recorder.open(config.out / "records" / name if config.out else None, input_topics)

    wanted = set(remaps) | {GROUND_TRUTH_TOPIC}
    messages = list(read_bag(path, topics=wanted & set(types)))
    truths = {stamp_ns(m.msg): m.msg for m in messages if m.topic == GROUND_TRUTH_TOPIC}
    frames_seen = 0
    task = ""
    pending: list[tuple[int, BagMessage, str, int, bool | None]] = []
    start_wall, start_log = time.monotonic(), messages[0].log_ns if messages else 0
    for item in messages:
        if item.topic == GROUND_TRUTH_TOPIC:
            continue
        is_frame = item.topic == camera_bag
        if is_frame and config.max_frames is not None and frames_seen >= config.max_frames:
            break
        if not lockstep:
            delay = start_wall + (item.log_ns - start_log) / 1e9 / config.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        live = remaps[item.topic]
        published = time.time_ns()
        player.publisher(live, item.msgtype).publish(item.raw)
        recorder.write(live, published, item.raw)
        if item.topic == topics.TASK:
            task = item.msg.data
            if lockstep:
                time.sleep(config.task_settle_s)
        if not is_frame:
            continue
        stamp = stamp_ns(item.msg)
        if stamp in truths:
            recorder.write(GROUND_TRUTH_TOPIC, published, typestore().serialize_cdr(truths[stamp], types[
                GROUND_TRUTH_TOPIC][0]))
        timed_out = None
        if lockstep:
            timeout = config.startup_timeout_s if first_action_pending else config.action_timeout_s
            required = (topics.ACTION_OUT, topics.FACTS_OUT) if config.wait_facts else (topics.ACTION_OUT,)
            timed_out = not recorder.wait_outputs(
                stamp, required, timeout, config.republish_after_s,
                lambda: player.publisher(live, item.msgtype).publish(item.raw))
            first_action_pending = first_action_pending and timed_out
        pending.append((frames_seen, item, task, published, timed_out))
        frames_seen += 1
    time.sleep(config.drain_s)
    outputs = recorder.close()
    return [_frame_entry(name, index, frame, task_text, published, outputs, truths.get(stamp_ns(frame.msg)),
                         timed_out)
            for index, frame, task_text, published, timed_out in pending]


def _summary(frames: list[dict], config: ReplayConfig, bags: list[str], seconds: float) -> dict:
    acted = [f for f in frames if f["action"] is not None]
    waits = sorted(f["timing"]["action_wait_s"] for f in acted)
    return {"mode": config.mode, "rate": config.rate if config.mode == "realtime" else None, "bags": bags,
            "frames": len(frames), "actions": len(acted), "facts": sum(f["facts"] is not None for f in frames),
            "timeouts": sum(bool(f["timed_out"]) for f in frames),
            "duplicate_actions": sum(max(0, f["actions_for_frame"] - 1) for f in frames),
            "action_wait_p50_s": waits[len(waits) // 2] if waits else None,
            "wall_s": seconds, "frames_per_s": len(frames) / seconds if seconds > 0 else None}


def replay(config: ReplayConfig) -> ReplayResult:
    """Replay the selected bags (see module docstring); raises ValueError/FileNotFoundError/TimeoutError."""
    if config.mode not in ("lockstep", "realtime"):
        raise ValueError(f"mode must be lockstep or realtime, not {config.mode!r}")
    if config.rate <= 0:
        raise ValueError("--rate must be > 0")
    chosen = select_bags(config)
    if config.out is not None:
        config.out = Path(config.out)
        existing = [name for name, _ in chosen if (config.out / "records" / name).exists()]
        if existing:
            raise FileExistsError(f"{config.out}/records already holds {', '.join(existing)}: use another --out")
        (config.out / "records").mkdir(parents=True, exist_ok=True)
    recorder = _Recorder(config.storage)
    player = _Player(recorder)
    frames: list[dict] = []
    started = time.monotonic()
    try:
        for name, path in chosen:
            bag_frames = _replay_bag(player, recorder, name, path, config, first_action_pending=not frames)
            frames += bag_frames
            if config.out is not None:
                with (config.out / "frames.jsonl").open("a", encoding="utf-8") as handle:
                    for entry in bag_frames:
                        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    finally:
        recorder.close()
        player.close()
    summary = _summary(frames, config, [name for name, _ in chosen], time.monotonic() - started)
    if config.out is not None:
        (config.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return ReplayResult(frames=frames, summary=summary, out=config.out)


def _parse_remap(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"--remap expects FROM:=TO, got {text!r}")
    return source, target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="*", type=Path, help="rosbag2 folders to replay, in order")
    parser.add_argument("--manifest", type=Path, default=None, help="a conversion folder or its manifest.jsonl")
    parser.add_argument("--split", default=None, help="manifest selection: only this split")
    parser.add_argument("--episodes", default=None, metavar="START:STOP", help="manifest selection: a range")
    parser.add_argument("--out", type=Path, default=None, help="record folder (records/, frames.jsonl, summary.json)")
    parser.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    parser.add_argument("--rate", type=float, default=1.0, help="realtime speed factor")
    parser.add_argument("--camera", default="image_0", help="bag camera that feeds /camera/image_raw[/compressed]")
    parser.add_argument("--remap", action="append", type=_parse_remap, default=[], metavar="FROM:=TO",
                        help="also publish bag topic FROM on live topic TO (repeatable)")
    parser.add_argument("--camera-topic", default=LIVE_CAMERA,
                        help=f"live camera topic the nodes listen on (default {LIVE_CAMERA}; compressed: +/compressed)")
    parser.add_argument("--task-topic", default=LIVE_TASK, help=f"live task topic (default {LIVE_TASK})")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per bag")
    parser.add_argument("--wait-facts", action="store_true",
                        help="lockstep: also wait for the frame's facts (when the VLA does not wait for them)")
    parser.add_argument("--action-timeout", type=float, default=ReplayConfig.action_timeout_s)
    parser.add_argument("--startup-timeout", type=float, default=ReplayConfig.startup_timeout_s)
    parser.add_argument("--discovery-timeout", type=float, default=ReplayConfig.discovery_timeout_s)


def run(args: argparse.Namespace) -> int:
    config = ReplayConfig(bags=list(args.bags), manifest=args.manifest, split=args.split, episodes=args.episodes,
                          out=args.out, mode=args.mode, rate=args.rate, camera=args.camera,
                          camera_topic=args.camera_topic, task_topic=args.task_topic,
                          remaps=dict(args.remap), max_frames=args.max_frames, wait_facts=args.wait_facts,
                          action_timeout_s=args.action_timeout, startup_timeout_s=args.startup_timeout,
                          discovery_timeout_s=args.discovery_timeout)
    try:
        result = replay(config)
    except (ValueError, FileNotFoundError, FileExistsError, TimeoutError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    print(f"replayed {len(s['bags'])} bag(s), {s['frames']} frames ({s['mode']}): {s['actions']} actions, "
          f"{s['facts']} facts, {s['timeouts']} timeouts, {s['frames_per_s']:.2f} frames/s")
    if result.out:
        print(f"record: {result.out}/records, per frame: {result.out}/frames.jsonl")
    return 0 if s["timeouts"] == 0 else 1
