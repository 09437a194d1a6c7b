"""Supplementor backends behind one interface (:class:`Backend`); ``load_backend`` picks one by name.

Each backend module is imported only when chosen, so the vLLM package is never needed unless asked for.
"""

from __future__ import annotations

from supplementor_node.backends.base import BACKENDS, Backend, BackendConfig, GenerationOutput


def load_backend(cfg: BackendConfig) -> Backend:
    if cfg.backend == "transformers":
        from supplementor_node.backends.hf_transformers import TransformersBackend

        return TransformersBackend(cfg)
    if cfg.backend == "vllm":
        from supplementor_node.backends.vllm_backend import VllmBackend

        return VllmBackend(cfg)
    raise ValueError(f"backend {cfg.backend!r} not in {BACKENDS}")


__all__ = ["BACKENDS", "Backend", "BackendConfig", "GenerationOutput", "load_backend"]
