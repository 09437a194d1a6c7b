"""``task-supplementor bench vla``: OpenVLA actions/s at batch 1 and frames/s batched, decode paths side by side.

Paths (same model, same inputs, same run):

- ``hf-generate``: our prefill embeddings handed to transformers' ``LlamaForCausalLM.generate`` (greedy, dynamic
  cache): the plain ``generate``-based way, as the official ``predict_action`` decodes.
- ``native``: the runtime's own decode loop (dynamic cache), what the node uses on CPU and with a model split over
  two GPUs.
- ``native-graphed``: :class:`vla_node.fast_decode.GraphedGreedyDecoder`, what the node's runtime uses on one CUDA
  device: the whole frame (vision, prefill into a static cache, 7 greedy steps) replayed as one CUDA graph per
  (batch, prompt-length bucket); on CPU the same fixed-shape code runs eagerly.

Each timed call is a whole frame: image preprocessing, vision towers, projector, prefill, 7 decode steps,
un-normalisation. "frames/s, stream": a run of batched calls, each batch's preprocessing overlapped with the previous
batch's GPU work where the path allows it (``native-graphed`` through :meth:`OpenVLARuntime.predict_stream`, which users
call; the other paths have no asynchronous call and run one batch after another), timed from the first batch's actions
to the last's. WHY not from the call: the first batch's preprocessing has nothing to hide behind, a one-off that a short
timed run (3 batches) would spread over every batch (~4% at batch 256 on an H100) though an offline run over thousands
of frames pays it once. "model-only": the same batched call on inputs already preprocessed and on the device.
``--full-size`` builds the OpenVLA-7B architecture (DINOv2-L + SigLIP-so400m + Llama-2-7B) with random weights directly
on the GPU in bf16 (no 15 GB CPU init); the compute is the real model's. ``--checkpoint`` loads a real checkpoint
instead; with neither, the tiny random checkpoint (official layout) runs, on the GPU when there is one, else on the CPU.
Imports no ROS: it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from task_supplementor.cli_args import non_negative_int, positive_int
from vla_node.checkpoint import CheckpointError

PATHS = ("hf-generate", "native", "native-graphed")
TASKS = ("put the carrot on the plate", "open the drawer", "move the yellow cup to the left side of the table",
         "stack the blocks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full-size", action="store_true",
                        help="OpenVLA-7B sizes, random weights, bf16, built on the GPU (needs cuda)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a real OpenVLA checkpoint directory to load instead (e.g. openvla/openvla-7b)")
    parser.add_argument("--device", default=None, help="default: cuda when a GPU is available, else cpu")
    parser.add_argument("--batch", type=positive_int, nargs="+", default=None,
                        help="batched sizes (default 64 128 on GPU, 8 on CPU)")
    parser.add_argument("--iters", type=positive_int, default=None,
                        help="timed calls at batch 1 (default 30 GPU / 10 CPU); batched: iters // 6, at least 2")
    parser.add_argument("--warmup", type=non_negative_int, default=3,
                        help="untimed calls first (compilation, CUDA graphs)")
    parser.add_argument("--paths", type=_path_list, default=list(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)} (default all)")
    parser.add_argument("--no-record", action="store_true", help="print the table only (no docs/benchmarks.md)")


def _path_list(text: str) -> list[str]:
    paths = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or repr(text)}: paths are a comma-separated subset "
                                         f"of {','.join(PATHS)}")
    return paths


def full_size_runtime(device: str):
    """OpenVLA-7B architecture with random bf16 weights allocated and initialised on ``device``."""
    from vla_node.config import OpenVLAConfig
    from vla_node.model import OpenVLAModel
    from vla_node.runtime import OpenVLARuntime
    from vla_node.tiny_model import TinyOpenVLAConfig, build_llama_tokenizer, openvla_config_dict, \
        preprocessor_config_dict

    raw = openvla_config_dict(TinyOpenVLAConfig())
    raw.pop("parity_fixture_timm_overrides")
    raw["text_config"] = {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064}  # = openvla-7b's
    config = OpenVLAConfig.from_dict(raw, preprocessor_config_dict())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = OpenVLAModel(config)
            for name, param in model.named_parameters():  # O(1) activations, cheap on the GPU
                if param.dim() > 1:
                    param.data.normal_(0.0, param.shape[-1] ** -0.5 if "embed_tokens" not in name else 1.0)
    finally:
        torch.set_default_dtype(previous)
    return OpenVLARuntime(model.eval().requires_grad_(False), build_llama_tokenizer())


def _load_runtime(args: argparse.Namespace, device: str):
    from vla_node.runtime import OpenVLARuntime

    if args.full_size:
        return full_size_runtime(device), "OpenVLA-7B architecture, random weights, bf16"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if args.checkpoint is not None:
        return OpenVLARuntime.from_pretrained(args.checkpoint, dtype=dtype, device_map=device), str(args.checkpoint)
    from vla_node.tiny_model import make_tiny_openvla

    tiny = make_tiny_openvla(Path(tempfile.mkdtemp(prefix="openvla_tiny_")) / "openvla_tiny")
    return OpenVLARuntime.from_pretrained(tiny, dtype=dtype, device_map=device), "tiny random OpenVLA (official layout)"


def _decoders(runtime) -> dict[str, Callable]:
    """path -> fn(pixel_values, prompt_ids) -> (B, 7) token ids."""
    from vla_node.fast_decode import GraphedGreedyDecoder
    from vla_node.prompting import with_empty_token

    def hf_generate(pixel_values, prompt_ids):
        state_ids = [with_empty_token(ids) for ids in prompt_ids]
        llm = runtime.model.language_model
        embed = llm.get_input_embeddings()
        longest = max(len(ids) for ids in state_ids)
        rows, masks = [], []
        patches = runtime.model.image_embeddings(pixel_values.to(runtime.device))
        for row, ids in enumerate(state_ids):  # [BOS][patches][pad][rest]: same layout as the runtime's prefill
            pad = longest - len(ids)
            text = embed(torch.as_tensor(ids, device=runtime.device))
            pad_embeds = text.new_zeros(pad, text.shape[-1])
            rows.append(torch.cat([text[:1], patches[row].to(text.dtype), pad_embeds, text[1:]]))
            masks.append(torch.tensor([1] * (1 + patches.shape[1]) + [0] * pad + [1] * (len(ids) - 1)))
        out = llm.generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks).to(runtime.device),
                           max_new_tokens=7, min_new_tokens=7, do_sample=False, pad_token_id=runtime.pad_token_id)
        return out[:, -7:]

    graphed = runtime.graphed or GraphedGreedyDecoder(runtime)
    return {"hf-generate": hf_generate,
            "native": lambda pv, ids: runtime.generate(pv, ids).token_ids,
            "native-graphed": graphed.generate}


def _frames_per_second(run_calls: Callable[[int], int], iters: int, warmup: int, cuda: bool) -> float:
    """run_calls(n) makes n whole calls and returns the frames done; timed after ``warmup`` calls."""
    run_calls(warmup)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    frames = run_calls(iters)
    if cuda:
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - start)


def _steady_frames_per_second(results: Callable[[int], Iterator[None]], calls: int, warmup: int,
                              frames_per_call: int) -> float:
    """Frames/s of a stream in its steady state: ``results(n)`` yields as each of n calls' results reaches the host;
    timed from the first result to the last (n - 1 calls), after ``warmup`` untimed calls."""
    if calls < 2:
        raise ValueError("a steady-state rate needs at least 2 timed calls")
    for _ in results(warmup):
        pass
    stamps = [time.perf_counter() for _ in results(calls)]
    return (calls - 1) * frames_per_call / (stamps[-1] - stamps[0])


def _measure_path(runtime, path: str, decode: Callable, images, prompts, iters: int, warmup: int,
                  ) -> tuple[float, float, np.ndarray]:
    """(steady-state frames/s of a stream of whole batched calls, model-only frames/s, last ids) at len(images)
    frames a call."""
    cuda = runtime.device.type == "cuda"
    ids = runtime.encode(prompts)
    last = {}
    graphed = path == "native-graphed" and runtime.graphed is not None

    def stream(calls: int) -> Iterator[None]:
        if graphed:  # the users' API: preprocessing of batch n+1 overlaps the GPU work of batch n
            for prediction in runtime.predict_stream(((images, prompts) for _ in range(calls)), "bridge_orig"):
                last["ids"] = prediction.token_ids
                yield
        else:
            for _ in range(calls):
                with torch.inference_mode():
                    last["ids"] = decode(runtime.preprocessor(images), ids).cpu().numpy()
                runtime.decoder.decode(last["ids"], "bridge_orig")
                yield

    ready = runtime.preprocessor.resize(images) if graphed else runtime.preprocessor(images)
    ready = ready.to(runtime.device)

    def model_only(calls: int) -> int:
        for _ in range(calls):
            with torch.inference_mode():
                runtime.decoder.decode(decode(ready, ids).cpu().numpy(), "bridge_orig")
        return calls * len(images)

    streamed = _steady_frames_per_second(stream, iters, warmup, len(images))
    return streamed, _frames_per_second(model_only, iters, 1, cuda), last["ids"]


def _actions_per_second(runtime, path: str, decode: Callable, image, prompt: str, iters: int, warmup: int,
                        ) -> tuple[float, np.ndarray]:
    """Batch-1 whole frames (preprocess -> action) one after another, as the node acts."""
    cuda = runtime.device.type == "cuda"
    ids = runtime.encode([prompt])
    last = {}

    def calls(n: int) -> int:
        for _ in range(n):
            if path == "native-graphed" and runtime.graphed is not None:
                last["ids"] = runtime.predict_from_ids([image], ids, "bridge_orig").token_ids
            else:
                with torch.inference_mode():
                    last["ids"] = decode(runtime.preprocessor([image]), ids).cpu().numpy()
                runtime.decoder.decode(last["ids"], "bridge_orig")
        return n

    return _frames_per_second(calls, iters, warmup, cuda), last["ids"]


def _share_of_same_ids(ids: dict[int | str, np.ndarray], reference: dict[int | str, np.ndarray]) -> str:
    """'reference', or the share of frames whose 7 tokens equal the reference path's, over the batches both ran."""
    if ids is reference:
        return "reference"
    common = [batch for batch in ids if batch in reference]
    same = np.concatenate([(ids[batch] == reference[batch]).all(axis=1) for batch in common])
    return f"{same.mean() * 100:.0f}%"


def run(args: argparse.Namespace) -> int:
    from task_supplementor.bench import record_table

    if args.full_size and args.checkpoint is not None:
        print("bench vla: --full-size (random 7B weights) and --checkpoint (real weights) exclude each other")
        return 2
    device = args.device or ("cuda" if (args.full_size or torch.cuda.is_available()) else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench vla: device {device} needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 2
    try:
        torch.device(device)
    except RuntimeError as error:
        print(f"bench vla: --device {device}: {error}")
        return 2
    on_gpu = device.startswith("cuda")
    batches = args.batch or ([64, 128] if on_gpu else [8])
    iters = args.iters or (30 if on_gpu else 10)
    try:
        runtime, what = _load_runtime(args, device)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"bench vla: {error}")
        return 2
    if runtime.tokenizer is None:
        print(f"bench vla: {args.checkpoint} has no tokenizer files (tokenizer.json / tokenizer.model): the "
              "benchmark's prompts cannot be encoded")
        return 2
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8) for _ in range(max(batches))]
    prompts = [f"In: What action should the robot take to {TASKS[i % len(TASKS)]}?\nOut:" for i in range(max(batches))]
    decoders = _decoders(runtime)
    rows, reference = [], None
    failed = 0
    for path in args.paths:
        try:
            single, single_ids = _actions_per_second(runtime, path, decoders[path], images[0], prompts[0], iters,
                                                     args.warmup)
            cells, ids = [f"{single:.2f}"], {"single": single_ids}
            for batch in batches:
                try:
                    streamed, model_only, ids[batch] = _measure_path(
                        runtime, path, decoders[path], images[:batch], prompts[:batch], max(2, iters // 6),
                        args.warmup)
                    cells.append(f"{streamed:.1f} / {model_only:.1f}")
                    continue
                except torch.cuda.OutOfMemoryError:  # e.g. plain generate at a batch the graphed path still fits
                    cells.append("out of GPU memory")
                gc.collect()  # after the handler, whose traceback held the failed batch's tensors: the next
                torch.cuda.empty_cache()  # batch size starts from the same free memory
            reference = ids if reference is None else reference
            rows.append(f"| {path} | {' | '.join(cells)} | {_share_of_same_ids(ids, reference)} |")
        except Exception as error:  # noqa: BLE001 - one failing path must not hide the others' numbers
            failed += 1
            rows.append(f"| {path} | failed: {type(error).__name__}: {str(error)[:120]} |{' |' * (len(batches) + 1)}")
        print(rows[-1], flush=True)
    header = " | ".join(f"frames/s batch {b}: stream / model-only" for b in batches)
    table = "\n".join([f"| path | actions/s (batch 1) | {header} | same ids as first path |",
                       "|---|---:|" + "---:|" * len(batches) + "---:|", *rows])
    notes = (f"Model: {what}; device {device}, {runtime.model.projector.fc1.weight.dtype}. Whole frames: PIL "
             "preprocessing, both ViTs, projector, prefill (256 patches + prompt), 7 greedy tokens, un-normalisation. "
             "Prompts of mixed lengths in the batch. 'stream' = a run of whole batched calls (preprocessing included; "
             "native-graphed through predict_stream, which overlaps a batch's preprocessing with the previous "
             "batch's GPU work; the other paths one call after another), timed from the first batch's actions to "
             "the last's (steady state: the first batch's preprocessing, which nothing hides, is paid once a run). "
             "'model-only' = the same batched call on inputs preprocessed once and already on the device (not "
             "what a caller gets end to end). "
             "'out of GPU memory': that path could not run that batch size (the others' numbers stand). "
             "'same ids' = share of frames (batch-1 frame + batched frames, of the batch sizes both ran) "
             "whose 7 action tokens equal the first path's (bf16 kernels of different shapes may round differently "
             "on GPU). Targets on one H100 (bf16): >= 15 actions/s at batch 1, "
             ">= 150 frames/s batched.")
    size = "full size" if args.full_size else (f"checkpoint {args.checkpoint.name}" if args.checkpoint else "tiny")
    title = f"VLA (OpenVLA) inference, {size} on {device}"
    if args.no_record or failed == len(args.paths):
        print(table + "\n\n" + notes)
        if failed == len(args.paths):
            print("bench vla: every path failed; nothing recorded in docs/benchmarks.md")
    else:
        record_table(title, table, args.argv, notes)
    return 1 if failed else 0
