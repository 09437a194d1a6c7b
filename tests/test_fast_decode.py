"""The fast greedy path (graph-ready vision tower + static-cache one-token step) must emit generate()'s ids.

On CPU it runs eagerly, so this checks the computation itself: one masked attention call per vision block instead of
one call per window, prefill into a static cache with explicit 4-D masks, text positions after the 3-D rotary prompt,
EOS/padding handling, a minimum length, and the xgrammar constraint applied between steps.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from serving_while_loading import load_while_serving
from supplementor_node.fast_decode import FastQwenGreedy
from supplementor_node.qwen_inputs import Prompt, QwenVLInputBuilder


@pytest.fixture(scope="module")
def qwen(tiny_models):
    from transformers import Qwen2_5_VLForConditionalGeneration

    checkpoint = tiny_models / "qwen2_5_vl_tiny"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return QwenVLInputBuilder(checkpoint, max_pixels=256 * 28 * 28), model


def _prompts(sizes: list[int], users: list[str]) -> list[Prompt]:
    rng = np.random.default_rng(1)
    return [Prompt(rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8), "Describe the scene.", u)
            for s, u in zip(sizes, users)]


def _reference(model, inputs: dict, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, **kwargs)
    return out[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parametrize("min_new_tokens", [0, 20])
def test_same_ids_as_generate_single_and_left_padded_batch(qwen, min_new_tokens):
    builder, model = qwen
    fast = FastQwenGreedy(model)
    assert not fast.use_graphs   # CPU: eager, the computation under test
    for prompts in (_prompts([256], ["What is visible?"]),
                    _prompts([256, 224], ["What?", "What is visible on the table next to the bowl?"])):
        inputs = builder.build(prompts)
        expected = _reference(model, inputs, max_new_tokens=20, min_new_tokens=min_new_tokens)
        got = fast.generate(inputs, max_new_tokens=20, min_new_tokens=min_new_tokens)
        assert torch.equal(got, expected), (got.tolist(), expected.tolist())


def test_same_ids_as_generate_under_the_json_constraint(qwen):
    from supplementor_node.constrained import JsonSchemaConstraint
    from task_supplementor.facts import facts_json_schema

    builder, model = qwen
    constraint = JsonSchemaConstraint(builder.tokenizer, model.config.text_config.vocab_size, facts_json_schema())
    inputs = builder.build(_prompts([256], ["What is visible?"]))
    expected = _reference(model, inputs, max_new_tokens=24, logits_processor=[constraint.logits_processor()])
    got = FastQwenGreedy(model).generate(inputs, max_new_tokens=24, logits_processors=[constraint.logits_processor()])
    assert torch.equal(got, expected), (got.tolist(), expected.tolist())
    assert builder.tokenizer.decode(got[0]).startswith("{")


def test_the_cpu_backend_decodes_plain_greedy_like_the_fast_path(tiny_models, tmp_path):
    """The checkpoint's generation_config (the real 3B ships repetition_penalty 1.05; here 1e6, so the
    penalty makes a repeated token lose to any unseen one) must not make the CPU path differ from the GPU's."""
    import json
    import shutil

    from supplementor_node.backends import BackendConfig
    from supplementor_node.backends.hf_transformers import TransformersBackend

    checkpoint = tmp_path / "penalised"
    shutil.copytree(tiny_models / "qwen2_5_vl_tiny", checkpoint)
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    (checkpoint / "generation_config.json").write_text(json.dumps({**generation, "repetition_penalty": 1e6}))
    backend = TransformersBackend(BackendConfig(str(checkpoint), device="cpu"))
    prompts = _prompts([256, 224], ["What is visible?", "What?"])
    texts = [out.text for out in backend.generate(prompts, 24)]
    ids = FastQwenGreedy(backend.model).generate(backend.inputs.build(prompts), max_new_tokens=24)
    assert texts == [backend.tokenizer.decode(row, skip_special_tokens=True) for row in ids]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (a model on the second one)")
def test_graphs_on_the_second_gpu_give_generates_ids(tiny_models):
    """CUDA graphs, their streams and memory pool on the model's device (cuda:1), not the current one (cuda:0)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    checkpoint = tiny_models / "qwen2_5_vl_tiny"
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).to("cuda:1").eval()
    fast = FastQwenGreedy(model)
    assert fast.use_graphs and torch.cuda.current_device() == 0
    first = torch.cuda.CUDAGraph()  # a capture on cuda:0 first: torch's default capture stream is then cuda:0's
    with torch.cuda.graph(first):
        torch.ones(4, device="cuda:0").mul_(2)
    builder = QwenVLInputBuilder(checkpoint, max_pixels=256 * 28 * 28)
    inputs = {k: v.to("cuda:1") for k, v in builder.build(_prompts([256, 224], ["What?", "What is visible?"])).items()}
    expected = _reference(model, inputs, max_new_tokens=12)
    for _ in range(2):  # capture, then replay
        assert torch.equal(fast.generate(inputs, max_new_tokens=12).cpu(), expected.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (graph capture beside a serving model)")
def test_a_model_swapped_in_records_its_graphs_while_the_old_one_serves(tiny_models):
    """The node's live swap: the new backend loads, compiles and records its graphs (its warm-up) on the loader
    thread while the serving one keeps describing, with frames of new sizes (recording their vision graphs) among
    them; neither may fail, and both give the same text."""
    from supplementor_node.backends.base import BackendConfig
    from supplementor_node.backends.hf_transformers import TransformersBackend

    cfg = BackendConfig(str(tiny_models / "qwen2_5_vl_tiny"), device="cuda:0", dtype="bfloat16")
    serving = TransformersBackend(cfg)
    sizes = itertools.cycle(range(112, 449, 28))  # 13 image sizes, more than the 8 kept: a capture per frame
    loaded, served, errors = load_while_serving(
        lambda: serving.generate(_prompts([next(sizes)], ["What?"]), 8), lambda: TransformersBackend(cfg))
    assert errors == [] and served > 0
    prompts = _prompts([224], ["What is visible?"])
    for backend in loaded:
        assert backend.generate(prompts, 12) == serving.generate(prompts, 12)


def test_vision_plans_are_kept_least_recently_used(qwen):
    """A frame size in use on every frame stays planned (captured, on a GPU) while other sizes come and go."""
    builder, model = qwen
    fast = FastQwenGreedy(model, max_graphs=2)
    grids = {}
    for size in (224, 196, 224, 168):  # 224 used again just before 168 arrives: 196 is the least recently used
        inputs = builder.build(_prompts([size], ["What?"]))
        fast.image_embeddings(inputs["pixel_values"], inputs["image_grid_thw"])
        grids[size] = tuple(map(tuple, inputs["image_grid_thw"].tolist()))
    assert list(fast._vision) == [grids[224], grids[168]]
