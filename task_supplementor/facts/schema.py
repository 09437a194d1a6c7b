"""Typed structured visual facts: the single source of the facts JSON Schema.

The classes describe *structure* only (types, closed vocabularies). Content rules (visually verifiable, no task
copying, no advice, size bounds) live in :mod:`task_supplementor.facts.validator`, so that a too-long or advising
output still parses and the validator can name the rule it breaks instead of the parser rejecting it wholesale.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1.0"

Region = Literal[
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
    "unknown",
]
RelationName = Literal[
    "left_of", "right_of", "above", "below", "on", "under", "in", "next_to",
    "in_front_of", "behind", "touching", "near",
]
GripperStateName = Literal["open", "closed", "unknown"]

REGIONS: tuple[str, ...] = get_args(Region)
RELATIONS: tuple[str, ...] = get_args(RelationName)
GRIPPER_STATES: tuple[str, ...] = get_args(GripperStateName)

# Spellings models produce for the closed vocabularies, mapped onto the canonical value.
_REGION_ALIASES = {"middle": "center", "centre": "center", "upper": "top", "lower": "bottom",
                   "upper-left": "top-left", "upper-right": "top-right",
                   "lower-left": "bottom-left", "lower-right": "bottom-right"}
_RELATION_ALIASES = {"on_top_of": "on", "inside": "in", "beside": "next_to", "adjacent_to": "next_to",
                     "to_the_left_of": "left_of", "to_the_right_of": "right_of", "in_front": "in_front_of",
                     "over": "above", "beneath": "under", "underneath": "under", "close_to": "near"}


def _canonical(value: Any, separator: str, aliases: dict[str, str]) -> Any:
    """'Top Left', 'top_left' -> 'top-left' (separator '-'); then map known aliases onto the vocabulary."""
    if not isinstance(value, str):
        return value
    key = separator.join(value.strip().lower().replace("-", " ").replace("_", " ").split())
    return aliases.get(key, key)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class ObjectFact(_Strict):
    """One visible object: what it is, what it visibly looks like, and roughly where it is in the image."""

    name: str = Field(min_length=1, description="Short noun phrase naming the object, e.g. 'red block'.")
    attributes: tuple[str, ...] = Field(
        default=(), description="Visible attributes only: colour, material, shape, visible state (open/empty/...).")
    region: Region = Field(default="unknown", description="Coarse 3x3 image region of the object.")

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        return _canonical(value, "-", _REGION_ALIASES)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


class Relation(_Strict):
    """A visible spatial relation between two listed objects (or the gripper)."""

    subject: str = Field(min_length=1)
    relation: RelationName
    object: str = Field(min_length=1)

    @field_validator("relation", mode="before")
    @classmethod
    def _relation(cls, value: Any) -> Any:
        return _canonical(value, "_", _RELATION_ALIASES)


class Gripper(_Strict):
    """What the camera shows of the robot's gripper."""

    state: GripperStateName = "unknown"
    holding: str = Field(default="", description="Name of the visibly held object; empty when none.")

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("holding", mode="before")
    @classmethod
    def _holding(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"none", "nothing", "null", "n/a"}):
            return ""
        return value


class Facts(_Strict):
    """Structured visual facts about one camera frame."""

    objects: tuple[ObjectFact, ...] = ()
    relations: tuple[Relation, ...] = ()
    gripper: Gripper = Gripper()

    @field_validator("objects", "relations", mode="before")
    @classmethod
    def _as_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    def text_fields(self) -> list[tuple[str, str]]:
        """Every free-text field with a path naming it, for rules that inspect wording."""
        fields: list[tuple[str, str]] = []
        for i, obj in enumerate(self.objects):
            fields.append((f"objects[{i}].name", obj.name))
            fields.extend((f"objects[{i}].attributes[{j}]", a) for j, a in enumerate(obj.attributes))
        for i, rel in enumerate(self.relations):
            fields.append((f"relations[{i}].subject", rel.subject))
            fields.append((f"relations[{i}].object", rel.object))
        if self.gripper.holding:
            fields.append(("gripper.holding", self.gripper.holding))
        return fields


def facts_json_schema(max_objects: int | None = None, max_relations: int | None = None,
                      max_attributes: int | None = None, max_name_chars: int | None = None) -> dict[str, Any]:
    """JSON Schema of :class:`Facts`, optionally with size bounds (for constrained decoding).

    The bounds are optional because the validator, not the parser, enforces them: a decoder constrained with them
    can never exceed the limits, and unconstrained outputs are still parsed and judged by the validator.
    """
    schema = Facts.model_json_schema()
    schema["$id"] = f"https://task-supplementor/facts/{SCHEMA_VERSION}"
    schema["title"] = "VisualFacts"
    defs = schema["$defs"]
    if max_objects is not None:
        schema["properties"]["objects"]["maxItems"] = max_objects
    if max_relations is not None:
        schema["properties"]["relations"]["maxItems"] = max_relations
    if max_attributes is not None:
        defs["ObjectFact"]["properties"]["attributes"]["maxItems"] = max_attributes
    if max_name_chars is not None:
        for prop in (defs["ObjectFact"]["properties"]["name"], defs["Relation"]["properties"]["subject"],
                     defs["Relation"]["properties"]["object"], defs["Gripper"]["properties"]["holding"]):
            prop["maxLength"] = max_name_chars
        defs["ObjectFact"]["properties"]["attributes"]["items"]["maxLength"] = max_name_chars
    return schema


# Free text under constrained decoding: printable ASCII without quote or backslash, so a JSON string of n
# characters is exactly n characters on the wire and at most n tokens under any byte-level BPE tokenizer.
CONSTRAINED_TEXT_CHARS = "[A-Za-z0-9 ,.'()/+-]"
_CONSTRAINED_FIRST_CHAR = "[A-Za-z0-9,.'()/+-]"  # no leading space: a blank name parses to "" and is refused
CONSTRAINED_SEPARATORS = (",", ":")  # compact JSON: the constrained decoder spends no tokens on spaces


@dataclasses.dataclass(frozen=True)
class SchemaBounds:
    """Size bounds of a constrained facts output (see :func:`fit_schema_bounds`)."""

    max_objects: int
    max_relations: int
    max_attributes: int
    max_name_chars: int

    def worst_case_chars(self) -> int:
        """Characters of the longest JSON the bounded schema admits (compact separators as xgrammar emits)."""
        name = "x" * self.max_name_chars
        longest_region = max(REGIONS, key=len)
        longest_relation = max(RELATIONS, key=len)
        worst = {
            "objects": [{"name": name, "attributes": [name] * self.max_attributes, "region": longest_region}]
            * self.max_objects,
            "relations": [{"subject": name, "relation": longest_relation, "object": name}] * self.max_relations,
            "gripper": {"state": max(GRIPPER_STATES, key=len), "holding": name},
        }
        return len(json.dumps(worst, separators=CONSTRAINED_SEPARATORS))

    def schema(self) -> dict[str, Any]:
        schema = facts_json_schema(self.max_objects, self.max_relations, self.max_attributes, self.max_name_chars)
        defs = schema["$defs"]
        for prop in (defs["ObjectFact"]["properties"]["name"], defs["Relation"]["properties"]["subject"],
                     defs["Relation"]["properties"]["object"], defs["ObjectFact"]["properties"]["attributes"]["items"]):
            # the length goes in the pattern: xgrammar applies a pattern instead of min/maxLength
            prop["pattern"] = f"^{_CONSTRAINED_FIRST_CHAR}{CONSTRAINED_TEXT_CHARS}{{0,{self.max_name_chars - 1}}}$"
        defs["Gripper"]["properties"]["holding"]["pattern"] = f"^{CONSTRAINED_TEXT_CHARS}{{0,{self.max_name_chars}}}$"
        for definition in defs.values():
            for prop in [*definition.get("properties", {}).values(),
                         definition.get("properties", {}).get("attributes", {}).get("items", {})]:
                if "pattern" in prop:
                    prop.pop("minLength", None)
                    prop.pop("maxLength", None)
        # Every key, always: "{}" is schema-valid but says nothing, and the parser rightly refuses it.
        schema["required"] = ["objects", "relations", "gripper"]
        defs["ObjectFact"]["required"] = ["name", "attributes", "region"]
        defs["Gripper"]["required"] = ["state", "holding"]
        return schema


# Bounds tried from most to least generous: names shorten first, then attributes, then fewer objects/relations.
_BOUNDS_SCHEDULE: tuple[tuple[int, int, int, int], ...] = (  # (objects, relations, attributes, name chars)
    (6, 6, 4, 40), (6, 6, 4, 32), (6, 6, 3, 24), (5, 5, 3, 24), (5, 4, 2, 24), (4, 4, 2, 20), (4, 3, 2, 20),
    (3, 3, 2, 20), (3, 2, 2, 16), (3, 2, 1, 16), (2, 2, 1, 16), (2, 1, 1, 16), (1, 1, 1, 16), (1, 1, 1, 12),
)


def fit_schema_bounds(token_budget: int, max_objects: int, max_relations: int, max_attributes: int,
                      max_name_chars: int, reserve_tokens: int = 8) -> SchemaBounds:
    """The most generous bounds (within the given maxima) whose longest admissible output fits ``token_budget``.

    WHY: a constrained decoder cut off by ``max_new_tokens`` leaves unterminated JSON, i.e. an output that cannot be
    parsed at all. If every output the grammar admits fits the budget, generation always ends in complete JSON, and a
    weak or untrained model is judged by the validator's named rules instead of being "unparseable". Tokens <=
    characters holds because free text is restricted to :data:`CONSTRAINED_TEXT_CHARS`. Raises ValueError naming
    the minimum budget when even the smallest bounds do not fit.
    """
    candidates = [SchemaBounds(min(o, max_objects), min(r, max_relations), min(a, max_attributes),
                               min(n, max_name_chars)) for o, r, a, n in _BOUNDS_SCHEDULE]
    for bounds in candidates:
        if bounds.worst_case_chars() + reserve_tokens <= token_budget:
            return bounds
    need = candidates[-1].worst_case_chars() + reserve_tokens
    raise ValueError(f"max_new_tokens={token_budget} cannot hold even the smallest bounded facts output; "
                     f"constrained decoding needs at least {need}")
