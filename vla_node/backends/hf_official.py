"""The ``hf-official`` backend: OpenVLA's own remote code (``AutoModelForVision2Seq`` + ``predict_action``).

For users who already run the official stack in its own environment and want the node around it. WHY the strict
environment check: with transformers >= 4.50 the official code silently skips the vision tower and returns the same
action for every image (openvla issue #346), and it raises on timm outside 0.9.10-0.9.16; a robot must not run on
that, so we refuse with what to install instead. The official code predicts one frame at a time (no batching).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from vla_node.backends.base import PolicySpec, norm_stats_of, resolve_device_dtype

TRANSFORMERS_VERSION = "4.40.1"
TOKENIZERS_VERSION = "0.19.1"
TIMM_VERSIONS = ("0.9.10", "0.9.11", "0.9.12", "0.9.16")
# the remote code, and preprocessor_config.json, which maps AutoProcessor onto processing_prismatic's classes
REMOTE_CODE_FILES = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py",
                     "preprocessor_config.json")
# what the official stack was released and tested with (openvla README: PyTorch 2.2; torch 2.2 wheels predate numpy 2);
# accelerate: transformers 4.40 needs it for low_cpu_mem_usage; torchvision: processing_prismatic imports it
INSTALL_HINT = (f"run this backend in its own environment (docs/deploy.md, section 2): pip install "
                f"transformers=={TRANSFORMERS_VERSION} tokenizers=={TOKENIZERS_VERSION} timm==0.9.10 accelerate "
                "torch==2.2.0 torchvision==0.17.0 'numpy<2'; or use backend 'native' (same checkpoint, current "
                "packages, batched)")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_problems(checkpoint: str | Path | None) -> list[str]:
    """Everything that keeps the official code from running correctly here on ``checkpoint`` (None: the packages
    only); an empty list: it can run."""
    problems = []
    transformers = _version("transformers")
    if transformers != TRANSFORMERS_VERSION:
        problems.append(f"transformers is {transformers or 'not installed'}, the official code needs "
                        f"{TRANSFORMERS_VERSION} (>= 4.50 silently ignores the image)")
    timm = _version("timm")
    if timm not in TIMM_VERSIONS:
        problems.append(f"timm is {timm or 'not installed'}, the official code needs one of {', '.join(TIMM_VERSIONS)}")
    absent = [name for name in ("accelerate", "torchvision") if _version(name) is None]
    if absent:
        problems.append(f"{' and '.join(absent)} not installed (the official code needs them)")
    missing = [name for name in REMOTE_CODE_FILES if checkpoint and not (Path(checkpoint) / name).is_file()]
    if missing:
        problems.append(f"{checkpoint} lacks the official remote code files {', '.join(missing)} "
                        "(they ship with openvla/openvla-7b)")
    return problems


class HFOfficialPolicy:
    """Wraps the official model and processor; same interface as the native backend."""

    def __init__(self, model, processor, device: str, dtype) -> None:
        self.model, self.processor = model, processor
        self.tokenizer = processor.tokenizer
        self.norm_stats = model.norm_stats
        self.device, self.dtype = device, dtype

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[str], unnorm_key: str) -> np.ndarray:
        from PIL import Image

        actions = []
        for image, prompt in zip(images, prompts, strict=True):
            inputs = self.processor(prompt, Image.fromarray(np.asarray(image)).convert("RGB"))
            inputs = inputs.to(self.device, dtype=self.dtype)
            actions.append(self.model.predict_action(**inputs, unnorm_key=unnorm_key, do_sample=False))
        return np.stack(actions).astype(np.float64)


def unavailable_reason(checkpoint: str | Path | None) -> str:
    """Why the official code cannot run here on ``checkpoint`` (None: any), with what to install ("" when it can)."""
    problems = environment_problems(checkpoint)
    if not problems:
        return ""
    return "backend 'hf-official' cannot run here: " + "; ".join(problems) + ". " + INSTALL_HINT


def load(spec: PolicySpec) -> HFOfficialPolicy:
    """The official model on ``spec``; called by :func:`vla_node.backends.load_policy` after its preflight, which
    has already refused an environment this code cannot run in (:func:`unavailable_reason`)."""
    from transformers import AutoModelForVision2Seq, AutoProcessor

    device, dtype = resolve_device_dtype(spec)
    processor = AutoProcessor.from_pretrained(spec.checkpoint, trust_remote_code=True)
    model = AutoModelForVision2Seq.from_pretrained(spec.checkpoint, torch_dtype=dtype, low_cpu_mem_usage=True,
                                                   trust_remote_code=True).to(device).eval()
    model.norm_stats = norm_stats_of(spec.checkpoint)  # with dataset_statistics.json, as OpenVLA's evaluation does
    return HFOfficialPolicy(model, processor, device, dtype)
