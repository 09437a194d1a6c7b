"""Prompt fusion: the official prompt, the supplement template, and placeholders that occupy exactly the
supplement's token positions under the policy tokenizer (the E3 control), over many rendered facts."""

from __future__ import annotations

import random
import re

import pytest

from task_supplementor.facts import REGIONS, RELATIONS, Facts, Gripper, ObjectFact, Relation, render_supplement
from vla_node.prompt_fusion import (
    PLACEHOLDER_KINDS, FusionConfig, PlaceholderError, PromptFuser, SlotLayout, check_template, render,
)
from vla_node.tokenizer import load_tokenizer

TASK = "Put the carrot on the plate."
NAMES = ("red block", "blue plate", "carrot", "green spoon", "pot", "yellow cup", "towel", "drawer", "café crème",
         "block 42", "x", "silver  pan")
ATTRIBUTES = ("red", "wooden", "metal", "open", "empty", "striped", "12 cm tall", "shiny/wet", "upright")


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    return load_tokenizer(tiny_models / "openvla_tiny")


def random_facts(rng: random.Random) -> Facts:
    objects = [ObjectFact(name=rng.choice(NAMES), attributes=rng.sample(ATTRIBUTES, rng.randint(0, 4)),
                          region=rng.choice(REGIONS)) for _ in range(rng.randint(0, 6))]
    names = [o.name for o in objects] or ["gripper"]
    relations = [Relation(subject=rng.choice(names), relation=rng.choice(RELATIONS), object=rng.choice(names))
                 for _ in range(rng.randint(0, 6))]
    gripper = Gripper(state=rng.choice(("open", "closed", "unknown")), holding=rng.choice(["", *names]))
    return Facts(objects=objects, relations=relations, gripper=gripper)


def supplements() -> list[str]:
    rng = random.Random(2024)
    rendered = [render_supplement(random_facts(rng)) for _ in range(30)]
    edge = [render_supplement(Facts()), "a b", "7", "{task} {supplement} }{", "ends with spaces   ",
            "objects: ünïcödé 漢字 block.", "line\nbreak", "((((", "0.05 m; 12,345"]
    return rendered + edge


def layout(fuser: PromptFuser, tokenizer, text: str, inserted: str) -> SlotLayout:
    full, start, end = render(fuser.config.template, TASK, inserted)
    assert full == text
    encoded = tokenizer(full, return_offsets_mapping=True)
    return SlotLayout.of(encoded["input_ids"], encoded["offset_mapping"], full, start, end)


def test_none_is_the_official_prompt(tokenizer):
    fuser = PromptFuser(FusionConfig(mode="none"), tokenizer)
    prompt = fuser.build(TASK, "objects: none.", 0)
    assert prompt.text == "In: What action should the robot take to put the carrot on the plate.?\nOut:"
    assert (prompt.mode, prompt.inserted) == ("none", "")


def test_supplement_fills_the_documented_default_template(tokenizer):
    fuser = PromptFuser(FusionConfig(mode="supplement"), tokenizer)
    prompt = fuser.build("Open the Drawer", "objects: drawer (closed, center).", 0)
    assert prompt.text == ("In: What action should the robot take to open the drawer? "
                           "Scene: objects: drawer (closed, center).\nOut:")
    custom = PromptFuser(FusionConfig(mode="supplement", template="Context: {supplement}\nIn: {task}?\nOut:"),
                         tokenizer)
    assert custom.build("Open it", "x", 0).text == "Context: x\nIn: open it?\nOut:"


@pytest.mark.parametrize("kind", PLACEHOLDER_KINDS)
def test_placeholder_has_exactly_the_supplement_token_positions(tokenizer, kind):
    fuser = PromptFuser(FusionConfig(mode="placeholder", placeholder_kind=kind, placeholder_seed=3), tokenizer)
    checked = 0
    for i, supplement in enumerate(supplements()):
        real = fuser.build(TASK, supplement, 0, mode="supplement")
        try:
            fake = fuser.build(TASK, supplement, 1_700_000_000_000_000_000 + i)
        except PlaceholderError:
            # only a one-token digits slot is unreachable (Llama writes " 7" as "▁" + "7")
            assert kind == "digits" and layout(fuser, tokenizer, real.text, supplement).slot_tokens == 1
            continue
        ids_real, ids_fake = tokenizer(real.text).input_ids, tokenizer(fake.text).input_ids
        assert len(ids_fake) == len(ids_real), (supplement, fake.inserted)
        assert layout(fuser, tokenizer, fake.text, fake.inserted).matches(
            layout(fuser, tokenizer, real.text, supplement)), (supplement, fake.inserted)
        assert fake.mode == "placeholder"
        checked += 1
        if not supplement.strip():
            continue
        words = fake.inserted.split()
        if kind == "digits":
            assert re.fullmatch(r"[0-9 ]+", fake.inserted), fake.inserted
        elif kind == "stopwords":
            assert set(words) <= {"the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "with", "was",
                                  "on", "be", "at", "by", "this", "had", "not", "are", "but", "from", "or", "have",
                                  "an", "they", "which", "one", "you", "were", "all", "we", "her", "she", "there",
                                  "been", "his", "if", "has", "will", "would", "so", "no"}
        else:
            fields = {"objects", "relations", "gripper", "name", "attributes", "region", "subject", "relation",
                      "object", "state", "holding"}
            assert {w.rstrip(":;,.") for w in words} <= fields, fake.inserted
    assert checked >= len(supplements()) - 2


def test_placeholder_is_seeded_per_frame(tokenizer):
    supplement = render_supplement(random_facts(random.Random(5)))
    fuser = PromptFuser(FusionConfig(mode="placeholder", placeholder_kind="stopwords", placeholder_seed=1), tokenizer)
    again = PromptFuser(FusionConfig(mode="placeholder", placeholder_kind="stopwords", placeholder_seed=1), tokenizer)
    other_seed = PromptFuser(FusionConfig(mode="placeholder", placeholder_kind="stopwords", placeholder_seed=2),
                             tokenizer)
    frames = [fuser.build(TASK, supplement, stamp).inserted for stamp in (10, 11, 12)]
    assert frames == [again.build(TASK, supplement, stamp).inserted for stamp in (10, 11, 12)]
    assert len(set(frames)) == 3
    assert other_seed.build(TASK, supplement, 10).inserted != frames[0]


def test_bad_configuration_and_missing_supplement_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="prompt_mode 'facts'"):
        FusionConfig(mode="facts")
    with pytest.raises(ValueError, match="placeholder_kind"):
        FusionConfig(placeholder_kind="emoji")
    for template in ("In: {task}?\nOut:", "{task} {supplement} {frame}", "{task} {supplement",
                     # valid format strings that render() could not cut at the slot
                     "{{supplement}} {task}? {supplement}", "{task}? {supplement!s}", "{task}? {supplement:>9}"):
        with pytest.raises(ValueError, match="supplement_template"):
            check_template(template)
    for template, rendered in (("{{{supplement}}} {task}", "{S} task"),  # escapes elsewhere are fine
                               ("In: {task}? {{note}} {supplement}", "In: task? {note} S")):
        check_template(template)
        assert render(template, "Task", "S")[0] == rendered
    with pytest.raises(ValueError, match="needs a supplement"):
        PromptFuser(FusionConfig(mode="supplement"), tokenizer).build(TASK, None, 0)
    with pytest.raises(ValueError, match="tokenizer"):
        PromptFuser(FusionConfig(mode="placeholder"), None)
