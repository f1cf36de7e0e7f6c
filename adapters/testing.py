"""Tiny real models built from configs and saved with ``save_pretrained``, for tests and examples.

They load through exactly the code paths hub models take (``from_pretrained`` on a local folder);
they are small enough to build, run and train in well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from laser_adapters.tokenization import char_tokenizer

#: A ChatML chat template (as SmolLM2 and Qwen use), for the tiny chat model.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chat_tokenizer() -> Any:
    """The character tokenizer plus ChatML's turn markers as special tokens, ``<|im_end|>`` as eos, and
    :data:`CHATML` as its chat template.

    >>> tok = chat_tokenizer()
    >>> tok.eos_token, tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ('<|im_end|>', '<|im_start|>user\\nhi<|im_end|>\\n')
    """
    tok = char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return tok


def _llama_config(tok: Any, hidden: int, layers: int, **extra: Any) -> LlamaConfig:
    """The tiny Llama shape every model here shares, sized to ``tok``'s vocabulary and special tokens."""
    return LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **extra)


def _save(model: Any, tok: Any, path: str | Path) -> Path:
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_chat_lm(path: str | Path, *, hidden: int = 32, layers: int = 1, seed: int = 0) -> Path:
    """Save a tiny Llama chat model (:func:`chat_tokenizer`; generation ends at ``<|im_end|>``) into ``path``."""
    torch.manual_seed(seed)
    tok = chat_tokenizer()
    model = LlamaForCausalLM(_llama_config(tok, hidden, layers))
    model.generation_config.eos_token_id = tok.eos_token_id
    return _save(model, tok, path)


def tiny_causal_lm(path: str | Path, *, arch: str = "llama", hidden: int = 32, layers: int = 2,
                   seed: int = 0) -> Path:
    """Save a tiny causal LM (``llama`` or ``gpt2``) with a character tokenizer into ``path``."""
    torch.manual_seed(seed)
    tok = char_tokenizer()
    if arch == "llama":
        model: Any = LlamaForCausalLM(_llama_config(tok, hidden, layers))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256,
                                           vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    return _save(model, tok, path)


def tiny_classifier(path: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny one-label ``LlamaForSequenceClassification`` (a reward model) into ``path``."""
    torch.manual_seed(seed)
    tok = char_tokenizer()
    model = LlamaForSequenceClassification(_llama_config(tok, hidden, layers, num_labels=1))
    return _save(model, tok, path)


def tiny_bert(path: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny ``BertModel`` with a character tokenizer into ``path`` (a base for sentence encoders)."""
    torch.manual_seed(seed)
    tok = char_tokenizer(padding_side="right")
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=4, intermediate_size=2 * hidden,
                                 max_position_embeddings=256, pad_token_id=tok.pad_token_id))
    return _save(model, tok, path)
