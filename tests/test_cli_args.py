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
