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
from pathlib import Path
from typing import Any

RUN_FILES = ("run.json", "bags.jsonl", "frames.jsonl", "summary.json", "records")


@dataclasses.dataclass
class RunFolder:
    """An ``--out`` folder opened for writing, with what earlier (interrupted) invocations finished."""

    out: Path
    bags_done: list[str] = dataclasses.field(default_factory=list)
    frames: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # of the finished bags, in order
    next_free_ns: int | None = None  # first stamp free after the last finished bag (None: none finished)
    seconds: float = 0.0  # wall time of the finished bags

    @classmethod
    def start(cls, out: Path, settings: dict[str, Any]) -> RunFolder:
        """A new run in ``out``; one that already holds a replay is refused (runs never mix, none is overwritten)."""
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file, not a folder")
        taken = [name for name in RUN_FILES if (out / name).is_file() or any((out / name).glob("*"))]
        if taken:
            raise FileExistsError(f"--out {out} already holds a replay ({', '.join(taken)}): give each run a new "
                                  "folder, or --resume to finish an interrupted one")
        (out / "records").mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return cls(out)

    @classmethod
    def resume(cls, out: Path, settings: dict[str, Any]) -> RunFolder:
        """The run in ``out`` to be finished with ``settings`` (a new run when ``out`` holds none)."""
        run_file = out / "run.json"
        if not run_file.is_file():
            return cls.start(out, settings)
        recorded = _read_json(run_file)
        differ = sorted(key for key in set(settings) | set(recorded) if settings.get(key) != recorded.get(key))
        if differ:
            raise ValueError(f"--resume: {out} holds a replay with other settings ({', '.join(differ)} differ): "
                             "resume with the options it was started with, or give a new folder")
        journal = [_parse_line(line, out / "bags.jsonl", ("bag", "next_free_ns", "seconds"))
                   for line in _lines(out / "bags.jsonl")]
        done = [str(entry.get("bag")) for entry in journal]
        if done != settings["bags"][:len(done)]:
            raise ValueError(f"--resume: {out / 'bags.jsonl'} does not list the first bags of the run in order")
        folder = cls(out, bags_done=done, next_free_ns=journal[-1]["next_free_ns"] if journal else None,
                     seconds=float(sum(entry["seconds"] for entry in journal)))
        folder.frames = [frame for line in _lines(out / "frames.jsonl")
                         if (frame := _parse_line(line, out / "frames.jsonl", ("bag",)))["bag"] in done]
        _write_lines(out / "frames.jsonl", folder.frames)  # frames of a bag whose journal line never came go
        for record in (out / "records").iterdir() if (out / "records").is_dir() else ():
            if record.name not in done:
                shutil.rmtree(record)  # the interrupted bag's partial record: that bag is played again
        (out / "records").mkdir(exist_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
        return folder

    def bag_done(self, name: str, frames: list[dict[str, Any]], next_free_ns: int | None, seconds: float) -> None:
        """Journal a finished bag: its frames first, then the line that makes them count."""
        with (self.out / "frames.jsonl").open("a", encoding="utf-8") as handle:
            for entry in frames:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        with (self.out / "bags.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"bag": name, "frames": len(frames), "next_free_ns": next_free_ns,
                                     "seconds": seconds}, sort_keys=True) + "\n")
        self.bags_done.append(name)
        self.frames += frames
        self.next_free_ns, self.seconds = next_free_ns, self.seconds + seconds

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--resume: {path} is damaged ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--resume: {path} is damaged (not a JSON object)")
    return value


def _parse_line(line: str, path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--resume: {path} has a damaged line ({exc}): {line[:80]!r}") from None
    if not isinstance(value, dict) or any(key not in value for key in required):
        raise ValueError(f"--resume: {path} has a line that is not a record of this run: {line[:80]!r}")
    return value


def _write_lines(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``entries`` as JSON lines, atomically (a crash leaves the old file or the new one)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")
    partial.replace(path)
