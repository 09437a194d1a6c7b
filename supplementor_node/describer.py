"""One frame (or a batch) + task -> judged facts: prompt spec, backend, then the facts contract.

This is the supplementor's whole model-side job (the node's, and what offline labelling will reuse). Every
output goes through :func:`task_supplementor.facts.evaluate_output`, so an invalid output comes back flagged with its
reasons instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from supplementor_node.backends import Backend, BackendConfig, load_backend
from supplementor_node.prompt_spec import PromptSpec, load_prompt_spec
from supplementor_node.qwen_inputs import Prompt
from task_supplementor.facts import FactsOutcome, Limits, evaluate_output
from task_supplementor.facts.schema import fit_schema_bounds


@dataclass(frozen=True)
class DescriberConfig:
    """Everything that decides which model runs and how; changing any field means loading a new Describer."""

    model: BackendConfig  # what to load and where; its json_schema is derived from the fields below, leave it None
    prompt_version: str = "v1"
    constrained_decoding: bool = True
    limits: Limits = field(default_factory=Limits)
    max_name_chars: int = 40   # bound on free-text fields under constrained decoding, so output stays bounded
    max_new_tokens: int = 1024  # generation budget; under constrained decoding the schema is fitted to it

    @property
    def checkpoint(self) -> str:
        """The model's checkpoint: what messages and diagnostics name the model by."""
        return self.model.checkpoint

    @property
    def device(self) -> str:
        return self.model.device


def output_schema(cfg: DescriberConfig) -> dict[str, Any] | None:
    """The JSON Schema generation is constrained to (None: unconstrained), its bounds fitted to ``max_new_tokens``
    so every admissible output ends inside the budget (never cut-off JSON). ValueError naming the minimum budget
    when it is too small; cheap, so the node checks it before accepting a parameter change."""
    if not cfg.constrained_decoding:
        return None
    limits = cfg.limits
    return fit_schema_bounds(cfg.max_new_tokens, limits.max_objects, limits.max_relations, limits.max_attributes,
                             cfg.max_name_chars).schema()


@dataclass(frozen=True)
class Description:
    outcome: FactsOutcome
    raw_text: str
    new_tokens: int


class Describer:
    """A loaded model ready to describe frames. Immutable once built: swapping models means a new Describer."""

    def __init__(self, cfg: DescriberConfig):
        self.cfg = cfg
        self.spec: PromptSpec = load_prompt_spec(cfg.prompt_version)   # fails fast, before the model load
        self.backend: Backend = load_backend(replace(cfg.model, json_schema=output_schema(cfg)))

    def describe(self, frames: list[tuple[np.ndarray, str]]) -> list[Description]:
        """frames: (RGB uint8 image, task) pairs, described in one batch within the config's token budget (the one
        the constrained schema was fitted to)."""
        prompts = [Prompt(image, *self.spec.render(task, self.cfg.limits)) for image, task in frames]
        outputs = self.backend.generate(prompts, self.cfg.max_new_tokens)
        return [Description(outcome=evaluate_output(out.text, task, self.cfg.limits, self.backend.tokenizer),
                            raw_text=out.text, new_tokens=out.new_tokens)
                for out, (_, task) in zip(outputs, frames)]
