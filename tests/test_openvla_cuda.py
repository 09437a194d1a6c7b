"""The CUDA-graph path of the OpenVLA runtime on a real GPU (tiny random checkpoint, float32), against eager decoding
and against itself one frame at a time.

CI has no GPU, so these skip there (visibly, with the reason); they run on a GPU machine with
``python -m pytest tests/test_openvla_cuda.py``. What only a GPU exercises: graph capture and replay per frame shape,
uint8 frames normalised inside the graph, page-locked input staging, predict_stream's overlap of one batch's
CPU work with the previous batch's GPU work (a race there would hand back another batch's actions), and a policy
recording its graphs while another one serves (the node's live swap).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from serving_while_loading import load_while_serving
from vla_node.prompting import official_prompt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (CUDA-graph path of the VLA runtime)")

TASKS = ("open the drawer", "put the carrot on the plate right now", "stack", "wipe the table with the cloth")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vla_node.tiny_model import make_tiny_openvla

    return make_tiny_openvla(tmp_path_factory.mktemp("openvla") / "openvla_tiny")


@pytest.fixture(scope="module")
def runtimes(checkpoint):
    """(graphed, eager) runtimes over one tiny checkpoint on cuda:0, float32."""
    from vla_node.runtime import OpenVLARuntime

    graphed = OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cuda:0")
    eager = OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cuda:0", graphs=False)
    assert graphed.graphed is not None and eager.graphed is None
    return graphed, eager


def _batch(count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8) for _ in range(count)]
    return images, [official_prompt(TASKS[(seed + i) % len(TASKS)]) for i in range(count)]


def test_gpu_normalisation_gives_the_cpu_bits(runtimes):
    preprocessor = runtimes[0].preprocessor
    resized = preprocessor.resize(_batch(4, 0)[0])
    assert torch.equal(preprocessor.normalize(resized.cuda()).cpu(), preprocessor.normalize(resized))


@pytest.mark.parametrize("count", [1, 3, 9])
def test_graph_replays_give_the_eager_actions(runtimes, count):
    """Batch 1, a small batch (16-token buckets) and one past BATCHED_ROWS; each shape captured once, replayed
    with new frames."""
    graphed, eager = runtimes
    for seed in (1, 2):
        images, prompts = _batch(count, seed)
        got = graphed.predict(images, prompts, "bridge_orig")
        expected = eager.predict(images, prompts, "bridge_orig")
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)
        np.testing.assert_array_equal(got.actions, expected.actions)


def test_a_batch_gives_the_actions_of_its_frames_one_by_one(runtimes):
    """Batched == one-by-one on the graphed path: 9 frames of four prompt lengths (past BATCHED_ROWS, so another
    padding bucket than one frame's) against each frame alone. In float32; in bf16 a batch's GEMMs round differently
    from one frame's (docs/vla.md)."""
    graphed, _ = runtimes
    images, prompts = _batch(9, 60)
    batched = graphed.predict(images, prompts, "bridge_orig")
    for row, (image, prompt) in enumerate(zip(images, prompts)):
        alone = graphed.predict([image], [prompt], "bridge_orig")
        np.testing.assert_array_equal(batched.token_ids[row], alone.token_ids[0])
        np.testing.assert_array_equal(batched.actions[row], alone.actions[0])


def test_predict_stream_hands_back_each_batch_its_own_actions(runtimes):
    graphed, eager = runtimes
    batches = [_batch(count, seed) for seed, count in enumerate((9, 9, 3, 9, 1, 9), start=10)]
    streamed = list(graphed.predict_stream(iter(batches), "bridge_orig"))
    assert len(streamed) == len(batches)
    for (images, prompts), got in zip(batches, streamed):
        expected = eager.predict(images, prompts, "bridge_orig")
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)


def test_a_full_gpu_evicts_old_graphs_and_keeps_answering(runtimes, monkeypatch):
    """When a new frame shape does not fit, least recently used graphs (and their K/V buffers) go first."""
    graphed, eager = runtimes
    for count in (1, 3):
        graphed.predict(*_batch(count, 20), "bridge_orig")
    assert len(graphed.graphed._graphs) >= 2
    total = torch.cuda.mem_get_info()[1]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (0, total))  # a full card
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    images, prompts = _batch(5, 21)  # a batch size no other test uses: a new frame shape
    got = graphed.predict(images, prompts, "bridge_orig")
    assert len(graphed.graphed._graphs) == 1  # only the new shape is left
    np.testing.assert_array_equal(got.token_ids, eager.predict(images, prompts, "bridge_orig").token_ids)


def test_a_policy_swapped_in_records_its_graphs_while_the_old_one_serves(checkpoint):
    """The node's live swap: the new policy loads, compiles and records its graphs (``warm_up``) on the loader thread
    while the serving policy keeps predicting on the inference thread, with a new prompt width on every frame (9
    widths, more than the 8 graphs kept: the serving side records a graph per frame too); neither may fail, and both
    answer alike."""
    from vla_node.backends import PolicySpec, load_policy

    spec = PolicySpec(str(checkpoint), "native", device="cuda:0", dtype="bfloat16")
    serving = load_policy(spec)
    images = _batch(1, 50)[0]
    widths = itertools.cycle([[official_prompt("stack " + " ".join(["red"] * (8 + 16 * k)))] for k in range(9)])
    loaded, served, errors = load_while_serving(lambda: serving.predict(images, next(widths), "bridge_orig"),
                                                lambda: load_policy(spec))
    assert errors == [] and served > 0
    prompts = _batch(1, 50)[1]
    for policy in loaded:
        np.testing.assert_array_equal(policy.predict(images, prompts, "bridge_orig"),
                                      serving.predict(images, prompts, "bridge_orig"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (a model on the second one)")
def test_a_model_on_the_second_gpu_graphs_and_streams_there(runtimes, checkpoint):
    """Graphs, their streams and the results' events belong to the model's device, not the current one (cuda:0),
    also after graphs were captured on cuda:0 in the same process (torch's default capture stream is then cuda:0's)."""
    from vla_node.runtime import OpenVLARuntime

    graphed, eager = runtimes
    graphed.predict(*_batch(2, 39), "bridge_orig")  # a capture on cuda:0 first
    second = OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cuda:1")
    assert second.graphed is not None and second.device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0
    batches = [_batch(count, seed) for seed, count in enumerate((3, 1, 3), start=40)]
    for (images, prompts), got in zip(batches, second.predict_stream(iter(batches), "bridge_orig")):
        np.testing.assert_array_equal(got.token_ids, eager.predict(images, prompts, "bridge_orig").token_ids)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (the LLM split over two)")
def test_llm_split_over_two_gpus_gives_the_one_gpu_actions(runtimes, checkpoint):
    """``device_map="cuda:0,cuda:1"``: vision, projector and the first half of the layers on cuda:0, the rest and the
    head on cuda:1, tensors moved between them by hooks; it runs eagerly and must decode exactly as one GPU does."""
    from vla_node.runtime import OpenVLARuntime

    split = OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cuda:0,cuda:1")
    llm = split.model.language_model
    assert split.graphed is None
    assert llm.model.layers[0].self_attn.q_proj.weight.device == torch.device("cuda:0")
    assert llm.model.layers[-1].self_attn.q_proj.weight.device == torch.device("cuda:1")
    assert llm.lm_head.weight.device == torch.device("cuda:1")
    for count, seed in ((1, 11), (5, 12)):
        images, prompts = _batch(count, seed)
        got = split.predict(images, prompts, "bridge_orig")
        expected = runtimes[1].predict(images, prompts, "bridge_orig")
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)
        np.testing.assert_allclose(got.actions, expected.actions, rtol=0, atol=1e-6)
