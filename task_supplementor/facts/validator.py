"""The content rules of the facts contract; every violated rule is named, none is silently fixed.

Rules (names are stable: they appear in VisualFacts.violations, check-facts tables and paper metrics):

- ``not_visual``: intentions, predictions, hedged guesses or properties a camera cannot see (weight, temperature...).
- ``task_copy``: the task instruction restated as a fact. Naming an object that the task also names is fine;
  a run of task words that goes beyond object names ("put the ... on the ...") is not.
- ``action_advice``: imperatives, "should"/"need to"/"next", motion aimed at the robot.
- ``too_many_objects`` / ``too_many_relations`` / ``too_many_attributes`` / ``supplement_too_long_chars`` /
  ``supplement_too_long_tokens``: the size bounds of :class:`Limits`.
- ``unlisted_relation_object``: a relation names something that is neither a listed object nor the gripper, which
  makes the facts internally inconsistent.
- ``self_relation``: a relation between a thing and itself ("cup left of cup"): nothing a camera could verify.
- ``unparseable``: added by :func:`task_supplementor.facts.evaluate_output` when there are no facts at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from task_supplementor.facts.render import render_supplement
from task_supplementor.facts.schema import Facts


@dataclass(frozen=True)
class Limits:
    """Size bounds of one facts set. Defaults keep the supplement well inside a VLA prompt's budget."""

    max_objects: int = 6
    max_relations: int = 6
    max_attributes: int = 4
    max_supplement_chars: int = 360
    max_supplement_tokens: int = 96
    max_task_ngram: int = 4  # a shared run of this many task words (beyond object names) is a copy


class Tokenizer(Protocol):
    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]: ...


@dataclass
class ValidationReport:
    valid: bool
    violations: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    task_overlap: float = 0.0          # fraction of the task's word trigrams that appear in the supplement
    supplement_chars: int = 0
    supplement_tokens: int | None = None


def _words_pattern(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)


_NOT_VISUAL = [
    ("intention", _words_pattern(r"wants?", r"intends?", r"plans?", r"planning", r"goal", r"aims?", r"trying",
                                 r"supposed to", r"meant to", r"in order to", r"purpose", r"used for")),
    ("prediction", _words_pattern(r"will", r"going to", r"gonna", r"about to", r"soon", r"later", r"eventually",
                                  r"expected", r"expects?", r"predicted", r"would")),
    ("guess", _words_pattern(r"probably", r"likely", r"possibly", r"perhaps", r"maybe", r"might", r"may",
                             r"could", r"seems to be", r"appears to be")),
    ("hidden property", _words_pattern(r"heavy", r"lightweight", r"weighs?", r"weight", r"mass", r"kg", r"grams?",
                                       r"hot", r"warm", r"cold", r"temperature", r"fragile", r"slippery", r"sticky",
                                       r"smells?", r"tastes?", r"expensive", r"cheap", r"price", r"owner",
                                       r"belongs? to", r"magnetic", r"hidden")),
]

# Verbs that are only verbs, and words that are also nouns/adjectives ("place mat", "lower shelf", "open drawer"):
# the latter count as imperatives only when an article or a direction follows.
_ROBOT_VERBS = (r"move|go|grasp|grab|pick|put|push|pull|lift|rotate|reach|approach|release|insert|take|bring|"
                r"wipe|sweep|pour|align")
_DUAL_VERBS = r"place|lower|drop|stack|slide|turn|fold|unfold|flip|open|close|position"
_IMPERATIVE = re.compile(rf"^\s*(?:(?:{_ROBOT_VERBS})\b(?=\s+\S)|(?:{_DUAL_VERBS})\s+(?:the|a|an|it|up|down|left|"
                         r"right)\b)", re.IGNORECASE)
_ACTION_ADVICE = [
    ("advice", _words_pattern(r"should", r"shall", r"must", r"needs? to", r"have to", r"has to", r"ought to",
                              r"recommend\w*", r"suggest\w*", r"try to", r"let'?s", r"make sure", r"be careful",
                              r"please")),
    ("sequencing", re.compile(r"\b(?:next(?!\s+to\b)|then|afterwards|step \d+)\b", re.IGNORECASE)),
    ("imperative", _IMPERATIVE),
    ("robot motion", re.compile(rf"\b(?:{_ROBOT_VERBS}|{_DUAL_VERBS})\s+(?:the\s+)?"
                                r"(?:gripper|arm|robot|end[- ]effector)\b|"
                                r"\b(?:move|go|rotate|turn|shift)\s+(?:left|right|up|down|forward|backward|"
                                r"closer|away|toward\w*)\b", re.IGNORECASE)),
]

_STOPWORDS = frozenset({"the", "a", "an", "of", "to", "and", "some", "this", "that"})
_GRIPPER_NAMES = frozenset({"gripper", "the gripper", "robot gripper", "robot", "arm", "robot arm"})


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _longest_common_run(a: list[str], b: list[str]) -> list[str]:
    """Longest contiguous word sequence shared by ``a`` and ``b`` (dynamic programming, inputs are short)."""
    best_len, best_end = 0, 0
    previous = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                if current[j] > best_len:
                    best_len, best_end = current[j], i
        previous = current
    return a[best_end - best_len:best_end]


def _trigram_overlap(task_words: list[str], text_words: list[str]) -> float:
    task_grams = {tuple(task_words[i:i + 3]) for i in range(len(task_words) - 2)}
    if not task_grams:
        return 0.0
    text_grams = {tuple(text_words[i:i + 3]) for i in range(len(text_words) - 2)}
    return len(task_grams & text_grams) / len(task_grams)


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Token count without special tokens (HF tokenizers accept add_special_tokens; plain ones may not)."""
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:
        return len(tokenizer.encode(text))


def _check_wording(facts: Facts, report: ValidationReport) -> None:
    for rule, patterns in (("not_visual", _NOT_VISUAL), ("action_advice", _ACTION_ADVICE)):
        for path, text in facts.text_fields():
            for kind, pattern in patterns:
                match = pattern.search(text)
                if match:
                    _add(report, rule, f"{path} {text!r}: {kind} ({match.group(0).strip()!r})")
                    break


def _check_task_copy(facts: Facts, task: str, limits: Limits, report: ValidationReport) -> None:
    task_words = _words(task)
    if not task_words:
        return
    name_words = {w for obj in facts.objects for w in _words(obj.name)}
    task_text = " ".join(task_words)
    for path, text in facts.text_fields():
        words = _words(text)
        if len(task_words) >= 2 and " ".join(words) == task_text:
            _add(report, "task_copy", f"{path} {text!r}: the task text verbatim")
            continue
        run = _longest_common_run(words, task_words)
        beyond_names = [w for w in run if w not in name_words and w not in _STOPWORDS]
        if len(run) >= limits.max_task_ngram and beyond_names:
            _add(report, "task_copy",
                 f"{path} {text!r}: restates {len(run)} task words {' '.join(run)!r}")


def _check_sizes(facts: Facts, supplement: str, limits: Limits, tokenizer: Tokenizer | None,
                 report: ValidationReport) -> None:
    if len(facts.objects) > limits.max_objects:
        _add(report, "too_many_objects", f"{len(facts.objects)} objects > {limits.max_objects}")
    if len(facts.relations) > limits.max_relations:
        _add(report, "too_many_relations", f"{len(facts.relations)} relations > {limits.max_relations}")
    for i, obj in enumerate(facts.objects):
        if len(obj.attributes) > limits.max_attributes:
            _add(report, "too_many_attributes",
                 f"objects[{i}] has {len(obj.attributes)} attributes > {limits.max_attributes}")
    if report.supplement_chars > limits.max_supplement_chars:
        _add(report, "supplement_too_long_chars",
             f"supplement has {report.supplement_chars} characters > {limits.max_supplement_chars}")
    if tokenizer is not None:
        report.supplement_tokens = count_tokens(tokenizer, supplement)
        if report.supplement_tokens > limits.max_supplement_tokens:
            _add(report, "supplement_too_long_tokens",
                 f"supplement has {report.supplement_tokens} tokens > {limits.max_supplement_tokens}")


def _check_relations(facts: Facts, report: ValidationReport) -> None:
    names = {obj.name.strip().lower() for obj in facts.objects} | _GRIPPER_NAMES
    for i, rel in enumerate(facts.relations):
        for role, value in (("subject", rel.subject), ("object", rel.object)):
            if value.strip().lower() not in names:
                _add(report, "unlisted_relation_object", f"relations[{i}].{role} {value!r} is not a listed object")
        if rel.subject.strip().lower() == rel.object.strip().lower():
            _add(report, "self_relation", f"relations[{i}] relates {rel.subject!r} to itself")


def _add(report: ValidationReport, rule: str, detail: str) -> None:
    if rule not in report.violations:
        report.violations.append(rule)
    report.details.append(f"{rule}: {detail}")


def validate_facts(facts: Facts, task: str, limits: Limits = Limits(),
                   tokenizer: Tokenizer | None = None) -> ValidationReport:
    """Check every rule; ``tokenizer`` (anything with ``encode``) enables the token bound, e.g. the VLA's own."""
    supplement = render_supplement(facts)
    report = ValidationReport(valid=True, supplement_chars=len(supplement),
                              task_overlap=_trigram_overlap(_words(task), _words(supplement)))
    _check_wording(facts, report)
    _check_task_copy(facts, task, limits, report)
    _check_sizes(facts, supplement, limits, tokenizer, report)
    _check_relations(facts, report)
    report.valid = not report.violations
    return report
