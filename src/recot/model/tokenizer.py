"""A byte-level tokenizer with the Qwen2 chat special tokens, for the small presets.

The released model ships the Qwen2.5 tokenizer. The small presets (tests, the
default model) need a tokenizer that can be built offline: every
byte is one token (so digits are split, as in Qwen2.5), followed by the
special tokens of the chat template at fixed ids.

``clock_tokens=True`` adds byte-pair merges for clock times: every pair of
digits becomes one token, then ``:`` with two digits, so ``"37:12"`` is
``37`` ``:12`` (2 tokens instead of 5) and ``"1:02:03"`` is ``1`` ``:02``
``:03``, in the timeline and in a question alike. A from-scratch LLM matches a
time written in one or two tokens sooner than one written in five bytes
(README, "Where the time lookup fails").
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>")


def build_byte_tokenizer(clock_tokens: bool = False) -> PreTrainedTokenizerFast:
    """Ids 0-255 are bytes; 256+ are ``SPECIAL_TOKENS`` in order (``<|vision_pad|>`` = 259).

    With ``clock_tokens``, ids 260-359 are the digit pairs ``00``-``99`` and
    360-419 are ``:00``-``:59`` (see the module docstring).
    """
    # ByteLevel maps byte b to a printable character; order the vocabulary by byte value.
    chars = [_byte_char(b) for b in range(256)]
    vocab = {ch: i for i, ch in enumerate(chars)}
    # The special tokens keep their ids whether or not merges follow them in the vocabulary.
    vocab.update({token: 256 + i for i, token in enumerate(SPECIAL_TOKENS)})
    merges: list[tuple[str, str]] = []
    if clock_tokens:
        # Ranked in this order: digit pairs first (left to right), then ":" with a pair, so "37:12" -> "37" ":12".
        merges = [(f"{a}", f"{b}") for a in range(10) for b in range(10)]
        merges += [(":", f"{n:02d}") for n in range(60)]
        for left, right in merges:
            vocab[left + right] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
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
