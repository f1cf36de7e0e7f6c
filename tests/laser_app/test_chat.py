"""Chat templates end to end: the policy is asked through its template, trains on replies as the template
ends them (token for token), stops at the end of turn, and exports conversational pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from laser_adapters.chat import ChatFormat
from laser_adapters.dpo import tokenize_pairs
from laser_adapters.testing import chat_tokenizer, tiny_causal_lm, tiny_chat_lm
from laser_app.errors import LaserError
from laser_app.prompts import PromptFormat
from laser_app.world.tasks import Example
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

runner = CliRunner()


def test_dpo_tokens_are_the_templates_tokens() -> None:
    tok = chat_tokenizer()
    fmt = PromptFormat.for_policy(tok, "on")
    ex = Example("Is 7 odd?", "yes", "yesno")
    pair = {"prompt": fmt.policy_prompt(ex), "chosen": fmt.trained(ex, "Yes, it is."),
            "rejected": fmt.trained(ex, "No.")}
    t = tokenize_pairs(tok, [pair], append_eos=False)
    for reply, response in (("Yes, it is.", t.chosen[0]), ("No.", t.rejected[0])):
        conversation = [{"role": "user", "content": "Is 7 odd?"}, {"role": "assistant", "content": reply}]
        templated = tok.apply_chat_template(conversation, tokenize=True)["input_ids"]
        assert t.prompts[0] + response == [tok.bos_token_id, *templated]  # the tokenizer's BOS, then the template
        assert response[-2:] == tok(["<|im_end|>\n"], add_special_tokens=False)["input_ids"][0]  # end of turn
    # the generation prompt is exactly what sampling tokenizes
    asked = tok.apply_chat_template([{"role": "user", "content": "Is 7 odd?"}], add_generation_prompt=True,
                                    tokenize=True)["input_ids"]
    assert t.prompts[0] == [tok.bos_token_id, *asked]


def test_messages_rows_and_the_modes() -> None:
    tok = chat_tokenizer()
    ex = Example("Be brief.\n\nIs 7 odd?", "yes", "yesno",
                 messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 7 odd?"}))
    fmt = PromptFormat.for_policy(tok, "auto")
    assert fmt.policy_prompt(ex) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nIs 7 odd?"
                                     "<|im_end|>\n<|im_start|>assistant\n")
    assert fmt.stop("\n") is None  # the end-of-turn token ends a reply, not the stop string
    off = PromptFormat.for_policy(tok, "off")
    assert off.policy_prompt(ex) == ex.prompt and off.trained(ex, "yes") == "yes" and off.stop("\n") == "\n"
    plain = AutoTokenizer.from_pretrained(tiny_causal_lm(Path(__import__("tempfile").mkdtemp()), hidden=16))
    assert not PromptFormat.for_policy(plain, "auto").templated
    with pytest.raises(LaserError, match="--chat-template on, but the policy's tokenizer has no chat template"):
        PromptFormat.for_policy(plain, "on")


def test_generation_stops_at_the_end_of_turn(tmp_path: Path) -> None:
    path = tiny_chat_lm(tmp_path / "chat")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    model.generation_config.eos_token_id = None  # a hub model whose generation config knows no end of turn
    ChatFormat(tok).stop_generation_at_end_of_turn(model)
    assert model.generation_config.eos_token_id == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_laser_run_with_a_chat_model_on_conversational_data(tmp_path: Path) -> None:
    from laser_app.commands import app

    tiny = build_tiny_setup(tmp_path / "tiny")
    chat = tiny_chat_lm(tmp_path / "chat")
    rows = [json.loads(line) for line in tiny["train"].read_text().splitlines()]
    conversational = tmp_path / "chat.jsonl"  # TRL's "messages" rows: a system turn, then the user's
    conversational.write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": r["prompt"]}],
        "answer": r["answer"], "task": r["task"]}) + "\n" for r in rows))
    out = tmp_path / "run"
    args = run_args(tiny, out, "--policy", "linucb", "--mab-reward", "dpo+nll")
    args[args.index("--model") + 1] = str(chat)
    args[args.index("--data") + 1] = str(conversational)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((out / "resolved.json").read_text())["chat_template"] is True
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "no pair was trained on"
    for p in pairs:  # TRL's conversational preference format, no template text in it
        assert [m["role"] for m in p["prompt"]] == ["system", "user"] and p["prompt"][0]["content"] == "Be brief."
        assert "<|im_start|>" not in p["prompt"][-1]["content"]
        assert [m["role"] for m in p["chosen"]] == ["assistant"] == [m["role"] for m in p["rejected"]]
        assert "<|im_end|>" not in p["chosen"][0]["content"] + p["rejected"][0]["content"]
    assert {p["prompt"][-1]["content"] for p in pairs} <= {r["prompt"] for r in rows}

    off = tmp_path / "off"
    args = run_args(tiny, off, "--policy", "random", "--chat-template", "off")
    args[args.index("--model") + 1] = str(chat)
    assert runner.invoke(app, args).exit_code == 0
    assert json.loads((off / "resolved.json").read_text())["chat_template"] is False
    assert all(isinstance(json.loads(line)["prompt"], str) for line in (off / "pairs.jsonl").read_text().splitlines())

    result = runner.invoke(app, [*run_args(tiny, tmp_path / "on", "--policy", "random"), "--chat-template", "on"])
    assert result.exit_code == 2 and "--chat-template on, but the policy's tokenizer has no chat template" in (
        result.stderr)
    assert not (tmp_path / "on").exists()


def test_bad_own_data_inputs_get_one_line_and_write_nothing(tmp_path: Path) -> None:
    from laser_app.commands import app

    tiny = build_tiny_setup(tmp_path / "tiny")
    no_user = tmp_path / "no_user.jsonl"
    no_user.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."}], "answer": "1"}) + "\n")
    cases = [
        (["--data", str(no_user)], '"messages" has no user turn; add a {"role": "user", "content": ...} message'),
        (["--prompt-column", "question"], 'missing field "question" (fields present: answer, prompt, task)'),
        (["--answer-pattern", r"Answer: \d+"], "has no capture group; wrap the answer in parentheses"),
        (["--data", "surely-not-a-dataset-xyz:train"], "is neither a local file/folder nor a loadable hub dataset"),
    ]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        args = run_args(tiny, out, "--policy", "random")
        if "--data" in flags:  # replace the tiny setup's training data
            at = args.index("--data")
            args[at + 1] = flags[1]
        else:
            args += flags
        result = runner.invoke(app, args, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        assert result.exit_code == 2, (flags, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in " ".join(result.stderr.split()), (flags, result.stderr)
        assert not out.exists(), flags


def test_self_consistency_compares_the_extracted_answers_on_own_data() -> None:
    from laser_adapters.bandit_rewards import answer_key
    from laser_app.answers import AnswerChecker
    from laser_app.run_setup import Setup
    from laser_app.world.tasks import check_answer

    def setup(check: object) -> Setup:
        return Setup(model=None, tokenizer=None, train=[], evaluation={}, registry=None,  # type: ignore[arg-type]
                     rm_names=[], rm_for_task=None, max_new_tokens=1, stop=None, check=check,  # type: ignore[arg-type]
                     threads=1)

    batch = [Example("Is 7 odd?", "yes", "yesno"), Example("2+2?", "4", "math")]
    responses = [["Yes, 7 is odd.", "Yes.", "No, because 7 = 2*3+1."], ["The answer is 4.", "4", "It is five."]]
    keyed = setup(AnswerChecker()).answers_of(batch, responses)
    assert keyed == [["yes", "yes", "no"], ["4", "4", "It is five."]]  # no number in the last: the response
    assert len({answer_key(r) for r in keyed[0]}) == 2  # "Yes, 7 is odd." and "Yes." now agree
    assert setup(check_answer).answers_of(batch, responses) == responses  # the built-in world: as generated
