"""``task-supplementor make-tiny-models``: write every tiny random-weight checkpoint the tests and the demo use.

Each maker saves a checkpoint in the official on-disk layout of the model it stands in for, so the nodes load it
through the same code as the real weights. Makers are registered in ``TINY_MAKERS`` (name -> callable(out_dir)).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from supplementor_node.tiny_model import TinyQwenConfig, make_tiny_qwen
from task_supplementor.checkpoint_files import check_weights
from vla_node.tiny_model import TinyOpenVLAConfig, make_tiny_openvla

DEFAULT_OUT = Path("artifacts/tiny_models")

# directory name -> maker(out_dir) -> Path. Two checkpoints of each model (different seeds) so live swaps can be shown.
TINY_MAKERS: dict[str, Callable[[Path], Path]] = {
    "qwen2_5_vl_tiny": lambda out: make_tiny_qwen(out, TinyQwenConfig(seed=0)),
    "qwen2_5_vl_tiny_b": lambda out: make_tiny_qwen(out, TinyQwenConfig(seed=1)),
    "openvla_tiny": lambda out: make_tiny_openvla(out, TinyOpenVLAConfig(seed=0)),
    "openvla_tiny_b": lambda out: make_tiny_openvla(out, TinyOpenVLAConfig(seed=1)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", choices=sorted(TINY_MAKERS), action="append",
                        help="make only these checkpoints (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild checkpoints that already exist")


def ensure_tiny_models(out: Path, names: list[str], force: bool = False, report=None) -> dict[str, Path]:
    """Build the named checkpoints under ``out`` unless already there (``force``: rebuild); name -> directory.

    Each is built in ``<name>.partial`` and renamed when complete, so a build killed half-way is never taken for a
    finished checkpoint (it is rebuilt next time). One found damaged (no config.json, a weight file missing or cut
    short) is rebuilt too, saying why: tests and the demo would otherwise fail on it with a loader's error.
    """
    paths = {}
    for name in names:
        target = out / name
        damage = _damage(target) if target.is_dir() and not force else None
        if target.is_dir() and not force and damage is None:
            if report:
                report(f"{name}: exists at {target} (use --force to rebuild)")
        else:
            if damage and report:
                report(f"{name}: {damage}; rebuilding")
            partial = target.with_name(f"{name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            TINY_MAKERS[name](partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            if report:
                report(f"{name}: {target}")
        paths[name] = target
    return paths


def _damage(checkpoint: Path) -> str | None:
    """Why an existing checkpoint folder cannot be the complete one a maker writes (None: it looks whole)."""
    if not (checkpoint / "config.json").is_file():
        return f"{checkpoint} has no config.json"
    try:
        check_weights(checkpoint)
    except ValueError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        print(f"make-tiny-models: --out {args.out} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        ensure_tiny_models(args.out, args.only or sorted(TINY_MAKERS), args.force, report=print)
    except OSError as exc:  # --out a file, unwritable, disk full
        print(f"make-tiny-models: {exc}", file=sys.stderr)
        return 2
    return 0
