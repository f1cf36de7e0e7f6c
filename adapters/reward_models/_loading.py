"""Loading models and tokenizers for torch-based RMs: hub id, local folder, GGUF file or a loaded model.

One place decides dtype, device, ``trust_remote_code`` (off unless asked) and GGUF handling, so every RM
class and the registry load the same way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, TypeAlias

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)

ModelSource: TypeAlias = "str | os.PathLike[str] | PreTrainedModel"

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str | None:
    """Map ``"float32"``/``"bfloat16"``/... to a torch dtype; ``"auto"`` and ``None`` pass through."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")


def resolve_device(device: str | torch.device) -> str:
    """Return ``device`` as a string; ``"auto"`` picks CUDA, then MPS, then CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, which this machine does not have; "
                         "use 'cpu' or 'auto'")
    return str(resolved)


def split_source(source: str | os.PathLike[str], gguf_file: str | None) -> tuple[str, str | None]:
    """Return ``(folder_or_hub_id, gguf_file)``; a path to a ``.gguf`` file is split into both.

    A value that names a local path (absolute, ``./``, ``../``, ``~``, or an existing file or folder) must
    exist; anything else is passed to ``from_pretrained`` as a hub id.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if text.endswith(".gguf") and gguf_file is None:
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {text!r} does not exist")
        return str(path.parent), path.name
    looks_local = text.startswith(("/", "./", "../", "~")) or path.exists()
    if looks_local and not path.exists():
        raise FileNotFoundError(f"model path {text!r} does not exist; pass an existing folder or a hub id")
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        raise FileNotFoundError(f"gguf_file {gguf_file!r} not found in {text!r}")
    return (str(path) if path.exists() else text), gguf_file


def _common_kwargs(dtype: str | torch.dtype | None, trust_remote_code: bool,
                   gguf_file: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    resolved = resolve_dtype(dtype)
    if resolved is not None:
        kwargs["dtype"] = resolved
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    return kwargs


def load_model(source: ModelSource, *, task: str, dtype: str | torch.dtype | None = None,
               device: str = "cpu", trust_remote_code: bool = False,
               gguf_file: str | None = None) -> PreTrainedModel:
    """Load (or adopt) a model for ``task`` (``"causal"`` or ``"classifier"``) in eval mode on ``device``."""
    if isinstance(source, PreTrainedModel):
        model = source
        resolved = resolve_dtype(dtype)
        if isinstance(resolved, torch.dtype):
            model = model.to(resolved)
    elif isinstance(source, (str, os.PathLike)):
        folder, gguf = split_source(source, gguf_file)
        if task == "causal":
            auto: Any = AutoModelForCausalLM
        elif task == "classifier":
            if gguf is not None:
                raise ValueError(f"GGUF loading is supported for causal-LM RMs only, got gguf_file={gguf!r} "
                                 "for a sequence classifier; convert it with save_pretrained first")
            auto = AutoModelForSequenceClassification
        else:
            raise ValueError(f"task must be 'causal' or 'classifier', got {task!r}")
        try:
            model = auto.from_pretrained(folder, **_common_kwargs(dtype, trust_remote_code, gguf))
        except OSError as exc:
            raise OSError(f"could not load a {task} model from {folder!r}"
                          f"{f' (gguf_file={gguf!r})' if gguf else ''}: {exc}") from exc
    else:
        raise TypeError("model must be a hub id, a local path or a PreTrainedModel, got "
                        f"{type(source).__name__}")
    model.to(resolve_device(device))
    model.eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(tokenizer: Any, model: ModelSource, *, trust_remote_code: bool = False,
                   gguf_file: str | None = None) -> Any:
    """Return ``tokenizer`` if it is one, else load it from ``tokenizer`` (path or id) or the model's source.

    A pad token is set to the EOS token when the tokenizer has none (so batches can be padded).
    """
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        tok = tokenizer
    else:
        if tokenizer is not None:
            source: str | os.PathLike[str] = tokenizer
            gguf = None
        elif isinstance(model, PreTrainedModel):
            source = getattr(model, "name_or_path", "") or ""
            gguf = None
            if not source:
                raise ValueError("the model was passed as an object with no name_or_path; pass "
                                 "tokenizer= too")
        else:
            source = model
            gguf = gguf_file
        folder, gguf = split_source(source, gguf)
        kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
        if gguf is not None:
            kwargs["gguf_file"] = gguf
        try:
            tok = AutoTokenizer.from_pretrained(folder, **kwargs)
        except (OSError, ValueError) as exc:
            raise OSError(f"could not load a tokenizer from {folder!r}: {exc}; pass tokenizer= "
                          "explicitly") from exc
    if tok.pad_token_id is None:
        if tok.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set "
                             "tokenizer.pad_token first")
        warnings.warn("the tokenizer has no pad token; using its EOS token for padding", stacklevel=3)
        tok.pad_token = tok.eos_token
    return tok


def set_pad_token_id(model: PreTrainedModel, tokenizer: Any) -> None:
    """Give ``model.config`` the tokenizer's pad id when it has none (sequence classifiers need it)."""
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def max_positions(model: PreTrainedModel, max_length: int) -> int:
    """``max_length`` capped at the model's position limit, when the config states one."""
    limit = getattr(model.config, "max_position_embeddings", None)
    return min(max_length, int(limit)) if isinstance(limit, int) and limit > 0 else max_length


class TorchRewardModel:
    """Shared parts of the torch RMs: a ``name``, the current ``device`` and ``to(device)``.

    The registry's device policy relies on ``device`` and ``to``: the RM in use sits on its accelerator,
    the others are moved to the CPU.
    """

    name: str
    device: str

    def _modules(self) -> list[torch.nn.Module]:
        raise NotImplementedError

    def to(self, device: str | torch.device) -> TorchRewardModel:
        """Move every model this RM holds to ``device`` and return the RM."""
        target = resolve_device(device)
        for module in self._modules():
            module.to(target)
        self.device = target
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r})"


def check_sizes(batch_size: int, max_length: int) -> None:
    """Reject a ``batch_size`` below 1 and a ``max_length`` below 2."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")


class CausalLMRewardModel(TorchRewardModel):
    """Shared constructor of the RMs built on a causal LM (implicit DPO, likelihood, judge)."""

    def __init__(self, model: ModelSource, tokenizer: Any = None, *, name: str, batch_size: int,
                 max_length: int, device: str, dtype: str | torch.dtype | None, trust_remote_code: bool,
                 gguf_file: str | None, use_chat_template: bool | None) -> None:
        from ._batching import wants_chat_template

        check_sizes(batch_size, max_length)
        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.model = load_model(model, task="causal", dtype=dtype, device=self.device,
                                trust_remote_code=trust_remote_code, gguf_file=gguf_file)
        self.tokenizer = load_tokenizer(tokenizer, model, trust_remote_code=trust_remote_code,
                                        gguf_file=gguf_file)
        self.max_length = max_positions(self.model, max_length)
        self.chat = wants_chat_template(self.tokenizer, use_chat_template)

    def _modules(self) -> list[torch.nn.Module]:
        return [self.model]
