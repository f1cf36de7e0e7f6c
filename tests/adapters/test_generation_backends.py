"""Generation backends: HF equals sample_responses, vLLM's import guard is one line, and the weight refresh
happens exactly when the policy's version changed, with its current weights (a fake engine stands in for
vLLM, which cannot run on a CPU)."""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser_adapters.generation import sample_responses
from laser_adapters.generation_backends import (
    VLLM_NEEDS,
    GenerationBackendError,
    HFBackend,
    VLLMBackend,
    merged_weights,
    require_vllm,
)
from laser_adapters.testing import tiny_causal_lm
from laser_app.config import RunConfig
from laser_app.errors import LaserError
from laser_app.policy import generation_backend

PROMPTS = ["1+1=", "2+3="]


class FakeEngine:
    """Records every weight load (a copy of what it was given) and every sampling call."""

    def __init__(self) -> None:
        self.loads: list[dict[str, torch.Tensor]] = []
        self.calls: list[dict[str, Any]] = []

    def load_weights(self, weights: Any) -> None:
        self.loads.append({name: value.detach().clone() for name, value in weights})

    def generate(self, prompts: list[str], **kwargs: Any) -> list[list[str]]:
        self.calls.append({"prompts": prompts, **kwargs})
        return [[f"{p}#{j}" for j in range(kwargs["n"])] for p in prompts]


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("policy"), hidden=16, layers=1)


def _load(path: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _assert_same_weights(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(loaded) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(loaded[name], value, msg=name)


def test_hf_backend_is_sample_responses(path: Path) -> None:
    model, tok = _load(path)
    backend = HFBackend(model, tok)
    kwargs: dict[str, Any] = dict(n=3, max_new_tokens=4, seed=7, temperature=0.9, stop="\n", keep_stop=True)
    assert backend.sample(PROMPTS, **kwargs) == sample_responses(model, tok, PROMPTS, **kwargs)
    backend.policy_updated()
    assert backend.version == 1 and backend.captures_prefill


def test_without_vllm_the_backend_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(GenerationBackendError) as info:
        VLLMBackend(torch.nn.Linear(1, 1), model="some/model")
    assert str(info.value) == VLLM_NEEDS
    assert VLLM_NEEDS == ("--generation vllm needs the vllm package and a CUDA GPU (pip install vllm); use "
                          "--generation hf")
    with pytest.raises(LaserError, match=r"^--generation vllm needs the vllm package"):
        generation_backend(RunConfig(generation="vllm", device="cuda"), None, None, "some/model")
    # the config rejects it before anything loads when the device is known to be a CPU
    with pytest.raises(ValueError, match="--generation vllm needs the vllm package and a CUDA GPU"):
        RunConfig(generation="vllm", device="cpu")


def test_with_vllm_but_no_cuda_gpu_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GenerationBackendError, match="^" + VLLM_NEEDS.replace("(", r"\(").replace(")", r"\)")):
        require_vllm()


def test_hf_is_the_default_backend(path: Path) -> None:
    model, tok = _load(path)
    assert isinstance(generation_backend(RunConfig(), model, tok, str(path)), HFBackend)


def test_weights_refresh_exactly_when_the_version_changed(path: Path) -> None:
    model, _ = _load(path)
    engine = FakeEngine()
    backend = VLLMBackend(model, engine=engine)
    assert not backend.captures_prefill
    out = backend.sample(PROMPTS, n=2, max_new_tokens=5, seed=3, stop="\n", keep_stop=True)
    assert out == [["1+1=#0", "1+1=#1"], ["2+3=#0", "2+3=#1"]]
    assert engine.calls[0] == {"prompts": PROMPTS, "n": 2, "temperature": 0.8, "top_p": 1.0, "max_new_tokens": 5,
                               "seed": 3, "stop": "\n", "keep_stop": True}
    assert len(engine.loads) == 1  # before the first sample: the engine holds the checkpoint, not the policy
    _assert_same_weights(engine.loads[0], model.state_dict())

    backend.sample(PROMPTS, n=2)
    assert len(engine.loads) == 1  # same version: no refresh

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):  # two optimizer steps before the next sample: one refresh, with the latest weights
        model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        backend.policy_updated()
    assert backend.version == 2
    backend.sample(PROMPTS, n=2)
    assert len(engine.loads) == 2 and backend.loaded_version == 2 and backend.refreshes == 2
    _assert_same_weights(engine.loads[1], model.state_dict())
    assert any(not torch.equal(engine.loads[0][k], engine.loads[1][k]) for k in engine.loads[0])
    backend.sample(PROMPTS, n=2)
    assert len(engine.loads) == 2


def test_a_lora_policy_is_loaded_merged_under_the_base_names(path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base, _ = _load(path)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, task_type="CAUSAL_LM"))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    ids = torch.tensor([[1, 2, 3]])
    before = model(ids).logits
    with merged_weights(model) as weights:
        loaded = {name: value.detach().clone() for name, value in weights}
    _assert_same_weights(loaded, expected)
    torch.testing.assert_close(model(ids).logits, before)  # unmerged again: training goes on as before
