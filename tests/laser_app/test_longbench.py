"""LongBench items: prompt templates, the JSONL loader and its one-line errors, and truncation from the middle
at exact token counts (the character tokenizer gives one token per character)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from laser_adapters.tokenization import char_tokenizer
from laser_app.data import ExampleLike, task_of
from laser_app.errors import DataError
from laser_app.longbench import (
    MAX_NEW_TOKENS,
    PROMPTS,
    SUBSETS,
    LongExample,
    build_prompt,
    load_longbench,
    load_qa,
    truncate_examples,
    truncate_middle,
    truncated_counts,
)

HOTPOT = {"_id": "h1", "dataset": "hotpotqa", "input": "Where was Ann born?",
          "context": "Passage 1:\nAnn was born in Oslo.", "answers": ["Oslo", "Oslo, Norway"], "length": 6,
          "language": "en", "all_classes": None}
TREC = {"_id": "t1", "dataset": "trec", "input": "Question: Which city is largest?\nType:",
        "context": "Question: Where is Rome?\nType: City", "answers": ["City"], "length": 9, "language": "en",
        "all_classes": ["City", "Country"]}


def write_rows(tmp_path: Path, rows: list[Any], name: str = "lb.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_template_puts_context_before_input() -> None:
    for name, template in PROMPTS.items():
        assert template.count("{context}") == 1 and template.count("{input}") == 1, name
        assert template.index("{context}") < template.index("{input}"), name
        assert template.format(context="", input="").strip(), name  # there is an instruction


def test_qa_templates_repeat_the_instruction_after_the_context() -> None:
    for name in SUBSETS["single-doc"] + SUBSETS["multi-doc"]:
        between = PROMPTS[name].split("{context}")[1].split("{input}")[0]
        assert len(between.strip()) > 5, name


def test_tables_cover_the_same_datasets() -> None:
    covered = [d for names in SUBSETS.values() for d in names]
    assert sorted(covered) == sorted(PROMPTS) == sorted(MAX_NEW_TOKENS)
    assert MAX_NEW_TOKENS["hotpotqa"] == 32 and MAX_NEW_TOKENS["narrativeqa"] == 128
    assert MAX_NEW_TOKENS["multifieldqa_en"] == 64 and MAX_NEW_TOKENS["samsum"] == 128


def test_build_prompt_keeps_braces_in_the_text() -> None:
    prompt = build_prompt("musique", "f(x) = {x}", "What is {y}?")
    assert "f(x) = {x}" in prompt and "Question: What is {y}?" in prompt
    assert prompt.endswith("Answer:")
    with pytest.raises(ValueError, match=r"dataset 'gov_report' has no prompt template; use one of narrativeqa"):
        build_prompt("gov_report", "c", "q")


def test_load_two_datasets(tmp_path: Path) -> None:
    items = load_longbench(write_rows(tmp_path, [HOTPOT, TREC]))
    hot, trec = items
    assert (hot.id, hot.dataset, hot.answers, hot.length, hot.language, hot.all_classes) == (
        "h1", "hotpotqa", ("Oslo", "Oslo, Norway"), 6, "en", None)
    assert hot.prompt == PROMPTS["hotpotqa"].format(context=HOTPOT["context"], input=HOTPOT["input"])
    assert trec.all_classes == ("City", "Country")
    assert trec.prompt.endswith("Question: Where is Rome?\nType: City\nQuestion: Which city is largest?\nType:")
    example: ExampleLike = hot  # the project's protocol: prompt, answer, task
    assert (example.answer, task_of(example)) == ("Oslo", "hotpotqa")


def test_load_keeps_only_the_datasets_asked_for(tmp_path: Path) -> None:
    gov = {**HOTPOT, "dataset": "gov_report"}  # a dataset without a template is skipped, not an error
    items = load_longbench(write_rows(tmp_path, [HOTPOT, TREC, gov]), datasets=["trec"])
    assert [e.id for e in items] == ["t1"]


def test_load_without_id_numbers_by_line(tmp_path: Path) -> None:
    row = {k: v for k, v in HOTPOT.items() if k not in ("_id", "length", "language", "all_classes")}
    (item,) = load_longbench(write_rows(tmp_path, ["", row]))
    assert (item.id, item.length, item.language) == ("hotpotqa-2", None, None)


@pytest.mark.parametrize("line, message", [
    ('{"dataset": "hotpotqa", ', r"line 2: not valid JSON"),
    ({k: v for k, v in HOTPOT.items() if k != "answers"}, r"line 2: missing field 'answers' \(fields present: "),
    ({**HOTPOT, "answers": "Oslo"}, r"line 2: 'answers' must be a list of strings, got 'Oslo'"),
    ({**HOTPOT, "answers": []}, r"line 2: 'answers' must be a non-empty list of strings, got \[\]"),
    ({**HOTPOT, "answers": ["Oslo", 3]}, r"line 2: 'answers' must be a list of strings"),
    ({**HOTPOT, "dataset": "gov_report"},
     r"line 2: dataset 'gov_report' has no prompt template; use one of narrativeqa, qasper, .*, doc-fewshot or filter"),
    ({**HOTPOT, "context": None}, r"line 2: 'context' must be a string, got NoneType"),
    ({**TREC, "all_classes": None}, r"line 2: trec items need 'all_classes'"),
    ({**HOTPOT, "length": "6"}, r"line 2: 'length' must be a whole number or null, got '6'"),
])
def test_bad_rows_name_the_line(tmp_path: Path, line: Any, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        load_longbench(write_rows(tmp_path, [HOTPOT, line]))
    assert "\n" not in str(err.value)


def test_missing_empty_and_unknown_filter(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.jsonl does not exist; pass a JSONL file"):
        load_longbench(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"has no items; pass a file with at least one item$"):
        load_longbench(write_rows(tmp_path, []))
    with pytest.raises(DataError, match=r"has no items for datasets lsht \(it has hotpotqa\)"):
        load_longbench(write_rows(tmp_path, [HOTPOT]), datasets=["lsht"])
    with pytest.raises(DataError, match=r"^LongBench datasets squad have no prompt template; choose from narrativeqa"):
        load_longbench(write_rows(tmp_path, [HOTPOT]), datasets=["squad", "trec"])


def test_load_qa_keeps_the_prompt(tmp_path: Path) -> None:
    path = write_rows(tmp_path, [{"prompt": "Doc... Q: who? A:", "answer": "Ann", "task": "musique"},
                                 {"prompt": "2+2=", "answer": 4}], name="qa.jsonl")
    items = load_qa(path)
    assert [(e.id, e.dataset, e.prompt, e.answers, e.answer) for e in items] == [
        ("musique-1", "musique", "Doc... Q: who? A:", ("Ann",), "Ann"), ("default-2", "default", "2+2=", ("4",), "4")]
    with pytest.raises(DataError, match=r"line 1: missing field \"answer\""):
        load_qa(write_rows(tmp_path, [{"prompt": "x"}], name="bad.jsonl"))


@pytest.mark.parametrize("max_tokens, expected, cut", [
    (10, "abcdefghij", False),  # exactly at the limit: unchanged (special tokens are not counted)
    (11, "abcdefghij", False),
    (9, "abcdfghij", True),  # first 4, last 5
    (4, "abij", True),
    (5, "abhij", True),  # odd: the extra token goes to the end
    (1, "j", True),
])
def test_truncate_middle_at_exact_counts(max_tokens: int, expected: str, cut: bool) -> None:
    tok = char_tokenizer()
    text, was_cut = truncate_middle(tok, "abcdefghij", max_tokens)
    assert (text, was_cut) == (expected, cut)
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == min(10, max_tokens)


@pytest.mark.parametrize("max_tokens", [0, -3, True])
def test_truncate_middle_rejects_bad_limits(max_tokens: int) -> None:
    with pytest.raises(ValueError, match=r"^max_tokens must be a whole number >= 1, got "):
        truncate_middle(char_tokenizer(), "abc", max_tokens)


def test_truncate_examples_and_counts() -> None:
    tok = char_tokenizer()
    items = [LongExample.build("trec", context="c" * 200, input="q", answers=("City",), all_classes=("City",)),
             LongExample.build("musique", context="c", input="q", answers=("a",)),
             LongExample.build("trec", context="c", input="q", answers=("City",), all_classes=("City",))]
    sizes = [len(tok(ex.prompt, add_special_tokens=False)["input_ids"]) for ex in items]
    limit = sizes[1]  # the musique prompt fits exactly, the short trec one too; the long trec one does not
    assert sizes[2] < limit < sizes[0]
    cut, flags = truncate_examples(tok, items, limit)
    assert flags == [True, False, False]
    assert cut[1:] == items[1:]
    assert cut[0].prompt == truncate_middle(tok, items[0].prompt, limit)[0]
    assert cut[0].prompt.startswith("Say which type") and cut[0].prompt.endswith("cc\nq")
    # at most: this tokenizer reads a run of newlines as one <unk>, which decoding drops
    assert len(tok(cut[0].prompt, add_special_tokens=False)["input_ids"]) <= limit
    assert truncated_counts(items, flags) == {"musique": 0, "trec": 1}
    with pytest.raises(ValueError, match=r"examples and flags differ in length \(3 vs 2\)"):
        truncated_counts(items, flags[:2])


def test_laser_bon_on_longbench_files_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from laser_app.commands import app
    from tests.laser_app.tiny_setup import build_tiny_setup

    tiny = build_tiny_setup(tmp_path / "tiny")
    facts = " ".join(f"Fact {i}: Ada lives in city {i}." for i in range(40))  # longer than the tiny window
    rows = [{"_id": f"h{i}", "dataset": "hotpotqa", "context": facts, "input": f"Where is fact {i}?",
             "answers": [f"city {i}", f"in city {i}"], "length": 400, "language": "en", "all_classes": None}
            for i in range(3)]
    rows += [{"_id": "t0", "dataset": "trec", "context": "Q: Who? Type: Human", "input": "What is 2+2?",
              "answers": ["Number"], "length": 10, "language": "en", "all_classes": ["Human", "Number"]}]
    path = write_rows(tmp_path, rows)
    out = tmp_path / "bon"
    args = ["bon", "--model", str(tiny["policy"]), "--rm-registry", str(tiny["registry"]), "--longbench",
            str(path), "--policy", "linucb", "--n-responses", "3", "--max-new-tokens", "6", "--context", "hash",
            "--batch-size", "2", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["longbench"]["truncated"] == {"hotpotqa": 3, "trec": 0}  # 256 positions - 6 new tokens
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["hotpotqa", "trec"] and metrics["prompts"] == 4
    for key in ("f1", "em"):
        assert set(metrics[key]) == {"hotpotqa", "trec", "mean"}
        assert all(0 <= v <= 1 for v in metrics[key].values())
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(len(e["em"]) for e in events) == 4
    # pass@n bounds the chosen answer's F1; one RM scores the 3 samples of each prompt
    assert all(o >= f for e in events for o, f in zip(e["oracle_f1"], e["f1"], strict=True))
    assert metrics["rm_passes_per_prompt"] == 3.0 and metrics["oracle_f1"]["mean"] >= metrics["f1"]["mean"]
    assert "exact match" in result.stdout

    bad = write_rows(tmp_path, [{**rows[0], "dataset": "nosuchset"}], name="bad.jsonl")
    result = CliRunner().invoke(app, [*args[:6], str(bad), *args[7:-3], "--out", str(tmp_path / "bad"),
                                      "--no-progress"])
    assert result.exit_code == 2 and "nosuchset" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
