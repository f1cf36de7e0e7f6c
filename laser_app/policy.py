"""The policy LLM: where ``--model`` points, loading it (in a precision, optionally under LoRA and gradient
checkpointing), its device, its generation engine, saving it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from laser_app.errors import LaserError, ModelLoadError

if TYPE_CHECKING:
    from laser_adapters.generation_backends import GenerationBackend
    from laser_app.config import RunConfig

Precision = Literal["fp32", "bf16", "fp16"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def model_source(ref: str) -> tuple[str, str | None]:
    """Split ``--model`` into (folder or hub id, GGUF file name or None); a missing local path is an error.

    >>> model_source("HuggingFaceTB/SmolLM2-135M")
    ('HuggingFaceTB/SmolLM2-135M', None)
    >>> model_source("./no/such/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.ModelLoadError: model path ./no/such/model does not exist; pass an existing folder, ...
    """
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"model folder {ref} has no config.json, so it is not a saved model; pass a "
                                     "folder written by save_pretrained, a .gguf file or a hub id")
            return str(path), None
        if path.suffix.lower() == ".gguf":
            return str(path.parent), path.name
        raise ModelLoadError(f"model path {ref} is a file but not a .gguf file; pass a model folder, a .gguf "
                             "file or a hub id")
    if path.suffix.lower() == ".gguf" or not _HUB_ID.match(ref) or ref.startswith((".", "~")):
        raise ModelLoadError(f"model path {ref} does not exist; pass an existing folder, a .gguf file or a "
                             "hub id")
    return ref, None


def load_policy(ref: str, *, device: str = "cpu", lora: RunConfig | None = None, seed: int = 0,
                dtype: Precision | None = None, gradient_checkpointing: bool | None = None) -> tuple[Any, Any]:
    """Load the policy and its tokenizer from a folder, hub id or GGUF file, in ``dtype`` and with gradient
    checkpointing as asked; with ``lora`` (a config whose ``lora`` is on) wrap it in LoRA adapters seeded by
    ``seed``. ``dtype`` and ``gradient_checkpointing`` default to the config's fields (fp32 and off without
    one). Under ``accelerate launch`` a CUDA device is this process's GPU
    (:func:`laser_app.distributed.local_device`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laser_app.distributed import local_device

    dtype = dtype or (lora.dtype if lora is not None else "fp32")
    checkpointing = gradient_checkpointing if gradient_checkpointing is not None else (
        lora is not None and lora.gradient_checkpointing)
    where = local_device(resolve_device(device))
    torch_dtype = check_precision(dtype, where)
    source, gguf = model_source(ref)
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError) as err:
        hint = "" if Path(source).exists() else " (not a local path; hub ids need network or a local cache)"
        detail = " ".join(str(err).split())[:300]
        raise ModelLoadError(f"could not load policy model {ref!r}{hint}: {detail}") from err
    if gguf and getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # dequantized on load; keeps save_pretrained from re-quantizing
    model.to(where)
    if checkpointing:  # before LoRA wraps it: the switch lives on the transformers model
        enable_gradient_checkpointing(model)
    if lora is not None and lora.lora:
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha, task_type="CAUSAL_LM",
                                 target_modules=list(lora.lora_target_modules) if lora.lora_target_modules
                                 else None)
        with torch.random.fork_rng():  # LoRA's initialization draws from torch's global RNG
            torch.manual_seed(seed)
            try:
                model = get_peft_model(model, peft_config)
            except ValueError as err:
                raise LaserError(f"--lora: {err}") from err
    model.train()
    return model, tokenizer


#: ``--dtype`` names and their torch dtypes.
DTYPES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def check_precision(dtype: Precision, device: str) -> Any:
    """The torch dtype ``--dtype`` names, once ``device`` (resolved) can train in it; else a one-line
    :class:`LaserError`.

    >>> check_precision("fp32", "cpu")
    torch.float32
    >>> check_precision("fp16", "cpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    laser_app.errors.LaserError: --dtype fp16: training in float16 is not supported on the CPU; ...
    """
    import torch

    if dtype not in DTYPES:
        raise LaserError(f"--dtype {dtype}: unknown precision; valid: {', '.join(DTYPES)}")
    kind = device.split(":")[0]
    if dtype == "fp16" and kind == "cpu":
        raise LaserError("--dtype fp16: training in float16 is not supported on the CPU; use --dtype bf16 or "
                         "fp32 there, or fp16 on a GPU")
    if dtype == "bf16" and not bf16_supported(device):
        where = "this CPU" if kind == "cpu" else f"device {device}"
        raise LaserError(f"--dtype bf16: {where} cannot compute in bfloat16; use --dtype fp32"
                         + (" (or fp16 on a GPU)" if kind == "cuda" else ""))
    return getattr(torch, DTYPES[dtype])


def bf16_supported(device: str) -> bool:
    """Whether ``device`` computes in bfloat16: a CUDA GPU as torch reports it, any other device by trying a
    tiny bfloat16 matrix product there (emulated support counts: slower, but correct)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        x = torch.ones(2, 2, dtype=torch.bfloat16, device=device)
        return bool(((x @ x).float() == 2).all())
    except (RuntimeError, TypeError):
        return False


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on gradient (activation) checkpointing, non-reentrant so frozen embeddings under LoRA still pass
    gradients; a model type without it is a :class:`LaserError`."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LaserError(f"--gradient-checkpointing: {type(model).__name__} does not support gradient "
                         "checkpointing; drop the flag")
    # transformers 5 renamed the switch; the old name still works but warns
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda, mps or cpu, whichever is available; a device this machine lacks is a
    :class:`LaserError`.

    >>> resolve_device("cpu")
    'cpu'
    """
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LaserError(f"--device {device}: this torch build sees no CUDA GPU; use --device cpu (or auto), or "
                         "install a CUDA build of torch on a machine with a GPU")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                and torch.backends.mps.is_available()):
        raise LaserError("--device mps: MPS is not available here; use --device cpu (or auto)")
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def generation_backend(config: RunConfig, model: Any, tokenizer: Any, model_ref: str) -> GenerationBackend:
    """The engine ``--generation`` names for sampling training responses from ``model`` (loaded from
    ``model_ref``); a vLLM that cannot run here is a one-line :class:`LaserError`."""
    from laser_adapters.generation_backends import GenerationBackendError, HFBackend, VLLMBackend

    if config.generation == "hf":
        return HFBackend(model, tokenizer)
    try:
        return VLLMBackend(model, model=model_ref, dtype=DTYPES[config.dtype], seed=config.seed)
    except GenerationBackendError as err:
        raise LaserError(str(err)) from None


def save_policy(model: Any, tokenizer: Any, path: Path) -> None:
    """Save the final policy (or, for a peft model, its adapter) with its tokenizer."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's CPU thread count set to ``n`` for the block and restored after it (the count is global to
    the process, so a run must not leave it changed for its caller).

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
