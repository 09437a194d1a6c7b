"""``task-supplementor make-synthetic-bridge``: a small BridgeData v2 in its exact TFDS/RLDS layout, offline.

Tests and ``make demo`` need bridge data without the 124 GB download. This writes ``OUT/bridge_dataset/1.0.0/``
with the release's features (four 256x256 JPEG cameras, 7-D state and action, instruction, embedding, flags and
episode metadata), readable by ``tfds.builder_from_directory``. Scenes are rendered by ``offline.scene``;
everything is a function of the seed. ``--corrupt split:index`` truncates one JPEG in that episode so that the
converter's corrupt-episode handling can be exercised on real files.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from offline import bridge_layout as layout
from offline.scene import IMAGE_SIZE, instruction_embedding, render_episode
from task_supplementor.cli_args import positive_int

MIN_STEPS = 16  # per episode, for the CLIs (scene.py draws a pick-and-place in no fewer than 13)
MISSING_CAMERA_EVERY = 3  # image_1 is absent in every third episode; image_2 is always absent (zero images)


@dataclasses.dataclass
class SyntheticConfig:
    out: Path
    episodes: int = 6  # train episodes
    val_episodes: int = 2
    seed: int = 0
    min_steps: int = 20
    max_steps: int = 40
    corrupt: tuple[tuple[str, int], ...] = ()  # (split, index within split) episodes to damage on purpose
    unlabeled: tuple[tuple[str, int], ...] = ()  # episodes without an instruction, as the release has some
    jpeg_quality: int = 90
    overwrite: bool = False


def present_cameras(global_index: int) -> tuple[str, ...]:
    cams = ["image_0", "image_3"]
    if global_index % MISSING_CAMERA_EVERY != MISSING_CAMERA_EVERY - 1:
        cams.insert(1, "image_1")
    return tuple(cams)


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def synthetic_episode(config: SyntheticConfig, split: str, index: int) -> dict:
    """One episode as the nested dict TFDS encodes (images as JPEG bytes, so readers get exactly these bytes)."""
    global_index = index if split == "train" else config.episodes + index
    rng = np.random.default_rng([config.seed, global_index, 7])
    n_steps = int(rng.integers(config.min_steps, config.max_steps + 1))
    cams = present_cameras(global_index)
    ep = render_episode(config.seed, global_index, n_steps, cams)
    zero_jpeg = _jpeg(np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), config.jpeg_quality)
    embedding = instruction_embedding(ep.instruction)
    steps = []
    for t in range(len(ep.states)):
        observation = {cam: _jpeg(ep.images[cam][t], config.jpeg_quality) if cam in cams else zero_jpeg
                       for cam in layout.CAMERAS}
        observation["state"] = ep.states[t]
        last = t == len(ep.states) - 1
        steps.append({
            "observation": observation,
            "action": ep.actions[t],
            "discount": np.float32(1.0),
            "reward": np.float32(1.0 if last else 0.0),
            "is_first": t == 0,
            "is_last": last,
            "is_terminal": last,
            "language_instruction": "" if (split, index) in config.unlabeled else ep.instruction,
            "language_embedding": embedding,
        })
    if (split, index) in config.corrupt:
        jpeg = steps[len(steps) // 2]["observation"]["image_0"]
        steps[len(steps) // 2]["observation"]["image_0"] = jpeg[: len(jpeg) // 3]
    return {
        "steps": steps,
        "episode_metadata": {
            "file_path": f"/synthetic/bridge_data_v2/tabletop/pick_place/2024-01-01_00-00-00/raw/traj_group0/"
                         f"traj{global_index}/obs_dict.pkl",
            "episode_id": np.int32(global_index),
            **{f"has_{cam}": cam in cams for cam in layout.CAMERAS},
            "has_language": (split, index) not in config.unlabeled,
        },
    }


def _builder_class():
    import tensorflow_datasets as tfds

    class BridgeDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """bridge_dataset 1.0.0 with rendered episodes instead of the recorded ones."""

        name = layout.DATASET_NAME
        VERSION = tfds.core.Version(layout.VERSION)

        def __init__(self, *, synthetic: SyntheticConfig, **kwargs):
            self._synthetic = synthetic
            super().__init__(**kwargs)

        def _info(self):
            return self.dataset_info_from_configs(
                features=layout.features(),
                disable_shuffling=True,  # reading order = generation order, so episode indices are obvious
                description="Synthetic BridgeData v2 (rendered tabletop pick-and-place) in the bridge_dataset layout.",
            )

        def _split_generators(self, dl_manager):
            counts = {"train": self._synthetic.episodes, "val": self._synthetic.val_episodes}
            return {split: self._generate_examples(split, n) for split, n in counts.items()}

        def _generate_examples(self, split: str, count: int):
            for index in range(count):
                yield f"{split}_{index}", synthetic_episode(self._synthetic, split, index)

    return BridgeDataset


def write_synthetic_bridge(config: SyntheticConfig) -> Path:
    """Write the dataset and return its version folder (``OUT/bridge_dataset/1.0.0``).

    WHY a scratch folder: TFDS writes in place, so a failed or interrupted build would leave a half dataset at the
    final path, and ``overwrite`` would already have removed the old one. The build goes to a hidden folder inside
    OUT (same file system) and replaces the old dataset only once it is complete.
    """
    version_dir = Path(config.out) / layout.DATASET_NAME / layout.VERSION
    if version_dir.exists() and not config.overwrite:
        raise FileExistsError(f"{version_dir} already exists; pass --overwrite to replace it")
    Path(config.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".synthetic-bridge-", dir=config.out) as scratch, \
            tempfile.TemporaryDirectory() as downloads:  # nothing is downloaded; keep TFDS from leaving a folder
        builder = _builder_class()(synthetic=config, data_dir=scratch)
        builder.download_and_prepare(download_dir=downloads)
        if version_dir.exists():  # two renames, not a delete then a rename: no window without a dataset to speak of
            version_dir.rename(Path(scratch, "replaced"))
        version_dir.parent.mkdir(exist_ok=True)
        Path(scratch, layout.DATASET_NAME, layout.VERSION).rename(version_dir)
    return version_dir


def split_index(text: str) -> tuple[str, int]:
    """``SPLIT:INDEX`` (an argparse type): one episode of a split."""
    split, _, index = text.partition(":")
    if split not in layout.SPLITS or not index.isdigit():
        raise argparse.ArgumentTypeError(f"expected SPLIT:INDEX with SPLIT one of {', '.join(layout.SPLITS)}, "
                                         f"not {text!r}")
    return split, int(index)


def at_least_min_steps(text: str) -> int:
    """A step count (an argparse type): scene.py needs room for a whole pick-and-place."""
    steps = positive_int(text)
    if steps < MIN_STEPS:
        raise argparse.ArgumentTypeError(f"must be >= {MIN_STEPS}, not {text}")
    return steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="data dir; the dataset goes to OUT/bridge_dataset/1.0.0")
    parser.add_argument("--episodes", type=positive_int, default=SyntheticConfig.episodes,
                        help=f"train episodes (>= 1: TFDS writes no empty split; default {SyntheticConfig.episodes})")
    parser.add_argument("--val-episodes", type=positive_int, default=SyntheticConfig.val_episodes,
                        help=f"val episodes (>= 1; default {SyntheticConfig.val_episodes})")
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed, help="default %(default)s")
    parser.add_argument("--min-steps", type=at_least_min_steps, default=SyntheticConfig.min_steps,
                        help=f"fewest steps of an episode (>= {MIN_STEPS}; default %(default)s)")
    parser.add_argument("--max-steps", type=at_least_min_steps, default=SyntheticConfig.max_steps,
                        help="most steps of an episode (>= --min-steps; default %(default)s)")
    parser.add_argument("--corrupt", action="append", type=split_index, default=[], metavar="SPLIT:INDEX",
                        help="truncate one JPEG of this episode (to exercise error handling); repeatable")
    parser.add_argument("--unlabeled", action="append", type=split_index, default=[], metavar="SPLIT:INDEX",
                        help="give this episode no language instruction (has_language false); repeatable")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT/bridge_dataset/1.0.0 (once the new one is complete)")


def _selection_problem(option: str, chosen: list[tuple[str, int]], counts: dict[str, int]) -> str | None:
    """Why an episode picked by ``option`` does not exist (None: they all do)."""
    for split, index in chosen:
        if index >= counts[split]:
            return f"{option} {split}:{index}: {split} has {counts[split]} episode(s) (indices 0..{counts[split] - 1})"
    return None


def run(args: argparse.Namespace) -> int:
    counts = {"train": args.episodes, "val": args.val_episodes}
    problem = (f"--out {args.out} is a file, not a folder" if args.out.exists() and not args.out.is_dir() else
               f"need --min-steps <= --max-steps, not {args.min_steps} > {args.max_steps}"
               if args.max_steps < args.min_steps else
               _selection_problem("--corrupt", args.corrupt, counts)
               or _selection_problem("--unlabeled", args.unlabeled, counts))
    if problem:
        print(f"make-synthetic-bridge: {problem}", file=sys.stderr)
        return 2
    config = SyntheticConfig(out=args.out, episodes=args.episodes, val_episodes=args.val_episodes, seed=args.seed,
                             min_steps=args.min_steps, max_steps=args.max_steps, corrupt=tuple(args.corrupt),
                             unlabeled=tuple(args.unlabeled), overwrite=args.overwrite)
    try:
        version_dir = write_synthetic_bridge(config)
    except OSError as exc:  # FileExistsError without --overwrite; OUT unwritable, ...
        print(f"make-synthetic-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"make-synthetic-bridge: interrupted; the dataset in {args.out} was not replaced", file=sys.stderr)
        return 130
    print(f"wrote {config.episodes} train + {config.val_episodes} val episodes to {version_dir}")
    return 0
