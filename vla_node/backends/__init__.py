"""Policy backends: ``native`` (our OpenVLA runtime, batched) and ``hf-official`` (the official remote code).

Each is imported only when chosen, so the hf-official backend's version pins never touch the native path.
"""

from __future__ import annotations

import importlib

from vla_node.backends.base import BACKENDS, BackendUnavailable, Policy, PolicySpec, preflight

_MODULES = {"native": "vla_node.backends.native", "hf-official": "vla_node.backends.hf_official"}


def load_policy(spec: PolicySpec) -> Policy:
    """Load the policy ``spec`` names with its backend (raises BackendUnavailable / CheckpointError clearly)."""
    preflight(spec)
    return importlib.import_module(_MODULES[spec.backend]).load(spec)


__all__ = ["BACKENDS", "BackendUnavailable", "Policy", "PolicySpec", "load_policy", "preflight"]
