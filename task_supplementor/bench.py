"""``task-supplementor bench <target>``: one front door for the benchmarks, one format for their records.

Each target module (``supplementor_node.bench``, ``vla_node.bench``, ``offline.bench``) exposes
``add_arguments(parser)`` and ``run(args) -> int`` and records its table with :func:`record_table`, so every table in
docs/benchmarks.md carries the machine, date, command and package versions that produced it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import platform
import shlex
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

TARGETS = {
    "supplementor": "supplementor_node.bench",
    "vla": "vla_node.bench",
    "offline": "offline.bench",
}
BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_VERSIONED = ("torch", "transformers", "rosbags", "numpy", "tensorflow-cpu", "tensorflow-datasets", "xgrammar")


def machine_description() -> str:
    """CPU model and core count, plus the GPU name when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    return text


def package_versions() -> str:
    found = []
    for name in _VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return f"python {platform.python_version()}, " + ", ".join(found)


def record_table(title: str, table_markdown: str, argv: Sequence[str], notes: str = "",
                 path: Path = BENCHMARKS_MD) -> str:
    """Print ``table_markdown`` with its provenance and append the same section to docs/benchmarks.md.

    ``argv`` is the command line the benchmark was parsed from (not ``sys.argv``: a run started through
    ``cli.main(argv)`` from Python would otherwise record its host process's command)."""
    command = "task-supplementor " + shlex.join(argv)  # quoted: pasted back, it runs the same benchmark
    section = "\n".join([
        f"## {title}",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_description()}",
        f"- command: `{command}`",
        f"- versions: {package_versions()}",
        "",
        table_markdown.strip(),
        "",
        notes.strip(),
        "",
    ])
    print(section)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Benchmarks\n\nEach recorded section below was produced by the command shown in it.\n\n")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(section + "\n")
    return section


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, module_name in TARGETS.items():
        importlib.import_module(module_name).add_arguments(sub.add_parser(name, help=f"benchmark {name}"))


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(TARGETS[args.target]).run(args) or 0)
