"""Raw model text -> :class:`Facts`, or a :class:`FactsParseError` that says why.

Vision-language models wrap JSON in prose, in Markdown code fences, or emit several candidate objects. The parser
takes the first JSON object in the text that has the shape of facts; it never guesses content that is not there.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

from pydantic import ValidationError

from task_supplementor.facts.schema import Facts

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_FACTS_KEYS = {"objects", "relations", "gripper"}


class ParseErrorCode(str, Enum):
    EMPTY = "empty"                  # nothing but whitespace
    NO_JSON = "no_json"              # no '{' that starts a JSON object
    INVALID_JSON = "invalid_json"    # a '{' was found but nothing decodes
    NOT_FACTS = "not_facts"          # decodes, but has none of the facts keys
    SCHEMA = "schema"                # facts keys present, but types/vocabulary are wrong


class FactsParseError(ValueError):
    """The model output could not be turned into facts; ``code`` is machine-readable, the message human-readable."""

    def __init__(self, code: ParseErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json_objects(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Every top-level JSON object decodable in ``text``, in order, plus the first decode error seen."""
    decoder = json.JSONDecoder()
    objects: list[dict[str, Any]] = []
    first_error: str | None = None
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            first_error = first_error or f"{exc.msg} at character {exc.pos}"
            index = text.find("{", index + 1)
            continue
        except (RecursionError, ValueError) as exc:  # nested too deep, or an integer too long to convert: stop
            first_error = first_error or f"{type(exc).__name__}: {str(exc)[:80]}"  # (scanning on is quadratic)
            break
        if isinstance(value, dict):
            objects.append(value)
        index = text.find("{", end)
    return objects, first_error


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def parse_facts(raw: str) -> Facts:
    """Parse one model output. Code-fenced JSON wins over JSON loose in prose; the first facts-shaped object wins."""
    if raw is None or not raw.strip():
        raise FactsParseError(ParseErrorCode.EMPTY, "model output is empty")
    candidates_text = [m.group(1) for m in _FENCE.finditer(raw)] + [raw]
    objects: list[dict[str, Any]] = []
    decode_error: str | None = None
    for text in candidates_text:
        found, error = _json_objects(text)
        objects.extend(found)
        decode_error = decode_error or error
    if not objects:
        if "{" not in raw:
            raise FactsParseError(ParseErrorCode.NO_JSON, "no JSON object in model output")
        raise FactsParseError(ParseErrorCode.INVALID_JSON, f"JSON object does not decode: {decode_error}")
    shaped = [obj for obj in objects if _FACTS_KEYS & obj.keys()]
    if not shaped and decode_error:  # e.g. output cut off: only the objects nested in the broken one decode
        raise FactsParseError(ParseErrorCode.INVALID_JSON, f"JSON object does not decode: {decode_error}")
    if not shaped:
        keys = sorted(objects[0].keys())
        raise FactsParseError(ParseErrorCode.NOT_FACTS,
                              f"JSON object has none of the keys {sorted(_FACTS_KEYS)} (found {keys})")
    try:
        return Facts.model_validate(shaped[0])
    except ValidationError as exc:
        raise FactsParseError(ParseErrorCode.SCHEMA, f"facts do not match schema: {_describe(exc)}") from None
