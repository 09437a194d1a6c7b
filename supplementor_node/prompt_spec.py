"""The versioned E1 prompt specification: one text file per version in ``task_supplementor/facts/prompts/``.

Why a file per version: facts recorded in experiments name the prompt version that produced them, so a released
version's wording must never change; a new wording is a new file. The node picks one with ``prompt_version``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from task_supplementor.facts import SCHEMA_VERSION, Limits
from task_supplementor.facts.schema import RELATIONS, REGIONS

_FILE_PATTERN = re.compile(r"^supplementor_e1_(v\d+)\.txt$")
_SECTION = re.compile(r"^=== (system|user) ===$", re.MULTILINE)


class PromptSpecError(ValueError):
    """The requested prompt version does not exist or its file is malformed."""


@dataclass(frozen=True)
class PromptSpec:
    version: str
    system_template: str
    user_template: str

    def render(self, task: str, limits: Limits) -> tuple[str, str]:
        """(system, user) text for one frame; the image goes before the user text (see qwen_inputs)."""
        values = {
            "task": task.strip(), "max_objects": limits.max_objects, "max_relations": limits.max_relations,
            "max_attributes": limits.max_attributes, "regions": ", ".join(REGIONS),
            "relations": ", ".join(RELATIONS), "schema_version": SCHEMA_VERSION,
        }
        return _fill(self.system_template, values), _fill(self.user_template, values)


def _fill(template: str, values: dict[str, object]) -> str:
    """Replace only the known {name} placeholders, so JSON braces in the template stay literal."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def _prompt_dir():
    return resources.files("task_supplementor.facts") / "prompts"


def available_versions() -> list[str]:
    names = (entry.name for entry in _prompt_dir().iterdir())
    return sorted(m.group(1) for m in map(_FILE_PATTERN.match, names) if m)


def load_prompt_spec(version: str) -> PromptSpec:
    """Load ``supplementor_e1_<version>.txt``; a missing version names the ones that exist."""
    resource = _prompt_dir() / f"supplementor_e1_{version}.txt"
    if not resource.is_file():
        raise PromptSpecError(f"prompt version {version!r} not found; available: {available_versions()}")
    text = resource.read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = dict(zip(parts[1::2], (p.strip("\n") for p in parts[2::2])))
    if set(sections) != {"system", "user"}:
        raise PromptSpecError(f"{resource}: needs exactly one '=== system ===' and one '=== user ===' section")
    return PromptSpec(version=version, system_template=sections["system"], user_template=sections["user"])
