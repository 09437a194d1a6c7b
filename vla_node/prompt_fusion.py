"""Prompt fusion: how the facts' supplement enters the policy prompt. One module for the node and the experiments.

Modes (the experiments' names in brackets):

- ``none`` [E0]: the official OpenVLA prompt, ``In: What action should the robot take to {task}?\\nOut:``.
- ``supplement`` [E2/E5]: the task and the facts' supplement text inside ``template`` (a parameter; default
  :data:`DEFAULT_SUPPLEMENT_TEMPLATE`).
- ``placeholder`` [E3]: the same template, with the supplement replaced by text that has no visual content and
  occupies exactly the same token positions under the policy's tokenizer (same prefix tokens, same suffix tokens,
  same total length). OpenVLA reacts to mere prompt length and wording, so any gain from ``supplement`` must beat
  this control. Kinds: random ``digits``, shuffled ``stopwords``, scrambled facts ``fields`` names (no values).
  The text is seeded by ``(placeholder_seed, frame stamp)``: a replayed bag gets the same placeholders every run,
  while different frames get different ones.

WHY token-level checking instead of counting words: Llama's tokenizer merges across spaces and punctuation in
context-dependent ways, so the only reliable proof of "same positions" is to tokenise the finished prompt and compare
it with the supplement prompt around the slot.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vla_node.prompting import OPENVLA_TEMPLATE

PROMPT_MODES = ("none", "supplement", "placeholder")
PLACEHOLDER_KINDS = ("digits", "stopwords", "fields")

# The supplement follows the question, so the official question text stays word-for-word what OpenVLA was trained
# on, and the facts sit where the model reads them just before answering ("Out:").
DEFAULT_SUPPLEMENT_TEMPLATE = "In: What action should the robot take to {task}? Scene: {supplement}\nOut:"

_STOPWORDS = ("the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "with", "was", "on", "be", "at",
              "by", "this", "had", "not", "are", "but", "from", "or", "have", "an", "they", "which", "one", "you",
              "were", "all", "we", "her", "she", "there", "been", "his", "if", "has", "will", "would", "so", "no")
# Field names of the facts contract (keys, closed-vocabulary slot names), without any values.
_FIELDS = ("objects", "relations", "gripper", "name", "attributes", "region", "subject", "relation", "object",
           "state", "holding")
_FIELD_SEPARATORS = (":", ";", ",", ".")
_MAX_ATTEMPTS = 64


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs): ...


class PlaceholderError(RuntimeError):
    """No placeholder with exactly the supplement's token positions was found (names the target)."""


@dataclass(frozen=True)
class FusionConfig:
    """The node's prompt parameters (``prompt_mode``, ``supplement_template``, ``placeholder_kind``/``_seed``)."""

    mode: str = "none"
    template: str = DEFAULT_SUPPLEMENT_TEMPLATE
    placeholder_kind: str = "digits"
    placeholder_seed: int = 0
    official_template: str = OPENVLA_TEMPLATE

    def __post_init__(self) -> None:
        if self.mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode {self.mode!r} is not one of {', '.join(PROMPT_MODES)}")
        if self.placeholder_kind not in PLACEHOLDER_KINDS:
            raise ValueError(f"placeholder_kind {self.placeholder_kind!r} is not one of {', '.join(PLACEHOLDER_KINDS)}")
        check_template(self.template)


@dataclass(frozen=True)
class FusedPrompt:
    text: str
    mode: str  # the mode actually used
    inserted: str  # the supplement or placeholder text in the slot ("" in mode none)


def check_template(template: str) -> None:
    """A supplement template has exactly one ``{task}`` and one ``{supplement}`` field and nothing else to format."""
    try:
        parsed = [(f, spec) for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as error:
        raise ValueError(f"supplement_template {template!r} is not a valid format string: {error}") from None
    fields = [f for f, _ in parsed]
    if any("{" in (spec or "") for _, spec in parsed):
        raise ValueError(f"supplement_template must not nest fields in a format spec, got {template!r}")
    if sorted(fields) != ["supplement", "task"]:
        raise ValueError(f"supplement_template must contain {{task}} and {{supplement}} once each (and no other "
                         f"fields), got fields {fields} in {template!r}")
    if template.count("{supplement}") != 1:  # render() cuts the template there: no '!r'/':spec', no '{{supplement}}'
        raise ValueError(f"supplement_template must contain the field {{supplement}} exactly as written here, once "
                         f"(no conversion or format spec, not also escaped as {{{{supplement}}}}), got {template!r}")


def render(template: str, task: str, supplement: str) -> tuple[str, int, int]:
    """The template filled in (task lower-cased as the official prompt does) and the slot's character span."""
    before, after = template.split("{supplement}")
    head, tail = before.format(task=task.lower()), after.format(task=task.lower())
    return head + supplement + tail, len(head), len(head) + len(supplement)


class PromptFuser:
    """Builds the policy prompt for one frame from the task, the supplement (if any) and the frame stamp."""

    def __init__(self, config: FusionConfig, tokenizer: Tokenizer | None) -> None:
        if config.mode == "placeholder" and tokenizer is None:
            raise ValueError("placeholder mode needs the policy's tokenizer (the checkpoint has no tokenizer files)")
        self.config = config
        self.tokenizer = tokenizer

    def build(self, task: str, supplement: str | None, frame_stamp_ns: int, mode: str | None = None) -> FusedPrompt:
        """``mode`` overrides the configured one for this frame (the node falls back to ``none`` on stale facts)."""
        mode = mode or self.config.mode
        if mode == "none":
            return FusedPrompt(self.config.official_template.format(instruction=task.lower()), "none", "")
        if supplement is None:
            raise ValueError(f"prompt mode {mode!r} needs a supplement (facts) for this frame")
        if mode == "supplement":
            return FusedPrompt(render(self.config.template, task, supplement)[0], "supplement", supplement)
        if mode == "placeholder":
            text = self.placeholder(task, supplement, frame_stamp_ns)
            return FusedPrompt(render(self.config.template, task, text)[0], "placeholder", text)
        raise ValueError(f"prompt mode {mode!r} is not one of {', '.join(PROMPT_MODES)}")

    # ---- placeholder -----------------------------------------------------------------------------------------
    def placeholder(self, task: str, supplement: str, frame_stamp_ns: int) -> str:
        """Content-free text at exactly the supplement's token positions (see the module docstring)."""
        if self.tokenizer is None:
            raise ValueError("placeholder mode needs the policy's tokenizer")
        if not supplement.strip():
            return supplement  # nothing to stand in for: the slot is whitespace only
        target = self._layout(task, supplement)
        rng = random.Random(f"{self.config.placeholder_seed}:{int(frame_stamp_ns)}")
        for _ in range(_MAX_ATTEMPTS):
            text = self._grow(task, target, rng)
            if text is not None:
                return text
        raise PlaceholderError(f"no {self.config.placeholder_kind} placeholder with {target.slot_tokens} slot tokens "
                               f"found for supplement {supplement!r}")

    def _layout(self, task: str, inserted: str) -> SlotLayout:
        text, start, end = render(self.config.template, task, inserted)
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        return SlotLayout.of(list(encoded["input_ids"]), list(encoded["offset_mapping"]), text, start, end)

    def _grow(self, task: str, target: SlotLayout, rng: random.Random) -> str | None:
        """Grows the text one random move at a time, never past the target token count; None when stuck."""
        units: list[str] = []
        layout, tokens = None, 0  # an empty slot counts as 0 even if its whitespace is a token
        while tokens < target.slot_tokens:
            for candidate in self._moves(units, rng):
                grown = self._layout(task, " ".join(candidate))
                if tokens < grown.slot_tokens <= target.slot_tokens:
                    units, layout, tokens = candidate, grown, grown.slot_tokens
                    break
            else:
                return None
        return " ".join(units) if layout is not None and layout.matches(target) else None

    def _moves(self, units: list[str], rng: random.Random, count: int = 12) -> list[list[str]]:
        """Candidate next texts: a new random unit, or (small steps) the last unit extended by one character."""
        kind = self.config.placeholder_kind
        moves = []
        for _ in range(count):
            if kind == "digits":
                if units and rng.random() < 0.5:
                    moves.append(units[:-1] + [units[-1] + rng.choice(string.digits)])
                else:
                    moves.append(units + ["".join(rng.choice(string.digits) for _ in range(rng.randint(1, 3)))])
            elif kind == "stopwords":
                moves.append(units + [rng.choice(_STOPWORDS)])
            elif units and units[-1][-1] not in _FIELD_SEPARATORS and rng.random() < 0.3:
                moves.append(units[:-1] + [units[-1] + rng.choice(_FIELD_SEPARATORS)])
            else:
                moves.append(units + [rng.choice(_FIELDS)])
        return moves


@dataclass(frozen=True)
class SlotLayout:
    """A prompt's tokens split into template prefix, slot (incl. the whitespace around it) and template suffix."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    slot_tokens: int

    @classmethod
    def of(cls, ids: Sequence[int], offsets: Sequence[tuple[int, int]], text: str, start: int, end: int,
           ) -> SlotLayout:
        while start > 0 and text[start - 1] == " ":
            start -= 1
        while end < len(text) and text[end] == " ":
            end += 1
        # special tokens (BOS) have empty offsets at 0 and belong to the prefix
        first = next((i for i, (s, e) in enumerate(offsets) if e > start and e > s), len(ids))
        last = next((i for i, (s, e) in enumerate(offsets) if s >= end and e > s), len(ids))
        first = min(first, last)
        return cls(tuple(ids[:first]), tuple(ids[last:]), last - first)

    def matches(self, other: SlotLayout) -> bool:
        return (self.prefix, self.suffix, self.slot_tokens) == (other.prefix, other.suffix, other.slot_tokens)
