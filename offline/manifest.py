"""The conversion manifest: ``OUT/manifest.jsonl``, an append-only journal beside the bags.

Why a journal: a conversion of 60k episodes can be killed at any moment. Each finished bag is recorded by one
appended, fsynced line, so a rerun knows exactly what is done; a torn last line (killed mid-write) is dropped.
Line kinds: ``settings`` (first line: what every bag in this folder was made with, including whether the
bridge_orig conventions were applied), ``episode`` (one finished bag), ``failed`` (an episode that could not be
read; retried by a rerun). For one episode name the latest line wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

MANIFEST_NAME = "manifest.jsonl"
SETTINGS_KEYS = ("dataset", "storage", "image_format", "bridge_orig", "cameras")  # must match to resume


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One converted episode (the manifest's ``episode`` line)."""

    name: str  # {split}_{index:06d}; the bag folder name
    split: str
    index: int  # position in the split
    episode_id: int  # episode_metadata/episode_id
    source: str  # episode_metadata/file_path (the raw release's trajectory path)
    task: str
    steps: int  # frames per camera in the bag
    cameras: list[str]
    bag: str  # bag folder, relative to the manifest's folder
    checksum: str  # sha256 over the bag folder's files (names and bytes)


@dataclasses.dataclass(frozen=True)
class FailedRecord:
    name: str
    split: str
    index: int
    reason: str


class Manifest:
    """The journal of one output folder."""

    def __init__(self, out_dir: Path, settings: dict, episodes: dict[str, EpisodeRecord],
                 failed: dict[str, FailedRecord]):
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.episodes = episodes
        self.failed = failed

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @classmethod
    def open(cls, out_dir: Path, settings: dict) -> Manifest:
        """Load the journal of ``out_dir`` (or start one); refuses to mix bags made with other settings."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / MANIFEST_NAME).exists():
            manifest = cls(out_dir, settings, {}, {})
            manifest._append({"kind": "settings", **settings})
            return manifest
        manifest = cls.load(out_dir, repair=True)
        clashes = [f"{key}: folder has {manifest.settings.get(key)!r}, asked {settings.get(key)!r}"
                   for key in SETTINGS_KEYS if manifest.settings.get(key) != settings.get(key)]
        if clashes:
            raise ValueError(f"{out_dir} holds bags converted with other settings ({'; '.join(clashes)}); "
                             "use another --out or the same options")
        return manifest

    @classmethod
    def load(cls, out_dir_or_file: Path, repair: bool = False) -> Manifest:
        """Read a manifest (folder or the .jsonl itself). ``repair`` cuts a torn last line off the file."""
        path = Path(out_dir_or_file)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} at {path}: convert first (task-supplementor convert)")
        raw = path.read_bytes()
        settings: dict = {}
        episodes: dict[str, EpisodeRecord] = {}
        failed: dict[str, FailedRecord] = {}
        good_end = 0
        for line in raw.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
                entry = json.loads(line)
            except ValueError:
                break
            good_end += len(line)
            kind = entry.pop("kind")
            if kind == "settings":
                settings = entry
            elif kind == "episode":
                episodes[entry["name"]] = EpisodeRecord(**entry)
                failed.pop(entry["name"], None)
            elif kind == "failed":
                failed[entry["name"]] = FailedRecord(**entry)
                episodes.pop(entry["name"], None)
        if repair and good_end < len(raw):
            with path.open("r+b") as handle:
                handle.truncate(good_end)
        return cls(path.parent, settings, episodes, failed)

    def record(self, entry: EpisodeRecord | FailedRecord) -> None:
        kind = "episode" if isinstance(entry, EpisodeRecord) else "failed"
        self._append({"kind": kind, **dataclasses.asdict(entry)})
        if isinstance(entry, EpisodeRecord):
            self.episodes[entry.name] = entry
            self.failed.pop(entry.name, None)
        else:
            self.failed[entry.name] = entry
            self.episodes.pop(entry.name, None)

    def bag_path(self, record: EpisodeRecord) -> Path:
        return self.out_dir / record.bag

    def _append(self, entry: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def bag_checksum(bag_dir: Path) -> str:
    """sha256 over every file of a bag folder (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(bag_dir).rglob("*") if p.is_file()):
        digest.update(file.relative_to(bag_dir).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
