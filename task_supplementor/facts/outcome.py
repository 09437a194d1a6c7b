"""One call from raw model text to everything a consumer publishes: facts, supplement, validity, reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from task_supplementor.facts.parser import FactsParseError, parse_facts
from task_supplementor.facts.render import render_supplement
from task_supplementor.facts.schema import Facts
from task_supplementor.facts.validator import Limits, Tokenizer, validate_facts


@dataclass
class FactsOutcome:
    """Result of judging one model output. ``facts`` is None only when the output did not parse."""

    facts: Facts | None
    supplement: str
    valid: bool
    violations: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    task_overlap: float = 0.0
    supplement_tokens: int | None = None


def evaluate_output(raw: str, task: str, limits: Limits = Limits(),
                    tokenizer: Tokenizer | None = None) -> FactsOutcome:
    """Parse and validate; never raises on bad model output (it becomes an invalid outcome with the reason)."""
    try:
        facts = parse_facts(raw)
    except FactsParseError as exc:
        return FactsOutcome(facts=None, supplement="", valid=False, violations=["unparseable"],
                            details=[f"unparseable: {exc.code.value}: {exc}"])
    report = validate_facts(facts, task, limits, tokenizer)
    return FactsOutcome(facts=facts, supplement=render_supplement(facts), valid=report.valid,
                        violations=report.violations, details=report.details, task_overlap=report.task_overlap,
                        supplement_tokens=report.supplement_tokens)
