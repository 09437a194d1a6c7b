"""``task-supplementor check-facts`` on real files, through the installed command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

GOOD = {"objects": [{"name": "red block", "region": "left"}, {"name": "blue plate", "region": "right"}],
        "relations": [{"subject": "red block", "relation": "left_of", "object": "blue plate"}],
        "gripper": {"state": "open"}}
TASK = "put the red block on the blue plate"


def run_check(path, *extra):
    exe = shutil.which("task-supplementor") or sys.executable
    cmd = [exe] if exe != sys.executable else [sys.executable, "-m", "task_supplementor.cli"]
    return subprocess.run(cmd + ["check-facts", str(path), *extra], capture_output=True, text=True, timeout=60)


def test_check_facts_reports_malformed_lines_and_rates(tmp_path):
    path = tmp_path / "outputs.jsonl"
    lines = [
        json.dumps({"task": TASK, "output": "```json\n" + json.dumps(GOOD) + "\n```"}),
        json.dumps({"task": TASK, "facts": GOOD}),
        "{this is not json",
        json.dumps({"task": TASK, "output": json.dumps({"objects": [{"name": "red block",
                                                                      "attributes": ["should move left"]}]})}),
        "",
        json.dumps({"output": "missing task"}),
        json.dumps({"task": TASK, "output": "no facts here"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_check(path)
    assert result.returncode == 1
    assert f"{path}:3: malformed line: not JSON" in result.stderr
    assert f"{path}:6: malformed line: missing string field 'task'" in result.stderr
    assert "2 line(s) could not be read" in result.stderr
    table = result.stdout
    assert "| malformed lines " in table and "| 2 |" in table
    assert "| valid rate" in table and "50.0%" in table
    assert "action_advice" in table and "25.0% (1)" in table
    assert "unparseable" in table

    as_json = json.loads(run_check(path, "--json").stdout)
    assert as_json["outputs"] == 4 and as_json["malformed"] == 2 and as_json["valid_rate"] == 0.5
    assert as_json["supplement_chars"] and all(c > 0 for c in as_json["supplement_chars"])


def test_check_facts_clean_file_exits_zero_and_missing_file_is_clear(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"task": TASK, "facts": GOOD}) + "\n", encoding="utf-8")
    ok = run_check(path, "--max-objects", "1")
    assert ok.returncode == 0 and "too_many_objects" in ok.stdout
    missing = run_check(tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_lines_json_cannot_read_are_malformed_and_verbose_keeps_json_output_valid(tmp_path):
    """Nesting deeper than the decoder's recursion limit, or an integer past Python's digit limit, is a malformed
    line like any other (not a traceback that loses the rest of the file); -v details go to stderr."""
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join([
        "[" * 200_000,
        '{"task": "t", "id": ' + "9" * 5000 + ', "output": "{}"}',
        json.dumps({"task": TASK, "output": json.dumps({"objects": [{"name": "cup", "attributes": ["should go"]}]})}),
    ]) + "\n", encoding="utf-8")
    result = run_check(path, "--json", "-v")
    assert result.returncode == 1
    assert f"{path}:1: malformed line: not readable JSON (RecursionError" in result.stderr
    assert f"{path}:2: malformed line: not readable JSON (ValueError" in result.stderr
    assert f"{path}:3: action_advice" in result.stderr
    assert json.loads(result.stdout)["outputs"] == 1


def test_an_empty_file_is_not_a_clean_pass(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    result = run_check(path)
    assert result.returncode == 1 and "holds no model outputs" in result.stderr


def test_a_replay_record_is_named_as_such_not_judged_unparseable(tmp_path):
    """frames.jsonl of a replay holds the node's verdict on its facts, not the model's output: refused by name."""
    path = tmp_path / "frames.jsonl"
    record = {"bag": "train_000000", "frame": 0, "task": TASK, "stamp_ns": 1,
              "facts": {"valid": False, "supplement": "objects: cup (left).", "violations": ["self_relation"],
                        "model_id": "/models/qwen"}}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = run_check(path)
    assert result.returncode != 0
    assert f"{path}:1: malformed line: a replay's frames.jsonl record" in result.stderr
