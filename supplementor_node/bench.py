"""``task-supplementor bench supplementor``: TTFT, decode tokens/s and messages/s of the supplementor model.

Three generation paths are measured side by side in one run, on the same inputs:
- ``generate``: plain ``model.generate`` (dynamic KV cache), the reference (the node's path on CPU);
- ``static``: ``model.generate(cache_implementation="static")``; on CUDA transformers then compiles the decode step
  with ``torch.compile`` (CUDA graphs, fixed shapes), which removes the per-token Python/launch overhead that
  dominates a 3B model at batch 1. On CPU it runs without compilation (transformers compiles on accelerators only);
- ``fast``: :class:`supplementor_node.fast_decode.FastQwenGreedy` (vision tower with one attention call per block,
  graph-captured per image grid; eager prefill; a written-out one-token step, torch.compile'd and graph-captured
  on CUDA), the path the
  transformers backend uses on CUDA.
All paths decode greedily and are forced to emit exactly ``--new-tokens`` tokens (random weights would otherwise stop
at random), and the table says whether they produced the same tokens.

Tiny model (default): the tiny random checkpoint, loaded from disk through the node's code path, on CPU.
``--full-size``: the Qwen2.5-VL-3B-Instruct architecture sizes with random weights in bf16, built directly on the GPU
(identical compute cost to the real weights; no download), with the tiny checkpoint's tokenizer and processor.
No ROS import here: the GPU machine has no ROS.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from supplementor_node.prompt_spec import load_prompt_spec
from supplementor_node.qwen_inputs import CheckpointError, Prompt, QwenVLInputBuilder
from supplementor_node.tiny_model import TinyQwenConfig, make_tiny_qwen
from task_supplementor.cli_args import positive_int
from task_supplementor.facts import Limits

PATHS = ("generate", "static", "fast")

# Qwen/Qwen2.5-VL-3B-Instruct config.json sizes (text and vision towers).
FULL_TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
                 tie_word_embeddings=True)
FULL_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                   fullatt_block_indexes=[7, 15, 23, 31], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                   window_size=112, tokens_per_second=2, hidden_act="silu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full-size", action="store_true",
                        help="Qwen2.5-VL-3B sizes, random bf16 weights built on the GPU (needs CUDA)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="tiny mode: checkpoint dir to load (default: build a tiny one in a temp dir)")
    parser.add_argument("--device", default=None, help="default: cuda with --full-size, else cpu")
    parser.add_argument("--image-size", type=positive_int, default=256,
                        help="square frame side in pixels (default 256)")
    parser.add_argument("--new-tokens", type=positive_int, default=128, help="tokens generated per frame (default 128)")
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[8, 32], help="throughput batch sizes")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed repeats per measurement (median reported)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")


class _FirstTokenClock:
    """A generate() streamer that notes when the first new token exists (the first put() is the prompt)."""

    def __init__(self, sync):
        self.sync, self.calls, self.first = sync, 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.sync()
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _build_model(args, checkpoint: Path, device: str):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if not args.full_size:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).to(device).eval()
    tiny = Qwen2_5_VLConfig.from_pretrained(checkpoint)   # special-token ids of the tokenizer we prompt with
    text = dict(FULL_TEXT, bos_token_id=tiny.text_config.bos_token_id, eos_token_id=tiny.text_config.eos_token_id,
                pad_token_id=tiny.text_config.pad_token_id)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=FULL_VISION, image_token_id=tiny.image_token_id,
                              video_token_id=tiny.video_token_id, vision_start_token_id=tiny.vision_start_token_id,
                              vision_end_token_id=tiny.vision_end_token_id, tie_word_embeddings=True)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):   # weights are created (randomly initialised) directly on the GPU
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval()


class _Bench:
    def __init__(self, args, checkpoint: Path, device: str):
        import torch

        self.torch, self.args, self.device = torch, args, device
        self.inputs = QwenVLInputBuilder(checkpoint, max_pixels=256 * 28 * 28)
        self.model = _build_model(args, checkpoint, device)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(args.image_size, args.image_size, 3), dtype=np.uint8)
        self.prompt = Prompt(image, *load_prompt_spec("v1").render("put the red block in the bowl", Limits()))
        self.fast = None   # FastQwenGreedy, built on first use (its graphs are recorded in the warm-up)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def _generate(self, path: str, batch: int, streamer=None):
        """Inputs built inside the timed region: the node pays for preprocessing on every frame too."""
        n = self.args.new_tokens
        tensors = {k: v.to(self.device) for k, v in self.inputs.build([self.prompt] * batch).items()}
        tensors["pixel_values"] = tensors["pixel_values"].to(self.model.dtype)
        if path == "fast":
            if self.fast is None:
                from supplementor_node.fast_decode import FastQwenGreedy

                self.fast = FastQwenGreedy(self.model)
            out = self.fast.generate(tensors, max_new_tokens=n, min_new_tokens=n, streamer=streamer)
            self.sync()
            return out
        extra = {"cache_implementation": "static"} if path == "static" else {}
        with self.torch.inference_mode():
            out = self.model.generate(**tensors, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                      streamer=streamer, **extra)
        self.sync()
        return out[:, tensors["input_ids"].shape[1]:]

    def timed(self, path: str, batch: int) -> tuple[float, object]:
        times, out = [], None
        for _ in range(self.args.repeats):
            start = time.perf_counter()
            out = self._generate(path, batch)
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    def ttft(self, path: str) -> float:
        values = []
        for _ in range(self.args.repeats):
            clock = _FirstTokenClock(self.sync)
            start = time.perf_counter()
            self._generate(path, 1, streamer=clock)
            values.append(clock.first - start)
        return statistics.median(values)

    def measure(self, path: str) -> dict[str, object]:
        n = self.args.new_tokens
        for _ in range(2):   # warm-up: allocator, kernels, and (static on CUDA) torch.compile + CUDA graphs
            self._generate(path, 1)
        total, tokens = self.timed(path, 1)
        first = self.ttft(path)
        row = {"ttft_ms": first * 1e3, "decode_tok_s": (n - 1) / max(total - first, 1e-9),
               "msgs_s_b1": 1.0 / total, "tokens": tokens[0].tolist()}
        for batch in self.args.batches:
            self._generate(path, batch)   # warm-up for this shape
            seconds, _ = self.timed(path, batch)
            row[f"b{batch}"] = (batch / seconds, batch * n / seconds)
        return row


def _table(rows: dict[str, dict], args) -> str:
    batch_cols = "".join(f" b{b} msgs/s (tok/s) |" for b in args.batches)
    lines = [f"| path | TTFT ms | decode tok/s (b1) | msgs/s (b1) |{batch_cols} same tokens as generate |",
             "|---" * (5 + len(args.batches)) + "|"]
    reference = rows.get("generate", {}).get("tokens")
    for path, row in rows.items():
        if "error" in row:
            lines.append(f"| {path} | failed: {row['error']} |" + " |" * (3 + len(args.batches)))
            continue
        cells = "".join(f" {row[f'b{b}'][0]:.2f} ({row[f'b{b}'][1]:.0f}) |" for b in args.batches)
        if path == "generate":
            same = "reference"
        else:  # "-": generate was not run (or failed), so there is nothing to compare with
            same = "-" if reference is None else ("yes" if row["tokens"] == reference else "no")
        lines.append(f"| {path} | {row['ttft_ms']:.1f} | {row['decode_tok_s']:.1f} | {row['msgs_s_b1']:.2f} |"
                     f"{cells} {same} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if args.full_size else "cpu")
    if args.full_size and not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU (none visible)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_tiny_qwen(Path(tmp) / "qwen2_5_vl_tiny", TinyQwenConfig(seed=0))
        try:
            bench = _Bench(args, checkpoint, device)
        except (CheckpointError, OSError, ValueError) as error:  # not a Qwen2.5-VL checkpoint, files missing
            print(f"bench supplementor: {' '.join(str(error).split())}")
            return 2
        rows: dict[str, dict] = {}
        for path in args.paths:
            try:
                rows[path] = bench.measure(path)
            except Exception as exc:  # noqa: BLE001 - one failing path must not hide the other's numbers
                rows[path] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    size = "Qwen2.5-VL-3B sizes, random weights, bf16" if args.full_size else "tiny random Qwen2.5-VL, float32"
    title = (f"supplementor: {size} on {device}, one {args.image_size}x{args.image_size} frame, "
             f"{args.new_tokens} new tokens")
    notes = ("TTFT = frame in (preprocessing included) -> first generated token. decode tok/s = (new tokens - 1) / "
             "(batch-1 time - TTFT). msgs/s = frames described per second (each exactly the stated new tokens). "
             "`static` = static KV cache (+ torch.compile/CUDA graphs on CUDA). "
             "`fast` = supplementor_node/fast_decode.py "
             "(one attention call per vision block, vision tower and one-token step as CUDA graphs on CUDA, the step "
             "torch.compile'd before capture). Targets (H100, bf16, 256x256): "
             "decode >= 200 tok/s at batch 1, TTFT <= 60 ms.")
    table = _table(rows, args)
    if args.no_record:
        print(f"## {title}\n\n{table}\n\n{notes}")
    else:
        from task_supplementor.bench import record_table

        record_table(title, table, args.argv, notes)
    return 0 if all("error" not in row for row in rows.values()) else 1
