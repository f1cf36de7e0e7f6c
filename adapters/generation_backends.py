"""Generation backends: what samples the training responses from the policy.

:class:`HFBackend` runs transformers' ``generate`` on the policy itself (:func:`~laser_adapters.generation.
sample_responses`, unchanged). :class:`VLLMBackend` samples from a vLLM engine that holds a copy of the
policy's weights. Both count the policy's version: the loop calls :meth:`~GenerationBackend.policy_updated`
after each optimizer step, and VLLMBackend loads the policy's current weights into its engine before the next
sample whenever the version changed since its last load (and before its first sample, since the engine was
built from the checkpoint on disk, which a resumed or adapted policy no longer matches).

The refresh is per DPO step, not per iteration: LASeR samples every batch from the current policy, as
HFBackend does by construction. Refreshing once per iteration would sample up to an iteration's worth of steps
behind the policy and make the two backends different algorithms; one refresh costs one device-side copy of
the weights, small next to sampling n responses for a batch.

>>> backend = HFBackend(model=None, tokenizer=None)
>>> backend.version, backend.captures_prefill
(0, True)
>>> backend.policy_updated(); backend.version
1
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

#: The one line a missing vLLM (or a machine without a CUDA GPU) gives.
VLLM_NEEDS = "--generation vllm needs the vllm package and a CUDA GPU (pip install vllm); use --generation hf"

Weights = Iterable[tuple[str, Any]]


class GenerationBackendError(RuntimeError):
    """A backend that cannot run here (its package or its device is missing); the message says what to do."""


class GenerationBackend(Protocol):
    """What the loop samples with. ``captures_prefill``: sampling runs the policy's own forward pass, so a
    :class:`~laser_adapters.encoders.PrefillCapture` around :meth:`sample` sees its hidden states."""

    version: int
    captures_prefill: bool

    def sample(self, prompts: Sequence[str], *, n: int, temperature: float = 0.8, top_p: float = 1.0,
               max_new_tokens: int = 32, seed: int | None = None, stop: str | None = None,
               keep_stop: bool = False) -> list[list[str]]:
        """``n`` responses per prompt, ``result[i][j]``, as :func:`~laser_adapters.generation.sample_responses`."""
        ...

    def policy_updated(self) -> None:
        """Record that the policy's weights changed (one optimizer step)."""
        ...


class HFBackend:
    """transformers' ``generate`` on the policy: always the current weights, so an update needs no refresh."""

    captures_prefill = True

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.version = 0

    def sample(self, prompts: Sequence[str], *, n: int, temperature: float = 0.8, top_p: float = 1.0,
               max_new_tokens: int = 32, seed: int | None = None, stop: str | None = None,
               keep_stop: bool = False) -> list[list[str]]:
        from laser_adapters.generation import sample_responses

        return sample_responses(self.model, self.tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens, seed=seed, stop=stop, keep_stop=keep_stop)

    def policy_updated(self) -> None:
        self.version += 1


class Engine(Protocol):
    """The two things VLLMBackend asks of an engine (:class:`VLLMEngine` wraps ``vllm.LLM``)."""

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 seed: int | None, stop: str | None, keep_stop: bool) -> list[list[str]]: ...

    def load_weights(self, weights: Weights) -> None: ...


class VLLMBackend:
    """Samples from a vLLM engine; the policy's weights are loaded into it lazily, once per version.

    ``policy`` is the trained model (unwrapped from any data-parallel wrapper; a peft model has its adapters
    merged for the copy). ``engine`` defaults to a :class:`VLLMEngine` on ``model`` (the policy's hub id or
    folder); without vLLM or a CUDA GPU that raises :class:`GenerationBackendError` with :data:`VLLM_NEEDS`.
    """

    captures_prefill = False

    def __init__(self, policy: Any, *, model: str | None = None, dtype: str = "bfloat16",
                 engine: Engine | None = None, gpu_memory_utilization: float = 0.3, seed: int = 0) -> None:
        if engine is None:
            if model is None:
                raise ValueError("VLLMBackend needs model (the policy's hub id or folder) or an engine")
            engine = VLLMEngine(model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed)
        self.policy = policy
        self.engine = engine
        self.version = 0
        self.loaded_version: int | None = None  # the engine holds the checkpoint on disk, not the policy yet
        self.refreshes = 0

    def policy_updated(self) -> None:
        self.version += 1

    def refresh(self) -> None:
        """Load the policy's current weights into the engine now."""
        with merged_weights(self.policy) as weights:
            self.engine.load_weights(weights)
        self.loaded_version = self.version
        self.refreshes += 1

    def sample(self, prompts: Sequence[str], *, n: int, temperature: float = 0.8, top_p: float = 1.0,
               max_new_tokens: int = 32, seed: int | None = None, stop: str | None = None,
               keep_stop: bool = False) -> list[list[str]]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings (wrap one prompt in a list), got str")
        if self.loaded_version != self.version:
            self.refresh()
        if not prompts:
            return []
        return self.engine.generate(list(prompts), n=n, temperature=temperature, top_p=top_p,
                                    max_new_tokens=max_new_tokens, seed=seed, stop=stop, keep_stop=keep_stop)


@contextmanager
def merged_weights(model: Any) -> Iterator[Weights]:
    """The policy's weights under its transformers model's names, for loading into an engine; a peft model's
    adapters are merged in for the block and unmerged after (no copy of the weights is made)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield iter(model.state_dict().items())
        return
    model.merge_adapter()
    try:
        yield ((_base_name(name), value) for name, value in model.state_dict().items()
               if "lora_" not in name and "original_module" not in name)
    finally:
        model.unmerge_adapter()


def _base_name(peft_name: str) -> str:
    # peft's names wrap the model's: base_model.model.<name>, with .base_layer inside wrapped layers
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")


def require_vllm() -> Any:
    """The ``vllm`` module, when it is installed and a CUDA GPU is visible; else :class:`GenerationBackendError`."""
    try:
        import vllm
    except ImportError:
        raise GenerationBackendError(VLLM_NEEDS) from None
    import torch

    if not torch.cuda.is_available():
        raise GenerationBackendError(VLLM_NEEDS)
    return vllm


class VLLMEngine:  # pragma: no cover - needs vLLM and a CUDA GPU
    """``vllm.LLM`` run in this process (so its model can take new weights), colocated with training."""

    def __init__(self, model: str, *, dtype: str, gpu_memory_utilization: float, seed: int) -> None:
        vllm = require_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine's model in this process
        self._sampling = vllm.SamplingParams
        self.llm = vllm.LLM(model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                            enable_prefix_caching=True)

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 seed: int | None, stop: str | None, keep_stop: bool) -> list[list[str]]:
        params = self._sampling(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed,
                                stop=[stop] if stop else None, include_stop_str_in_output=keep_stop)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[choice.text for choice in out.outputs] for out in outputs]

    def load_weights(self, weights: Weights) -> None:
        self._model().load_weights(weights)
        self.llm.reset_prefix_cache()  # cached prompt prefixes were computed with the old weights

    def _model(self) -> Any:
        driver = self.llm.llm_engine.model_executor.driver_worker
        runner = getattr(driver, "model_runner", None) or driver.worker.model_runner  # vLLM's engine v0 or v1
        return runner.model
