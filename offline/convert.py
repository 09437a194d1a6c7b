"""``task-supplementor convert``: BridgeData v2 (TFDS/RLDS) -> rosbag2, one bag per episode, resumable.

Layout of ``--out``: ``manifest.jsonl`` (see offline.manifest) and ``bags/{split}/{split}_{index:06d}/``. A bag is
written under ``bags/.partial/``, checksummed, renamed into place and only then journalled, so after a kill a rerun
keeps every journalled bag still on disk and redoes the rest (partial folders and un-journalled bags are removed
first; a journalled bag missing, or with ``--verify`` changed on disk, is converted again). An
episode that cannot be read is journalled as failed, reported, and the run goes on. ``--workers N`` converts
chunks of episodes in N processes (spawned: TensorFlow must not be forked).

Python API: ``convert(ConvertConfig(...)) -> ConvertResult``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import multiprocessing
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from offline import bridge_layout as layout
from offline.episode_bag import STORAGES, BagOptions, write_episode_bag
from offline.manifest import EpisodeRecord, FailedRecord, Manifest, bag_checksum
from task_supplementor.cli_args import positive_int

PARTIAL_DIR = ".partial"  # under bags/: staging folders keep the bag's own name, so its files are named right
CHUNK_EPISODES = 4  # episodes per worker task: small enough for a lively progress bar, large enough to amortise


@dataclasses.dataclass
class ConvertConfig:
    data_dir: Path  # the TFDS data_dir, dataset folder or version folder of bridge_dataset 1.0.0 / bridge_orig
    out: Path
    split: str = "train"
    episodes: str | None = None  # index range within the split, "START:STOP" (python slice) or a single index
    sample: int | None = None  # a random sample of this many episodes (from the range, if given)
    seed: int = 0
    cameras: tuple[str, ...] = layout.CAMERAS
    storage: str = "sqlite3"
    image_format: str = "compressed"
    bridge_orig: bool = False
    workers: int = 1
    progress: bool = True
    verify: bool = False  # re-hash every journalled bag of the selection (else: folders and metadata only)


@dataclasses.dataclass
class ConvertResult:
    manifest: Manifest
    converted: list[EpisodeRecord]  # this run
    skipped: int  # already done by an earlier run (and its bag passed its check)
    failed: list[FailedRecord]  # this run
    redone: dict[str, str] = dataclasses.field(default_factory=dict)  # journalled, bag failed its check -> why


def episode_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def parse_episode_range(text: str) -> tuple[int, int | None]:
    """``START:STOP`` (either end may be left out) or one index -> (start, stop or None for "to the end").

    Indices are episode indices within a split, the number in a bag's name; convert and replay both read them so.
    """
    start_text, colon, stop_text = text.partition(":")
    try:
        start = int(start_text) if start_text.strip() else 0
        stop = (int(stop_text) if stop_text.strip() else None) if colon else start + 1
    except ValueError:
        raise ValueError(f"--episodes expects START:STOP or one index (episode indices within the split), "
                         f"got {text!r}") from None
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"--episodes {text}: episode indices count from 0 (no negative indices)")
    if stop is not None and stop <= start:
        raise ValueError(f"--episodes {text} selects no episode (STOP must be greater than START)")
    return start, stop


def select_indices(total: int, episodes: str | None, sample: int | None, seed: int) -> list[int]:
    """Indices within a split: an optional ``START:STOP`` range, then an optional seeded sample of it.

    A range that reaches past the split is refused (a researcher who asked for 100 episodes must not get 60).
    """
    indices = list(range(total))
    if episodes:
        start, stop = parse_episode_range(episodes)
        if start >= total or (stop is not None and stop > total):
            raise ValueError(f"--episodes {episodes} out of range: the split has {total} episodes "
                             f"(indices 0..{total - 1})")
        indices = indices[start:stop]
    if sample is not None:
        if sample > len(indices):
            raise ValueError(f"--sample {sample} exceeds the {len(indices)} selected episodes")
        indices = sorted(int(i) for i in np.random.default_rng(seed).choice(indices, size=sample, replace=False))
    return indices


def bag_options(config: ConvertConfig) -> BagOptions:
    return BagOptions(storage=config.storage, image_format=config.image_format, bridge_orig=config.bridge_orig,
                      cameras=tuple(config.cameras))


def settings_of(config: ConvertConfig, version_dir: Path) -> dict:
    return {"dataset": str(version_dir.resolve()), "dataset_name": layout.DATASET_NAME, "version": layout.VERSION,
            "storage": config.storage, "image_format": config.image_format, "bridge_orig": config.bridge_orig,
            "cameras": list(config.cameras), "control_hz": layout.CONTROL_HZ, "bag_version": 8}


def _clean_partial(manifest: Manifest, split: str) -> None:
    """Remove the bags an interrupted run left half-written. An unjournalled finished bag is replaced only when its
    episode is converted again (``convert_episodes``): bags outside this run's selection stay, whoever wrote them."""
    shutil.rmtree(manifest.out_dir / "bags" / PARTIAL_DIR / split, ignore_errors=True)


def convert_episodes(source, split: str, indices: list[int], out_dir: Path,
                     options: BagOptions) -> Iterator[EpisodeRecord | FailedRecord]:
    """Convert the episodes at ``indices``, yielding one record per episode (bags are in place when yielded)."""
    from offline.tfds_source import SourceEpisodeError

    for item in source.read(split, indices):
        name = episode_name(split, item.index)
        if isinstance(item, SourceEpisodeError):
            yield FailedRecord(name=name, split=split, index=item.index, reason=item.reason)
            continue
        final = Path(out_dir) / "bags" / split / name
        partial = Path(out_dir) / "bags" / PARTIAL_DIR / split / name
        for leftover in (partial, final):
            if leftover.exists():
                shutil.rmtree(leftover)
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            summary = write_episode_bag(item, partial, options)
        except Exception as exc:  # noqa: BLE001 - one bad episode must not end the run; it is journalled as failed
            shutil.rmtree(partial, ignore_errors=True)
            yield FailedRecord(name=name, split=split, index=item.index, reason=f"{type(exc).__name__}: {exc}")
            continue
        checksum = bag_checksum(partial)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(final)
        yield EpisodeRecord(name=name, split=split, index=item.index, episode_id=item.episode_id,
                            source=item.file_path, task=summary.task, steps=summary.steps,
                            cameras=list(summary.cameras), bag=final.relative_to(out_dir).as_posix(),
                            checksum=checksum)


_WORKER_SOURCE = None


def _worker_init(data_dir: str) -> None:
    global _WORKER_SOURCE
    from offline.tfds_source import BridgeSource

    _WORKER_SOURCE = BridgeSource(Path(data_dir))


def _worker_chunk(split: str, indices: list[int], out_dir: str, options: BagOptions) -> list:
    return list(convert_episodes(_WORKER_SOURCE, split, indices, Path(out_dir), options))


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder (or not exist yet): refused before anything is read or written."""
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give a folder for the bags and the manifest")


def verify_journalled(manifest: Manifest, split: str, indices: list[int], progress: bool,
                      checksum: bool) -> dict[str, str]:
    """name -> why its bag must be converted again, for the journalled episodes among ``indices`` whose bag is
    missing (or, with ``checksum``, fails its checksum: reads every such bag once; a progress bar shows it)."""
    from tqdm import tqdm

    names = [episode_name(split, i) for i in indices if episode_name(split, i) in manifest.episodes]
    damaged: dict[str, str] = {}
    with tqdm(names, unit="bag", desc=f"verify {split}", disable=not progress or not names, file=sys.stderr) as bar:
        for name in bar:
            reason = manifest.bag_damage(manifest.episodes[name], checksum=checksum)
            if reason is not None:
                damaged[name] = reason
                bar.write(f"redoing {name}: {reason}", file=sys.stderr)
    return damaged


def convert(config: ConvertConfig) -> ConvertResult:
    """Run (or resume) a conversion. Raises DatasetDirError / ValueError on bad input before writing anything."""
    from offline.tfds_source import BridgeSource

    unknown = sorted(set(config.cameras) - set(layout.CAMERAS))
    if unknown:
        raise ValueError(f"unknown cameras {unknown}; BridgeData v2 has {', '.join(layout.CAMERAS)}")
    check_out_dir(config.out)
    source = BridgeSource(config.data_dir)
    indices = select_indices(source.num_episodes(config.split), config.episodes, config.sample, config.seed)
    manifest = Manifest.open(config.out, settings_of(config, source.version_dir))
    _clean_partial(manifest, config.split)
    redone = verify_journalled(manifest, config.split, indices, config.progress, config.verify)
    todo = [i for i in indices if episode_name(config.split, i) not in manifest.episodes
            or episode_name(config.split, i) in redone]
    result = ConvertResult(manifest=manifest, converted=[], skipped=len(indices) - len(todo), failed=[],
                           redone=redone)
    _run_conversion(source, config, manifest, todo, result)
    return result


def _run_conversion(source, config: ConvertConfig, manifest: Manifest, todo: list[int],
                    result: ConvertResult) -> None:
    """Convert ``todo`` (in this process or in ``config.workers`` spawned ones), journalling every episode."""
    from tqdm import tqdm

    options = bag_options(config)
    bar = tqdm(total=result.skipped + len(todo), initial=result.skipped, unit="episode",
               desc=f"convert {config.split}", disable=not config.progress, file=sys.stderr)

    def take(record: EpisodeRecord | FailedRecord) -> None:
        manifest.record(record)
        if isinstance(record, FailedRecord):
            result.failed.append(record)
            bar.write(f"skipped {record.name}: {record.reason}")
        else:
            result.converted.append(record)
        bar.update(1)

    try:
        if config.workers <= 1 or len(todo) <= 1:
            for record in convert_episodes(source, config.split, todo, manifest.out_dir, options):
                take(record)
        else:
            chunks = [todo[i:i + CHUNK_EPISODES] for i in range(0, len(todo), CHUNK_EPISODES)]
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(config.workers, mp_context=context, initializer=_worker_init,
                                             initargs=(str(source.version_dir),)) as pool:
                jobs = [pool.submit(_worker_chunk, config.split, chunk, str(manifest.out_dir), options)
                        for chunk in chunks]
                for job in futures.as_completed(jobs):
                    for record in job.result():
                        take(record)
    finally:
        bar.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="TFDS data_dir holding bridge_dataset/1.0.0 (or bridge_orig/1.0.0), or that folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (bags/ and manifest.jsonl)")
    parser.add_argument("--split", default="train", help="train | val (default train)")
    parser.add_argument("--episodes", default=None, metavar="START:STOP",
                        help="episode indices within the split (the number in the bag names): a range or one index "
                             "(default: the whole split)")
    parser.add_argument("--sample", type=positive_int, default=None, help="random sample of N episodes (of the range)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--cameras", default=",".join(layout.CAMERAS),
                        help="comma-separated cameras to keep when present (default: all)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3",
                        help="rosbag2 storage plugin of the bags (default sqlite3)")
    parser.add_argument("--image-format", choices=("compressed", "raw"), default="compressed",
                        help="compressed: the original JPEG bytes (CompressedImage; default); raw: decoded rgb8 "
                             "Image")
    parser.add_argument("--bridge-orig", action="store_true",
                        help="apply OpenVLA's bridge_orig ground-truth conventions (drop the zero first step, "
                             "binarise the gripper, relabel deltas from the state); recorded in the manifest")
    parser.add_argument("--workers", type=positive_int, default=1, help="conversion processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verify", action="store_true",
                        help="re-hash every journalled bag of the selection and redo those whose bytes changed "
                             "(default: a resume only checks that each journalled bag is still there)")


def run(args: argparse.Namespace) -> int:
    config = ConvertConfig(data_dir=args.data_dir, out=args.out, split=args.split, episodes=args.episodes,
                           sample=args.sample, seed=args.seed,
                           cameras=tuple(c.strip() for c in args.cameras.split(",") if c.strip()),
                           storage=args.storage, image_format=args.image_format, bridge_orig=args.bridge_orig,
                           workers=args.workers, progress=not args.no_progress, verify=args.verify)
    try:
        result = convert(config)
    except (OSError, ValueError) as exc:  # DatasetDirError is an OSError; so is an unwritable --out
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    redone = f" ({len(result.redone)} redone: bag missing or damaged)" if result.redone else ""
    print(f"converted {len(result.converted)}{redone}, already done {result.skipped}, failed {len(result.failed)}; "
          f"manifest: {result.manifest.path}")
    for failure in result.failed:
        print(f"  FAILED {failure.name}: {failure.reason}")
    return 1 if result.failed else 0
