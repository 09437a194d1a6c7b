"""The facts contract: what "structured visual facts" are, how model output becomes them, and what they may say.

Used by every part of the suite (supplementor output, VLA prompt fusion, teacher/judge labelling, distillation
data, metrics), so that there is exactly one definition of a valid fact.
"""

from task_supplementor.facts.outcome import FactsOutcome, evaluate_output
from task_supplementor.facts.parser import FactsParseError, ParseErrorCode, parse_facts
from task_supplementor.facts.render import render_supplement
from task_supplementor.facts.schema import (
    GRIPPER_STATES, REGIONS, RELATIONS, SCHEMA_VERSION, Facts, Gripper, ObjectFact, Relation, facts_json_schema,
)
from task_supplementor.facts.validator import Limits, ValidationReport, count_tokens, validate_facts

__all__ = [
    "GRIPPER_STATES", "REGIONS", "RELATIONS", "SCHEMA_VERSION",
    "Facts", "FactsOutcome", "FactsParseError", "Gripper", "Limits", "ObjectFact", "ParseErrorCode", "Relation",
    "ValidationReport", "count_tokens", "evaluate_output", "facts_json_schema", "parse_facts", "render_supplement",
    "validate_facts",
]
