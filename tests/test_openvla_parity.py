"""Parity of the native OpenVLA runtime with the official code's outputs on the tiny fixture (FIXTURE.md).

The fixture (a tiny checkpoint saved by the official code, and its outputs) is vendored in
tests/fixtures/openvla_parity, so CI always runs these tests; without it they skip with the reason.
Tolerances are FIXTURE.md's suggested float32 acceptance: pixels exact, features/logits 1e-4, ids and actions exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla_node.actions import ActionDecoder
from vla_node.prompting import with_empty_token
from vla_node.runtime import OpenVLARuntime

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "openvla_parity"
ATOL = 1e-4

pytestmark = pytest.mark.skipif(not (FIXTURE / "cases.npz").is_file(),
                                reason=f"OpenVLA parity fixture not found at {FIXTURE}")


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "cases.npz"))


@pytest.fixture(scope="module")
def runtime() -> OpenVLARuntime:
    torch.manual_seed(0)
    return OpenVLARuntime.from_pretrained(FIXTURE / "checkpoint", dtype=torch.float32, device_map="cpu")


@pytest.fixture(scope="module")
def pixel_values(runtime, cases) -> torch.Tensor:
    return runtime.preprocessor(list(cases["image_u8"]))


def prompts(cases) -> list[list[int]]:
    return [cases[f"case{i}_input_ids"].tolist() for i in range(3)]


def test_pixel_values_exact(runtime, cases, pixel_values):
    np.testing.assert_array_equal(pixel_values.numpy(), cases["pixel_values"])
    extra = runtime.preprocessor([cases["extra_image_u8"]]).numpy()
    np.testing.assert_array_equal(extra, cases["extra_pixel_values"])


def test_patch_and_projector_features(runtime, cases, pixel_values):
    with torch.inference_mode():
        features = runtime.model.vision_backbone(pixel_values)
        projected = runtime.model.projector(features)
    np.testing.assert_allclose(features.numpy(), cases["patch_features"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(projected.numpy(), cases["projector_features"], atol=ATOL, rtol=0)


def test_last_logits_effective_and_raw_prompts(runtime, cases, pixel_values):
    for i, ids in enumerate(prompts(cases)):
        effective = with_empty_token(ids)
        assert effective == cases[f"case{i}_effective_input_ids"].tolist()
        prefill = runtime.prefill(pixel_values[i:i + 1], [effective])
        assert prefill.attention_mask.shape[1] == cases["seq_len"][i]
        assert prefill.attention_mask.shape[1] - len(effective) == cases["num_patch_tokens"][i]
        logits = prefill.logits[0, -1].numpy()
        np.testing.assert_allclose(logits, cases["last_logits"][i], atol=ATOL, rtol=0)
        assert logits.argmax() == cases["last_argmax"][i]
        raw_prefill = runtime.prefill(pixel_values[i:i + 1], [ids])
        assert raw_prefill.attention_mask.shape[1] == cases["raw_seq_len"][i]
        np.testing.assert_allclose(raw_prefill.logits[0, -1].numpy(), cases["raw_last_logits"][i], atol=ATOL, rtol=0)


def test_teacher_forced_logits(runtime, cases, pixel_values):
    for i in range(3):
        ids = cases[f"case{i}_effective_input_ids"].tolist() + cases["generated_ids"][i, :6].tolist()
        logits = runtime.prefill(pixel_values[i:i + 1], [ids], logits_to_keep=7).logits[0, :, 31744:32000]
        np.testing.assert_allclose(logits.numpy(), cases["teacher_forced_action_logits"][i], atol=ATOL, rtol=0)


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batch-of-3-mixed-lengths"])
def test_generated_ids_step_logits_and_actions(runtime, cases, pixel_values, batched):
    rows = [list(range(3))] if batched else [[0], [1], [2]]
    for row in rows:
        ids = [prompts(cases)[i] for i in row]
        generation = runtime.generate(pixel_values[row], ids, return_logits=True)
        np.testing.assert_array_equal(generation.token_ids.numpy(), cases["generated_ids"][row])
        step_logits = torch.stack(generation.step_logits, dim=1)[:, :, 31744:32000].numpy()
        np.testing.assert_allclose(step_logits, cases["step_action_logits"][row], atol=ATOL, rtol=0)
        prediction = runtime.predict_from_ids(pixel_values[row], ids, "bridge_orig")
        np.testing.assert_array_equal(prediction.normalized, cases["normalized_actions"][row])
        np.testing.assert_array_equal(prediction.actions, cases["actions"][row])


def test_batch_forward(runtime, cases, pixel_values):
    index = cases["batch_case_indices"].tolist()
    prefill = runtime.prefill(pixel_values[index], cases["batch_input_ids"].tolist())
    assert prefill.attention_mask.shape[1] == int(cases["batch_seq_len"])
    np.testing.assert_allclose(prefill.logits[:, -1].numpy(), cases["batch_last_logits"], atol=ATOL, rtol=0)


def test_decode_tables(runtime, cases):
    decoder = runtime.decoder
    assert decoder.vocab_size == int(cases["decode_vocab_size"])
    np.testing.assert_array_equal(decoder.bins, cases["bins"])
    np.testing.assert_array_equal(decoder.bin_centers, cases["bin_centers"])
    tokens = np.repeat(cases["decode_token_ids"][:, None], 7, axis=1)
    np.testing.assert_array_equal(decoder.normalized(tokens), cases["decode_normalized"])
    np.testing.assert_array_equal(decoder.decode(tokens, "bridge_orig"), cases["decode_actions_bridge_orig"])
    stats = runtime.config.norm_stats["bridge_orig"]["action"]
    no_mask = ActionDecoder(decoder.vocab_size, len(decoder.bins),
                            {"nomask": {"action": {"q01": stats["q01"], "q99": stats["q99"]}}})
    np.testing.assert_array_equal(no_mask.decode(tokens, "nomask"), cases["decode_actions_nomask_key"])
    generated = no_mask.decode(cases["generated_ids"], "nomask")
    np.testing.assert_array_equal(generated, cases["actions_nomask_key"])
    np.testing.assert_array_equal(np.array(stats["q01"]), cases["norm_q01"])
    np.testing.assert_array_equal(np.array(stats["q99"]), cases["norm_q99"])
    np.testing.assert_array_equal(np.array(stats["mask"]), cases["norm_mask"])
