"""The conversion manifest: ``OUT/manifest.jsonl``, an append-only journal beside the bags.

Why a journal: a conversion of 60k episodes can be killed at any moment. Each finished bag is recorded by one
appended, fsynced line, so a rerun knows exactly what is done; a torn last line (killed mid-write: no newline) is
dropped. Any other damaged line is an error that changes nothing: cutting the journal there would un-journal (and
so delete and redo) every bag recorded after it. Line kinds: ``settings`` (first line: what every bag in this folder
was made with, including whether the bridge_orig conventions were applied), ``episode`` (one finished bag),
``failed`` (an episode that could not be read; retried by a rerun). For one episode name the latest line wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from offline.synced_files import append_synced, json_lines

MANIFEST_NAME = "manifest.jsonl"
SETTINGS_KEYS = ("dataset", "storage", "image_format", "bridge_orig", "cameras")  # must match to resume
LINE_KINDS = ("settings", "episode", "failed")


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
    """An episode that could not be converted (the manifest's ``failed`` line); a rerun retries it."""

    name: str
    split: str
    index: int
    reason: str


class ManifestError(ValueError):
    """A journal line that is damaged other than by a kill mid-write: refused, never cut off."""


def _parse_line(path: Path, number: int, line: bytes) -> dict:
    """One complete journal line as a dict with a known ``kind``."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise ManifestError(f"{path} line {number} is damaged ({exc}); nothing was changed: repair or remove that "
                            "line by hand (a rerun would otherwise redo every bag journalled after it)") from exc
    if not isinstance(entry, dict) or entry.get("kind") not in LINE_KINDS:
        raise ManifestError(f"{path} line {number} is not a journal entry (kind must be one of "
                            f"{', '.join(LINE_KINDS)}); nothing was changed: repair or remove that line by hand")
    return entry


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
        """Load the journal of ``out_dir`` (or start one); refuses to mix bags made with other settings.

        A journal with nothing in it (empty, or only a torn settings line from a kill at the very start) is a fresh
        folder: no bag was journalled, so no settings can clash.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if (out_dir / MANIFEST_NAME).exists():
            manifest = cls.load(out_dir, repair=True)
            if manifest.settings:
                manifest._check_settings(settings)
                return manifest
        manifest = cls(out_dir, settings, {}, {})
        manifest._append({"kind": "settings", **settings})
        return manifest

    def _check_settings(self, settings: dict) -> None:
        clashes = [f"{key}: folder has {self.settings.get(key)!r}, asked {settings.get(key)!r}"
                   for key in SETTINGS_KEYS if self.settings.get(key) != settings.get(key)]
        if clashes:
            raise ValueError(f"{self.out_dir} holds bags converted with other settings ({'; '.join(clashes)}); "
                             "use another --out or the same options")

    @classmethod
    def load(cls, out_dir_or_file: Path, repair: bool = False) -> Manifest:
        """Read a manifest (folder or the .jsonl itself). ``repair`` cuts a torn last line off the file.

        Raises ManifestError for a damaged line anywhere but a torn last one, before anything is changed.
        """
        path = Path(out_dir_or_file)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST_NAME} at {path}: convert first (task-supplementor convert)")
        if path.name != MANIFEST_NAME:  # bag paths are relative to the folder of a file of that name
            raise FileNotFoundError(f"{path} is not a {MANIFEST_NAME}: give a conversion folder or its "
                                    f"{MANIFEST_NAME}")
        raw = path.read_bytes()
        lines = raw.splitlines(keepends=True)
        torn = bool(lines) and not lines[-1].endswith(b"\n")
        manifest = cls(path.parent, {}, {}, {})
        for number, line in enumerate(lines[:-1] if torn else lines, start=1):
            manifest._take(_parse_line(path, number, line), path, number)
        if repair and torn:
            with path.open("r+b") as handle:
                handle.truncate(len(raw) - len(lines[-1]))
        return manifest

    def _take(self, entry: dict, path: Path, number: int) -> None:
        """Apply one journal line (the latest line of an episode name wins)."""
        kind = entry.pop("kind")
        if (kind == "settings") != (number == 1):
            found = f"line 1 is a {kind} line, not the settings line" if number == 1 \
                else f"line {number} is a second settings line"
            raise ManifestError(f"{path}: {found}; nothing was changed: repair the journal by hand")
        try:
            if kind == "settings":
                self.settings = entry
            elif kind == "episode":
                self.episodes[entry["name"]] = EpisodeRecord(**entry)
                self.failed.pop(entry["name"], None)
            else:
                self.failed[entry["name"]] = FailedRecord(**entry)
                self.episodes.pop(entry["name"], None)
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"{path} line {number}: {kind} line lacks or has unknown fields ({exc}); "
                                "nothing was changed: repair or remove that line by hand") from exc

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

    def bag_damage(self, record: EpisodeRecord, checksum: bool = True) -> str | None:
        """Why the journalled bag of ``record`` cannot be trusted (missing, or bytes changed), or None.

        WHY: a journalled bag is skipped by a resumed conversion and replayed as-is, so a bag deleted or altered
        on disk after it was journalled must be caught by its checksum, not discovered in an experiment's results.
        ``checksum=False`` only checks that the folder and its metadata are there: cheap enough to run over every
        bag of a resumed 60k-episode conversion, where hashing them all would read hundreds of GB.
        """
        path = self.bag_path(record)
        if not path.is_dir():
            return f"its folder {path} is missing"
        if not (path / "metadata.yaml").is_file():
            return f"{path} has no metadata.yaml"
        if checksum and bag_checksum(path) != record.checksum:
            return f"its files in {path} do not match the journalled checksum (changed or damaged on disk)"
        return None

    def _append(self, entry: dict) -> None:
        append_synced(self.path, json_lines([entry]))


def bag_checksum(bag_dir: Path) -> str:
    """sha256 over every file of a bag folder (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(bag_dir).rglob("*") if p.is_file()):
        digest.update(file.relative_to(bag_dir).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()
