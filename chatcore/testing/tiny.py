"""A tiny random Llama and a byte-level tokenizer built in memory: real code paths, no downloads."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(vocab_size: int = 0) -> PreTrainedTokenizerFast:
    """Byte-level BPE with no merges: every byte is a token, so any text round-trips. ``vocab_size``
    pads the vocabulary with decodable filler tokens up to a real model's size (bench/bench_cuda.py)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(alphabet))}
    vocab.update({f"<x{i}>": len(vocab) + i for i in range(max(0, vocab_size - len(vocab)))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL,
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_model(vocab_size: int, window: int = 2048, seed: int = 0) -> LlamaForCausalLM:
    """A two-layer Llama with random weights and grouped-query attention, like the default model's."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=window,
        tie_word_embeddings=True, eos_token_id=2, bos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny(directory: Path, window: int = 2048) -> Path:
    """Write a loadable tiny model directory (safetensors + tokenizer) and return it."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer), window)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def poison_cache(decoder) -> None:
    """Fill every KV cache slot with NaN (an int8 cache: its scales, and its codes with junk): what
    ``torch.empty`` may hand back when it reuses freed memory."""
    for block in decoder.layers:
        for tensor in block.attn.cache.buffers():
            tensor.fill_(float("nan") if tensor.is_floating_point() else 77)


def save_tiny_encoder(directory: Path, seed: int = 0) -> Path:
    """A two-layer random BERT with a word-level tokenizer, saved as a directory ``Encoder`` loads."""
    from tokenizers import normalizers
    from transformers import BertConfig, BertModel

    letters = [chr(c) for c in range(97, 123)] + [str(d) for d in range(10)]
    # Every word splits into letters ("##" marks a letter inside a word), so any text has an embedding.
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + letters + [f"##{ch}" for ch in letters]
    core = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]",
                                      max_input_chars_per_word=100))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=512)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
