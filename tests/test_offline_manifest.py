"""The conversion journal (``offline.manifest``) on real files: what a kill, a damaged line or an empty file does.

WHY apart from test_offline.py: these are file-level cases that need no dataset; the end-to-end versions (convert
refusing a damaged journal and deleting nothing) are in test_offline.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from offline.manifest import EpisodeRecord, FailedRecord, Manifest, ManifestError

SETTINGS = {"dataset": "/data/bridge_dataset/1.0.0", "storage": "sqlite3", "image_format": "compressed",
            "bridge_orig": False, "cameras": ["image_0"]}


def _episode(index: int) -> EpisodeRecord:
    name = f"train_{index:06d}"
    return EpisodeRecord(name=name, split="train", index=index, episode_id=index, source=f"traj{index}",
                         task="put the red block on the blue plate", steps=20, cameras=["image_0"],
                         bag=f"bags/train/{name}", checksum="sha256:" + "0" * 64)


def _journal(out: Path, episodes: int = 3) -> Manifest:
    manifest = Manifest.open(out, SETTINGS)
    for index in range(episodes):
        manifest.record(_episode(index))
    manifest.record(FailedRecord(name="train_000009", split="train", index=9, reason="JPEG truncated"))
    return manifest


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
    manifest = _journal(tmp_path)
    intact = manifest.path.read_bytes()
    manifest.path.write_bytes(intact + b'{"kind": "episode", "name": "train_0000')  # killed mid-write
    assert set(Manifest.load(tmp_path).episodes) == {"train_000000", "train_000001", "train_000002"}
    assert len(manifest.path.read_bytes()) > len(intact)  # load alone changes nothing
    reopened = Manifest.open(tmp_path, SETTINGS)
    assert manifest.path.read_bytes() == intact and set(reopened.failed) == {"train_000009"}


@pytest.mark.parametrize("damage", [b"{not json}\n", b'{"kind": "episode", "name": "x"}\n', b'["a list"]\n',
                                    b'{"kind": "settings"}\n'], ids=["garbage", "fields", "not-object", "settings"])
def test_a_damaged_line_before_the_last_is_an_error_that_changes_nothing(tmp_path, damage):
    manifest = _journal(tmp_path)
    lines = manifest.path.read_bytes().splitlines(keepends=True)
    lines[2] = damage
    manifest.path.write_bytes(b"".join(lines))
    before = manifest.path.read_bytes()
    for load in (lambda: Manifest.load(tmp_path), lambda: Manifest.open(tmp_path, SETTINGS)):
        with pytest.raises(ManifestError, match="line 3"):
            load()
    assert manifest.path.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b'{"kind": "settings", "dataset": "/da'], ids=["empty", "torn-settings"])
def test_a_journal_with_no_complete_line_is_a_fresh_folder(tmp_path, content):
    (tmp_path / "manifest.jsonl").write_bytes(content)
    other = {**SETTINGS, "storage": "mcap"}  # any settings: nothing was converted with the old ones
    manifest = Manifest.open(tmp_path, other)
    manifest.record(_episode(0))
    reloaded = Manifest.load(tmp_path)
    assert reloaded.settings == other and set(reloaded.episodes) == {"train_000000"}


def test_a_journal_with_bags_still_refuses_other_settings(tmp_path):
    _journal(tmp_path)
    with pytest.raises(ValueError, match="storage: folder has 'sqlite3', asked 'mcap'"):
        Manifest.open(tmp_path, {**SETTINGS, "storage": "mcap"})
