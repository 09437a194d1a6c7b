"""Durable writes for the offline jobs' journals (the conversion manifest, a replay's record folder).

WHY one place: a journal line is what tells a rerun that work is done, so it must be on disk before the job goes on;
and a file rewritten whole (a replay's settings, a trimmed journal) must never be found half-written after a crash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def json_lines(entries: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line, keys sorted (a journal's lines compare as text across runs)."""
    return "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries)


def append_synced(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` and flush it to disk (fsync) before returning."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a crash leaves the old file or the new one, never a mix."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
