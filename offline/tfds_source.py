"""Reading BridgeData v2 episodes from its TFDS/RLDS release, keeping the camera JPEGs exactly as stored.

Images are read with ``SkipDecoding`` so the converter can put the original JPEG bytes into the bags (no
re-encoding loss, and byte-identical round trips). A damaged record must not end a long run: a step whose JPEG is
truncated or undecodable, or a TFRecord read error, turns that one episode into a :class:`SourceEpisodeError`
and reading resumes at the next episode.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from offline import bridge_layout as layout

_TF_FUNCTION_PREFIX = re.compile(r"^\{\{function_node [^}]*\}\}\s*")  # TF's text before the error itself


class DatasetDirError(FileNotFoundError):
    """The dataset directory is not a bridge_dataset TFDS version folder (says what was expected and found)."""


@dataclasses.dataclass
class SourceEpisode:
    """One episode as plain arrays; ``jpegs[camera][t]`` are the stored bytes."""

    split: str
    index: int  # position within the split (reading order, stable: shuffling is off)
    episode_id: int
    file_path: str
    instruction: str
    states: np.ndarray  # (T, 7) float32
    actions: np.ndarray  # (T, 7) float32
    jpegs: dict[str, list[bytes]]  # only the cameras that are present (has_image_k)


@dataclasses.dataclass
class SourceEpisodeError:
    """An episode that could not be read; the run reports it and goes on."""

    split: str
    index: int
    reason: str


def resolve_version_dir(data_dir: Path) -> Path:
    """Accept the version folder itself, the dataset folder, or the TFDS data_dir that holds it.

    A wrong path is the most common user error with this dataset ("bridge_orig not found"), so the message names
    every folder that was tried and what the given directory actually contains.
    """
    data_dir = Path(data_dir).expanduser()
    candidates = [data_dir, data_dir / layout.VERSION]
    candidates += [data_dir / name / layout.VERSION for name in layout.DATASET_ALIASES]
    for candidate in candidates:
        if (candidate / "dataset_info.json").is_file():
            return candidate
    if not data_dir.is_dir():
        found = "it does not exist" if not data_dir.exists() else "it is not a directory"
    else:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir())
        found = "it contains: " + (", ".join(entries[:20]) + (" ..." if len(entries) > 20 else "") if entries
                                   else "nothing")
    tried = "\n  ".join(str(c / "dataset_info.json") for c in candidates)
    nearby = sorted(str(p.parent)
                    for pattern in ("*/dataset_info.json", "*/*/dataset_info.json", "*/*/*/dataset_info.json")
                    for p in data_dir.glob(pattern))[:3] if data_dir.is_dir() else []
    if nearby:
        found += f". TFDS datasets below it: {', '.join(nearby)}"
    raise DatasetDirError(
        f"{data_dir} is not a BridgeData v2 TFDS dataset ({layout.DATASET_NAME} {layout.VERSION}, also known as "
        f"bridge_orig). Expected the version folder holding dataset_info.json, one of:\n  {tried}\n"
        f"but {found}.")


def _open_builder(tfds, version_dir: Path):
    """TFDS's reader of ``version_dir``. WHY the checks first: with features.json missing TFDS blames an old TFDS
    version, and a damaged dataset_info.json or features.json surfaces as a protobuf traceback; each is a damaged
    download."""
    from google.protobuf import json_format  # what TFDS parses both files with

    missing = [name for name in ("dataset_info.json", "features.json") if not (version_dir / name).is_file()]
    if missing:
        raise DatasetDirError(f"{version_dir} lacks {' and '.join(missing)}: an incomplete copy of the dataset "
                              "(download or copy it again)")
    try:
        json.loads((version_dir / "dataset_info.json").read_text(encoding="utf-8"))
        return tfds.builder_from_directory(str(version_dir))
    except (UnicodeDecodeError, ValueError, json_format.Error) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetDirError(f"{version_dir}: cannot read the dataset's description files ({type(exc).__name__}: "
                              f"{first_line}); the copy is damaged (download or copy it again)") from None


def _check_is_bridge(info, version_dir: Path) -> None:
    """DatasetDirError unless the TFDS dataset is bridge_dataset with the features conversion reads, checked before
    anything is written (a manifest naming the wrong data would then lock the output folder)."""
    found = f"{info.name} {info.version}"
    problem = ""
    if info.name != layout.DATASET_NAME:
        problem = f"it holds the TFDS dataset {found}"
    else:
        steps = info.features["steps"].feature
        wanted = {"steps": ("action", "language_instruction", "observation"),
                  "observation": ("state", *layout.CAMERAS), "episode_metadata": ("episode_id", "file_path")}
        have = {"steps": steps.keys(), "observation": steps["observation"].keys(),
                "episode_metadata": info.features["episode_metadata"].keys()}
        missing = [f"{part}/{key}" for part, keys in wanted.items() for key in keys if key not in have[part]]
        if missing:
            problem = f"its features lack {', '.join(missing)}"
    if problem:
        raise DatasetDirError(
            f"{version_dir} is not BridgeData v2 as OpenVLA reads it ({layout.DATASET_NAME} {layout.VERSION}, "
            f"steps with image_0..image_3, state, action, language_instruction): {problem}. The Open X-Embodiment "
            "copy (bridge 0.1.0: observation/image, natural_language_instruction) is a different layout.")


def _check_jpeg(data: bytes, where: str) -> None:
    """Truncated JPEGs still decode (OpenCV fills the rest grey), so the end-of-image marker is checked too."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ValueError(f"{where}: JPEG is truncated or not a JPEG ({len(data)} bytes)")
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
        raise ValueError(f"{where}: JPEG does not decode ({len(data)} bytes)")


class BridgeSource:
    """An opened bridge_dataset version folder."""

    def __init__(self, data_dir: Path):
        import tensorflow_datasets as tfds

        self.version_dir = resolve_version_dir(data_dir)
        self._tfds = tfds
        self.builder = _open_builder(tfds, self.version_dir)
        _check_is_bridge(self.builder.info, self.version_dir)
        self._decoders = {"steps": {"observation": {cam: tfds.decode.SkipDecoding() for cam in layout.CAMERAS}}}

    def num_episodes(self, split: str) -> int:
        splits = self.builder.info.splits
        if split not in splits:
            raise ValueError(f"split {split!r} not in {self.version_dir} (has: {', '.join(sorted(splits.keys()))})")
        return int(splits[split].num_examples)

    def read(self, split: str, indices: list[int]) -> Iterator[SourceEpisode | SourceEpisodeError]:
        """Yield the episodes at ``indices`` (ascending) in order; contiguous runs are read as one slice."""
        for start, stop in _runs(sorted(indices)):
            yield from self._read_run(split, start, stop)

    def _read_run(self, split: str, start: int, stop: int) -> Iterator[SourceEpisode | SourceEpisodeError]:
        index = start
        while index < stop:
            # one shard file at a time: TFDS otherwise interleaves up to 16 files (the real release has 1024 and
            # is not marked ordered), and episodes would come back out of split order, under the wrong index
            dataset = self.builder.as_dataset(split=f"{split}[{index}:{stop}]", decoders=self._decoders,
                                              shuffle_files=False,
                                              read_config=self._tfds.ReadConfig(interleave_cycle_length=1))
            iterator = iter(self._tfds.as_numpy(dataset))
            try:
                while index < stop:
                    try:
                        example = next(iterator)
                    except StopIteration:
                        return
                    try:
                        yield _episode(split, index, example)
                    except (ValueError, KeyError) as exc:
                        yield SourceEpisodeError(split, index, str(exc))
                    index += 1
            except Exception as exc:  # noqa: BLE001 - a TFRecord read error; skip that record and reopen after it
                yield SourceEpisodeError(split, index, self._read_error(split, index, exc))
                index += 1

    def _read_error(self, split: str, index: int, exc: Exception) -> str:
        """One line naming the shard file that holds episode ``index``: TensorFlow's text names only a byte offset
        (after its graph-function noise), which says nothing about which of the release's 1024 files is damaged."""
        info = self.builder.info.splits[split]
        shard = info.filepaths[bisect.bisect_right(list(itertools.accumulate(info.shard_lengths)), index)]
        text = _TF_FUNCTION_PREFIX.sub("", str(exc)).split(" [Op:")[0].strip()
        return f"{type(exc).__name__} reading {shard}: {text}"


def _runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield start, prev + 1
            start = prev = i
    if start is not None:
        yield start, prev + 1


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _episode(split: str, index: int, example: dict) -> SourceEpisode:
    meta = example["episode_metadata"]
    cameras = [cam for cam in layout.CAMERAS if bool(meta.get(f"has_{cam}", True))]
    states, actions, instructions = [], [], []
    jpegs: dict[str, list[bytes]] = {cam: [] for cam in cameras}
    for t, step in enumerate(example["steps"]):
        obs = step["observation"]
        states.append(np.asarray(obs["state"], np.float32))
        actions.append(np.asarray(step["action"], np.float32))
        instructions.append(_text(step["language_instruction"]))
        for cam in cameras:
            data = bytes(obs[cam])
            _check_jpeg(data, f"{split}[{index}] step {t} {cam}")
            jpegs[cam].append(data)
    if not states:
        raise ValueError(f"{split}[{index}]: episode has no steps")
    if not bool(meta.get("has_language", True)) or not any(instructions):
        # OpenVLA trains with skip_unlabeled: such an episode is not data it saw, and a replay of it could never
        # act (the VLA waits for a task)
        raise ValueError(f"{split}[{index}]: episode has no language instruction (has_language false)")
    return SourceEpisode(
        split=split, index=index, episode_id=int(meta["episode_id"]), file_path=_text(meta["file_path"]),
        instruction=next((text for text in instructions if text), ""),
        states=np.stack(states), actions=np.stack(actions), jpegs=jpegs)
