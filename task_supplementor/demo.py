"""``task-supplementor demo`` (``make demo``): the main job end to end, on bundled defaults or on your own inputs.

BridgeData v2 (synthetic by default) -> rosbag2 -> both nodes started as processes (tiny random-weight models by
default) -> lockstep replay with the supplement fused into the VLA prompt -> recorded outputs -> a printed summary
and a contact sheet. Every stage is the same code a user runs by hand (make-tiny-models, make-synthetic-bridge,
convert, up, replay, inspect); finished stages are reused on a second run, so it is quick to repeat.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from task_supplementor.cli_args import positive_int
from task_supplementor.up import NodeDied, SuiteProcesses

if TYPE_CHECKING:
    from offline.replay import ReplayConfig

DEFAULT_WORK_DIR = Path("artifacts/demo")


@dataclasses.dataclass
class DemoConfig:
    work_dir: Path = DEFAULT_WORK_DIR
    data_dir: Path | None = None  # a BridgeData v2 TFDS dir; None: write the synthetic one
    split: str = "train"
    episodes: str = "0:2"  # the episode range to convert and replay
    max_frames: int | None = None  # per episode
    supplementor_checkpoint: Path | None = None  # None: the tiny random Qwen2.5-VL
    vla_checkpoint: Path | None = None  # None: the tiny random OpenVLA
    device: str = "cpu"
    prompt_mode: str = "supplement"
    # Random weights describe nothing real, so the contract marks their facts invalid; fusing them anyway shows the
    # whole path (supplement -> VLA prompt). With real checkpoints pass --valid-facts-only, as experiments do.
    fuse_invalid_facts: bool = True


def stage(number: int, text: str) -> None:
    print(f"[demo {number}/6] {text}", flush=True)


def tiny_checkpoints(work_dir: Path) -> dict[str, Path]:
    """Build (once) the tiny checkpoints in the official layouts; name -> directory."""
    from supplementor_node.make_tiny_models import ensure_tiny_models

    return ensure_tiny_models(work_dir / "tiny_models", ["qwen2_5_vl_tiny", "openvla_tiny"])


SYNTHETIC_EPISODES = {"train": 4, "val": 1}  # the demo's synthetic BridgeData v2, per split


def dataset_dir(config: DemoConfig) -> Path:
    """The BridgeData v2 directory to convert: the user's, or the synthetic one (written once)."""
    if config.data_dir is not None:
        return config.data_dir
    from offline.bridge_layout import DATASET_NAME, VERSION
    from offline.synthetic_bridge import SyntheticConfig, write_synthetic_bridge

    out = config.work_dir / "bridge_synth"
    if not (out / DATASET_NAME / VERSION / "dataset_info.json").exists():
        write_synthetic_bridge(SyntheticConfig(out=out, episodes=SYNTHETIC_EPISODES["train"],
                                               val_episodes=SYNTHETIC_EPISODES["val"], overwrite=True))
    return out


def check_selection(config: DemoConfig) -> None:
    """Refuse an episode selection that cannot work before anything is built (ValueError): a malformed range
    always, one past the end of a split when the split is the synthetic one, whose size is known."""
    from offline.convert import parse_episode_range, select_indices

    parse_episode_range(config.episodes)
    if config.data_dir is None:
        select_indices(SYNTHETIC_EPISODES[config.split], config.episodes, None, 0)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(frames: list[dict]) -> dict:
    """Frames, facts valid rate, actions and latencies from replay's per-frame records."""
    from offline.replay import actions_by

    facts = [f["facts"] for f in frames if f["facts"] is not None]
    actions = [f["action"] for f in frames if f["action"] is not None]
    timing = [f["timing"] for f in frames]
    facts_latency = [t["facts_latency_s"] for t in timing if "facts_latency_s" in t]
    action_latency = [t["action_latency_s"] for t in timing if "action_latency_s" in t]
    violations: dict[str, int] = {}
    for fact in facts:
        for rule in fact["violations"]:
            violations[rule] = violations.get(rule, 0) + 1
    return {
        "frames": len(frames),
        "facts": len(facts),
        "facts_valid_rate": (sum(f["valid"] for f in facts) / len(facts)) if facts else None,
        "violations": dict(sorted(violations.items(), key=lambda item: -item[1])),
        "actions": len(actions),
        "actions_clipped": sum(a["clipped"] for a in actions),
        "timeouts": sum(bool(f["timed_out"]) for f in frames),
        "supplementor_latency_p50_s": percentile(facts_latency, 0.5),
        "supplementor_latency_p95_s": percentile(facts_latency, 0.95),
        "action_latency_p50_s": percentile(action_latency, 0.5),
        "action_latency_p95_s": percentile(action_latency, 0.95),
        "example_supplement": next((f["supplement"] for f in sorted(facts, key=lambda f: not f["valid"])
                                    if f["supplement"]), None),
        "fused_supplements": sum(bool(a["prompt_mode"] == "supplement") for a in actions),
        "actions_by_prompt_mode": actions_by(frames, "prompt_mode"),
    }


def print_summary(summary: dict, run_dir: Path, sheet: Path | None, seconds: float) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    rate = summary["facts_valid_rate"]
    lines = [
        "",
        "=== task_supplementor demo: summary ===",
        f"frames replayed (lockstep): {summary['frames']}   timeouts: {summary['timeouts']}",
        f"facts published: {summary['facts']}   valid: {'-' if rate is None else f'{rate:.0%}'}"
        + (f"   violated rules: {summary['violations']}" if summary["violations"] else ""),
        f"actions published: {summary['actions']}   clipped to WidowX bounds: {summary['actions_clipped']}",
        f"supplementor latency p50/p95: {ms(summary['supplementor_latency_p50_s'])} / "
        f"{ms(summary['supplementor_latency_p95_s'])}",
        f"frame -> action latency p50/p95: {ms(summary['action_latency_p50_s'])} / "
        f"{ms(summary['action_latency_p95_s'])} (the vla's, waiting for the frame's facts included)",
    ]
    modes = ", ".join(f"{mode} {count}" for mode, count in summary["actions_by_prompt_mode"].items()) or "-"
    lines.append(f"actions whose prompt fused a supplement: {summary['fused_supplements']} of {summary['actions']}"
                 f"   (prompt modes acted with: {modes})")
    if summary["example_supplement"]:
        lines.append(f"example supplement: {summary['example_supplement']!r}")
    if rate == 0 and summary["facts"]:
        lines.append("(random-weight models describe nothing real: the contract rejecting every output is expected)")
    lines += [f"records: {run_dir} (frames.jsonl, summary.json, records/<bag>/ output bags, logs/)",
              f"contact sheet: {sheet}" if sheet else "contact sheet: (none: no frames recorded)",
              f"took {seconds:.0f} s"]
    print("\n".join(lines), flush=True)


def preflight_models(config: DemoConfig) -> None:
    """The checks each node makes of its device, checkpoint and unnorm key at start, made before anything runs
    (ValueError with the reason): a bad one is one line now, not nodes that never answer a replay."""
    from supplementor_node.checkpoint_check import check_checkpoint_dir
    from task_supplementor.devices import check_load_choices
    from vla_node.backends import PolicySpec, preflight
    from vla_node.backends.base import check_unnorm_key, norm_stats_of
    from vla_node.node import PARAMETERS as VLA_PARAMETERS

    check_load_choices("native", ("native",), config.device, "auto")  # one device, both models on it
    if config.vla_checkpoint is not None:
        vla = str(config.vla_checkpoint)
        preflight(PolicySpec(vla, "native", device=config.device))
        check_unnorm_key(norm_stats_of(vla), VLA_PARAMETERS["unnorm_key"].default, vla)  # what the node acts with
    if config.supplementor_checkpoint is not None:
        check_checkpoint_dir(str(config.supplementor_checkpoint))


def replay_with_watchdog(suite: SuiteProcesses, replay_config) -> object:
    """Run the lockstep replay while watching the nodes: a node that dies ends the demo at once, named."""
    from offline.replay import replay

    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = replay(replay_config)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="replay", daemon=True)
    worker.start()
    while worker.is_alive():
        suite.check_alive()
        worker.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]


def isolate_ros_graph() -> str:
    """A private DDS domain on this host for the demo's nodes and replay (inherited by the node processes).

    WHY: the demo publishes a task and camera frames; on a robot workstation those must never reach the robot's
    graph (whatever ``ROS_DOMAIN_ID`` it uses), and two demos on one machine must not answer each other's frames.
    Domain ids 1..101 are the ones every Linux port range allows.
    """
    current = os.environ.get("ROS_DOMAIN_ID", "0")
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().choice([d for d in range(1, 102) if str(d) != current]))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return os.environ["ROS_DOMAIN_ID"]


def replay_config(config: DemoConfig, bags: Path, run_dir: Path) -> ReplayConfig:
    """The lockstep replay of exactly the episodes the demo was asked for (``--episodes`` of ``--split``), not
    every episode an earlier demo left converted in the same work dir."""
    from offline.replay import ReplayConfig

    return ReplayConfig(manifest=bags, split=config.split, episodes=config.episodes, out=run_dir, mode="lockstep",
                        max_frames=config.max_frames)


def run_demo(config: DemoConfig) -> int:
    from offline.convert import ConvertConfig, convert
    from offline.inspect_bag import InspectConfig, inspect_bag

    started = time.monotonic()
    work = config.work_dir
    stage(1, "checkpoints")
    tiny = tiny_checkpoints(work) if not (config.supplementor_checkpoint and config.vla_checkpoint) else {}
    supplementor = config.supplementor_checkpoint or tiny["qwen2_5_vl_tiny"]
    vla = config.vla_checkpoint or tiny["openvla_tiny"]
    print(f"  supplementor: {supplementor}\n  vla: {vla}")

    stage(2, "BridgeData v2" + (f" from {config.data_dir}" if config.data_dir else " (synthetic, rendered tabletop)"))
    data = dataset_dir(config)

    stage(3, f"converting {config.split} episodes {config.episodes} to rosbag2 (resumable)")
    bags = work / "bags"
    converted = convert(ConvertConfig(data_dir=data, out=bags, split=config.split, episodes=config.episodes,
                                      bridge_orig=True))
    if converted.failed:
        print(f"  {len(converted.failed)} episode(s) could not be converted (see {bags}); continuing without them")

    run_dir = work / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    arguments = {"supplementor_checkpoint": str(supplementor), "vla_checkpoint": str(vla), "device": config.device,
                 "prompt_mode": config.prompt_mode, "require_frame_facts": "true", "image_compressed": "true",
                 "dry_run": "true", "fuse_invalid_facts": str(config.fuse_invalid_facts).lower(),
                 # a frame whose facts came invalid is acted on with the official prompt (and recorded so), not held:
                 # held, lockstep would wait out its action timeout on every such frame
                 "stale_facts_policy": "none"}
    domain = isolate_ros_graph()
    stage(4, f"starting supplementor + vla (prompt_mode={config.prompt_mode}, device={config.device}, "
             f"ROS_DOMAIN_ID={domain}, this host only); logs in {run_dir / 'logs'}")
    with SuiteProcesses(arguments, log_dir=run_dir / "logs") as suite:
        stage(5, "lockstep replay: frame t -> facts for t -> action for t -> frame t+1")
        result = replay_with_watchdog(suite, replay_config(config, bags, run_dir))

    stage(6, "summary and contact sheet")
    summary = summarise(result.frames)
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    records = sorted(p for p in (run_dir / "records").iterdir() if p.is_dir())
    sheet = None
    if records:
        sheet = inspect_bag(records[0], InspectConfig(contact_sheet=run_dir / "contact_sheet.png")).contact_sheet
    print_summary(summary, run_dir, sheet, time.monotonic() - started)
    return 0 if summary["actions"] > 0 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--work-dir", type=Path, default=defaults.work_dir,
                        help=f"where everything goes (default {defaults.work_dir}); finished stages are reused")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="real BridgeData v2: the TFDS data dir holding bridge_dataset/1.0.0 (or bridge_orig)")
    parser.add_argument("--split", default=defaults.split, choices=tuple(SYNTHETIC_EPISODES),
                        help=f"BridgeData v2 split to convert and replay (default {defaults.split})")
    parser.add_argument("--episodes", default=defaults.episodes,
                        help="episodes of --split to convert and replay: START:STOP or one index (default "
                             f"{defaults.episodes}; the synthetic data has {SYNTHETIC_EPISODES['train']} train and "
                             f"{SYNTHETIC_EPISODES['val']} val episodes)")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="frames per episode (default: all)")
    parser.add_argument("--supplementor-checkpoint", type=Path, default=None,
                        help="a Qwen2.5-VL checkpoint dir (default: the tiny random one)")
    parser.add_argument("--vla-checkpoint", type=Path, default=None,
                        help="an openvla/openvla-7b checkpoint dir (default: the tiny random one)")
    parser.add_argument("--device", default=defaults.device, help="torch device for both models (cpu, cuda, ...)")
    parser.add_argument("--prompt-mode", default=defaults.prompt_mode, choices=("none", "supplement", "placeholder"))
    parser.add_argument("--valid-facts-only", action="store_true",
                        help="fuse only facts the contract marked valid (default: fuse every parsed supplement, "
                             "because the tiny random models' facts are rarely valid)")


def run(args: argparse.Namespace) -> int:
    config = DemoConfig(work_dir=args.work_dir, data_dir=args.data_dir, split=args.split, episodes=args.episodes,
                        max_frames=args.max_frames, supplementor_checkpoint=args.supplementor_checkpoint,
                        vla_checkpoint=args.vla_checkpoint, device=args.device, prompt_mode=args.prompt_mode,
                        fuse_invalid_facts=not args.valid_facts_only)
    for label, path in (("--data-dir", config.data_dir), ("--supplementor-checkpoint", config.supplementor_checkpoint),
                        ("--vla-checkpoint", config.vla_checkpoint)):
        if path is not None and not path.exists():
            print(f"task-supplementor demo: {label} {path} does not exist", file=sys.stderr)
            return 2
    try:
        check_selection(config)
        preflight_models(config)
    except ValueError as error:
        print(f"task-supplementor demo: {error}", file=sys.stderr)
        return 2
    try:
        return run_demo(config)
    except NodeDied as died:
        print(f"task-supplementor demo: {died}; see its log under {config.work_dir / 'runs'}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, TimeoutError) as error:
        print(f"task-supplementor demo: {error}", file=sys.stderr)
        return 1
