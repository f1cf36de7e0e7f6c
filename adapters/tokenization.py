"""A character-level tokenizer built with ``tokenizers``, for small models trained from scratch.

Every character of the alphabet is one token, plus ``<pad>``, ``<s>``, ``</s>`` and ``<unk>``. The result is
a regular ``PreTrainedTokenizerFast`` that ``save_pretrained``/``AutoTokenizer.from_pretrained`` round-trip,
so models built on it load through the same code as hub models.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

DEFAULT_ALPHABET = string.ascii_letters + string.digits + " .,:;?!'\"+-*/=()<>[]#\n"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET, *, padding_side: str = "left",
                   add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Return a character-level fast tokenizer over ``alphabet``.

    >>> tok = char_tokenizer("ab ")
    >>> tok("ab a")["input_ids"]
    [1, 5, 6, 4, 5]
    >>> tok.decode(tok("ab a")["input_ids"], skip_special_tokens=True)
    'ab a'
    >>> len(char_tokenizer()("a\\n\\nb")["input_ids"])  # BOS + one token per character, newlines included
    5
    """
    chars = sorted(set(alphabet))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")  # newlines too
    backend.decoder = decoders.Fuse()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side=padding_side,
    )
