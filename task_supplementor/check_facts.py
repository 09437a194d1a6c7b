"""``task-supplementor check-facts FILE.jsonl``: the format check of experiment E1.

Each line is one model output to judge: ``{"task": "...", "output": "<raw model text>"}`` (``facts`` with an already
parsed object instead of ``output`` also works; ``id`` is optional). A line that is not such a JSON object is
*malformed*: it is reported with its line number, counted, and makes the exit status non-zero. A model output that
does not parse as facts is not malformed, it is an invalid output (rule ``unparseable``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from task_supplementor.cli_args import non_negative_int
from task_supplementor.facts import FactsOutcome, Limits, evaluate_output


@dataclass
class CheckSummary:
    lines: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    outputs: int = 0
    valid: int = 0
    violations: Counter = field(default_factory=Counter)
    supplement_chars: list[int] = field(default_factory=list)
    supplement_tokens: list[int] = field(default_factory=list)
    task_overlap: list[float] = field(default_factory=list)

    def add(self, outcome: FactsOutcome) -> None:
        self.outputs += 1
        self.valid += outcome.valid
        self.violations.update(outcome.violations)
        if outcome.facts is not None:
            self.supplement_chars.append(len(outcome.supplement))
            self.task_overlap.append(outcome.task_overlap)
            if outcome.supplement_tokens is not None:
                self.supplement_tokens.append(outcome.supplement_tokens)


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None, reason) for each non-blank line; undecodable bytes are malformed, not fatal."""
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"not JSON ({exc.msg} at column {exc.colno})"
                continue
            except (RecursionError, ValueError) as exc:  # nested too deep, an integer too long to convert
                yield number, None, f"not readable JSON ({type(exc).__name__}: {str(exc)[:80]})"
                continue
            if not isinstance(record, dict):
                yield number, None, f"a JSON {type(record).__name__}, expected an object"
            elif not isinstance(record.get("task"), str):
                yield number, None, "missing string field 'task'"
            elif isinstance(record.get("facts"), dict) and "violations" in record["facts"] and "bag" in record:
                yield number, None, ("a replay's frames.jsonl record: the node judged these facts already "
                                     "(facts.valid, facts.violations); check-facts judges raw model outputs")
            elif not isinstance(record.get("output"), str) and not isinstance(record.get("facts"), dict):
                yield number, None, "needs a string 'output' or an object 'facts'"
            else:
                yield number, record, ""


def check_file(path: Path, limits: Limits, tokenizer: Any = None, verbose: bool = False) -> CheckSummary:
    summary = CheckSummary()
    for number, record, reason in _records(path):
        summary.lines += 1
        if record is None:
            summary.malformed.append((number, reason))
            continue
        raw = record["output"] if isinstance(record.get("output"), str) else json.dumps(record["facts"])
        outcome = evaluate_output(raw, record["task"], limits, tokenizer)
        summary.add(outcome)
        if verbose and not outcome.valid:  # stderr: stdout stays the table (or valid JSON with --json)
            for detail in outcome.details:
                print(f"{path}:{number}: {detail}", file=sys.stderr)
    return summary


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return f"{p50:.0f} / {p90:.0f} / {p99:.0f} / {max(values):.0f}"


def format_table(summary: CheckSummary) -> str:
    rows: list[tuple[str, str]] = [
        ("lines read", str(summary.lines)),
        ("malformed lines", str(len(summary.malformed))),
        ("model outputs judged", str(summary.outputs)),
        ("valid rate", f"{summary.valid / summary.outputs:.1%}" if summary.outputs else "-"),
    ]
    for rule, count in sorted(summary.violations.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append((f"  {rule}", f"{count / summary.outputs:.1%} ({count})"))
    rows.append(("supplement chars p50/p90/p99/max", _percentiles(summary.supplement_chars)))
    if summary.supplement_tokens:
        rows.append(("supplement tokens p50/p90/p99/max", _percentiles(summary.supplement_tokens)))
    if summary.task_overlap:
        rows.append(("mean task trigram overlap", f"{np.mean(summary.task_overlap):.3f}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _load_tokenizer(path: str) -> Any:
    """A local tokenizer; WHY the folder check: transformers takes any other string for a Hub id and answers with
    a message about connecting to huggingface.co."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise ValueError(f"--tokenizer {path}: no such folder (a local tokenizer or checkpoint directory)")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load a tokenizer from {path}: {' '.join(str(exc).split())}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="JSON-lines file, one {'task', 'output'|'facts'} object per line")
    parser.add_argument("--tokenizer", help="local tokenizer directory to enforce the token bound (e.g. the VLA's)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print every violation with its line number (to stderr)")
    defaults = Limits()
    for name in ("max_objects", "max_relations", "max_attributes", "max_supplement_chars",
                 "max_supplement_tokens", "max_task_ngram"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=non_negative_int, default=getattr(defaults, name),
                            help=f"(default {getattr(defaults, name)})")


def run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        what = "a folder, not a file" if args.file.is_dir() else "no such file"
        print(f"check-facts: {args.file}: {what}", file=sys.stderr)
        return 2
    limits = Limits(**{name: getattr(args, name) for name in asdict(Limits())})
    try:
        tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    except ValueError as exc:
        print(f"check-facts: {exc}", file=sys.stderr)
        return 2
    summary = check_file(args.file, limits, tokenizer, verbose=args.verbose)
    for number, reason in summary.malformed:
        print(f"{args.file}:{number}: malformed line: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "lines": summary.lines, "malformed": len(summary.malformed), "outputs": summary.outputs,
            "valid_rate": summary.valid / summary.outputs if summary.outputs else None,
            "violation_rates": {k: v / summary.outputs for k, v in summary.violations.items()},
            "supplement_chars": summary.supplement_chars, "supplement_tokens": summary.supplement_tokens,
        }, indent=2))
    else:
        print(format_table(summary))
    if summary.malformed:
        print(f"check-facts: {len(summary.malformed)} line(s) could not be read", file=sys.stderr)
        return 1
    if not summary.outputs:
        print(f"check-facts: {args.file} holds no model outputs to judge", file=sys.stderr)
        return 1
    return 0
