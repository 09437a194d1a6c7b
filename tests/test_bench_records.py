"""How benchmark tables are written: the provenance of a recorded section, and the supplementor table's cells."""

from __future__ import annotations

import argparse
import sys

from supplementor_node.bench import _table
from task_supplementor.bench import record_table


def test_a_recorded_section_carries_a_command_that_pastes_back(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python", "-c", "host process"])  # not what the benchmark was run with
    argv = ["bench", "vla", "--checkpoint", "/models/my ckpt"]
    path = tmp_path / "benchmarks.md"
    record_table("T1", "| a |\n|---|\n| 1 |", argv, "notes one", path=path)
    record_table("T2", "| b |\n|---|\n| 2 |", argv, path=path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n") and text.count("## T1") == 1 and text.count("## T2") == 1
    assert "- command: `task-supplementor bench vla --checkpoint '/models/my ckpt'`" in text
    assert text.index("## T1") < text.index("notes one") < text.index("## T2")  # appended in run order
    for field in ("- date: ", "- machine: ", "- versions: python "):
        assert text.count(field) == 2, field


def test_the_cli_hands_a_benchmark_the_command_line_it_was_given(monkeypatch):
    """``cli.main(argv)`` called from Python records ``argv``, not the host's ``sys.argv``."""
    import task_supplementor.bench
    from task_supplementor import cli

    seen = []
    monkeypatch.setattr(sys, "argv", ["python", "-c", "host process"])
    monkeypatch.setattr(task_supplementor.bench, "run", lambda args: seen.append(args.argv) or 0)
    assert cli.main(["bench", "offline", "--no-record"]) == 0
    assert seen == [["bench", "offline", "--no-record"]]


def test_supplementor_table_rows_match_the_header_and_compare_only_with_a_run_reference():
    args = argparse.Namespace(batches=[2, 4])
    measured = {"ttft_ms": 10.0, "decode_tok_s": 50.0, "msgs_s_b1": 1.0, "tokens": [1, 2, 3],
                "b2": (1.5, 30.0), "b4": (2.5, 50.0)}
    without_reference = _table({"fast": measured, "static": {"error": "ValueError: bad image size"}}, args)
    header, _, fast, failed = without_reference.splitlines()
    assert fast.endswith("| - |"), "no generate row: nothing to compare with"
    assert header.count("|") == fast.count("|") == failed.count("|")
    with_reference = _table({"generate": measured, "fast": {**measured, "tokens": [1, 2, 4]}}, args)
    assert with_reference.splitlines()[2].endswith("| reference |")
    assert with_reference.splitlines()[3].endswith("| no |")


def test_offline_bench_refuses_sizes_it_cannot_measure_before_converting_anything(capsys):
    """One step per bag has no interval to time (it divided by zero after every conversion had run)."""
    from task_supplementor import cli

    assert cli.main(["bench", "offline", "--steps", "1", "--no-record"]) == 2
    assert "need --steps >= 16" in capsys.readouterr().err
