"""Episode indices on a multi-shard dataset, as the real BridgeData v2 release is (1024 train shards).

TFDS reads up to 16 shard files side by side, 16 records at a time, unless the dataset is marked ordered; the real
release is not, so a range read must still return the episodes of the split in file order, or a bag named
``train_000017`` would hold another episode than index 17.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_range_read_returns_the_split_in_file_order_across_shards(tmp_path):
    subprocess.run([sys.executable, "-m", "task_supplementor.cli", "make-synthetic-bridge", "--out", str(tmp_path),
                    "--episodes", "18", "--val-episodes", "1", "--min-steps", "16", "--max-steps", "16"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    # a first shard longer than TFDS's interleave block (16), so an interleaved read would show a reorder
    probe = subprocess.run([sys.executable, str(REPO / "tests" / "peers" / "bridge_read_order.py"),
                            str(tmp_path / "bridge_dataset" / "1.0.0"), "17"],
                           cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    ids = json.loads(probe.stdout.strip().splitlines()[-1])
    assert ids["range"] == ids["one_by_one"] == list(range(18))
