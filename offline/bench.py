"""``task-supplementor bench offline``: conversion and replay throughput on this machine (CPU only; no model).

Conversion: a synthetic BridgeData v2 (real TFDS files, 256x256 JPEGs) -> sqlite3 and mcap bags, with 1 and
``--workers`` processes; frames/s counts steps (each step carries every present camera), images/s counts JPEGs.
Replay: the converted bags published in realtime mode at a large rate factor into a local subscriber, i.e. the
ceiling of the replayer itself, timed over the publishing only (lockstep speed is the nodes' speed and belongs to
their benchmarks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from task_supplementor.cli_args import positive_float, positive_int


def _convert_row(data_dir: Path, out: Path, storage: str, workers: int) -> tuple[str, float, float, float]:
    from offline.convert import ConvertConfig, convert

    started = time.perf_counter()
    result = convert(ConvertConfig(data_dir=data_dir, out=out, storage=storage, workers=workers, progress=False))
    seconds = time.perf_counter() - started
    steps = sum(r.steps for r in result.converted)
    images = sum(r.steps * len(r.cameras) for r in result.converted)
    return (f"convert ({storage}, {workers} worker{'s' if workers > 1 else ''})", seconds, steps / seconds,
            images / seconds)


def _replay_row(manifest_dir: Path, rate: float) -> tuple[str, float, float, float]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage

    from offline.replay import ReplayConfig, replay
    from task_supplementor.ros.qos import SENSOR_QOS

    received = []
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_camera_listener", context=context)
    node.create_subscription(CompressedImage, "/camera/image_raw/compressed", lambda m: received.append(1),
                             SENSOR_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = replay(ReplayConfig(manifest=manifest_dir, mode="realtime", rate=rate, drain_s=0.0))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    # the publishing itself, bag by bag: first to last frame published (the run's wall time also holds each bag's
    # subscriber discovery and a fixed settle after it, which say nothing about the replayer's rate)
    by_bag: dict[str, list[int]] = {}
    for frame in result.frames:
        by_bag.setdefault(frame["bag"], []).append(frame["timing"]["published_ns"])
    seconds = sum(max(stamps) - min(stamps) for stamps in by_bag.values()) / 1e9
    intervals = sum(len(stamps) - 1 for stamps in by_bag.values())
    rate_achieved = intervals / seconds
    return (f"replay realtime x{rate:g} ({len(received)}/{len(result.frames)} frames received; publishing time "
            "only)", seconds, rate_achieved, rate_achieved)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=positive_int, default=8, help="synthetic train episodes")
    parser.add_argument("--steps", type=positive_int, default=30, help="steps per episode")
    parser.add_argument("--workers", type=positive_int, default=2,
                        help="worker processes for the parallel conversion row")
    parser.add_argument("--replay-rate", type=positive_float, default=1000.0,
                        help="realtime rate factor for the replay row")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")


def run(args: argparse.Namespace) -> int:
    from offline.synthetic_bridge import MIN_STEPS, SyntheticConfig, write_synthetic_bridge
    from task_supplementor.bench import record_table

    if args.steps < MIN_STEPS or args.episodes < 1 or args.workers < 1 or not args.replay_rate > 0:
        print(f"bench offline: need --steps >= {MIN_STEPS}, --episodes >= 1, --workers >= 1 and --replay-rate > 0",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_offline_") as tmp:
        tmp = Path(tmp)
        write_synthetic_bridge(SyntheticConfig(out=tmp / "data", episodes=args.episodes, val_episodes=1,
                                               min_steps=args.steps, max_steps=args.steps))
        _convert_row(tmp / "data", tmp / "warm_up", "sqlite3", 1)  # untimed: one-time imports and caches, so
        # that no timed row pays them (the first row of a process otherwise looks ~0.3 s slower)
        rows = [_convert_row(tmp / "data", tmp / "sqlite3_1", "sqlite3", 1),
                _convert_row(tmp / "data", tmp / "mcap_1", "mcap", 1),
                _convert_row(tmp / "data", tmp / f"sqlite3_{args.workers}", "sqlite3", args.workers),
                _replay_row(tmp / "sqlite3_1", args.replay_rate)]
    table = "\n".join(["| stage | wall s | frames/s | images/s |", "|---|---:|---:|---:|"]
                      + [f"| {name} | {seconds:.2f} | {fps:.1f} | {ips:.1f} |" for name, seconds, fps, ips in rows])
    notes = (f"{args.episodes} synthetic episodes x {args.steps} steps, 256x256 JPEG cameras (2-3 present per "
             "episode). Conversion wall time includes opening the TFDS dataset (TensorFlow graph set-up, ~2 s) and, "
             "with workers, spawning the processes and importing TensorFlow in each (which dominates at this size: "
             "workers pay off only on long runs); frames/s = steps/s, images/s = JPEGs/s. Replay publishes the "
             "camera and task topics of every bag in realtime mode at the given rate factor (no nodes).")
    if args.no_record:
        print(table + "\n\n" + notes)
    else:
        record_table("Offline: conversion and replay throughput (CPU)", table, args.argv, notes)
    return 0
