"""The tiny random OpenVLA checkpoint: official layout, loaded by the runtime's one loading path; batching and
un-normalisation on it; the unnorm-key error users hit most often on the multi-dataset base model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_node.actions import UnknownUnnormKeyError
from vla_node.config import OpenVLAConfig
from vla_node.prompting import EMPTY_TOKEN_ID, official_prompt
from vla_node.runtime import OpenVLARuntime
from vla_node.tiny_model import official_key_shapes

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "openvla_parity"

# bridge_orig action statistics as published with openvla-7b (notes/openvla.md), written out by hand.
BRIDGE_Q01 = [-0.028727, -0.041703, -0.026094, -0.080921, -0.092887, -0.207183, 0.0]
BRIDGE_Q99 = [0.028310, 0.040855, 0.040162, 0.081920, 0.077929, 0.203826, 1.0]


@pytest.fixture(scope="module")
def checkpoint(tiny_models) -> Path:
    return tiny_models / "openvla_tiny"


@pytest.fixture(scope="module")
def runtime(checkpoint) -> OpenVLARuntime:
    return OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cpu")


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8) for _ in range(count)]


def test_official_layout_sharded_with_official_keys(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert "bridge_orig" in config["norm_stats"] and len(config["norm_stats"]) > 1
    assert config["text_config"]["vocab_size"] == 32064 and config["pad_token_id"] == 32000
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert all((checkpoint / name).is_file() for name in shards)
    for name in ("preprocessor_config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (checkpoint / name).is_file(), name
    expected = official_key_shapes(OpenVLAConfig.from_dir(checkpoint))
    assert sorted(index["weight_map"]) == sorted(expected)


@pytest.mark.skipif(not (FIXTURE / "arch_overrides.json").is_file(), reason=f"parity fixture not at {FIXTURE}")
def test_same_tensor_names_and_shapes_as_the_official_tiny_checkpoint(checkpoint):
    """Same sizes as the fixture, so the official code's key -> shape list must match ours exactly."""
    official = json.loads((FIXTURE / "arch_overrides.json").read_text())["checkpoint_key_shapes"]
    ours = official_key_shapes(OpenVLAConfig.from_dir(checkpoint))
    assert {k: list(v) for k, v in ours.items()} == official


def test_llama_tokenizer_ids_openvla_relies_on(runtime):
    tokenizer = runtime.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "▁", ":", "<PAD>"]) == [0, 1, 2, 29871, 29901,
                                                                                           32000]
    ids = runtime.encode([official_prompt("Put the Carrot on the plate")])[0]
    assert ids[0] == 1 and ids[-2:] == [29901, EMPTY_TOKEN_ID]
    assert tokenizer.decode(ids[1:-1]) == "In: What action should the robot take to put the carrot on the plate?\nOut:"
    assert tokenizer(" 1234").input_ids[-4:] == tokenizer.convert_tokens_to_ids(list("1234"))  # digits split


def test_batched_equals_one_by_one_with_mixed_prompt_lengths(runtime):
    images = _images(4)
    prompts = [official_prompt(t) for t in ("put the carrot on the plate", "open the drawer",
                                            "move the yellow cup to the left side of the table", "stack")]
    assert len({len(ids) for ids in runtime.encode(prompts)}) == 4
    batched = runtime.predict(images, prompts, "bridge_orig")
    for i in range(4):
        single = runtime.predict(images[i:i + 1], prompts[i:i + 1], "bridge_orig")
        np.testing.assert_array_equal(single.token_ids[0], batched.token_ids[i])
        np.testing.assert_array_equal(single.actions[0], batched.actions[i])
    assert len({tuple(row) for row in batched.token_ids}) > 1, "actions should depend on image and prompt"
    first, last = runtime.decoder.action_token_range
    assert ((batched.token_ids >= first) & (batched.token_ids <= last)).all()


def test_two_device_map_places_halves_and_decodes_like_one_device(runtime, checkpoint):
    """The two-GPU split's placement and device-moving hooks, on two CPU "devices" (tests/test_openvla_cuda.py runs
    it across two real GPUs): the same ids, and an unknown or third device is refused."""
    split = OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cpu,cpu")
    assert all(layer._forward_pre_hooks for layer in split.model.language_model.model.layers)
    assert not any(layer._forward_pre_hooks for layer in runtime.model.language_model.model.layers)
    images, prompts = _images(3), [official_prompt(t) for t in ("open the drawer", "stack", "wipe the table")]
    np.testing.assert_array_equal(split.predict(images, prompts, "bridge_orig").token_ids,
                                  runtime.predict(images, prompts, "bridge_orig").token_ids)
    with pytest.raises(ValueError, match="one or two devices"):
        OpenVLARuntime.from_pretrained(checkpoint, dtype=torch.float32, device_map="cpu,cpu,cpu")


def test_two_device_placement_puts_vision_and_the_first_half_first(checkpoint):
    """Where each part goes with two distinct devices (the model built on the meta device: no GPU needed)."""
    from vla_node.checkpoint import place_modules
    from vla_node.model import OpenVLAModel

    with torch.device("meta"):
        model = OpenVLAModel(OpenVLAConfig.from_dir(checkpoint), "sdpa")
    first, second = torch.device("cuda:0"), torch.device("cuda:1")
    placement = place_modules(model, [first, second])
    layers = model.language_model.config.num_hidden_layers
    assert {placement[p] for p in ("vision_backbone.", "projector.", "language_model.model.embed_tokens.")} == {first}
    assert [placement[f"language_model.model.layers.{i}."] for i in range(layers)] == \
        [first] * ((layers + 1) // 2) + [second] * (layers // 2)
    assert placement["language_model.model.norm."] == placement["language_model.lm_head."] == second
    assert all(any(name.startswith(prefix) for prefix in placement) for name, _ in model.named_parameters())


def test_unnormalisation_against_hand_computed_values(runtime):
    # id -> bin k = 32000 - id - 1 (clipped to 0..254) -> centre -1 + (2k + 1) / 255
    tokens = np.array([[31872, 31999, 31744, 31745, 31900, 31800, 31999]])
    centres = [-1 + (2 * 127 + 1) / 255, -1 + 1 / 255, -1 + 509 / 255, -1 + 509 / 255, -1 + 199 / 255,
               -1 + 399 / 255, -1 + 1 / 255]
    np.testing.assert_allclose(runtime.decoder.normalized(tokens)[0], centres, rtol=0, atol=1e-15)
    expected = [0.5 * (c + 1) * (hi - lo) + lo for c, hi, lo in zip(centres[:6], BRIDGE_Q99, BRIDGE_Q01)]
    expected.append(centres[6])  # gripper: mask false -> the bin centre passes through
    actions = runtime.decoder.decode(tokens, "bridge_orig")[0]
    np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-12)
    assert abs(actions[0] - (0.028310 - 0.028727) / 2) < 1e-12  # centre bin -> middle of [q01, q99]
    # what predict() returns is exactly the decode of what it generated
    prediction = runtime.predict(_images(1), [official_prompt("put the carrot on the plate")], "bridge_orig")
    np.testing.assert_array_equal(prediction.actions, runtime.decoder.decode(prediction.token_ids, "bridge_orig"))


def test_wrong_unnorm_key_names_the_available_keys(runtime):
    with pytest.raises(UnknownUnnormKeyError) as error:
        runtime.predict(_images(1), [official_prompt("open the drawer")], "bridge")
    message = str(error.value)
    assert "'bridge' not found" in message
    for key in ("bridge_orig", "fractal20220817_data", "taco_play"):
        assert key in message
    with pytest.raises(UnknownUnnormKeyError, match="several"):
        runtime.predict_from_ids(_images(1), [[1, 29901]], None)


def test_a_fine_tuned_checkpoints_dataset_statistics_give_its_unnorm_key(checkpoint, tmp_path):
    """OpenVLA's finetune.py writes the new dataset's statistics to dataset_statistics.json only (config.json keeps
    the pretraining ones): its key is the one offered and used, as OpenVLA's evaluation code does; the pretraining
    keys are not (acting with them would be wrong for the fine-tuned policy)."""
    import shutil

    from vla_node.backends.base import norm_stats_of

    finetuned = tmp_path / "finetuned"
    shutil.copytree(checkpoint, finetuned)
    constant = [0.01, -0.02, 0.03, -0.04, 0.05, -0.06, 0.0]
    mine = json.loads((finetuned / "config.json").read_text())["norm_stats"]["bridge_orig"]
    mine["action"]["q01"] = mine["action"]["q99"] = constant  # every action equals it on the masked dims
    (finetuned / "dataset_statistics.json").write_text(json.dumps({"my_robot": mine}))
    assert set(norm_stats_of(finetuned)) == {"my_robot"}
    tuned = OpenVLARuntime.from_pretrained(finetuned, dtype=torch.float32, device_map="cpu")
    actions = tuned.predict(_images(2), [official_prompt("pick up the cup")] * 2, "my_robot").actions
    np.testing.assert_allclose(actions[:, :6], np.array([constant[:6]] * 2), atol=1e-6)


def test_choices_and_statistics_that_cannot_work_are_refused_before_any_load(checkpoint):
    from vla_node.backends.base import PolicySpec, check_choices, check_unnorm_key

    with pytest.raises(ValueError, match="runs on one device; use backend 'native'"):
        check_choices(PolicySpec("", backend="hf-official", device="cuda:0,cuda:1"))
    with pytest.raises(ValueError, match="transformers is"):  # no checkpoint needed to know the packages are wrong
        check_choices(PolicySpec("", backend="hf-official"))
    if torch.cuda.device_count() >= 2:
        check_choices(PolicySpec("", backend="native", device="cuda:0,cuda:1"))
    else:  # the split is a native-backend choice, refused here only because the GPUs are not there
        with pytest.raises(ValueError, match="'cuda:0,cuda:1': .* visible on this machine"):
            check_choices(PolicySpec("", backend="native", device="cuda:0,cuda:1"))
    with pytest.raises(ValueError, match="no action q01/q99"):
        check_unnorm_key({"mine": {"action": {"q01": [0.0] * 7}}}, "mine", str(checkpoint))


def test_hf_official_backend_refuses_an_environment_it_cannot_run_in(checkpoint):
    """transformers >= 4.50 makes the official code ignore the image; the backend must say so, not run."""
    from vla_node.backends import BackendUnavailable, PolicySpec, load_policy

    with pytest.raises(BackendUnavailable, match="transformers is .*4.40.1") as error:
        load_policy(PolicySpec(str(checkpoint), backend="hf-official"))
    assert "modeling_prismatic.py" in str(error.value) and "backend 'native'" in str(error.value)


def test_benchmark_decode_paths_agree_with_the_runtime(runtime):
    """The bench compares speed of paths that must produce the same ids (static cache, plain HF generate)."""
    from vla_node.bench import _decoders

    prompts = [official_prompt(t) for t in ("open the drawer", "put the carrot on the plate right now", "stack")]
    ids = runtime.encode(prompts)
    pixel_values = runtime.preprocessor(_images(3))
    # one frame at a time: no padding, so no path (all batched, mixed lengths) is compared with itself
    expected = torch.cat([runtime.generate(pixel_values[i:i + 1], ids[i:i + 1]).token_ids for i in range(3)])
    for name, decode in _decoders(runtime).items():
        for _ in range(2):  # the static decoder reuses its cache on the second call
            np.testing.assert_array_equal(decode(pixel_values, ids).numpy(), expected.numpy(), err_msg=name)


def test_benchmark_keeps_the_other_numbers_when_a_batch_size_runs_out_of_gpu_memory(monkeypatch, capsys):
    """An out-of-memory batch size (plain generate at a batch the graphed path fits) marks its cell only: the path's
    other numbers stay, and 'same ids' compares the batch sizes both paths ran. The OOM is injected (a CPU has none)."""
    import argparse

    from vla_node import bench

    measure = bench._measure_path

    def out_of_memory_at_4(runtime, path, decode, images, prompts, iters, warmup):
        if path == "native" and len(images) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return measure(runtime, path, decode, images, prompts, iters, warmup)

    monkeypatch.setattr(bench, "_measure_path", out_of_memory_at_4)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--device", "cpu", "--batch", "2", "4", "--iters", "2", "--warmup", "1",
                              "--paths", "native-graphed,native", "--no-record"])
    assert bench.run(args) == 0
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| native")}
    graphed, native = rows["native-graphed"], rows["native"]
    assert "/" in graphed[1] and "/" in graphed[2] and graphed[3] == "reference"
    assert float(native[0]) > 0 and "/" in native[1]
    assert native[2] == "out of GPU memory"
    assert native[3] == "100%"  # the batch-1 frame and batch 2: on CPU both paths give the same tokens


def test_benchmark_imports_no_ros():
    import subprocess
    import sys

    code = "import sys, vla_node.bench, vla_node.fast_decode, vla_node.tiny_model; assert 'rclpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_graphed_decoder_padding_buckets_keep_the_ids(runtime):
    """Prompt padding to a bucket (masked, positions by cumsum) must not change the greedy ids (eager on CPU)."""
    from vla_node.fast_decode import GraphedGreedyDecoder

    assert runtime.graphed is None  # CUDA graphs only when the model sits on one CUDA device
    prompts = [official_prompt(t) for t in ("open the drawer", "put the carrot on the plate right now")]
    ids = runtime.encode(prompts)
    pixel_values = runtime.preprocessor(_images(2))
    expected = runtime.generate(pixel_values, ids).token_ids
    for bucket in (1, 7, 64):
        decoder = GraphedGreedyDecoder(runtime, bucket=bucket)
        assert decoder.text_inputs(ids)[0].shape[1] % bucket == 0
        np.testing.assert_array_equal(decoder.generate(pixel_values, ids).numpy(), expected.numpy(), err_msg=bucket)
        np.testing.assert_array_equal(decoder.generate(pixel_values[:1], ids[:1]).numpy(), expected[:1].numpy())


def test_lookup_normalisation_is_the_official_arithmetic_for_every_level(runtime):
    """normalize() maps uint8 through a table so the GPU reproduces the CPU's bits; the table must hold exactly
    (v / 255 - mean) / std in float32 for all 256 levels and both towers."""
    preprocessor = runtime.preprocessor
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16, 1).expand(2, 1, 16, 16, 3).contiguous()
    scaled = levels[:, 0].permute(0, 3, 1, 2).float().div(255)
    config = preprocessor.config
    expected = torch.cat([(scaled - torch.tensor(m, dtype=torch.float32).view(3, 1, 1))
                          / torch.tensor(s, dtype=torch.float32).view(3, 1, 1)
                          for m, s in zip(config.means, config.stds)], dim=1)
    assert torch.equal(preprocessor.normalize(levels), expected)
    with pytest.raises(ValueError, match="uint8"):
        preprocessor.normalize(levels.float())


def test_fused_projection_weights_are_views_of_one_tensor(runtime):
    """The decoder's stacked q/k/v and gate/up weights share the modules' storage (no extra memory) and values."""
    from vla_node.fast_decode import fuse_weights

    layer = runtime.model.language_model.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    qkv, gate_up = fuse_weights(layer)
    assert torch.equal(qkv, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
    assert torch.equal(gate_up, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]))
    assert attn.k_proj.weight.data_ptr() == qkv[attn.q_proj.weight.shape[0]:].data_ptr()
    assert mlp.up_proj.weight.data_ptr() == gate_up[mlp.gate_proj.weight.shape[0]:].data_ptr()
    assert fuse_weights(layer)[0] is qkv  # idempotent: a second decoder reuses the stacks


def test_graphed_decoder_batched_uint8_frames_keep_the_ids(runtime):
    """A batch past BATCHED_ROWS (narrow padding), given as uint8 resizes normalised inside the frame, with the last
    layer computed at one position per row: the same greedy ids as the runtime's masked eager decoding."""
    from vla_node.fast_decode import GraphedGreedyDecoder

    decoder = GraphedGreedyDecoder(runtime)
    tasks = ("open the drawer", "put the carrot on the plate right now", "stack", "wipe the table with the cloth")
    count = decoder.BATCHED_ROWS + 1
    ids = runtime.encode([official_prompt(tasks[i % len(tasks)]) for i in range(count)])
    resized = runtime.preprocessor.resize(_images(count))
    pixel_values = runtime.preprocessor.normalize(resized)
    expected = runtime.generate(pixel_values, ids).token_ids
    width = decoder.text_inputs(ids)[0].shape[1]
    assert width % decoder.batched_bucket == 0 and width < max(len(i) for i in ids) + decoder.batched_bucket
    np.testing.assert_array_equal(decoder.generate(resized, ids).numpy(), expected.numpy())
    np.testing.assert_array_equal(decoder.generate(pixel_values, ids).numpy(), expected.numpy())


def test_predict_stream_equals_predict_batch_by_batch(runtime):
    images = _images(6)
    prompts = [official_prompt(t) for t in ("open the drawer", "stack", "put the carrot on the plate")] * 2
    batches = [(images[:3], prompts[:3]), (images[3:4], prompts[3:4]), (images[4:], prompts[4:])]
    streamed = list(runtime.predict_stream(iter(batches), "bridge_orig"))
    assert len(streamed) == len(batches)
    for (batch_images, batch_prompts), got in zip(batches, streamed):
        expected = runtime.predict(batch_images, batch_prompts, "bridge_orig")
        np.testing.assert_array_equal(got.token_ids, expected.token_ids)
        np.testing.assert_array_equal(got.actions, expected.actions)
    with pytest.raises(UnknownUnnormKeyError):
        next(runtime.predict_stream(iter(batches), "bridge"))


def test_predict_stream_hands_back_finished_batches_before_a_bad_one_fails(runtime):
    images = _images(3)
    prompt = official_prompt("open the drawer")
    bad = np.zeros((8, 8), dtype=np.uint8)  # not HxWx3
    stream = runtime.predict_stream(iter([(images[:2], [prompt] * 2), ([images[2], bad], [prompt] * 2)]),
                                    "bridge_orig")
    first = next(stream)
    np.testing.assert_array_equal(first.token_ids,
                                  runtime.predict(images[:2], [prompt] * 2, "bridge_orig").token_ids)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        next(stream)


def test_predict_stream_hands_back_the_finished_batch_when_its_source_fails(runtime):
    """The batches' reader itself failing (a corrupt file) must not take the batch already on the way with it."""
    images = _images(2)
    prompt = official_prompt("open the drawer")

    def reader():
        yield images, [prompt] * 2
        raise OSError("episode_000007.tfrecord: corrupt record")

    stream = runtime.predict_stream(reader(), "bridge_orig")
    np.testing.assert_array_equal(next(stream).token_ids,
                                  runtime.predict(images, [prompt] * 2, "bridge_orig").token_ids)
    with pytest.raises(OSError, match="corrupt record"):
        next(stream)


def _damaged_copy(checkpoint: Path, out: Path, damage) -> Path:
    import shutil

    shutil.copytree(checkpoint, out)
    damage(out)
    return out


def _truncate_shard(out: Path) -> None:
    shard = out / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])


def _drop_field(name: str):
    def damage(out: Path) -> None:
        config = json.loads((out / "config.json").read_text())
        del config[name]
        (out / "config.json").write_text(json.dumps(config))
    return damage


def _duplicate_lm_head(out: Path) -> None:
    """lm_head.weight (index: shard 3) also written, zeroed, into shard 2: which copy loads would be an accident."""
    from safetensors.torch import load_file, save_file

    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    key = "language_model.lm_head.weight"
    donor = load_file(out / index[key])[key]
    shard = out / "model-00002-of-00003.safetensors"
    tensors = load_file(shard)
    tensors[key] = torch.zeros_like(donor)
    save_file(tensors, shard, metadata={"format": "pt"})


def _remove_shard(out: Path) -> None:
    (out / "model-00003-of-00003.safetensors").unlink()


@pytest.mark.parametrize("damage,message", [
    (_truncate_shard, "model-00002-of-00003.safetensors: not a readable safetensors file"),
    (_duplicate_lm_head, "language_model.lm_head.weight"),
    (_remove_shard, "shards named in the index are missing: ['model-00003-of-00003.safetensors']"),
    (_drop_field("timm_model_ids"), "missing field 'timm_model_ids'"),
    (_drop_field("text_config"), "has no text_config"),
], ids=["truncated shard", "tensor in two shards", "shard missing", "config field missing", "no text_config"])
def test_a_damaged_checkpoint_is_refused_naming_what_is_wrong(checkpoint, tmp_path, damage, message):
    from vla_node.checkpoint import CheckpointError, load_openvla

    damaged = _damaged_copy(checkpoint, tmp_path / "damaged", damage)
    with pytest.raises(CheckpointError) as caught:
        load_openvla(damaged, dtype=torch.float32, device_map="cpu")
    assert message in str(caught.value)


def test_an_empty_image_or_batch_is_refused(runtime):
    prompt = official_prompt("open the drawer")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        runtime.predict([np.zeros((0, 0, 3), dtype=np.uint8)], [prompt], "bridge_orig")
    with pytest.raises(ValueError, match="at least one"):
        runtime.predict([], [], "bridge_orig")


def test_a_prompt_past_the_trained_length_is_refused(runtime):
    """openvla-7b was trained on 2048 tokens (config.json's llm_max_length); past it an action still comes out."""
    limit = runtime.config.raw["llm_max_length"]
    runtime.encode([official_prompt("pick up the cup " * 10)])
    long = official_prompt("pick up the cup " * 600)
    tokens = len(runtime.tokenizer(long).input_ids) + 1  # + the empty token OpenVLA appends (BOS is already there)
    assert runtime.config.num_patches + tokens + 7 > limit
    with pytest.raises(ValueError, match=rf"a prompt of {tokens} tokens \({len(long)} characters\) is too long: "
                                         rf"with the {runtime.config.num_patches} image patches and 7 action tokens "
                                         rf"it passes the policy's llm_max_length of {limit}"):
        runtime.encode([long])


def test_predict_from_ids_takes_images_resizes_or_pixel_values_alike(runtime):
    images = _images(2)
    ids = runtime.encode([official_prompt("open the drawer"), official_prompt("stack")])
    expected = runtime.predict_from_ids(images, ids, "bridge_orig").token_ids
    resized = runtime.preprocessor.resize(images)
    for given in (resized, runtime.preprocessor.normalize(resized)):
        np.testing.assert_array_equal(runtime.predict_from_ids(given, ids, "bridge_orig").token_ids, expected)


def test_a_tiny_build_killed_half_way_is_rebuilt_not_taken_as_done(tmp_path):
    from supplementor_node.make_tiny_models import ensure_tiny_models

    leftover = tmp_path / "openvla_tiny.partial"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")  # what a build killed before its tokenizer left behind
    built = ensure_tiny_models(tmp_path, ["openvla_tiny"])["openvla_tiny"]
    assert (built / "tokenizer.json").is_file() and (built / "config.json").read_text() != "{}"
    assert not leftover.exists()
    OpenVLAConfig.from_dir(built)
    shard = next(built.glob("model-0000*-of-*.safetensors"))
    shard.unlink()  # a checkpoint damaged after it was built is rebuilt too, saying why
    reports: list[str] = []
    ensure_tiny_models(tmp_path, ["openvla_tiny"], report=reports.append)
    assert shard.is_file() and f"shards named in the index are missing: ['{shard.name}']; rebuilding" in reports[0]
