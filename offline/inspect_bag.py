"""``task-supplementor inspect BAG``: what is in a bag, and a contact sheet to look at it.

Works on converted bags (``/bridge/...``, ground-truth actions) and on replay records (live topic names, facts and
predicted actions). The contact sheet samples frames of one camera evenly and writes under each the task, the
facts' supplement and the actions whose ``header.stamp`` equals the frame's, with an arrow for each action's
(dx, dy) so ground truth and prediction can be compared at a glance.

Python API: ``inspect_bag(path, InspectConfig(...)) -> BagReport``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from pathlib import Path

import numpy as np

from offline.bag_io import ACTION_TYPE, FACTS_TYPE, IMAGE_TYPES, TASK_TYPE, bag_topics, read_bag, stamp_ns
from task_supplementor.cli_args import positive_int

TILE = 256
PANEL_HEIGHT = 120  # at least, under each tile; more when a caption needs it
CAPTION_LINE_PX = 13  # the default font at size 11, plus the line spacing
ARROW_PX_PER_M = 1500.0  # 2 cm of motion -> 30 px
PREFERRED_CAMERAS = ("/camera/image_raw/compressed", "/camera/image_raw", "/bridge/image_0/compressed",
                     "/bridge/image_0/image_raw")
ACTION_COLOURS = {"ground_truth": (40, 200, 40)}  # predictions: red
PREDICTION_COLOUR = (230, 40, 40)


@dataclasses.dataclass
class InspectConfig:
    contact_sheet: Path | None = None  # PNG to write; None: no picture
    frames: int = 12
    columns: int = 4
    camera_topic: str | None = None  # default: the live camera, else /bridge/image_0, else the first image topic


@dataclasses.dataclass
class TopicStats:
    topic: str
    msgtype: str
    count: int
    first_s: float | None = None
    last_s: float | None = None


@dataclasses.dataclass
class BagReport:
    path: Path
    topics: list[TopicStats]
    duration_s: float
    tasks: list[str]
    contact_sheet: Path | None = None

    def text(self) -> str:
        lines = [f"bag: {self.path}", f"duration: {self.duration_s:.2f} s", "topics:"]
        width = max((len(t.topic) for t in self.topics), default=5)
        for t in self.topics:
            span = f"{t.last_s - t.first_s:7.2f} s" if t.first_s is not None else "      -  "
            lines.append(f"  {t.topic:<{width}}  {t.count:6d} msgs  {span}  {t.msgtype}")
        lines.append("tasks: " + ("; ".join(repr(task) for task in self.tasks) if self.tasks else "(none)"))
        if self.contact_sheet:
            lines.append(f"contact sheet: {self.contact_sheet}")
        return "\n".join(lines)


def _pick_camera(types: dict[str, tuple[str, int]], wanted: str | None) -> str | None:
    if wanted:
        images = ", ".join(sorted(t for t, (msgtype, _) in types.items() if msgtype in IMAGE_TYPES)) or "none"
        if wanted not in types:
            raise ValueError(f"camera topic {wanted!r} not in the bag (image topics: {images})")
        if types[wanted][0] not in IMAGE_TYPES:
            raise ValueError(f"{wanted} holds {types[wanted][0]}, not images (image topics: {images})")
        return wanted
    for topic in PREFERRED_CAMERAS:
        if topic in types:
            return topic
    return next((topic for topic, (msgtype, _) in sorted(types.items()) if msgtype in IMAGE_TYPES), None)


def inspect_bag(path: Path, config: InspectConfig | None = None) -> BagReport:
    """Read the whole bag once; raises ValueError (BagReadError included) for bad input before drawing."""
    config = config or InspectConfig()
    if config.contact_sheet is not None and (config.frames < 1 or config.columns < 1):
        raise ValueError(f"a contact sheet needs --frames >= 1 and columns >= 1 (got {config.frames}, "
                         f"{config.columns})")
    if config.contact_sheet is not None:
        _check_sheet_path(Path(config.contact_sheet))
    path = Path(path)
    types = bag_topics(path)
    camera = _pick_camera(types, config.camera_topic)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    tasks: list[str] = []
    frames: list = []  # (log_ns, msg, msgtype)
    actions: dict[int, list] = {}
    facts: dict[int, list] = {}
    task_log: list[tuple[int, str]] = []
    for item in read_bag(path):
        first.setdefault(item.topic, item.log_ns)
        last[item.topic] = item.log_ns
        if item.msgtype == TASK_TYPE:
            task_log.append((item.log_ns, item.msg.data))
            if item.msg.data not in tasks:
                tasks.append(item.msg.data)
        elif item.topic == camera:
            frames.append((item.log_ns, item.msg, item.msgtype))
        elif item.msgtype == ACTION_TYPE:
            actions.setdefault(stamp_ns(item.msg), []).append(item.msg)
        elif item.msgtype == FACTS_TYPE:
            facts.setdefault(stamp_ns(item.msg), []).append(item.msg)
    stats = [TopicStats(topic, msgtype, count, first.get(topic, 0) / 1e9 if topic in first else None,
                        last.get(topic, 0) / 1e9 if topic in last else None)
             for topic, (msgtype, count) in sorted(types.items())]
    duration = (max(last.values()) - min(first.values())) / 1e9 if first else 0.0
    report = BagReport(path=path, topics=stats, duration_s=duration, tasks=tasks)
    if config.contact_sheet is not None:
        if not frames:
            raise ValueError(f"{path} has no image topic to draw a contact sheet from")
        report.contact_sheet = _contact_sheet(frames, task_log, actions, facts, config)
    return report


def _check_sheet_path(sheet: Path) -> None:
    """Refuse a contact-sheet path that cannot be written, before the bag is read (PIL's and the OS's own words
    for these name neither the option nor the problem)."""
    from PIL import Image

    if sheet.is_dir():
        raise ValueError(f"--contact-sheet {sheet} is a folder; give a file name, e.g. {sheet / 'sheet.png'}")
    if sheet.suffix.lower() not in Image.registered_extensions():
        raise ValueError(f"--contact-sheet {sheet}: {sheet.suffix or 'no'} extension is not an image format "
                         "(e.g. .png)")
    folder = next((p for p in sheet.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ValueError(f"--contact-sheet {sheet}: {folder} is a file, not a folder")


def _task_at(task_log: list[tuple[int, str]], log_ns: int) -> str:
    current = ""
    for when, text in task_log:
        if when > log_ns:
            break
        current = text
    return current


def _decode(msg, msgtype: str) -> np.ndarray:
    from task_supplementor.ros.images import compressed_imgmsg_to_rgb, imgmsg_to_rgb

    return compressed_imgmsg_to_rgb(msg) if msgtype.endswith("CompressedImage") else imgmsg_to_rgb(msg)


def _contact_sheet(frames, task_log, actions, facts, config: InspectConfig) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    picks = np.unique(np.linspace(0, len(frames) - 1, min(config.frames, len(frames))).round().astype(int))
    columns = min(config.columns, len(picks))
    rows = -(-len(picks) // columns)
    font = ImageFont.load_default(size=11)
    tiles, captions = [], []
    for index in picks:
        log_ns, msg, msgtype = frames[index]
        stamp = stamp_ns(msg)
        tile = Image.fromarray(_decode(msg, msgtype)).resize((TILE, TILE))
        draw = ImageDraw.Draw(tile)
        lines = [f"frame {index}  t={(stamp - stamp_ns(frames[0][1])) / 1e9:.1f} s",
                 f"task: {_task_at(task_log, log_ns)}"]
        for action in actions.get(stamp, []):
            colour = ACTION_COLOURS.get(action.prompt_mode, PREDICTION_COLOUR)
            dx, dy = action.delta_xyz.x, action.delta_xyz.y
            centre = (TILE // 2, TILE // 2)
            # Image up = robot forward (+x), image left = robot left (+y), as seen by the main camera.
            tip = (centre[0] - dy * ARROW_PX_PER_M, centre[1] - dx * ARROW_PX_PER_M)
            draw.line([centre, tip], fill=colour, width=3)
            draw.ellipse([tip[0] - 4, tip[1] - 4, tip[0] + 4, tip[1] + 4], fill=colour)
            who = ("ground truth" if action.prompt_mode == "ground_truth"
                   else f"action (prompt {action.prompt_mode or '?'})")
            lines.append(f"{who}: xyz=({action.delta_xyz.x:+.3f},{action.delta_xyz.y:+.3f},"
                         f"{action.delta_xyz.z:+.3f}) grip={action.gripper:.2f}")
        for fact in facts.get(stamp, []):
            verdict = "" if fact.valid else f" (invalid: {', '.join(fact.violations) or '?'})"
            lines.append(f"facts{verdict}: {fact.supplement}")
        tiles.append(tile)
        captions.append("\n".join(wrapped for line in lines for wrapped in textwrap.wrap(line, 44) or [""]))
    # every caption whole: the panel under the tiles is as tall as the longest one
    panel = max(PANEL_HEIGHT, 6 + max(c.count("\n") + 1 for c in captions) * CAPTION_LINE_PX)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + panel)), "white")
    for n, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = (n % columns) * TILE, (n // columns) * (TILE + panel)
        sheet.paste(tile, (x, y))
        ImageDraw.Draw(sheet).multiline_text((x + 4, y + TILE + 3), caption, fill="black", font=font, spacing=1)
    config.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(config.contact_sheet)
    return config.contact_sheet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (converted episode or replay record)")
    parser.add_argument("--contact-sheet", type=Path, default=None, metavar="PNG", help="write a contact sheet")
    parser.add_argument("--frames", type=positive_int, default=InspectConfig.frames,
                        help="frames on the contact sheet (default %(default)s)")
    parser.add_argument("--camera-topic", default=None, help="image topic for the contact sheet")


def run(args: argparse.Namespace) -> int:
    try:
        report = inspect_bag(args.bag, InspectConfig(contact_sheet=args.contact_sheet, frames=args.frames,
                                                     camera_topic=args.camera_topic))
    except (OSError, ValueError) as exc:  # a bag rosbags cannot read is a ValueError (BagReadError)
        print(f"inspect: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 0
