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

Stamps are unique within a run: converted bags all start at the same stamp, so every bag after the first is
published with its header stamps moved past the previous bag's end (plus ``BAG_GAP_NS``). Otherwise a node would
take one bag's facts for another bag's frame with the same stamp, and a late output of one bag would be linked to
the next bag's frame. ``frames.jsonl`` keeps the bag's own stamp and step beside the published one.

Python API: ``replay(ReplayConfig(...)) -> ReplayResult``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from offline import topics
from offline.bag_io import IMAGE_TYPES, BagMessage, bag_topics, read_bag, stamp_ns
from offline.episode_bag import source_step
from offline.replay_run import RunFolder
from offline.typestore import typestore
from task_supplementor.cli_args import positive_float, positive_int

LIVE_CAMERA = "/camera/image_raw"
LIVE_TASK = "/task"
OUTPUT_TOPICS = {  # what the nodes publish -> (type, reliable)
    topics.FACTS_OUT: "task_supplementor_msgs/msg/VisualFacts",
    topics.ACTION_OUT: "task_supplementor_msgs/msg/WidowXAction",
    topics.DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
}
MATCH_SETTLE_S = 0.5  # discovery says "matched" a little before the first best-effort sample is surely delivered
# The camera's subscribers must stay all matched this long before the first frame: the first node discovered is
# not always the last (a realtime replay, which sends nothing twice, lost the vla's first frames to that)
DISCOVERY_QUIET_S = 1.5
# what each node reports on /diagnostics that decides its outputs: summary.json keeps the last heard, so a record
# says which checkpoints and prompt settings made it
NODE_SETTINGS = ("model_id", "policy_id", "prompt_mode", "unnorm_key", "dry_run")
GROUND_TRUTH_TOPIC = topics.ACTION  # copied into the record (not published): predictions vs. truth per frame
# Between the last stamp of one bag and the first of the next in a run: far beyond any facts age a node accepts, so
# no node ever fuses one bag's facts into the next bag's frames, not even as "recent" facts.
BAG_GAP_NS = 3600 * 10**9
_DIAGNOSTIC_LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


@dataclasses.dataclass
class ReplayConfig:
    bags: list[Path] = dataclasses.field(default_factory=list)  # bag folders, replayed in order
    manifest: Path | None = None  # or a conversion's folder / manifest.jsonl (its episodes, in order)
    split: str | None = None  # manifest selection: only this split
    episodes: str | None = None  # manifest selection: episode indices within the split, "START:STOP" or one index
    out: Path | None = None  # record folder (records/<bag>/, frames.jsonl, summary.json); None: no files
    mode: str = "lockstep"  # lockstep | realtime
    rate: float = 1.0  # realtime: speed factor
    camera: str = "image_0"  # the bag camera that feeds the live camera topic
    camera_topic: str = LIVE_CAMERA  # live camera topic (the compressed stream goes to <camera_topic>/compressed)
    task_topic: str = LIVE_TASK  # live task topic
    remaps: dict[str, str] = dataclasses.field(default_factory=dict)  # extra bag topic -> live topic
    max_frames: int | None = None  # per bag (quick runs)
    action_timeout_s: float = 30.0  # lockstep: wait this long for the action of a frame (a slow CPU supplementor
    #                                 with its full token budget takes over 10 s; a stall is still noticed)
    wait_facts: bool = False  # lockstep: also wait for the frame's facts (VLA in mode none + supplementor running)
    startup_timeout_s: float = 120.0  # lockstep: the very first action may wait for models to load
    discovery_timeout_s: float = 30.0  # wait this long for a node to subscribe to the camera
    task_settle_s: float = 0.3  # after a new task: let the nodes receive it before the first frame
    republish_after_s: float = 3.0  # lockstep: a frame nothing was heard about (no facts, no action) for this
    #                                 long was probably lost (best-effort camera QoS): publish it again
    drain_s: float = 0.5  # after each bag: wait for late outputs before closing its record
    storage: str = "sqlite3"
    resume: bool = False  # finish the interrupted run in ``out`` (same settings) instead of refusing the folder
    progress: bool = False  # a progress bar over the bags on stderr (the CLI's default)


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
        cams = sorted(t for t, (msgtype, _) in types.items() if msgtype in IMAGE_TYPES)
        raise ValueError(f"camera {camera!r} is not in the bag (image topics: {', '.join(cams) or 'none'})")
    return remaps


def select_bags(config: ReplayConfig) -> list[tuple[str, Path]]:
    """(name, bag folder) pairs from the explicit bags and/or the manifest selection; names must be unique (each
    gets its own record folder)."""
    chosen = [(Path(bag).name, Path(bag)) for bag in config.bags]
    if config.manifest is not None:
        chosen += _manifest_selection(config)
    if not chosen:
        raise ValueError("nothing to replay: give bag folders and/or --manifest (with a selection that matches)")
    names = [name for name, _ in chosen]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"bag names must be unique in a run (records/<name>/): {', '.join(twice)} given twice")
    return chosen


def _manifest_selection(config: ReplayConfig) -> list[tuple[str, Path]]:
    """The manifest's converted episodes in the split / episode-index selection, each checked against its checksum
    (a bag that fails the check is refused: its record would not be of the data the manifest describes)."""
    from offline.convert import parse_episode_range
    from offline.manifest import Manifest

    manifest = Manifest.load(config.manifest)
    start, stop = parse_episode_range(config.episodes) if config.episodes else (0, None)

    def wanted(split: str, index: int) -> bool:
        return config.split in (None, split) and start <= index and (stop is None or index < stop)

    records = sorted((r for r in manifest.episodes.values() if wanted(r.split, r.index)),
                     key=lambda r: (r.split, r.index))
    failures = sorted((f for f in manifest.failed.values() if wanted(f.split, f.index)), key=lambda f: f.name)
    if not records:
        failed = "".join(f"; {f.name}: its conversion failed ({f.reason})" for f in failures)
        raise ValueError(f"{manifest.path} has no converted episode in the selection (split {config.split or 'any'}, "
                         f"episodes {config.episodes or 'all'}){failed}")
    for failure in failures:
        print(f"replay: not replaying {failure.name}: its conversion failed ({failure.reason})", file=sys.stderr)
    if stop is not None and len(records) + len(failures) < stop - start:
        print(f"replay: episodes {config.episodes} name {stop - start} episode(s); {manifest.path} holds "
              f"{len(records) + len(failures)} of them (convert the others first to replay them)", file=sys.stderr)
    damaged = [f"{r.name}: {reason}" for r in records if (reason := manifest.bag_damage(r)) is not None]
    if damaged:
        raise ValueError(f"bags that fail their check (convert again with the same options to redo them): "
                         f"{'; '.join(damaged)}")
    return [(r.name, manifest.bag_path(r)) for r in records]


@dataclasses.dataclass(frozen=True)
class BagPlan:
    """One bag of a run, checked before anything is published: what is read and where each topic goes."""

    name: str
    path: Path
    types: dict[str, tuple[str, int]]  # bag topic -> (message type, count)
    remaps: dict[str, str]  # published bag topic -> live topic
    camera: str  # the bag topic whose messages are the frames

    @property
    def camera_live(self) -> str:
        return self.remaps[self.camera]

    def record_topics(self) -> dict[str, str]:
        """Live topic -> type of what the record bag holds besides the outputs (the inputs and the ground truth)."""
        recorded = {live: self.types[bag_topic][0] for bag_topic, live in self.remaps.items()
                    if bag_topic in self.types}
        if GROUND_TRUTH_TOPIC in self.types:
            recorded[GROUND_TRUTH_TOPIC] = self.types[GROUND_TRUTH_TOPIC][0]
        return recorded


def plan_bag(name: str, path: Path, config: ReplayConfig) -> BagPlan:
    """Check one bag against the options (readable, has the camera, every ``--remap`` source publishable)."""
    types = bag_topics(path)
    try:
        defaults = default_remaps(config.camera, types, config.camera_topic, config.task_topic)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    publishable = sorted(topic for topic in types if topic != GROUND_TRUTH_TOPIC)
    for source in config.remaps:
        if source not in publishable:
            why = ("is the ground truth, which is recorded, never published" if source == GROUND_TRUTH_TOPIC
                   else "is not a topic of the bag")
            raise ValueError(f"--remap {source} {why} ({path}); remappable topics: {', '.join(publishable)}")
    camera = next(topic for topic in defaults if topic != topics.TASK)
    return BagPlan(name=name, path=Path(path), types=types, remaps={**defaults, **config.remaps}, camera=camera)


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
        self.node_settings: dict[str, dict[str, str]] = {}  # status name -> NODE_SETTINGS fields, newest heard

    def open(self, path: Path | None, input_topics: dict[str, str]) -> None:
        with self.lock:
            self.path, self.input_topics, self.inputs, self.outputs = path, input_topics, [], []

    def close(self, frame_stamps: set[int] | None = None) -> list[tuple[str, int, object, bytes]]:
        """Write the record (when it has a path) and hand back this bag's outputs: /diagnostics, and facts and
        actions for the frames published (``frame_stamps``; None: all, for a bag cut short). WHY the filter: a node
        answers a new task by describing the frame it holds, the previous bag's last (or an earlier run's), under
        that frame's stamp."""
        from rosbags.rosbag2 import Writer

        from offline.episode_bag import BAG_VERSION, STORAGES

        with self.lock:
            path, inputs = self.path, self.inputs
            outputs = [o for o in self.outputs
                       if frame_stamps is None or o[0] == topics.DIAGNOSTICS or stamp_ns(o[2]) in frame_stamps]
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
            if topic == topics.DIAGNOSTICS:
                self.node_settings.update((status.name, {kv.key: kv.value for kv in status.values
                                                         if kv.key in NODE_SETTINGS}) for status in msg.status)
            self.lock.notify_all()

    def latest_statuses(self, heard_before_ns: int | None = None) -> dict[str, object]:
        """Each node's (status name's) last /diagnostics status heard, optionally only among those heard before
        ``heard_before_ns``."""
        latest: dict[str, object] = {}
        with self.lock:
            for topic, received, msg, _ in self.outputs:
                if topic == topics.DIAGNOSTICS and (heard_before_ns is None or received < heard_before_ns):
                    latest.update((status.name, status) for status in msg.status)
        return latest

    def node_problems(self) -> str:
        """What the nodes last said on /diagnostics that is not OK (why nothing answers, e.g. a rejected
        checkpoint), as one line."""
        latest = self.latest_statuses()
        problems = [f"{name} [{_DIAGNOSTIC_LEVELS.get(int(status.level), status.level)}] {status.message}"
                    for name, status in sorted(latest.items()) if int(status.level) != 0]
        if problems:
            return "The nodes' /diagnostics say: " + "; ".join(problems)
        starved = [name for name, status in sorted(latest.items())
                   if int(_field(status, "ticks_waiting_for_facts") or 0) > 0
                   and int(_field(status, "facts_received") or 0) == 0]
        if starved:
            why = ("the supplementor's status was heard, so check that its facts topic reaches the vla"
                   if any(name.endswith(": visual facts") for name in latest) else
                   "no supplementor was heard on /diagnostics: start one in this ROS_DOMAIN_ID, or run the vla with "
                   "require_frame_facts false")
            return f"{', '.join(starved)} waits for each frame's facts (require_frame_facts) and has heard none: {why}"
        if latest:
            return "No node reports a problem on /diagnostics (a longer --startup-timeout for large models?)"
        return "Nothing was heard on /diagnostics either: are the nodes running in this ROS_DOMAIN_ID?"

    def answered_before_run(self, stamp: int, heard_before_ns: int) -> list[str]:
        """The statuses (nodes) that, in /diagnostics heard before ``heard_before_ns``, last answered a frame stamped
        ``stamp``. Asked about a run's first frame that got no answer: a node answers a stamp once, so one that
        answered it in an earlier run takes it for that frame sent again. (A node publishes its answer before the
        status that reports it: with ``heard_before_ns`` a few seconds back, this run's own answer would be here.)
        Empty while a node heard from has no status that old yet: the answer names every node that took the frame,
        not only the first one heard from."""
        settled = self.latest_statuses(heard_before_ns)
        if settled.keys() != self.latest_statuses().keys():
            return []
        return sorted(name for name, status in settled.items()
                      if _field(status, "last_answered_stamp_ns") == str(stamp))

    def wait_outputs(self, stamp: int, required: tuple[str, ...], timeout: float, republish_after: float,
                     republish, abandon=lambda: False) -> bool:
        """Wait until every ``required`` output topic has a message stamped ``stamp``; call ``republish()`` while
        nothing at all about the frame was heard. False on timeout, or once ``abandon()`` holds (checked every
        ``republish_after`` s)."""
        def heard(topic_filter: tuple[str, ...]) -> set[str]:
            return {topic for topic, _, msg, _ in self.outputs if topic in topic_filter and stamp_ns(msg) == stamp}

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            with self.lock:
                if self.lock.wait_for(lambda: heard(required) == set(required), max(0.0, min(left, republish_after))):
                    return True
                anything = heard((topics.ACTION_OUT, topics.FACTS_OUT))
            if time.monotonic() >= deadline or abandon():
                return False
            if not anything:
                republish()


def _field(status, key: str) -> str | None:
    """The value of ``key`` in one diagnostic status (None when the status does not carry it)."""
    return next((kv.value for kv in status.values if kv.key == key), None)


class _Player:
    """The ROS side: one node with the publishers and the output subscriptions, spun in a background thread."""

    def __init__(self, recorder: _Recorder):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from task_supplementor.ros.qos import RELIABLE_QOS

        self.context = Context()
        self.node = self.executor = self.thread = None
        self.publishers: dict[str, object] = {}
        self.matched: set[str] = set()
        try:  # a Ctrl-C (or an error) half-way must not leave a DDS participant behind the process's exit
            rclpy.init(context=self.context)
            self.node = rclpy.create_node("task_supplementor_replay", context=self.context)
            for topic, msgtype in OUTPUT_TOPICS.items():
                qos = 10 if topic == topics.DIAGNOSTICS else RELIABLE_QOS
                self.node.create_subscription(_msg_class(msgtype), topic,
                                              lambda raw, topic=topic: recorder.on_output(topic, raw), qos, raw=True)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self.thread = threading.Thread(target=self.executor.spin, name="replay-spin", daemon=True)
            self.thread.start()
        except BaseException:
            self.close()
            raise

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
        quiet_since: float | None = None  # since when every discovered subscriber is matched, with no new one
        seen = 0
        while time.monotonic() < deadline:
            known = self.node.count_subscribers(topic)  # every subscriber discovered, matched or not yet
            matched = pub.get_subscription_count()
            ready = matched > 0 and matched >= known
            if need_action_publisher:
                ready = ready and self.node.count_publishers(topics.ACTION_OUT) > 0
            if ready and topic in self.matched:
                return
            if not ready or matched != seen or quiet_since is None:
                quiet_since, seen = (time.monotonic() if ready else None), matched
            elif time.monotonic() - quiet_since >= DISCOVERY_QUIET_S:
                self.matched.add(topic)
                time.sleep(MATCH_SETTLE_S)
                return
            time.sleep(0.05)
        wanted = f"subscriber on {topic}" + (f" or no publisher of {topics.ACTION_OUT}" if need_action_publisher
                                             else "")
        raise TimeoutError(f"no {wanted} after {timeout:.0f} s: are the nodes running (task-supplementor up) in "
                           f"this ROS_DOMAIN_ID, with image_compressed matching the bag's images?")

    def close(self) -> None:
        """Stop spinning and leave the graph; also for a player whose construction stopped half-way."""
        import rclpy

        if self.executor is not None:
            self.executor.shutdown()
        if self.node is not None:
            self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        if self.thread is not None:
            self.thread.join(timeout=5)


@dataclasses.dataclass(frozen=True)
class _Published:
    """One published frame, waiting for the bag's outputs to be linked to it."""

    index: int  # position among the bag's frames
    stamp: int  # header.stamp as published (unique in the run)
    bag_stamp: int  # header.stamp in the bag
    task: str
    published_ns: int
    timed_out: bool | None


def _frame_entry(bag: str, frame: _Published, outputs, truth) -> dict:
    """The per-frame record: the outputs whose header.stamp equals the frame's (published) stamp."""
    actions = [(t, m) for topic, t, m, _ in outputs if topic == topics.ACTION_OUT and stamp_ns(m) == frame.stamp]
    facts = [(t, m) for topic, t, m, _ in outputs if topic == topics.FACTS_OUT and stamp_ns(m) == frame.stamp]
    entry = {"bag": bag, "frame": frame.index, "stamp_ns": frame.stamp, "bag_stamp_ns": frame.bag_stamp,
             "step": source_step(frame.bag_stamp), "task": frame.task, "timed_out": frame.timed_out,
             "ground_truth": [float(v) for v in truth.raw] if truth is not None else None,
             "action": None, "facts": None, "actions_for_frame": len(actions), "facts_for_frame": len(facts),
             "timing": {"published_ns": frame.published_ns}}
    if actions:
        received, action = actions[0]
        sent = [action.delta_xyz.x, action.delta_xyz.y, action.delta_xyz.z, action.delta_rpy.x, action.delta_rpy.y,
                action.delta_rpy.z, action.gripper]
        entry["action"] = {"raw": [float(v) for v in action.raw], "sent": [float(v) for v in sent],
                           "gripper": float(action.gripper), "clipped": bool(action.clipped),
                           "prompt_mode": action.prompt_mode,
                           "policy_id": action.policy_id, "facts_age_s": float(action.facts_age_s)}
        entry["timing"].update(action_wait_s=(received - frame.published_ns) / 1e9,
                               action_latency_s=float(action.latency_s))
    if facts:
        received, fact = facts[0]
        entry["facts"] = {"valid": bool(fact.valid), "supplement": fact.supplement,
                          "violations": list(fact.violations), "model_id": fact.model_id}
        entry["timing"].update(facts_wait_s=(received - frame.published_ns) / 1e9,
                               facts_latency_s=float(fact.latency_s))
    return entry


def _stamp_offset(messages: list[BagMessage], next_free_ns: int | None) -> tuple[int, int | None]:
    """(offset for this bag's header stamps, first free stamp after it): the bag is moved only as far as it must
    be to start at or after ``next_free_ns`` (the first bag of a run keeps its stamps)."""
    stamps = [stamp_ns(m.msg) for m in messages if hasattr(m.msg, "header")]
    if not stamps:
        return 0, next_free_ns
    offset = max(0, next_free_ns - min(stamps)) if next_free_ns is not None else 0
    return offset, max(stamps) + offset + BAG_GAP_NS


def _restamped(item: BagMessage, offset: int) -> BagMessage:
    """``item`` with its header.stamp moved by ``offset`` ns (as is when there is no header or nothing to move)."""
    if offset == 0 or not hasattr(item.msg, "header"):
        return item
    ts = typestore()
    sec, nanosec = divmod(stamp_ns(item.msg) + offset, 10**9)
    header = dataclasses.replace(item.msg.header, stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec,
                                                                                               nanosec=nanosec))
    msg = dataclasses.replace(item.msg, header=header)
    return dataclasses.replace(item, msg=msg, raw=bytes(ts.serialize_cdr(msg, item.msgtype)))


def _replay_bag(player: _Player, recorder: _Recorder, plan: BagPlan, config: ReplayConfig,
                first_action_pending: bool, next_free_ns: int | None) -> tuple[list[dict], int | None]:
    """Publish one bag (see module docstring); returns its frame entries and the first stamp free after it."""
    lockstep = config.mode == "lockstep"
    # read whole first: a damaged bag ends the replay at once, with no partial record of it
    messages = list(read_bag(plan.path, topics=(set(plan.remaps) | {GROUND_TRUTH_TOPIC}) & set(plan.types)))
    player.wait_for_subscriber(plan.camera_live, plan.types[plan.camera][0], config.discovery_timeout_s, lockstep)
    recorder.open(config.out / "records" / plan.name if config.out else None, plan.record_topics())
    offset, next_free_ns = _stamp_offset(messages, next_free_ns)
    messages = [_restamped(m, offset) for m in messages]
    truths = {stamp_ns(m.msg): m for m in messages if m.topic == GROUND_TRUTH_TOPIC}
    task = ""
    pending: list[_Published] = []
    start_wall, start_log = time.monotonic(), messages[0].log_ns if messages else 0
    for item in messages:
        if item.topic == GROUND_TRUTH_TOPIC:
            continue
        is_frame = item.topic == plan.camera
        if is_frame and config.max_frames is not None and len(pending) >= config.max_frames:
            break
        if not lockstep:
            delay = start_wall + (item.log_ns - start_log) / 1e9 / config.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        live = plan.remaps[item.topic]
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
            recorder.write(GROUND_TRUTH_TOPIC, published, truths[stamp].raw)
        timed_out = None
        if lockstep:
            timeout = config.startup_timeout_s if first_action_pending else config.action_timeout_s
            required = (topics.ACTION_OUT, topics.FACTS_OUT) if config.wait_facts else (topics.ACTION_OUT,)

            def answered_before() -> list[str]:  # only a run's first frame can have a stamp answered before the run
                if not first_action_pending:
                    return []
                return recorder.answered_before_run(stamp, time.time_ns() - int(config.republish_after_s * 1e9))

            timed_out = not recorder.wait_outputs(
                stamp, required, timeout, config.republish_after_s,
                lambda: player.publisher(live, item.msgtype).publish(item.raw), abandon=answered_before)
            if timed_out and first_action_pending and (nodes := answered_before()):
                raise TimeoutError(
                    f"{' and '.join(nodes)} answered a frame stamped {stamp} ns last, before this run, and take "
                    "this run's first frame, stamped the same, for that frame sent again (a node answers a stamp "
                    "once): an earlier run ended on this frame (a one-frame run, run again; a run stopped at a "
                    "bag's first frame, resumed). Restart the nodes and run the command again")
            if timed_out and first_action_pending:
                # nothing ever answered: every later frame would wait as long (a bad checkpoint, device, ...)
                raise TimeoutError(
                    f"no {' and no '.join(required)} for the first frame within --startup-timeout {timeout:g} s: "
                    f"the nodes are not serving. {recorder.node_problems()}")
            first_action_pending = False
        pending.append(_Published(len(pending), stamp, stamp - offset, task, published, timed_out))
    time.sleep(config.drain_s)
    outputs = recorder.close({frame.stamp for frame in pending})
    entries = [_frame_entry(plan.name, frame, outputs, truths[frame.stamp].msg if frame.stamp in truths else None)
               for frame in pending]
    return entries, next_free_ns


def actions_by(frames: list[dict], key: str) -> dict[str, int]:
    """How many of ``frames`` were acted on with each value of the action's ``key`` (e.g. ``prompt_mode``)."""
    return dict(sorted(Counter(f["action"][key] for f in frames if f["action"] is not None).items()))


def _summary(frames: list[dict], config: ReplayConfig, bags: list[str], seconds: float) -> dict:
    acted = [f for f in frames if f["action"] is not None]
    waits = sorted(f["timing"]["action_wait_s"] for f in acted)
    # what acted and how: a run whose policy or prompt mode changed part-way (a resume after a parameter change)
    # shows it here, not only frame by frame
    return {"mode": config.mode, "rate": config.rate if config.mode == "realtime" else None, "bags": bags,
            "frames": len(frames), "actions": len(acted), "actions_by_prompt_mode": actions_by(frames, "prompt_mode"),
            "actions_by_policy": actions_by(frames, "policy_id"), "facts": sum(f["facts"] is not None for f in frames),
            "timeouts": sum(bool(f["timed_out"]) for f in frames),
            "duplicate_actions": sum(max(0, f["actions_for_frame"] - 1) for f in frames),
            "action_wait_p50_s": waits[len(waits) // 2] if waits else None,
            "wall_s": seconds, "frames_per_s": len(frames) / seconds if seconds > 0 else None}


def run_settings(config: ReplayConfig, plans: list[BagPlan]) -> dict:
    """What decides a run's record (``run.json``): a resumed run must be played with the same."""
    return {"bags": [plan.name for plan in plans], "mode": config.mode,
            "rate": config.rate if config.mode == "realtime" else None, "camera": config.camera,
            "camera_topic": config.camera_topic, "task_topic": config.task_topic,
            "remaps": dict(sorted(config.remaps.items())), "max_frames": config.max_frames,
            "wait_facts": config.wait_facts, "storage": config.storage}


def replay(config: ReplayConfig) -> ReplayResult:
    """Replay the selected bags (see module docstring); raises ValueError/FileNotFoundError/FileExistsError/
    TimeoutError. Every bag and option is checked before the first message goes out. With ``out``, each finished
    bag is journalled (:mod:`offline.replay_run`), so ``resume`` can finish an interrupted run."""
    from tqdm import tqdm

    if config.mode not in ("lockstep", "realtime"):
        raise ValueError(f"mode must be lockstep or realtime, not {config.mode!r}")
    if config.rate <= 0:
        raise ValueError("--rate must be > 0")
    if config.max_frames is not None and config.max_frames < 1:
        raise ValueError("--max-frames must be >= 1")
    if min(config.action_timeout_s, config.startup_timeout_s, config.discovery_timeout_s) <= 0:
        raise ValueError("the timeouts must be > 0")
    if config.rate != 1.0 and config.mode != "realtime":
        raise ValueError(f"--rate {config.rate:g} applies to --mode realtime only (lockstep waits for each action)")
    if config.resume and config.out is None:
        raise ValueError("--resume needs --out (the run to finish)")
    _check_live_topics(config)
    plans = [plan_bag(name, path, config) for name, path in select_bags(config)]
    run = RunFolder(None)
    if config.out is not None:
        config.out = Path(config.out)
        if config.resume and not (config.out / "run.json").is_file():
            print(f"replay: --resume: {config.out} holds no run yet; starting one", file=sys.stderr)
        opened = RunFolder.resume if config.resume else RunFolder.start
        run = opened(config.out, run_settings(config, plans))
        if run.bags_done:
            print(f"replay: resuming {config.out}: {len(run.bags_done)} of {len(plans)} bags already recorded",
                  file=sys.stderr)
    todo = plans[len(run.bags_done):]
    recorder = _Recorder(config.storage)
    player: _Player | None = None
    # on a terminal a bar; in a log (ros2 launch, a batch job) a line per bag, which a \r-updated bar is not
    bar_shown = config.progress and sys.stderr.isatty()
    bar = tqdm(total=len(plans), initial=len(plans) - len(todo), unit="bag", desc=f"replay {config.mode}",
               disable=not bar_shown, file=sys.stderr)
    first_frame_pending = True  # until this invocation hears an action, the next one may wait for models to load
    timeouts = sum(bool(f["timed_out"]) for f in run.frames)  # those of a resumed run's recorded bags
    try:
        player = _Player(recorder)  # inside the try: a Ctrl-C while it starts still closes what it opened
        for plan in todo:
            started = time.monotonic()
            bag_frames, next_free_ns = _replay_bag(player, recorder, plan, config, first_frame_pending,
                                                   run.next_free_ns)
            first_frame_pending = first_frame_pending and all(f["timed_out"] for f in bag_frames)
            run.bag_done(plan.name, bag_frames, next_free_ns, time.monotonic() - started)
            timeouts += sum(bool(f["timed_out"]) for f in bag_frames)
            bar.update()
            bar.set_postfix(frames=len(run.frames), timeouts=timeouts, refresh=False)
            if config.progress and not bar_shown:
                print(f"replay: {len(run.bags_done)}/{len(plans)} bags ({plan.name}: {len(bag_frames)} frames; "
                      f"{len(run.frames)} frames, {timeouts} timeouts in all)", file=sys.stderr, flush=True)
    finally:
        bar.close()
        recorder.close()  # a bag cut short (error, Ctrl-C): its partial record, which --resume replaces
        if player is not None:
            player.close()
    summary = _summary(run.frames, config, [plan.name for plan in plans], run.seconds)
    with recorder.lock:
        summary["nodes"] = dict(sorted(recorder.node_settings.items()))
    run.write_summary(summary)
    return ReplayResult(frames=run.frames, summary=summary, out=config.out)


def _check_live_topics(config: ReplayConfig) -> None:
    """Refuse a live topic name ROS would refuse, before anything is published: rclpy raises only when the
    publisher is made, which for a ``--remap`` target is after the bag's first frame went out and was answered."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    named = [("--camera-topic ", config.camera_topic), ("--task-topic ", config.task_topic)]
    named += [(f"--remap {source}:=", target) for source, target in config.remaps.items()]
    for given_as, name in named:
        try:
            validate_topic_name(name)
        except InvalidTopicNameException as exc:
            why = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
            raise ValueError(f"{given_as}{name!r} is not a valid ROS topic name: {why}") from None


def _parse_remap(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"--remap expects FROM:=TO, got {text!r}")
    return source, target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("exit status: 0 done; 1 done, but some lockstep frames timed out (recorded per frame); 2 bad "
                     "input, or nothing answered the first frame; 130 interrupted (--resume finishes the run)")
    parser.add_argument("bags", nargs="*", type=Path, help="rosbag2 folders to replay, in order")
    parser.add_argument("--manifest", type=Path, default=None, help="a conversion folder or its manifest.jsonl")
    parser.add_argument("--split", default=None, help="manifest selection: only this split")
    parser.add_argument("--episodes", default=None, metavar="START:STOP",
                        help="manifest selection: episode indices within the split (as in the bag names), a range "
                             "or one index")
    parser.add_argument("--out", type=Path, default=None,
                        help="record folder (records/, frames.jsonl, summary.json); one per run: a folder that "
                             "already holds a replay is refused, unless --resume")
    parser.add_argument("--resume", action="store_true",
                        help="finish the interrupted run in --out: the bags it recorded are kept, the rest played "
                             "(same bags and options as it was started with)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep",
                        help="lockstep: frame t, then wait for its action (a deterministic record; default); "
                             "realtime: at the bag's timing, sped up by --rate")
    parser.add_argument("--rate", type=positive_float, default=1.0,
                        help="realtime: speed factor, the bag's time divided by it (2: twice as fast; default 1)")
    parser.add_argument("--camera", default="image_0",
                        help="bag camera that feeds /camera/image_raw[/compressed] (default image_0)")
    parser.add_argument("--remap", action="append", type=_parse_remap, default=[], metavar="FROM:=TO",
                        help="also publish bag topic FROM on live topic TO (repeatable)")
    parser.add_argument("--camera-topic", default=LIVE_CAMERA,
                        help=f"live camera topic the nodes listen on (default {LIVE_CAMERA}; compressed: +/compressed)")
    parser.add_argument("--task-topic", default=LIVE_TASK, help=f"live task topic (default {LIVE_TASK})")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="frames per bag")
    parser.add_argument("--wait-facts", action="store_true",
                        help="lockstep: also wait for the frame's facts (when the VLA does not wait for them)")
    parser.add_argument("--action-timeout", type=positive_float, default=ReplayConfig.action_timeout_s,
                        help="lockstep: seconds to wait for a frame's action; a timeout is recorded and the replay "
                             f"goes on (default {ReplayConfig.action_timeout_s:g})")
    parser.add_argument("--startup-timeout", type=positive_float, default=ReplayConfig.startup_timeout_s,
                        help="lockstep: the same for the first frame, while the models may still be loading; "
                             "nothing by then ends the replay with what the nodes' /diagnostics say "
                             f"(default {ReplayConfig.startup_timeout_s:g})")
    parser.add_argument("--discovery-timeout", type=positive_float, default=ReplayConfig.discovery_timeout_s,
                        help="seconds to wait for a node to subscribe to the camera topic "
                             f"(default {ReplayConfig.discovery_timeout_s:g})")


def run(args: argparse.Namespace) -> int:
    config = ReplayConfig(bags=list(args.bags), manifest=args.manifest, split=args.split, episodes=args.episodes,
                          out=args.out, mode=args.mode, rate=args.rate, camera=args.camera,
                          camera_topic=args.camera_topic, task_topic=args.task_topic,
                          remaps=dict(args.remap), max_frames=args.max_frames, wait_facts=args.wait_facts,
                          action_timeout_s=args.action_timeout, startup_timeout_s=args.startup_timeout,
                          discovery_timeout_s=args.discovery_timeout, resume=args.resume,
                          progress=not args.no_progress)
    try:
        result = replay(config)
    except (OSError, ValueError) as exc:  # TimeoutError, FileExistsError, FileNotFoundError are OSErrors
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = (f"; the bags finished so far are recorded in {config.out}: the same command with --resume "
                "finishes the run") if config.out is not None else ""
        print(f"replay: interrupted{kept}", file=sys.stderr)
        return 130
    s = result.summary
    rate = f"{s['frames_per_s']:.2f} frames/s" if s["frames_per_s"] is not None else "no frames"
    print(f"replayed {len(s['bags'])} bag(s), {s['frames']} frames ({s['mode']}): {s['actions']} actions, "
          f"{s['facts']} facts, {s['timeouts']} timeouts, {rate}")
    if result.out:
        print(f"record: {result.out}/records, per frame: {result.out}/frames.jsonl")
    if s["mode"] == "realtime" and s["frames"] and not s["actions"]:
        print("replay: no action in real time: a vla with require_frame_facts acts on a frame only if its facts come "
              "before the next frame replaces it; use lockstep, a lower --rate, or require_frame_facts false",
              file=sys.stderr)
    return 0 if s["timeouts"] == 0 else 1
