"""Constrained decoding never ends in cut-off JSON: the facts schema is bounded to fit the token budget."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from task_supplementor.facts import parse_facts
from task_supplementor.facts.schema import CONSTRAINED_SEPARATORS, SchemaBounds, fit_schema_bounds


@pytest.mark.parametrize("budget", [256, 384, 512, 1024, 2048])
def test_the_longest_admissible_output_fits_the_budget(budget: int) -> None:
    bounds = fit_schema_bounds(budget, 6, 6, 4, 40)
    assert bounds.worst_case_chars() <= budget
    assert bounds.max_objects <= 6 and bounds.max_relations <= 6 and bounds.max_attributes <= 4


def test_bigger_budgets_never_get_tighter_bounds() -> None:
    sizes = [fit_schema_bounds(b, 6, 6, 4, 40).worst_case_chars() for b in range(256, 2049, 64)]
    assert sizes == sorted(sizes)


def test_a_budget_too_small_for_any_facts_is_refused_with_the_minimum() -> None:
    with pytest.raises(ValueError, match="at least"):
        fit_schema_bounds(64, 6, 6, 4, 40)


def test_the_worst_case_instance_is_admitted_by_the_bounded_schema_and_parses() -> None:
    bounds = SchemaBounds(max_objects=2, max_relations=2, max_attributes=2, max_name_chars=12)
    name = "a" * 12
    worst = {"objects": [{"name": name, "attributes": [name, name], "region": "bottom-right"}] * 2,
             "relations": [{"subject": name, "relation": "in_front_of", "object": name}] * 2,
             "gripper": {"state": "unknown", "holding": name}}
    jsonschema.validate(worst, bounds.schema())
    text = json.dumps(worst, separators=CONSTRAINED_SEPARATORS)
    assert len(text) == bounds.worst_case_chars()
    assert len(parse_facts(text).objects) == 2
    object_fact = worst["objects"][0]
    for refused in ({**object_fact, "name": name + "a"},  # too long
                    {**object_fact, "name": "  "},  # blank: would parse to "" and be refused as unparseable
                    {"name": "cup"}):  # keys left out
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**worst, "objects": [refused]}, bounds.schema())


def test_the_compiled_grammar_admits_the_worst_case_and_nothing_longer() -> None:
    """What xgrammar itself accepts, not only what the JSON Schema says: the worst case counted by
    ``worst_case_chars`` is admitted; one more character in a name, or a character written as a JSON escape (6
    characters for 1), is not, so no admissible output is longer than the count; nor is a name starting with a
    space (a blank name would parse to "" and be refused as unparseable)."""
    from xgrammar.testing import _is_grammar_accept_string

    from supplementor_node.constrained import facts_grammar

    bounds = SchemaBounds(max_objects=2, max_relations=2, max_attributes=2, max_name_chars=12)
    grammar = facts_grammar(bounds.schema())
    name = "a" * 12
    worst = {"objects": [{"name": name, "attributes": [name, name], "region": "bottom-right"}] * 2,
             "relations": [{"subject": name, "relation": "in_front_of", "object": name}] * 2,
             "gripper": {"state": "unknown", "holding": name}}
    text = json.dumps(worst, separators=CONSTRAINED_SEPARATORS)
    assert len(text) == bounds.worst_case_chars() and _is_grammar_accept_string(grammar, text)
    refused = {"one character more": text.replace(name, name + "a", 1),
               "a JSON escape": text.replace(f'"{name}"', f'"\\u0061{name[1:]}"', 1),
               "a space after a separator": text.replace(",", ", ", 1),
               "a leading space": text.replace(f'"{name}"', f'" {name[1:]}"', 1)}
    for what, variant in refused.items():
        assert not _is_grammar_accept_string(grammar, variant), what


def test_random_tiny_qwen_under_constraint_always_produces_parseable_facts(tiny_models) -> None:
    """A random-weight model fills every string to its bound: the worst case, and it must still complete."""
    from supplementor_node.backends import BackendConfig
    from supplementor_node.describer import Describer, DescriberConfig

    describer = Describer(DescriberConfig(BackendConfig(str(tiny_models / "qwen2_5_vl_tiny"), device="cpu"),
                                          max_new_tokens=384))
    rng = np.random.default_rng(0)
    for _ in range(3):
        image = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
        described = describer.describe([(image, "put the red block on the blue plate")])[0]
        assert described.new_tokens <= 384
        assert "unparseable" not in described.outcome.violations, described.raw_text
        assert described.outcome.facts is not None
