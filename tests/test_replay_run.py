"""A replay's record folder: refusing to mix runs, and what a resume keeps, drops and refuses (files only; the
resume of a real killed replay is in test_offline.py)."""

from __future__ import annotations

import json

import pytest

from offline.replay_run import RunFolder

SETTINGS = {"bags": ["train_000000", "train_000001", "train_000002"], "mode": "lockstep", "rate": None}


def _frame(bag: str, index: int) -> dict:
    return {"bag": bag, "frame": index, "stamp_ns": index}


def _interrupted(out):
    """A run that finished its first bag, wrote the second bag's frames but died before journalling it."""
    run = RunFolder.start(out, SETTINGS)
    run.bag_done("train_000000", [_frame("train_000000", 0), _frame("train_000000", 1)], 7_000, 1.5)
    with (out / "frames.jsonl").open("a") as handle:
        handle.write(json.dumps(_frame("train_000001", 0)) + "\n")
    (out / "records" / "train_000000").mkdir()
    (out / "records" / "train_000001").mkdir()  # the partial record of the bag that was playing
    (out / "records" / "train_000001" / "part.db3").write_bytes(b"partial")


def test_a_new_run_refuses_a_folder_holding_a_replay_and_points_to_resume(tmp_path):
    _interrupted(tmp_path)
    with pytest.raises(FileExistsError, match="--resume to finish an interrupted one"):
        RunFolder.start(tmp_path, SETTINGS)


def test_resume_keeps_the_journalled_bags_and_drops_what_the_interrupted_one_left(tmp_path):
    _interrupted(tmp_path)
    run = RunFolder.resume(tmp_path, dict(SETTINGS))
    assert run.bags_done == ["train_000000"] and run.next_free_ns == 7_000 and run.seconds == 1.5
    assert run.frames == [_frame("train_000000", 0), _frame("train_000000", 1)]
    on_disk = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert on_disk == run.frames
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["train_000000"]


def test_resume_refuses_other_settings_and_damaged_journals_and_changes_nothing(tmp_path):
    _interrupted(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"other settings \(mode differ\)"):
        RunFolder.resume(tmp_path, dict(SETTINGS, mode="realtime"))
    with pytest.raises(ValueError, match=r"other settings \(bags differ\)"):
        RunFolder.resume(tmp_path, dict(SETTINGS, bags=["train_000001", "train_000000", "train_000002"]))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    (tmp_path / "bags.jsonl").write_text('{"bag": "train_000001", "frames": 1, "next_free_ns": 1, "seconds": 1}\n')
    with pytest.raises(ValueError, match="does not list the first bags"):
        RunFolder.resume(tmp_path, dict(SETTINGS))
    (tmp_path / "bags.jsonl").write_text('{"bag": "train_000000", "frames": 2}\n')  # no next_free_ns
    with pytest.raises(ValueError, match="not a record of this run"):
        RunFolder.resume(tmp_path, dict(SETTINGS))
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="run.json is damaged"):
        RunFolder.resume(tmp_path, dict(SETTINGS))


def test_resume_of_an_empty_folder_starts_the_run(tmp_path):
    run = RunFolder.resume(tmp_path / "new", dict(SETTINGS))
    assert run.bags_done == [] and json.loads((tmp_path / "new" / "run.json").read_text()) == SETTINGS


def test_resume_leaves_out_a_line_cut_short_by_the_crash_and_refuses_a_journal_ahead_of_its_frames(tmp_path):
    _interrupted(tmp_path)
    with (tmp_path / "bags.jsonl").open("a") as handle:
        handle.write('{"bag": "train_000001", "fra')  # died writing the second bag's journal line
    (tmp_path / "records" / ".DS_Store").write_bytes(b"")  # not a record: left alone
    with (tmp_path / "frames.jsonl").open("a") as handle:
        handle.write('\x00\x00garbled}\n{"bag": "train_000001", "frame": 1}\n')  # after the journalled frames
    run = RunFolder.resume(tmp_path, dict(SETTINGS))
    assert run.bags_done == ["train_000000"] and len(run.frames) == 2
    assert (tmp_path / "bags.jsonl").read_text().endswith("}\n")  # the cut line is gone before anything is appended
    run.bag_done("train_000001", [_frame("train_000001", 0)], 9_000, 1.0)
    assert RunFolder.resume(tmp_path, dict(SETTINGS)).bags_done == ["train_000000", "train_000001"]
    assert (tmp_path / "records" / ".DS_Store").is_file()
    (tmp_path / "frames.jsonl").write_text(json.dumps(_frame("train_000000", 0)) + "\n")  # frames lost, journal kept
    with pytest.raises(ValueError, match="does not hold the frames journalled for train_000000, train_000001"):
        RunFolder.resume(tmp_path, dict(SETTINGS))


def test_a_run_that_failed_before_its_first_bag_does_not_block_the_same_command(tmp_path):
    RunFolder.start(tmp_path, SETTINGS)  # e.g. no node was running: nothing recorded, run.json written
    RunFolder.resume(tmp_path, dict(SETTINGS))  # a resume that fails the same way adds nothing either
    run = RunFolder.start(tmp_path, dict(SETTINGS, mode="realtime"))
    assert run.bags_done == [] and json.loads((tmp_path / "run.json").read_text())["mode"] == "realtime"


def test_a_replay_folder_without_run_json_cannot_be_resumed(tmp_path):
    (tmp_path / "frames.jsonl").write_text(json.dumps(_frame("train_000000", 0)) + "\n")
    with pytest.raises(ValueError, match="without run.json"):
        RunFolder.resume(tmp_path, dict(SETTINGS))
