"""Tiny OpenVLA checkpoints with random weights, saved in the on-disk layout of ``openvla/openvla-7b``.

WHY: CI and ``make demo`` have no hub access, yet the VLA node must load its policy through exactly the code a real
``openvla/openvla-7b`` directory goes through (:meth:`vla_node.runtime.OpenVLARuntime.from_pretrained`). So the maker
writes what that repository ships: ``config.json`` (OpenVLAConfig fields, ``norm_stats`` with several dataset keys
incl. ``bridge_orig``), sharded safetensors with the official key names plus ``model.safetensors.index.json``,
``generation_config.json``, ``preprocessor_config.json``, ``dataset_statistics.json`` and Llama-2 tokenizer files.
Only the sizes differ; they are declared in config.json the same way the parity fixture declares them
(``parity_fixture_timm_overrides`` for the timm towers, ``text_config`` for the LLM).

The tokenizer is a Llama-style BPE (Metaspace "▁", byte fallback, digits never merged, ``<PAD>`` added at 32000 as
OpenVLA does) trained offline on a small robot/facts vocabulary, with the ids OpenVLA's code relies on kept where
Llama-2 has them: ``<unk>/<s>/</s>`` = 0/1/2, byte tokens 3..258, "▁" = 29871, ":" = 29901, vocabulary size 32000
(so action tokens are 31744..31999, and the LLM's 32064 rows = 32000 + padding to 64).

Weights are re-initialised so every component visibly matters (same idea as the parity fixture's re-init): with
default tiny-model inits the next token hardly depends on image or prompt, and greedy decoding would not land on
action tokens as a trained OpenVLA does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Llama-2 ids that OpenVLA's code depends on (see vla_node.prompting) and the real vocabulary size.
LLAMA_VOCAB_SIZE = 32000
EMPTY_PIECE_ID = 29871  # "▁"
COLON_ID = 29901  # ":"
PAD_TOKEN = "<PAD>"
N_BYTE_TOKENS = 256

DINOV2 = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP = "vit_so400m_patch14_siglip_224"

# bridge_orig: q01/q99/mask are the real values (notes/openvla.md); mean/std/min/max are plausible approximations.
# The other keys exist so that, as on the multi-dataset base model, the unnorm key must be chosen; their values are
# illustrative, not the published statistics.
NORM_STATS: dict[str, dict[str, Any]] = {
    "bridge_orig": {"action": {
        "mean": [0.00023341, 0.00013004, -0.00012762, -0.00015565, -0.00040391, 0.00023559, 0.57643688],
        "std": [0.00976544, 0.01368095, 0.01266316, 0.02853599, 0.03063807, 0.07691826, 0.49710608],
        "max": [0.41691166, 0.25864795, 0.21218234, 3.12210035, 1.86172974, 6.28034544, 1.0],
        "min": [-0.40484068, -0.43551901, -0.39255175, -6.2802248, -1.61376214, -6.28161001, 0.0],
        "q01": [-0.028727, -0.041703, -0.026094, -0.080921, -0.092887, -0.207183, 0.0],
        "q99": [0.028310, 0.040855, 0.040162, 0.081920, 0.077929, 0.203826, 1.0],
        "mask": [True, True, True, True, True, True, False]},
        "num_trajectories": 60064, "num_transitions": 2135463},
    "fractal20220817_data": {"action": {
        "mean": [0.0069, 0.0062, -0.0126, 0.0432, -0.0057, 0.0009, 0.5354],
        "std": [0.0692, 0.0596, 0.0735, 0.1561, 0.1316, 0.1459, 0.4976],
        "max": [2.998, 22.09, 2.75, 1.571, 1.535, 1.571, 1.0],
        "min": [-2.021, -5.498, -2.031, -1.570, -1.569, -1.570, 0.0],
        "q01": [-0.2249, -0.1488, -0.2314, -0.3518, -0.4193, -0.4364, 0.0],
        "q99": [0.1775, 0.1459, 0.2185, 0.5892, 0.3597, 0.4470, 1.0],
        "mask": [True, True, True, True, True, True, False]},
        "num_trajectories": 87212, "num_transitions": 3786400},
    "taco_play": {"action": {
        "mean": [-0.0039, 0.0097, 0.0127, -0.0054, -0.0097, -0.0034, 0.4987],
        "std": [0.2333, 0.3656, 0.2835, 0.2618, 0.2431, 0.5218, 0.4998],
        "max": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        "min": [-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0],
        "q01": [-0.7123, -0.8562, -0.7654, -0.6543, -0.6123, -0.9876, 0.0],
        "q99": [0.7042, 0.8961, 0.7843, 0.6712, 0.6234, 0.9912, 1.0],
        "mask": [True, True, True, True, True, True, False]},
        "num_trajectories": 3603, "num_transitions": 237798},
}
for _stats in NORM_STATS.values():
    _stats["proprio"] = {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")}

# Text the tokenizer learns merges from: OpenVLA prompts, BridgeData-style tasks, rendered facts, stop-words.
_CORPUS = """
In: What action should the robot take to put the red block on the blue plate?
Out:
A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and
polite answers to the user's questions. USER: ASSISTANT:
put carrot on plate. pick up the green spoon and place it in the pot. move the yellow cup to the left side of the table.
open the drawer. close the microwave. put the banana into the bowl. wipe the table with the towel. stack the blocks.
flip the pot upright. fold the cloth. take the mushroom out of the pan. put eggplant in the sink. sweep the beans.
objects: blue plate (center); red block (wooden, top-left). relations: red block left of blue plate.
gripper: open, holding nothing. objects: none. relations: none. gripper: closed, holding red block.
top-left top top-right left center right bottom-left bottom bottom-right unknown
left of right of above below on under in next to in front of behind touching near
red green blue yellow orange purple white black gray brown pink silver metal plastic wooden cloth glass ceramic
block plate bowl cup spoon towel drawer pot pan sink carrot banana mushroom corn knife table counter stove lid
the a an of and or to in on at by for with from as is it its this that these those there here be been was were
are has have had do does did not no nor but if so than too very can just also only into onto over such some any
objects relations gripper state holding name attributes region subject relation object facts supplement
Task: Context: Scene: visible empty full upright tilted
"""


@dataclass(frozen=True)
class TinyOpenVLAConfig:
    """Sizes of the tiny model (those of the parity fixture); everything else is openvla-7b's."""

    llm_hidden: int = 64
    llm_intermediate: int = 128
    llm_layers: int = 2
    llm_heads: int = 4
    dinov2: tuple[int, int, int, float] = (32, 4, 2, 2.0)  # embed_dim, depth, num_heads, mlp_ratio
    siglip: tuple[int, int, int, float] = (48, 4, 2, 2.0)
    bpe_pieces: int = 1500  # learned multi-character pieces (the rest of the 32000 ids are single characters)
    num_shards: int = 3  # openvla-7b ships model-0000{1,2,3}-of-00003.safetensors
    seed: int = 0

    def timm_overrides(self) -> dict[str, dict[str, float]]:
        keys = ("embed_dim", "depth", "num_heads", "mlp_ratio")
        return {DINOV2: dict(zip(keys, self.dinov2)), SIGLIP: dict(zip(keys, self.siglip))}


# ---- tokenizer ------------------------------------------------------------------------------------------------
def _filler_characters(count: int, avoid: set[str]) -> list[str]:
    """Rare single characters (CJK, then Hangul) for the vocabulary slots a real Llama fills with rare pieces."""
    chars = (chr(c) for block in ((0x4E00, 0x9FFF), (0xAC00, 0xD7A3)) for c in range(block[0], block[1] + 1))
    out = [c for c, _ in zip((c for c in chars if c not in avoid), range(count))]
    if len(out) < count:
        raise ValueError(f"not enough filler characters for {count} slots")
    return out


def _layout_vocab(pieces: list[str], chars: list[str]) -> dict[str, int]:
    """Llama-2's id layout: specials, bytes, learned pieces, then single characters with "▁"=29871 and ":"=29901."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(N_BYTE_TOKENS)})
    for piece in pieces:
        vocab[piece] = len(vocab)
    if len(vocab) > EMPTY_PIECE_ID:
        raise ValueError(f"{len(pieces)} learned pieces overflow into the character block at {EMPTY_PIECE_ID}")
    fixed = {EMPTY_PIECE_ID: "▁", COLON_ID: ":"}
    others = iter([c for c in chars if c not in fixed.values()])
    filler = iter(_filler_characters(LLAMA_VOCAB_SIZE, set(chars)))
    by_id = {i: piece for piece, i in vocab.items()}
    for token_id in range(len(vocab), LLAMA_VOCAB_SIZE):
        if token_id in fixed:
            by_id[token_id] = fixed[token_id]
        elif token_id > EMPTY_PIECE_ID:
            by_id[token_id] = next(others, None) or next(filler)
        else:
            by_id[token_id] = next(filler)
    return {piece: i for i, piece in by_id.items()}


def build_llama_tokenizer(cfg: TinyOpenVLAConfig = TinyOpenVLAConfig()):
    """A LlamaTokenizer (32000 ids + ``<PAD>``) that tokenises like Llama-2: "▁"-prefixed words, single digits,
    byte fallback for anything unknown (e.g. "\\n" -> <0x0A> = 13)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    corpus = " ".join(_CORPUS.split("\n"))
    trainer_backend = Tokenizer(models.BPE())
    trainer_backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),  # like SentencePiece's split by unicode script
    ])
    alphabet = sorted(set(corpus.replace(" ", "")) | set("0123456789") | {"▁"})
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + cfg.bpe_pieces, special_tokens=[],
                                  initial_alphabet=alphabet, show_progress=False)
    trainer_backend.train_from_iterator([corpus] * 8, trainer=trainer)
    model = json.loads(trainer_backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    learned = sorted(model["vocab"].items(), key=lambda item: item[1])
    pieces = [p for p, _ in learned if len(p) > 1]
    chars = [p for p, _ in learned if len(p) == 1]
    vocab = _layout_vocab(pieces, chars)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=False, add_prefix_space=True, add_bos_token=True,
                               add_eos_token=False,
                               model_max_length=2048, padding_side="right")
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


# ---- config ---------------------------------------------------------------------------------------------------
def openvla_config_dict(cfg: TinyOpenVLAConfig) -> dict[str, Any]:
    """config.json as openvla-7b's (same fields), with the tiny sizes declared like the parity fixture does."""
    return {
        "arch_specifier": "no-align+fused-gelu-mlp",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048,
        "model_type": "openvla",
        "n_action_bins": 256,
        "norm_stats": NORM_STATS,
        "output_projector_states": False,
        "pad_to_multiple_of": 64,
        "pad_token_id": LLAMA_VOCAB_SIZE,
        "parity_fixture_timm_overrides": cfg.timm_overrides(),
        "text_config": {"hidden_size": cfg.llm_hidden, "intermediate_size": cfg.llm_intermediate,
                        "model_type": "llama", "num_attention_heads": cfg.llm_heads,
                        "num_hidden_layers": cfg.llm_layers, "num_key_value_heads": cfg.llm_heads,
                        "pad_token_id": LLAMA_VOCAB_SIZE, "torch_dtype": "bfloat16",
                        "vocab_size": LLAMA_VOCAB_SIZE + 64},
        "timm_model_ids": [DINOV2, SIGLIP],
        "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
    }


def preprocessor_config_dict() -> dict[str, Any]:
    """openvla-7b's preprocessor_config.json (PrismaticImageProcessor, resize-naive, bicubic, DINOv2/SigLIP stats)."""
    means = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]
    stds = [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]
    as_f32 = lambda xs: [float(torch.tensor(x, dtype=torch.float32)) for x in xs]  # noqa: E731
    return {
        "auto_map": {"AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
                     "AutoProcessor": "processing_prismatic.PrismaticProcessor"},
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]],
        "interpolations": ["bicubic", "bicubic"],
        "means": means, "stds": stds,
        "tvf_crop_params": [{"output_size": [224, 224]}] * 2,
        "tvf_do_letterbox": False, "tvf_letterbox_fill": None,
        "tvf_normalize_params": [{"inplace": False, "mean": as_f32(m), "std": as_f32(s)}
                                 for m, s in zip(means, stds)],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None, "size": [224, 224]}] * 2,
        "use_fused_vision_backbone": True,
    }


# ---- weights --------------------------------------------------------------------------------------------------
def _unused_tower_shapes(prefix: str, spec) -> dict[str, tuple[int, ...]]:
    """Shapes of the checkpoint tensors OpenVLA never reads: last block, final norm, SigLIP's MAP head."""
    from vla_node.vit import Block

    shapes = {f"{prefix}blocks.{spec.depth - 1}.{k}": tuple(v.shape)
              for k, v in Block(spec).state_dict().items()}
    dim, hidden = spec.embed_dim, spec.mlp_hidden
    shapes.update({f"{prefix}norm.weight": (dim,), f"{prefix}norm.bias": (dim,)})
    if spec.attn_pool:
        pool = {"latent": (1, 1, dim), "q.weight": (dim, dim), "q.bias": (dim,), "kv.weight": (2 * dim, dim),
                "kv.bias": (2 * dim,), "proj.weight": (dim, dim), "proj.bias": (dim,), "norm.weight": (dim,),
                "norm.bias": (dim,), "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
                "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,)}
        shapes.update({f"{prefix}attn_pool.{k}": v for k, v in pool.items()})
    return shapes


def official_key_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every tensor of an official checkpoint for ``config`` (an :class:`OpenVLAConfig`): used + unused."""
    from vla_node.model import TOWER_NAMES, OpenVLAModel

    with torch.device("meta"):
        model = OpenVLAModel(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, spec in zip(TOWER_NAMES, config.vision):
        shapes.update(_unused_tower_shapes(f"vision_backbone.{name}.", spec))
    return dict(sorted(shapes.items()))


def random_weight(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A deterministic random tensor whose scale keeps activations O(1) and makes every component matter."""
    def normal(std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std + mean

    leaf = key.rsplit(".", 1)[-1]
    if key.endswith("embed_tokens.weight"):
        weight = normal(1.0)
        weight[LLAMA_VOCAB_SIZE] = 0.0  # <PAD> row, as HF's padding_idx init leaves it
        return weight
    if leaf == "scale_factor":
        return torch.rand(shape, generator=generator) * 0.2 + 0.05
    if leaf in ("pos_embed", "cls_token", "reg_token"):
        return normal(0.5)
    if leaf == "latent":
        return normal(shape[-1] ** -0.5)
    module = key.split(".")[-2]
    if module.startswith("norm") or module.endswith("layernorm"):
        return normal(0.1, 1.0) if leaf == "weight" else normal(0.02)
    if leaf == "bias":
        return normal(0.02)
    weight = normal(1.0 / math.sqrt(math.prod(shape[1:])))
    if any(key.endswith(f"self_attn.{p}.weight") for p in ("q_proj", "k_proj", "o_proj")):
        weight = weight * 2.0  # attention that actually mixes context (image + prompt), not near-uniform
    if key == "language_model.lm_head.weight":
        weight[LLAMA_VOCAB_SIZE - 256:LLAMA_VOCAB_SIZE] *= 3.0  # greedy lands on action tokens, as trained
    return weight


def _write_shards(out: Path, shapes: dict[str, tuple[int, ...]], generator: torch.Generator,
                  num_shards: int) -> None:
    """model-0000k-of-0000n.safetensors (bf16, like openvla-7b) + model.safetensors.index.json."""
    from safetensors.torch import save_file

    tensors = {k: random_weight(k, s, generator).to(torch.bfloat16) for k, s in shapes.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    budget = math.ceil(total / num_shards)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > budget and len(shards) < num_shards:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def make_tiny_openvla(out_dir: str | Path, cfg: TinyOpenVLAConfig = TinyOpenVLAConfig()) -> Path:
    """Build and save a tiny random OpenVLA checkpoint directory; returns its path."""
    from vla_node.config import OpenVLAConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = openvla_config_dict(cfg)
    preprocessor = preprocessor_config_dict()
    shapes = official_key_shapes(OpenVLAConfig.from_dict(raw, preprocessor))
    _write_shards(out, shapes, torch.Generator().manual_seed(cfg.seed), cfg.num_shards)
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (out / "dataset_statistics.json").write_text(json.dumps(NORM_STATS, indent=2) + "\n")
    generation = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2,
                  "pad_token_id": LLAMA_VOCAB_SIZE, "transformers_version": "4.40.1"}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    build_llama_tokenizer(cfg).save_pretrained(out)
    return out
