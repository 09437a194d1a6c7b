"""The facts contract on a table of good and bad model outputs: parser, validator, renderer, schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from task_supplementor.facts import (
    Facts, FactsParseError, Limits, ObjectFact, ParseErrorCode, Relation, evaluate_output, facts_json_schema,
    parse_facts, render_supplement, validate_facts,
)

TASK = "put the red block on the blue plate"


def facts_json(objects=(), relations=(), gripper=None) -> str:
    body = {"objects": list(objects), "relations": list(relations)}
    if gripper is not None:
        body["gripper"] = gripper
    return json.dumps(body, ensure_ascii=False)


BLOCK = {"name": "red block", "attributes": ["wooden"], "region": "top-left"}
PLATE = {"name": "blue plate", "attributes": ["round"], "region": "center"}
LEFT_OF = {"subject": "red block", "relation": "left_of", "object": "blue plate"}
GOOD = facts_json([BLOCK, PLATE], [LEFT_OF], {"state": "open", "holding": ""})

# (id, raw model output, task, expected violations (empty = valid))
CASES = [
    ("plain json", GOOD, TASK, []),
    ("json in prose", f"Sure! Here are the facts you asked for: {GOOD} Let me know.", TASK, []),
    ("json in code fence", f"```json\n{GOOD}\n```", TASK, []),
    ("fence without language", f"```\n{GOOD}\n```\nDone.", TASK, []),
    ("unicode names", facts_json([{"name": "tasse à café", "attributes": ["blanc"], "region": "left"},
                                  {"name": "红色积木", "attributes": [], "region": "right"}]),
     "把积木放进杯子", []),
    ("empty lists", facts_json([], [], {"state": "unknown"}), TASK, []),
    ("only objects key", facts_json([BLOCK]).replace(', "relations": []', ""), TASK, []),
    ("aliases normalised", facts_json([{"name": "red block", "region": "Top Left"},
                                       {"name": "blue plate", "region": "middle"}],
                                      [{"subject": "red block", "relation": "on top of", "object": "blue plate"}],
                                      {"state": "CLOSED", "holding": "none"}), TASK, []),
    ("object named like in task", facts_json([{"name": "green plastic toy corn", "region": "left"}]),
     "pick up the green plastic toy corn", []),
    ("open drawer attribute", facts_json([{"name": "drawer", "attributes": ["open", "wooden"]}]),
     "close the drawer", []),
    ("next_to relation", facts_json([BLOCK, PLATE], [{"subject": "red block", "relation": "next_to",
                                                      "object": "blue plate"}]), TASK, []),
    ("gripper holding", facts_json([BLOCK], [], {"state": "closed", "holding": "red block"}), TASK, []),
    ("gripper in relation", facts_json([BLOCK], [{"subject": "gripper", "relation": "above", "object": "red block"}]),
     TASK, []),
    # --- unparseable ---
    ("empty output", "", TASK, ["unparseable"]),
    ("whitespace output", "  \n\t ", TASK, ["unparseable"]),
    ("prose only", "The red block is on the left of the blue plate.", TASK, ["unparseable"]),
    ("truncated json", GOOD[: len(GOOD) // 2], TASK, ["unparseable"]),
    ("json without facts keys", '{"answer": "red block"}', TASK, ["unparseable"]),
    ("json array of names", '["red block", "blue plate"]', TASK, ["unparseable"]),
    ("facts inside broken array still found", f"[{GOOD}"[:-1] + "}", TASK, []),
    ("bad region vocabulary", facts_json([{"name": "red block", "region": "somewhere"}]), TASK, ["unparseable"]),
    ("bad relation vocabulary", facts_json([BLOCK, PLATE], [{"subject": "red block", "relation": "loves",
                                                             "object": "blue plate"}]), TASK, ["unparseable"]),
    ("extra field", facts_json([dict(BLOCK, confidence=0.9)]), TASK, ["unparseable"]),
    ("objects not a list", '{"objects": "red block"}', TASK, ["unparseable"]),
    # --- action advice ---
    ("gripper should move left", facts_json([dict(BLOCK, attributes=["the gripper should move left"])]), TASK,
     ["action_advice"]),
    ("need to", facts_json([dict(BLOCK, attributes=["need to grasp it"])]), TASK, ["action_advice"]),
    ("imperative name", facts_json([{"name": "grasp the red block"}]), TASK, ["action_advice"]),
    ("next step", facts_json([dict(PLATE, attributes=["next, release over it"])]), TASK, ["action_advice"]),
    ("robot motion", facts_json([dict(PLATE, attributes=["move gripper closer"])]), TASK, ["action_advice"]),
    # --- not visually verifiable ---
    ("intention", facts_json([dict(BLOCK, attributes=["goal of the robot"])]), TASK, ["not_visual"]),
    ("prediction", facts_json([dict(BLOCK, attributes=["will fall soon"])]), TASK, ["not_visual"]),
    ("hidden weight", facts_json([dict(BLOCK, attributes=["heavy"])]), TASK, ["not_visual"]),
    ("hedged guess", facts_json([dict(PLATE, attributes=["probably ceramic"])]), TASK, ["not_visual"]),
    # --- task copy ---
    ("task verbatim as object", facts_json([{"name": TASK}]), TASK, ["action_advice", "task_copy"]),
    ("task restated in attribute", facts_json([dict(BLOCK, attributes=["red block on the blue plate"])]), TASK,
     ["task_copy"]),
    ("short task verbatim", facts_json([{"name": "drawer", "attributes": ["fold the cloth"]}]), "fold the cloth",
     ["action_advice", "task_copy"]),
    # --- sizes and consistency (each limit exactly reached is valid: the constrained schema lets the model do so) ---
    ("objects at the limit", facts_json([{"name": f"block {i}"} for i in range(6)]), TASK, []),
    ("relations at the limit", facts_json([BLOCK, PLATE], [LEFT_OF] * 6), TASK, []),
    ("attributes at the limit", facts_json([dict(BLOCK, attributes=["a1", "a2", "a3", "a4"])]), TASK, []),
    ("supplement of 360 characters", facts_json([{"name": "x" * 100}, {"name": "y" * 196}]), TASK, []),
    ("supplement of 361 characters", facts_json([{"name": "x" * 100}, {"name": "y" * 197}]), TASK,
     ["supplement_too_long_chars"]),
    ("three task words in a row", facts_json([dict(BLOCK, attributes=["on the blue"])]), TASK, []),
    ("four task words in a row", facts_json([dict(BLOCK, attributes=["on the blue plate"])]), TASK, ["task_copy"]),
    ("too many objects", facts_json([{"name": f"block {i}"} for i in range(7)]), TASK, ["too_many_objects"]),
    ("too many relations", facts_json([BLOCK, PLATE], [LEFT_OF] * 7), TASK, ["too_many_relations"]),
    ("too many attributes", facts_json([dict(BLOCK, attributes=["a1", "a2", "a3", "a4", "a5"])]), TASK,
     ["too_many_attributes"]),
    ("over-long supplement", facts_json([{"name": "x" * 200}, {"name": "y" * 200}]), TASK,
     ["supplement_too_long_chars"]),
    ("dangling relation", facts_json([BLOCK], [LEFT_OF]), TASK, ["unlisted_relation_object"]),
    ("relation to itself", facts_json([BLOCK, PLATE], [dict(LEFT_OF, object="Red Block ")]), TASK,
     ["self_relation"]),
]


def test_table_is_big_enough():
    valid = [c for c in CASES if not c[3]]
    invalid = [c for c in CASES if c[3]]
    assert len(CASES) >= 30 and len(valid) >= 10 and len(invalid) >= 20


@pytest.mark.parametrize("case_id,raw,task,expected", CASES, ids=[c[0] for c in CASES])
def test_evaluate_output_table(case_id, raw, task, expected):
    outcome = evaluate_output(raw, task)
    assert sorted(outcome.violations) == sorted(expected), outcome.details
    assert outcome.valid == (not expected)
    if "unparseable" in expected:
        assert outcome.facts is None and outcome.supplement == ""
    else:
        assert outcome.facts is not None and outcome.supplement == render_supplement(outcome.facts)
    assert len(outcome.details) >= len(expected)


@pytest.mark.parametrize("raw,code", [
    ("", ParseErrorCode.EMPTY),
    ("no braces here", ParseErrorCode.NO_JSON),
    ('{"objects": [', ParseErrorCode.INVALID_JSON),
    # cut off after a whole nested object: that inner object decodes, but the output is still broken JSON
    ('{"objects":[{"name":"cup","attributes":[],"region":"left"},{"name":"pl', ParseErrorCode.INVALID_JSON),
    ('{"answer": 1}', ParseErrorCode.NOT_FACTS),
    ('{"objects":' + "[" * 100_000 + "]" * 100_000 + "}", ParseErrorCode.INVALID_JSON),  # deeper than recursion
    ('{"objects": [], "n": ' + "9" * 5000 + "}", ParseErrorCode.INVALID_JSON),  # past the integer digit limit
    ('{"objects": [{"name": ""}]}', ParseErrorCode.SCHEMA),
])
def test_parse_error_codes_say_why(raw, code):
    with pytest.raises(FactsParseError) as info:
        parse_facts(raw)
    assert info.value.code == code
    assert str(info.value)


def test_a_fenced_facts_object_wins_over_one_in_the_prose_before_it():
    decoy = facts_json([{"name": "decoy"}])
    raw = f"Not this one: {decoy}, which I revised:\n```json\n{GOOD}\n```"
    assert [o.name for o in parse_facts(raw).objects] == ["red block", "blue plate"]


def test_first_facts_object_wins_over_unrelated_json():
    raw = 'meta {"model": "x"} then {"objects": [{"name": "cup"}]} and {"objects": [{"name": "bowl"}]}'
    assert [o.name for o in parse_facts(raw).objects] == ["cup"]


def test_renderer_is_deterministic_and_order_independent():
    a = parse_facts(facts_json([BLOCK, PLATE], [LEFT_OF, {"subject": "blue plate", "relation": "right_of",
                                                          "object": "red block"}], {"state": "open"}))
    b = parse_facts(facts_json([dict(PLATE), dict(BLOCK, attributes=list(reversed(BLOCK["attributes"])))],
                               [{"subject": "blue plate", "relation": "right_of", "object": "red block"}, LEFT_OF],
                               {"state": "open"}))
    assert render_supplement(a) == render_supplement(b) == render_supplement(a)
    assert render_supplement(a) == ("objects: blue plate (round, center); red block (wooden, top-left). "
                                    "relations: blue plate right of red block; red block left of blue plate. "
                                    "gripper: open, holding nothing.")


def test_token_bound_uses_the_given_tokenizer(tiny_models):
    """The policy's tokenizer (here the tiny OpenVLA checkpoint's) counts the supplement's tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "openvla_tiny")
    facts = parse_facts(GOOD)
    n_tokens = len(tokenizer.encode(render_supplement(facts), add_special_tokens=False))
    assert n_tokens != len(render_supplement(facts).split())  # a count of its own, not words
    ok = validate_facts(facts, TASK, Limits(max_supplement_tokens=n_tokens), tokenizer)
    too_long = validate_facts(facts, TASK, Limits(max_supplement_tokens=n_tokens - 1), tokenizer)
    assert ok.valid and ok.supplement_tokens == n_tokens
    assert too_long.violations == ["supplement_too_long_tokens"]


def test_json_schema_accepts_valid_facts_and_enforces_bounds():
    schema = facts_json_schema(max_objects=2)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(GOOD), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(facts_json([BLOCK, PLATE, BLOCK])), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"objects": [{"name": "a", "region": "nowhere"}]}, schema)


def test_facts_round_trip_through_json():
    facts = Facts(objects=[ObjectFact(name="cup", attributes=["white"], region="left")],
                  relations=[Relation(subject="cup", relation="near", object="gripper")])
    assert parse_facts(facts.model_dump_json()) == facts
