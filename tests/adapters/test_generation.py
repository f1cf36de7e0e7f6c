from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser_adapters.generation import cut_at_stop, greedy_answers, left_pad, sample_responses
from laser_adapters.testing import tiny_causal_lm

PROMPTS = ["What is 12+7? ", "Reverse 'abc': ", "Is 47>38? "]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gen")
    return {arch: tiny_causal_lm(root / arch, arch=arch, hidden=32) for arch in ("llama", "gpt2")}


def _load(path: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_shapes_and_one_batched_generate_call(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["llama"])
    forwards: list[int] = []
    handle = model.register_forward_hook(lambda module, args, output: forwards.append(1))
    out = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=6, seed=0)
    handle.remove()
    assert [len(r) for r in out] == [4, 4, 4]
    assert all(isinstance(t, str) and len(t) <= 6 for r in out for t in r)
    assert len(forwards) <= 6  # one forward per new token for the whole batch, not per prompt or sample
    assert sample_responses(model, tok, [], n=2) == []


def test_seeded_reproducibility_leaves_the_global_rng_alone(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["llama"])
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sample_responses(model, tok, PROMPTS, n=3, max_new_tokens=8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert sample_responses(model, tok, PROMPTS, n=3, max_new_tokens=8, seed=7) == first
    assert sample_responses(model, tok, PROMPTS, n=3, max_new_tokens=8, seed=8) != first
    assert len({t for r in first for t in r}) > 3  # samples differ within and across prompts
    sample_responses(model, tok, PROMPTS[:1], n=2, max_new_tokens=2)  # seed=None draws from the global RNG
    assert not torch.equal(torch.get_rng_state(), state)


def test_low_temperature_approaches_greedy(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["gpt2"])
    greedy = greedy_answers(model, tok, PROMPTS, max_new_tokens=5)
    cold = sample_responses(model, tok, PROMPTS, n=2, temperature=1e-4, max_new_tokens=5, seed=0)
    assert cold == [[g, g] for g in greedy]


def test_stop_cuts_the_continuation(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["llama"])
    free = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=12, seed=3)
    stop = max("aeiou ", key=lambda ch: sum(ch in t for r in free for t in r))  # a character that does occur
    cut = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=12, seed=3, stop=stop)
    assert cut == [[cut_at_stop(t, stop) for t in r] for r in free]
    assert any(stop in t for r in free for t in r) and not any(stop in t for r in cut for t in r)
    assert greedy_answers(model, tok, PROMPTS, max_new_tokens=12, stop=stop) == [
        cut_at_stop(t, stop) for t in greedy_answers(model, tok, PROMPTS, max_new_tokens=12)]


def test_keep_stop_ends_each_sample_with_the_stop_string(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["llama"])
    free = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=12, seed=3)
    stop = max("aeiou ", key=lambda ch: sum(ch in t for r in free for t in r))
    kept = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=12, seed=3, stop=stop, keep_stop=True)
    assert kept == [[cut_at_stop(t, stop, keep=True) for t in r] for r in free]
    assert any(t.endswith(stop) for r in kept for t in r)
    assert all(t.count(stop) <= 1 and (stop not in t or t.endswith(stop)) for r in kept for t in r)
    cut = sample_responses(model, tok, PROMPTS, n=4, max_new_tokens=12, seed=3, stop=stop)
    assert cut == [[cut_at_stop(t, stop) for t in r] for r in kept]


def test_stop_ends_generation_early(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["gpt2"])
    full = greedy_answers(model, tok, PROMPTS[:1], max_new_tokens=12)[0]
    assert len(full) == 12
    forwards: list[int] = []
    handle = model.register_forward_hook(lambda module, args, output: forwards.append(1))
    cut = greedy_answers(model, tok, PROMPTS[:1], max_new_tokens=12, stop=full[2])[0]
    handle.remove()
    assert cut == full[:full.index(full[2])] and len(forwards) <= 3


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_is_the_continuation_and_batch_invariant(paths: dict[str, Path], arch: str) -> None:
    model, tok = _load(paths[arch])
    batched = greedy_answers(model, tok, PROMPTS, max_new_tokens=6, batch_size=64)
    assert greedy_answers(model, tok, PROMPTS, max_new_tokens=6, batch_size=1) == batched
    ids = tok(PROMPTS[0])["input_ids"]  # a hand-written argmax loop on the unpadded prompt
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert batched[0] == tok.decode(ids[len(tok(PROMPTS[0])["input_ids"]):], skip_special_tokens=True)


def test_pad_token_is_set_with_a_warning(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["llama"])
    tok.pad_token = None
    with pytest.warns(UserWarning, match="no pad token; using its eos token"):
        out = sample_responses(model, tok, PROMPTS, n=2, max_new_tokens=3, seed=0)
    assert tok.pad_token == tok.eos_token and [len(r) for r in out] == [2, 2, 2]


def test_training_mode_is_restored(paths: dict[str, Path]) -> None:
    model, tok = _load(paths["gpt2"])
    model.train()
    a = sample_responses(model, tok, PROMPTS, n=2, max_new_tokens=5, seed=1)
    b = sample_responses(model, tok, PROMPTS, n=2, max_new_tokens=5, seed=1)
    assert a == b and model.training  # dropout off while sampling, training mode back after
    greedy_answers(model, tok, PROMPTS, max_new_tokens=2)
    assert model.training


def test_left_pad() -> None:
    from laser_adapters.tokenization import char_tokenizer

    tok = char_tokenizer("abc", padding_side="right")
    ids, mask = left_pad(tok, ["a", "abc"], max_length=3)
    assert ids.tolist() == [[0, 1, 4], [4, 5, 6]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="tokenizes to no tokens"):
        left_pad(char_tokenizer("a", add_bos=False), [""])


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"n": 0}, ValueError, "n must be >= 1, got 0"),
    ({"n": 2, "temperature": 0.0}, ValueError, "temperature must be > 0.0"),
    ({"n": 2, "top_p": 1.5}, ValueError, "top_p must be <= 1.0"),
    ({"n": 2, "max_new_tokens": 0}, ValueError, "max_new_tokens must be >= 1"),
    ({"n": 2, "seed": 1.5}, TypeError, "seed must be an int"),
])
def test_bad_arguments(paths: dict[str, Path], kwargs: dict[str, Any], error: type[Exception],
                       match: str) -> None:
    model, tok = _load(paths["llama"])
    with pytest.raises(error, match=match):
        sample_responses(model, tok, PROMPTS, **kwargs)
    with pytest.raises(TypeError, match="wrap one prompt in a list"):
        greedy_answers(model, tok, "one prompt", max_new_tokens=2)
