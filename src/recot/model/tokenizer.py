"""A byte-level tokenizer with the Qwen2 chat special tokens, for the small presets.

The released model ships the Qwen2.5 tokenizer. The small presets (tests, the
untrained default model) need a tokenizer that can be built offline: every
byte is one token (so digits are split, as in Qwen2.5), followed by the
special tokens of the chat template at fixed ids.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>")


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """Ids 0-255 are bytes; 256+ are ``SPECIAL_TOKENS`` in order (``<|vision_pad|>`` = 259)."""
    # ByteLevel maps byte b to a printable character; order the vocabulary by byte value.
    chars = [_byte_char(b) for b in range(256)]
    vocab = {ch: i for i, ch in enumerate(chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def _byte_char(b: int) -> str:
    """The printable character GPT-2 style byte-level BPE uses for byte ``b``."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    if b in printable:
        return chr(b)
    return chr(256 + sum(1 for x in range(b) if x not in printable))
