"""The record folder of one replay run (``--out``): what it holds, and finishing a run that was interrupted.

A lockstep replay of a real split through real models takes hours, so a run that dies (a crash, a reboot, Ctrl-C)
must be finishable without redoing what is recorded. The folder therefore journals its progress bag by bag:

- ``run.json``: the settings that decide the record (the bags' names, in order, and how they are played); a resume
  must use the same ones, else records of two different runs would be mixed under one summary.
- ``frames.jsonl``: one line per published frame, appended when its bag is finished.
- ``bags.jsonl``: one line per finished bag, appended after its frames: name, frame count, wall time, and the first
  stamp free after it. That stamp lets a resumed run publish the next bag with exactly the stamps an uninterrupted
  run would have used (stamps seed the placeholder prompts, so they must repeat).
- ``records/<bag>/``: the record bag of each bag; ``summary.json`` once the run is complete.

A resume keeps the journalled bags, drops whatever an interrupted bag left (its record folder, and its frames if
the journal line did not follow them), and goes on with the next bag.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from offline.synced_files import append_synced, json_lines, write_atomically

RUN_FILES = ("run.json", "bags.jsonl", "frames.jsonl", "summary.json", "records")


@dataclasses.dataclass
class RunFolder:
    """A run's progress: what earlier (interrupted) invocations finished and what this one adds, journalled into the
    ``--out`` folder (``out`` None: a run without one, kept in memory only)."""

    out: Path | None
    bags_done: list[str] = dataclasses.field(default_factory=list)
    frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # of the finished bags, in order
    next_free_ns: int | None = None  # first stamp free after the last finished bag (None: none finished)
    seconds: float = 0.0  # wall time of the finished bags

    @classmethod
    def start(cls, out: Path, settings: dict[str, Any]) -> RunFolder:
        """A new run in ``out``; one that already holds a replay is refused (runs never mix, none is overwritten).

        A ``run.json`` alone (a run that failed before its first bag finished, e.g. no node was running) holds no
        record: the folder is reused, so rerunning the same command works."""
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file, not a folder")
        taken = [name for name in RUN_FILES if name != "run.json" and _holds(out / name)]
        if taken:
            raise FileExistsError(f"--out {out} already holds a replay ({', '.join(taken)}): give each run a new "
                                  "folder, or --resume to finish an interrupted one")
        (out / "records").mkdir(parents=True, exist_ok=True)
        write_atomically(out / "run.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return cls(out)

    @classmethod
    def resume(cls, out: Path, settings: dict[str, Any]) -> RunFolder:
        """The run in ``out`` to be finished with ``settings`` (a new run when ``out`` holds none). Everything is
        checked before anything in the folder changes."""
        run_file = out / "run.json"
        if not run_file.is_file():
            if any(_holds(out / name) for name in RUN_FILES):
                raise ValueError(f"--resume: {out} holds a replay without run.json (made before replays could be "
                                 "resumed, or not a replay's folder): it cannot be resumed; give a new folder")
            return cls.start(out, settings)
        recorded = _read_json(run_file)
        differ = sorted(key for key in set(settings) | set(recorded) if settings.get(key) != recorded.get(key))
        if differ:
            raise ValueError(f"--resume: {out} holds a replay with other settings ({', '.join(differ)} differ): "
                             "resume with the options it was started with, or give a new folder")
        journal = _journal_lines(out / "bags.jsonl", ("bag", "frames", "next_free_ns", "seconds"))
        done = [str(entry["bag"]) for entry in journal]
        if done != settings["bags"][:len(done)]:
            raise ValueError(f"--resume: {out / 'bags.jsonl'} does not list the first bags of the run in order")
        # the journalled bags' frames come first, in journal order; what follows is the unfinished bag's
        expected = [entry["bag"] for entry in journal for _ in range(int(entry["frames"]))]
        frames = _journal_lines(out / "frames.jsonl", ("bag",), limit=len(expected))
        if [frame["bag"] for frame in frames] != expected:
            have, want = Counter(frame["bag"] for frame in frames), Counter(expected)
            short = sorted(bag for bag in want if have[bag] != want[bag])
            raise ValueError(f"--resume: {out / 'frames.jsonl'} does not hold the frames journalled for "
                             f"{', '.join(short) or 'the bags'} in order: the folder was damaged; give a new folder")
        folder = cls(out, bags_done=done, frames=frames, next_free_ns=journal[-1]["next_free_ns"] if journal else None,
                     seconds=float(sum(entry["seconds"] for entry in journal)))
        # now the folder is brought to exactly the journalled bags (each step atomic or repeatable)
        for name, entries in (("bags.jsonl", journal), ("frames.jsonl", frames)):
            if entries or (out / name).is_file():
                write_atomically(out / name, json_lines(entries))
        (out / "records").mkdir(exist_ok=True)
        for record in (out / "records").iterdir():
            if record.is_dir() and record.name not in done:
                shutil.rmtree(record)  # the interrupted bag's partial record: that bag is played again
        (out / "summary.json").unlink(missing_ok=True)
        return folder

    def bag_done(self, name: str, frames: list[dict[str, Any]], next_free_ns: int | None, seconds: float) -> None:
        """Journal a finished bag: its frames first, flushed to disk (fsync), then the line that makes them count, so
        a journalled bag always has its frames before it in ``frames.jsonl``."""
        if self.out is not None:
            append_synced(self.out / "frames.jsonl", json_lines(frames))
            append_synced(self.out / "bags.jsonl", json_lines([{"bag": name, "frames": len(frames),
                                                                "next_free_ns": next_free_ns, "seconds": seconds}]))
        self.bags_done.append(name)
        self.frames += frames
        self.next_free_ns, self.seconds = next_free_ns, self.seconds + seconds

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.out is not None:
            write_atomically(self.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _holds(path: Path) -> bool:
    """A run file with something in it, or a run folder with something in it."""
    return (path.is_file() and path.stat().st_size > 0) or (path.is_dir() and any(path.iterdir()))


def _journal_lines(path: Path, required: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (the first ``limit`` of them). What follows the last newline (a line the process
    died writing, or the zero bytes a crash can leave) is left out: it belongs to a bag that is played again, as do
    lines past ``limit``. Any other bad line is damage."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.rpartition("\n")[0].split("\n"), 1):
        if limit is not None and len(entries) >= limit:
            break
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--resume: {path} line {number} is damaged ({exc}): {line[:80]!r}") from None
        if not isinstance(value, dict) or any(key not in value for key in required):
            raise ValueError(f"--resume: {path} line {number} is not a record of this run: {line[:80]!r}")
        entries.append(value)
    return entries


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {path} is damaged ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--resume: {path} is damaged (not a JSON object)")
    return value
