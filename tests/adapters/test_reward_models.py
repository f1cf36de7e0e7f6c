"""Reward models on real tiny models saved to disk: scores against direct forward passes, truncation,
chat templates, GGUF loading, verifiers and the failure gate ``checked_scores``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from laser_adapters.reward_models import (
    FunctionRM,
    ImplicitDPORM,
    JudgeRM,
    LikelihoodRM,
    RewardModelError,
    SequenceClassifierRM,
    checked_scores,
)
from laser_adapters.reward_models._loading import split_source
from laser_adapters.reward_models.function import last_number, normalize_text
from laser_adapters.testing import tiny_causal_lm, tiny_classifier

# "#user:<prompt>\n#assistant:<response>\n": every character is one token of the character tokenizer
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '#' + m['role'] + ':' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '#assistant:' }}{% endif %}"
)
PROMPTS = ["What is 2+2?", "Name a colour.", "Is 47 > 38? yes or no", "Reverse: abc", "Say hi"]
RESPONSES = ["4", "blue, or maybe green", "yes", "cba", "hi there, how are you today"]


def write_tiny_gguf(hf_dir: Path, out_dir: Path, name: str = "tiny.gguf") -> Path:
    """Write the tiny Llama in ``hf_dir`` as an F32 GGUF file (weights and tokenizer) in ``out_dir``.

    The character vocabulary is stored as a byte-level BPE vocabulary without merges, which tokenizes
    exactly as the character tokenizer for its alphabet; q/k weights are permuted as llama.cpp does.
    """
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_dir / name), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    spelling = bytes_to_unicode()
    special = set(tok.all_special_tokens)
    tokens = sorted(tok.get_vocab(), key=tok.get_vocab().__getitem__)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t if t in special else "".join(spelling[b] for b in t.encode()) for t in tokens])
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control, 1 = normal
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    for key, tensor in model.state_dict().items():
        base, suffix = key.rsplit(".", 1)
        array = tensor.float().numpy()
        if key.endswith("q_proj.weight"):
            array = permute(array, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            array = permute(array, cfg.num_key_value_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_dir / name


def with_chat_template(path: Path) -> Path:
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rm-models")
    paths = {
        "clf": tiny_classifier(root / "clf"),
        "clf_chat": with_chat_template(tiny_classifier(root / "clf_chat")),
        "policy": tiny_causal_lm(root / "policy", seed=1),
        "ref": tiny_causal_lm(root / "ref", seed=2),
        "policy_chat": with_chat_template(tiny_causal_lm(root / "policy_chat", seed=1)),
        "gpt2": tiny_causal_lm(root / "gpt2", arch="gpt2", seed=3),
    }
    paths["gguf"] = write_tiny_gguf(paths["policy"], root / "gguf")
    return paths


# ---- direct computations the RMs are checked against -------------------------------------------------

def plain_ids(tok: Any, prompt: str, response: str) -> tuple[list[int], int]:
    p = tok(prompt)["input_ids"]
    return p + tok(response, add_special_tokens=False)["input_ids"], len(p)


def chat_ids(tok: Any, prompt: str, response: str) -> tuple[list[int], int]:
    p = tok(f"#user:{prompt}\n#assistant:", add_special_tokens=False)["input_ids"]
    return p + tok(f"{response}\n", add_special_tokens=False)["input_ids"], len(p)


def logp_by_hand(model: Any, ids: list[int], start: int) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def lm(path: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(path).eval()


# ---- checked_scores: nothing bad gets through -----------------------------------------------------------

class RawRM:
    """A bare RewardModel returning whatever it is given, to exercise the gate itself."""

    def __init__(self, name: str, result: Any = None, error: Exception | None = None) -> None:
        self.name, self.result, self.error = name, result, error

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


@pytest.mark.parametrize(("rm", "pattern"), [
    (RawRM("boom", error=ZeroDivisionError("division by zero")),
     r"reward model 'boom' on batch 7 raised ZeroDivisionError on 2 pairs: division by zero"),
    (RawRM("nan", result=[0.5, float("nan")]), r"'nan' on batch 7 returned non-finite scores at .*\[1\]"),
    (RawRM("inf", result=np.array([np.inf, 1.0])), r"'inf' on batch 7 returned non-finite .* \[0\]"),
    (RawRM("short", result=[1.0]), r"'short' on batch 7 returned scores of shape \(1,\) for 2 pairs"),
    (RawRM("matrix", result=[[1.0], [2.0]]), r"'matrix' on batch 7 returned scores of shape \(2, 1\)"),
    (RawRM("text", result=["a", "b"]), r"'text' on batch 7 returned list that is not convertible"),
    (FunctionRM(lambda p, r: [1.0] * 3, name="fn-long"), r"'fn-long' on batch 7 raised ValueError on 2 "
                                                          "pairs"),
    (FunctionRM(lambda p, r: 1 / 0, name="fn-raise", batched=False), r"'fn-raise' on batch 7 raised "
                                                                      "ZeroDivision"),
])
def test_checked_scores_names_rm_and_batch(rm: Any, pattern: str) -> None:
    with pytest.raises(RewardModelError, match=pattern) as info:
        checked_scores(rm, ["p1", "p2"], ["r1", "r2"], batch=7)
    if rm.name in ("boom", "fn-raise"):
        assert info.value.__cause__ is not None


def test_checked_scores_rejects_bad_inputs_and_passes_good_scores() -> None:
    rm = FunctionRM(lambda p, r: [float(len(x)) for x in r], name="len")
    with pytest.raises(RewardModelError, match=r"'len' on batch step-3: bad input: got 2 prompts but 1 "
                                                "responses"):
        checked_scores(rm, ["a", "b"], ["c"], batch="step-3")
    with pytest.raises(RewardModelError, match=r"'len': asked to score 0 pairs"):
        checked_scores(rm, [], [])
    with pytest.raises(RewardModelError, match=r"responses\[1\] must be a str, got int"):
        checked_scores(rm, ["a", "b"], ["c", 3])
    with pytest.raises(RewardModelError, match="not a single str"):
        checked_scores(rm, "ab", "cd")
    out = checked_scores(RawRM("ints", result=[1, 2]), ["a", "b"], ["c", "d"])
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    np.testing.assert_array_equal(checked_scores(rm, ["a"], ["xyz"]), [3.0])


# ---- FunctionRM and the verifiers -----------------------------------------------------------------------

def test_function_rm_batched_and_per_pair() -> None:
    seen: list[tuple[list[str], list[str]]] = []

    def batched(ps: list[str], rs: list[str]) -> list[float]:
        seen.append((ps, rs))
        return [float(r.count("a")) for r in rs]

    rm = FunctionRM(batched, name="count-a")
    np.testing.assert_array_equal(rm.score(["q", "q"], ["banana", "kiwi"]), [3.0, 0.0])
    assert seen == [(["q", "q"], ["banana", "kiwi"])]  # one call with both lists
    per_pair = FunctionRM(lambda p, r: float(p == r), name="same", batched=False)
    np.testing.assert_array_equal(per_pair.score(["x", "y"], ["x", "z"]), [1.0, 0.0])
    assert rm.score([], []).shape == (0,)
    mistaken = FunctionRM(lambda p, r: float(p == r), name="mistaken")  # a per-pair fn declared batched
    with pytest.raises(ValueError, match=r"returned shape \(\) for 2 pairs; .* pass batched=False"):
        mistaken.score(["x", "y"], ["x", "z"])
    with pytest.raises(TypeError, match="fn must be callable"):
        FunctionRM("not callable", name="bad")


def test_exact_and_number_match_verifiers() -> None:
    answers = {"Capital of France?": "Paris", "2+3?": "5", "Big?": "1,000"}
    exact = FunctionRM.exact_match(answers)
    assert exact.name == "exact-match"
    np.testing.assert_array_equal(
        exact.score(["Capital of France?", "Capital of France?", "2+3?"],
                    ["  paris. ", "Paris is nice", "5"]),
        [1.0, 0.0, 1.0])
    extracting = FunctionRM.exact_match(answers, name="after-colon", extract=lambda r: r.rsplit(":", 1)[-1])
    np.testing.assert_array_equal(extracting.score(["2+3?"], ["so the answer is: 5"]), [1.0])
    number = FunctionRM.number_match(answers)
    np.testing.assert_array_equal(
        number.score(["2+3?", "2+3?", "2+3?", "Big?", "Big?"],
                     ["2 plus 3 is 5.", "5.0", "it is 6", "1000", "about a thousand"]),
        [1.0, 1.0, 0.0, 1.0, 0.0])
    by_callable = FunctionRM.number_match(lambda prompt: 12 if "7+5" in prompt else None, name="n")
    np.testing.assert_array_equal(by_callable.score(["7+5?"], ["-> 12"]), [1.0])
    with pytest.raises(ValueError, match="no reference answer for prompt 'unknown"):
        exact.score(["unknown prompt"], ["x"])
    with pytest.raises(RewardModelError, match=r"'n' on batch 0 raised ValueError.*no reference answer"):
        checked_scores(by_callable, ["1+1?"], ["2"], batch=0)
    with pytest.raises(TypeError, match="answers must be a mapping"):
        FunctionRM.number_match(42)


def test_text_helpers() -> None:
    assert normalize_text(" Hello,   World! ") == "hello, world"
    assert last_number("from -3 to 2.5") == 2.5
    assert last_number("minus -4") == -4.0
    assert last_number("1,234,567 items") == 1234567.0
    assert last_number("none") is None


def test_function_rm_from_import() -> None:
    rm = FunctionRM.from_import("operator:eq", name="eq", batched=False)
    np.testing.assert_array_equal(rm.score(["a", "b"], ["a", "c"]), [1.0, 0.0])
    with pytest.raises(ValueError, match=r"look like 'package\.module:function'"):
        FunctionRM.from_import("operator.eq", name="x")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        FunctionRM.from_import("no_such_module_xyz:f", name="x")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        FunctionRM.from_import("operator:nope", name="x")
    with pytest.raises(TypeError, match="not a callable"):
        FunctionRM.from_import("math:pi", name="x")


# ---- SequenceClassifierRM -------------------------------------------------------------------------------

def test_classifier_matches_direct_forward_and_is_batch_invariant(models: dict[str, Path]) -> None:
    rm = SequenceClassifierRM(str(models["clf"]), name="clf", batch_size=2, max_length=128)
    scores = rm.score(PROMPTS, RESPONSES)
    assert scores.shape == (5,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, rm.score(PROMPTS, RESPONSES))  # deterministic
    model = AutoModelForSequenceClassification.from_pretrained(models["clf"]).eval()
    tok = AutoTokenizer.from_pretrained(models["clf"])
    with torch.no_grad():
        direct = [model(torch.tensor([plain_ids(tok, p, r)[0]])).logits[0, 0].item()
                  for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    one_by_one = SequenceClassifierRM(model, tok, name="clf-1", batch_size=1, max_length=128)
    np.testing.assert_allclose(one_by_one.score(PROMPTS, RESPONSES), scores, atol=1e-5)
    assert rm.score([], []).shape == (0,)
    assert rm.device == "cpu" and rm.trust_remote_code is False


def test_classifier_truncates_prompt_from_the_left(models: dict[str, Path]) -> None:
    max_length = 40
    rm = SequenceClassifierRM(str(models["clf"]), name="clf", max_length=max_length)
    response = "4, and that is final"
    long_prompt = "ignore this padding text " * 8 + "What is 2+2?"
    keep = max_length - 1 - len(response)  # one BOS token, one token per character
    ids = rm.encode([long_prompt], [response])[0]
    assert len(ids) == max_length
    assert ids[0] == rm.tokenizer.bos_token_id
    assert rm.tokenizer.decode(ids, skip_special_tokens=True) == long_prompt[-keep:] + response
    np.testing.assert_allclose(rm.score([long_prompt], [response]),
                               rm.score([long_prompt[-keep:]], [response]),
                               atol=1e-6)
    shorter = rm.score([long_prompt[-keep + 5:]], [response])  # not truncated: a different input
    assert not np.allclose(shorter, rm.score([long_prompt], [response]))


def test_classifier_cuts_a_response_longer_than_max_length_with_a_warning(models: dict[str, Path]) -> None:
    rm = SequenceClassifierRM(str(models["clf"]), name="clf", max_length=16)
    with pytest.warns(UserWarning, match="does not fit in max_length"):
        ids = rm.encode(["q"], ["x" * 40])[0]
    assert len(ids) == 16 and ids[0] == rm.tokenizer.bos_token_id


def test_classifier_chat_template(models: dict[str, Path]) -> None:
    rm = SequenceClassifierRM(str(models["clf_chat"]), name="chat", max_length=128)
    assert rm.chat
    tok = rm.tokenizer
    assert rm.encode(PROMPTS[:1], RESPONSES[:1])[0] == chat_ids(tok, PROMPTS[0], RESPONSES[0])[0]
    plain = SequenceClassifierRM(str(models["clf_chat"]), name="plain", max_length=128,
                                 use_chat_template=False)
    assert not plain.chat
    assert not np.allclose(rm.score(PROMPTS, RESPONSES), plain.score(PROMPTS, RESPONSES))
    with pytest.raises(ValueError, match="has no chat_template"):
        SequenceClassifierRM(str(models["clf"]), name="x", use_chat_template=True)
    # truncation trims the user's text and re-renders the template around it
    max_length, response = 48, "blue, surely"
    fixed = len("#user:\n#assistant:") + len(response) + 1
    long_prompt = "words words words " * 10 + "Name a colour."
    small = SequenceClassifierRM(str(models["clf_chat"]), name="chat", max_length=max_length)
    ids = small.encode([long_prompt], [response])[0]
    keep = max_length - fixed
    assert len(ids) == max_length
    assert tok.decode(ids) == f"#user:{long_prompt[-keep:]}\n#assistant:{response}\n"
    np.testing.assert_allclose(small.score([long_prompt], [response]),
                               small.score([long_prompt[-keep:]], [response]), atol=1e-6)


def test_classifier_label_heads(models: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(models["clf"])
    for n_labels in (2, 3):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(models["clf"], num_labels=n_labels,
                                                                   ignore_mismatched_sizes=True).eval()
        with torch.no_grad():
            logits = torch.stack([model(torch.tensor([plain_ids(tok, p, r)[0]])).logits[0]
                                  for p, r in zip(PROMPTS, RESPONSES, strict=True)]).double().numpy()
        if n_labels == 2:
            rm = SequenceClassifierRM(model, tok, name="two")
            np.testing.assert_allclose(rm.score(PROMPTS, RESPONSES), logits[:, 1] - logits[:, 0], atol=1e-5)
        else:
            with pytest.raises(ValueError, match="has 3 labels; pass label="):
                SequenceClassifierRM(model, tok, name="three")
            rm = SequenceClassifierRM(model, tok, name="three", label=2)
            others = np.logaddexp(logits[:, 0], logits[:, 1])
            np.testing.assert_allclose(rm.score(PROMPTS, RESPONSES), logits[:, 2] - others, atol=1e-5)
            with pytest.raises(ValueError, match=r"label must be in \[0, 3\)"):
                SequenceClassifierRM(model, tok, name="three", label=3)


def test_bad_arguments_and_paths(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SequenceClassifierRM(str(tmp_path / "missing"), name="x")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        SequenceClassifierRM(str(models["clf"]), name="x", batch_size=0)
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        LikelihoodRM(str(models["policy"]), name="x", max_length=1)
    with pytest.raises(ValueError, match="normalize must be one of"):
        LikelihoodRM(str(models["policy"]), name="x", normalize="median")
    with pytest.raises(ValueError, match="beta must be a finite float > 0, got -1"):
        ImplicitDPORM(str(models["policy"]), name="x", beta=-1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asks for CUDA, which this machine does not have"):
            LikelihoodRM(str(models["policy"]), name="x", device="cuda:0")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda'"):
        LikelihoodRM(str(models["policy"]), name="x", device="gpu please")
    with pytest.raises(ValueError, match="dtype must be one of"):
        LikelihoodRM(str(models["policy"]), name="x", dtype="float64")
    with pytest.raises(ValueError, match="GGUF loading is supported for causal-LM RMs only"):
        SequenceClassifierRM(str(models["gguf"]), name="x")


# ---- ImplicitDPORM --------------------------------------------------------------------------------------

def test_implicit_dpo_equals_beta_log_ratio_by_hand(models: dict[str, Path]) -> None:
    beta = 0.25
    rm = ImplicitDPORM(str(models["policy"]), str(models["ref"]), beta=beta, name="dpo", batch_size=2)
    assert not rm.reference_free
    scores = rm.score(PROMPTS, RESPONSES)
    policy, ref = lm(models["policy"]), lm(models["ref"])
    tok = AutoTokenizer.from_pretrained(models["policy"])
    expected = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        ids, start = plain_ids(tok, p, r)
        expected.append(beta * (logp_by_hand(policy, ids, start) - logp_by_hand(ref, ids, start)))
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    np.testing.assert_array_equal(scores, rm.score(PROMPTS, RESPONSES))

    free = ImplicitDPORM(policy, None, tokenizer=tok, beta=beta, name="dpo-free")
    assert free.reference_free
    by_hand = [beta * logp_by_hand(policy, *plain_ids(tok, p, r))
               for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    np.testing.assert_allclose(free.score(PROMPTS, RESPONSES), by_hand, atol=1e-4)
    assert (free.score(PROMPTS, RESPONSES) < 0).all()


def test_implicit_dpo_chat_template_by_hand(models: dict[str, Path]) -> None:
    rm = ImplicitDPORM(str(models["policy_chat"]), str(models["ref"]), beta=0.1, name="dpo-chat")
    assert rm.chat
    policy, ref = lm(models["policy_chat"]), lm(models["ref"])
    tok = rm.tokenizer
    expected = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        ids, start = chat_ids(tok, p, r)  # the response's tokens include the template's closing "\n"
        expected.append(0.1 * (logp_by_hand(policy, ids, start) - logp_by_hand(ref, ids, start)))
    np.testing.assert_allclose(rm.score(PROMPTS, RESPONSES), expected, atol=1e-4)


def test_implicit_dpo_rejects_mismatched_vocabularies(models: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_causal_lm(tmp_path / "other", seed=0)
    model = AutoModelForCausalLM.from_pretrained(other)
    model.resize_token_embeddings(model.config.vocab_size + 8)
    with pytest.raises(ValueError, match="vocab sizes differ"):
        ImplicitDPORM(str(models["policy"]), model, name="x")


# ---- LikelihoodRM ---------------------------------------------------------------------------------------

def test_likelihood_mean_and_sum_by_hand(models: dict[str, Path]) -> None:
    mean_rm = LikelihoodRM(str(models["gpt2"]), name="lik", batch_size=3)
    sum_rm = LikelihoodRM(mean_rm.model, tokenizer=mean_rm.tokenizer, name="lik-sum", normalize="sum")
    model, tok = lm(models["gpt2"]), mean_rm.tokenizer
    sums, lengths = [], []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        ids, start = plain_ids(tok, p, r)
        sums.append(logp_by_hand(model, ids, start))
        lengths.append(len(ids) - start)
    np.testing.assert_allclose(sum_rm.score(PROMPTS, RESPONSES), sums, atol=1e-4)
    np.testing.assert_allclose(mean_rm.score(PROMPTS, RESPONSES), np.array(sums) / lengths, atol=1e-5)
    with pytest.raises(ValueError, match=r"positions \[1\] have no tokens"):
        mean_rm.score(["a", "b"], ["x", ""])
    np.testing.assert_allclose(sum_rm.score(["b"], [""]), [0.0])
    floor = LikelihoodRM(mean_rm.model, tokenizer=mean_rm.tokenizer, name="lik-floor", empty_score=-100.0)
    scores = floor.score(["a", "b"], ["x", ""])  # an empty answer scores the floor, never the top
    assert scores[1] == -100.0 and scores[0] == pytest.approx(mean_rm.score(["a"], ["x"])[0])
    with pytest.raises(ValueError, match="empty_score must be a finite number"):
        LikelihoodRM(mean_rm.model, tokenizer=mean_rm.tokenizer, name="x", empty_score=float("-inf"))


# ---- JudgeRM --------------------------------------------------------------------------------------------

def test_judge_expected_grade_by_hand(models: dict[str, Path]) -> None:
    judge = JudgeRM(str(models["policy"]), name="judge", batch_size=2)
    scores = judge.score(PROMPTS, RESPONSES)
    assert scores.shape == (5,) and ((scores >= 1) & (scores <= 5)).all()
    probs = judge.grade_probabilities(PROMPTS, RESPONSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    model, tok = lm(models["policy"]), judge.tokenizer
    grade_ids = [tok.convert_tokens_to_ids(g) for g in "12345"]
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        text = judge.template.format(prompt=p, response=r, grades="1, 2, 3, 4 or 5")
        with torch.no_grad():
            z = model(torch.tensor([tok(text)["input_ids"]])).logits[0, -1, grade_ids]
        np.testing.assert_allclose(scores[i], float(torch.softmax(z, -1) @ torch.arange(1.0, 6.0)), atol=1e-5)


def test_judge_yes_no_chat_truncation_and_errors(models: dict[str, Path]) -> None:
    yes_no = JudgeRM(str(models["policy_chat"]), name="yn", grades=("Y", "N"), max_length=160)
    assert yes_no.chat and yes_no.values.tolist() == [1.0, 0.0]
    scores = yes_no.score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(scores, yes_no.grade_probabilities(PROMPTS, RESPONSES)[:, 0])
    long_prompt = "context " * 40 + "What is 2+2?"
    ids = yes_no.encode(long_prompt, "4")
    assert len(ids) == 160 and yes_no.tokenizer.decode(ids).endswith("#assistant:")
    assert "What is 2+2?" in yes_no.tokenizer.decode(ids)
    with pytest.warns(UserWarning, match="grading its beginning only"):
        assert len(yes_no.encode("q", "x" * 300)) == 160
    weighted = JudgeRM(yes_no.model, tokenizer=yes_no.tokenizer, name="w", grades=("A", "B", "C"),
                       values=(1.0, 0.5, 0.0))
    assert ((weighted.score(PROMPTS, RESPONSES) >= 0) & (weighted.score(PROMPTS, RESPONSES) <= 1)).all()
    with pytest.raises(ValueError, match=r"grade '10' is 2 tokens \['1', '0'\]"):
        JudgeRM(yes_no.model, tokenizer=yes_no.tokenizer, name="x", grades=("1", "10"))
    with pytest.raises(ValueError, match="are not numbers; pass values="):
        JudgeRM(yes_no.model, tokenizer=yes_no.tokenizer, name="x", grades=("A", "B", "C"))
    with pytest.raises(ValueError, match=r"must contain both \{prompt\} and \{response\}"):
        JudgeRM(yes_no.model, tokenizer=yes_no.tokenizer, name="x", template="Rate {prompt}:")
    with pytest.raises(ValueError, match="may only use the fields"):
        JudgeRM(yes_no.model, tokenizer=yes_no.tokenizer, name="x", template="{prompt} {response} {score}")


# ---- GGUF -----------------------------------------------------------------------------------------------

def test_gguf_loading_matches_the_original_model(models: dict[str, Path]) -> None:
    reference = LikelihoodRM(str(models["policy"]), name="hf")
    folder, file = models["gguf"].parent, models["gguf"].name
    by_folder = LikelihoodRM(str(folder), name="gguf", gguf_file=file)
    by_path = ImplicitDPORM(str(models["gguf"]), str(models["gguf"]), name="gguf-dpo")
    assert by_folder.tokenizer(PROMPTS[0])["input_ids"] == reference.tokenizer(PROMPTS[0])["input_ids"]
    np.testing.assert_allclose(by_folder.score(PROMPTS, RESPONSES), reference.score(PROMPTS, RESPONSES),
                               atol=1e-5)
    np.testing.assert_allclose(by_path.score(PROMPTS, RESPONSES), 0.0, atol=1e-6)  # model == reference
    assert split_source(str(models["gguf"]), None) == (str(folder), file)
    with pytest.raises(FileNotFoundError, match=r"gguf_file 'missing\.gguf' not found"):
        split_source(str(folder), "missing.gguf")
    with pytest.raises(FileNotFoundError, match=r"GGUF file .* does not exist"):
        split_source(str(folder / "nope.gguf"), None)
    assert split_source("org/some-model", None) == ("org/some-model", None)
