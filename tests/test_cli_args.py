"""Command-line numbers out of range are refused by argparse with the option's name, before anything runs; a bad
checkpoint or device given to ``bench vla`` is one line, not a traceback."""

from __future__ import annotations

import pytest

from task_supplementor.cli import main


@pytest.mark.parametrize("argv, message", [
    (["bench", "vla", "--batch", "0", "--no-record"], "argument --batch: must be >= 1, not 0"),
    (["bench", "vla", "--iters", "-3", "--no-record"], "argument --iters: must be >= 1, not -3"),
    (["bench", "vla", "--warmup", "x", "--no-record"], "argument --warmup: 'x' is not a whole number"),
    (["bench", "vla", "--paths", "native,foo", "--no-record"], "argument --paths: foo: paths are a comma-separated"),
    (["replay", "bag", "--max-frames", "0"], "argument --max-frames: must be >= 1, not 0"),
    (["replay", "bag", "--action-timeout", "-1"], "argument --action-timeout: must be > 0, not -1"),
    (["replay", "bag", "--rate", "nan"], "argument --rate: must be > 0, not nan"),
    (["convert", "data", "--out", "bags", "--sample", "0"], "argument --sample: must be >= 1, not 0"),
    (["demo", "--max-frames", "0"], "argument --max-frames: must be >= 1, not 0"),
    (["demo", "--split", "test"], "argument --split: invalid choice: 'test'"),
    (["make-synthetic-bridge", "--out", "d", "--corrupt", "foo:1"],
     "argument --corrupt: expected SPLIT:INDEX with SPLIT one of train, val, not 'foo:1'"),
    (["make-synthetic-bridge", "--out", "d", "--episodes", "0"], "argument --episodes: must be >= 1, not 0"),
    (["make-synthetic-bridge", "--out", "d", "--min-steps", "3"], "argument --min-steps: must be >= 16, not 3"),
])
def test_out_of_range_numbers_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["bench", "vla", "--checkpoint", "/nonexistent/openvla-7b", "--no-record"], "no config.json"),
    (["bench", "vla", "--device", "cpux", "--no-record"], "--device cpux:"),
])
def test_bench_vla_says_what_is_wrong_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    out = capsys.readouterr()
    assert message in out.out and "Traceback" not in out.out + out.err, out


def test_demo_checks_the_device_and_checkpoints_before_anything_runs(tmp_path, capsys):
    """As the nodes would at start, but at once: a replay of nodes that hold a bad checkpoint back waits for nothing."""
    work = tmp_path / "work"
    assert main(["demo", "--device", "gpu", "--work-dir", str(work)]) == 2
    assert "device 'gpu' is not auto, cpu, cuda, cuda:N" in capsys.readouterr().err
    checkpoint = tmp_path / "openvla"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    assert main(["demo", "--vla-checkpoint", str(checkpoint), "--work-dir", str(work)]) == 2
    assert "has no norm_stats" in capsys.readouterr().err
    assert not work.exists()


def test_bad_input_to_the_other_commands_is_one_line_and_exit_2(tmp_path, capsys):
    """Checked before anything is built, published or written: nothing appears under ``tmp_path`` but the file."""
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["make-synthetic-bridge", "--out", str(tmp_path / "d"), "--episodes", "2", "--corrupt", "train:9"],
         "--corrupt train:9: train has 2 episode(s) (indices 0..1)"),
        (["make-synthetic-bridge", "--out", str(afile)], f"--out {afile} is a file, not a folder"),
        (["make-tiny-models", "--out", str(afile)], f"--out {afile} is a file, not a folder"),
        (["replay", "bag", "--camera-topic", "bad topic"], "--camera-topic 'bad topic' is not a valid ROS topic name"),
        (["replay", "bag", "--task-topic", ""], "--task-topic '' is not a valid ROS topic name"),
        (["replay", "bag", "--remap", "/bridge/state:=a b"], "--remap /bridge/state:='a b' is not a valid ROS topic"),
        (["replay", "bag", "--rate", "2"], "--rate 2 applies to --mode realtime only"),
        (["replay", "--manifest", str(afile)], f"{afile} is not a manifest.jsonl"),
        (["check-facts", str(tmp_path)], f"{tmp_path}: a folder, not a file"),
        (["check-facts", str(afile), "--tokenizer", str(tmp_path / "nope")], "nope: no such folder"),
        (["demo", "--episodes", "5:2", "--work-dir", str(tmp_path / "w")], "--episodes 5:2 selects no episode"),
        (["demo", "--episodes", "3:9", "--work-dir", str(tmp_path / "w")],
         "--episodes 3:9 out of range: the split has 4 episodes"),
        (["bench", "supplementor", "--checkpoint", str(tmp_path / "nope"), "--no-record"],
         "not a Qwen2.5-VL checkpoint"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        out = capsys.readouterr()
        assert message in out.out + out.err and "Traceback" not in out.out + out.err, (argv, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
