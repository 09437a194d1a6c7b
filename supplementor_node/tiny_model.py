"""Tiny Qwen2.5-VL checkpoints with random weights, saved in the on-disk layout of ``Qwen/Qwen2.5-VL-3B-Instruct``.

Why: CI and ``make demo`` have no access to the Hugging Face hub, yet the node must be exercised through exactly the
loading code that a real checkpoint goes through (config.json, safetensors, tokenizer.json + tokenizer_config.json,
preprocessor_config.json, chat_template.json, generation_config.json). Only the sizes differ: the architecture class,
the tokenizer class, the special tokens, the chat format and the image processor are the real ones.

The tokenizer is a byte-level BPE trained offline (``tokenizers``) with Qwen2's normaliser and pre-tokeniser and
Qwen's special tokens, wrapped as ``Qwen2Tokenizer`` so ``AutoTokenizer`` picks the same class as for the real model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Qwen's special tokens, in the order the real vocabulary appends them after the BPE vocabulary.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)

# The chat format of Qwen2.5-VL-Instruct: ChatML turns, a default system turn, and each image as
# <|vision_start|><|image_pad|><|vision_end|> (the pad is expanded to the image's token count by the input builder).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the tiny tokenizer learns merges for: JSON punctuation, the facts vocabulary and tabletop tasks, so
# prompts tokenise to a realistic (small) number of tokens.
_CORPUS_WORDS = (
    '{ } [ ] " : , objects relations gripper state holding name attributes region subject relation object '
    "open closed unknown none red green blue yellow orange purple white black metal plastic wooden cloth "
    "block plate bowl cup spoon towel drawer pot pan sink carrot banana mushroom corn knife table counter "
    "left right top bottom center upper lower middle on in under next to near behind in_front_of inside above "
    "put place move pick take the a of and into onto from with robot image camera frame task describe visible "
    "JSON only facts objective verifiable no advice do not copy output schema user system assistant"
).split()


@dataclass(frozen=True)
class TinyQwenConfig:
    """Sizes of the tiny model; everything not listed here is the real Qwen2.5-VL-3B default."""

    vocab_target: int = 1024            # BPE vocabulary before special tokens
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    mrope_section: tuple[int, int, int] = (2, 3, 3)   # sums to head_dim / 2 = 8
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    vision_fullatt_block_indexes: tuple[int, ...] = (1,)
    seed: int = 0
    max_pixels: int = 12845056          # the real preprocessor_config.json value; the node bounds it by parameter
    min_pixels: int = 3136
    extra_corpus: list[str] = field(default_factory=list)


def _train_tokenizer(cfg: TinyQwenConfig):
    """Byte-level BPE with Qwen2's normaliser/pre-tokeniser, wrapped as the real tokenizer class."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_target, special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(_CORPUS_WORDS)] * 4 + list(cfg.extra_corpus)
    backend.train_from_iterator(corpus, trainer=trainer)
    vocab = backend.get_vocab()
    merges = [tuple(pair) for pair in json.loads(backend.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def _model_config(cfg: TinyQwenConfig, tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = ((len(tokenizer) + 63) // 64) * 64   # padded like the real 151936-row embedding
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": list(cfg.mrope_section)},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size,
            intermediate_size=cfg.vision_intermediate_size, num_heads=cfg.vision_num_heads,
            out_hidden_size=cfg.hidden_size, fullatt_block_indexes=list(cfg.vision_fullatt_block_indexes),
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _write_processor_files(out: Path, cfg: TinyQwenConfig) -> None:
    """preprocessor_config.json and chat_template.json as the real repository ships them."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3, "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD), "min_pixels": cfg.min_pixels, "max_pixels": cfg.max_pixels,
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_VL_CHAT_TEMPLATE}, indent=2) + "\n")


def make_tiny_qwen(out_dir: str | Path, cfg: TinyQwenConfig = TinyQwenConfig()) -> Path:
    """Build and save a tiny random Qwen2.5-VL checkpoint directory; returns its path.

    Different ``cfg.seed`` values give different weights with the same tokenizer, which is what the live-swap test
    needs (two checkpoints, one code path).
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(cfg)
    config = _model_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(  # the sampling settings Qwen2.5-VL-3B-Instruct ships, so the tests meet them too
        bos_token_id=config.text_config.bos_token_id, pad_token_id=config.text_config.pad_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id], do_sample=True,
        repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1,
    ).save_pretrained(out)
    _write_processor_files(out, cfg)
    return out
