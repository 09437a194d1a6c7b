"""Constrained decoding of the facts JSON Schema with xgrammar.

Why xgrammar (over lm-format-enforcer and outlines): its grammar engine is C++ with a precompiled per-tokenizer
token mask cache, so masking costs microseconds per token even for a 150k vocabulary; it is the default structured
output engine of vLLM, so both backends constrain with the same engine and the same schema; and it installs here from
PyPI next to the CPU torch 2.13 without torchvision. A fresh logits processor is needed per ``generate`` call (it
keeps per-row matcher state), so this module compiles the grammar once and hands out processors.
"""

from __future__ import annotations

import json
from typing import Any

from task_supplementor.facts.schema import CONSTRAINED_SEPARATORS


def facts_grammar(schema: dict[str, Any]):
    """The xgrammar grammar of ``schema`` as generation is constrained to it: compact separators, no free whitespace,
    no properties beyond the schema's (what :meth:`SchemaBounds.worst_case_chars` assumes)."""
    import xgrammar as xgr

    return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=CONSTRAINED_SEPARATORS,
                                        strict_mode=True)


class JsonSchemaConstraint:
    """A JSON Schema compiled for one tokenizer; ``logits_processor()`` makes the per-call transformers processor."""

    def __init__(self, tokenizer, vocab_size: int, schema: dict[str, Any]):
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiled = xgr.GrammarCompiler(info).compile_grammar(facts_grammar(schema))

    def logits_processor(self):
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self._compiled)
