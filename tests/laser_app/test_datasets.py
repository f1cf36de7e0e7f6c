"""Loading ``--data`` beyond JSONL: JSON, CSV, Parquet, saved ``datasets`` folders and hub ids; column mapping,
answer cleaning and conversational rows, each with its one-line error. Nothing here touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from laser_app.data import load_examples, messages_of, render_plain
from laser_app.data_sources import parse_hub_spec
from laser_app.errors import DataError
from laser_app.world.tasks import Example

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2="},
                {"role": "assistant", "content": "4"}]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, rows: Any) -> Path:
    return write(path, json.dumps(rows))


def datasets_module() -> Any:
    return pytest.importorskip("datasets")


def triples(rows: list[Example]) -> list[tuple[str, str | None, str]]:
    return [(r.prompt, r.answer, r.task) for r in rows]


# ------------------------------------------------------------------------------------------------- sources
def test_csv_keeps_text_and_reads_blank_cells_as_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "prompt,answer,task\n\"Say 007, please\",007,spy\nSky blue?,,\n")
    assert triples(load_examples(path)) == [("Say 007, please", "007", "spy"), ("Sky blue?", None, "default")]


def test_parquet_with_numbers_as_answers(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    datasets_module().Dataset.from_list([{"prompt": "2+2=", "answer": 4}, {"prompt": "3*3=", "answer": 9}]
                                        ).to_parquet(str(path))
    assert triples(load_examples(path)) == [("2+2=", "4", "default"), ("3*3=", "9", "default")]


def test_json_array_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    array = write_json(tmp_path / "a.json", [{"prompt": "a", "answer": 1.5, "task": "t"}, {"prompt": "b"}])
    assert triples(load_examples(array)) == [("a", "1.5", "t"), ("b", None, "default")]
    lines = write(tmp_path / "l.json", '{"prompt": "a"}\n\n{"prompt": "b", "answer": "x"}\n')
    assert triples(load_examples(lines)) == [("a", None, "default"), ("b", "x", "default")]


def test_saved_dataset_folder(tmp_path: Path) -> None:
    datasets_module().Dataset.from_list([{"prompt": "p1", "answer": "a1"}]).save_to_disk(str(tmp_path / "ds"))
    assert triples(load_examples(tmp_path / "ds")) == [("p1", "a1", "default")]
    with pytest.raises(DataError, match=r"ds is one dataset without splits; drop ':test'$"):
        load_examples(f"{tmp_path / 'ds'}:test")


def test_saved_dataset_dict_folder_with_a_split(tmp_path: Path) -> None:
    datasets = datasets_module()
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "tr"}]),
                          "test": datasets.Dataset.from_list([{"prompt": "te", "answer": "1"}])}
                         ).save_to_disk(str(folder))
    assert triples(load_examples(f"{folder}:test")) == [("te", "1", "default")]
    assert triples(load_examples(folder)) == [("tr", None, "default")]  # train by default
    with pytest.raises(DataError, match=r"data file .*dd has no split 'dev' \(splits: test, train\); "
                                        r"pass .*dd:SPLIT with one of them$"):
        load_examples(f"{folder}:dev")
    with pytest.raises(DataError, match=r"eval data file .*dd:train has no column 'answer' \(columns: prompt\)"):
        load_examples(folder, require_answers=True, what="eval data file")


def test_dataset_dict_without_train_needs_a_split(tmp_path: Path) -> None:
    datasets = datasets_module()
    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"prompt": "x"}])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"dd has splits test and no 'train'; pick one with .*dd:SPLIT$"):
        load_examples(tmp_path / "dd")


def test_folder_that_is_not_a_saved_dataset(tmp_path: Path) -> None:
    datasets_module()
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"plain is a folder but not a saved dataset \(.*\); pass a data file"):
        load_examples(tmp_path / "plain")


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '[{"prompt": "a"},', r"bad.json: not valid JSON \(.* at line 1 column \d+\)"),
    ("bad.json", '[{"prompt": "a"}, 3]', r"bad.json row 2: expected a JSON object like"),
    ("empty.json", "[]", r"empty.json has no rows; write a JSON array with at least one"),
    ("empty.csv", "", r"empty.csv has no rows; write a header line and at least one row"),
    ("head.csv", "prompt,answer\n", r"head.csv has no rows"),
    ("bad.parquet", "not parquet", r"bad.parquet is not a readable Parquet file \(.*\); write it with"),
])
def test_bad_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    with pytest.raises(DataError, match=message):
        load_examples(write(tmp_path / name, text))


@pytest.mark.parametrize("missing", ["nope.csv", "no/such/dir/d.parquet", "nope.json"])
def test_missing_paths_keep_the_does_not_exist_message(tmp_path: Path, missing: str) -> None:
    with pytest.raises(DataError, match=r"does not exist; pass a JSONL file"):
        load_examples(tmp_path / missing)


# ------------------------------------------------------------------------------------------------- hub ids
@pytest.mark.parametrize("spec, parsed", [
    ("gsm8k", ("gsm8k", None, None)),
    ("gsm8k:main", ("gsm8k", "main", None)),
    ("gsm8k:main:train", ("gsm8k", "main", "train")),
    ("openai/gsm8k:main:test", ("openai/gsm8k", "main", "test")),
    ("imdb:test", ("imdb", None, "test")),
    ("imdb::train[:10]", ("imdb", None, "train[:10]")),
    ("imdb:train[:10]", ("imdb", None, "train[:10]")),
    ("d.jsonl", None), ("a/b/c", None), ("/abs/x", None), ("x:y:z:w", None), ("data.csv:train", None),
])
def test_parse_hub_spec(spec: str, parsed: tuple[str, str | None, str | None] | None) -> None:
    assert parse_hub_spec(spec) == parsed


def test_hub_id_is_loaded_with_name_config_and_split(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = datasets_module()
    calls: list[tuple[Any, ...]] = []

    def fake(name: str, config: str | None, split: str | None = None) -> Any:
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"question": "q", "answer": "Think. #### 1,024"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    rows = load_examples("openai/gsm8k:main:test", prompt_column="question", answer_format="gsm8k")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert triples(rows) == [("q", "1024", "default")]


def test_hub_dataset_dict_defaults_to_train(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = datasets_module()
    loaded = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "tr"}]),
                                   "test": datasets.Dataset.from_list([{"prompt": "te"}])})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split=None: loaded)
    assert [r.prompt for r in load_examples("someone/data")] == ["tr"]


def test_unloadable_hub_id_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = datasets_module()

    def offline(name: str, config: str | None, split: str | None = None) -> Any:
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_examples("gsm8k:main:train")
    assert str(info.value) == (
        "data file 'gsm8k:main:train' is neither a local file/folder nor a loadable hub dataset (ConnectionError: "
        "Couldn't reach 'gsm8k' on the Hub (LocalEntryNotFoundError)); check the id or pass a local file")


def test_real_hub_call_offline_fails_fast(tmp_path: Path) -> None:
    datasets_module()
    code = ("from laser_app.data import load_examples\n"
            "try:\n    load_examples('laser-test-nonexistent-org/no-such-dataset-zz:train')\n"
            "except Exception as err:\n    print(type(err).__name__, err)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("the offline hub call did not fail fast here")
    assert done.stdout.startswith("DataError data file 'laser-test-nonexistent-org/no-such-dataset-zz:train' "
                                  "is neither a local file/folder nor a loadable hub dataset ("), done.stdout
    assert done.stdout.rstrip().endswith("); check the id or pass a local file")
    assert done.stdout.count("\n") == 1


# ------------------------------------------------------------------------------------------ columns, answers
def test_column_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "question,final,kind\nHow many?,12,math\n")
    rows = load_examples(path, prompt_column="question", answer_column="final", task_column="kind")
    assert triples(rows) == [("How many?", "12", "math")]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt_column": "question"},
     r"^data file .*d.csv has no column 'question' \(columns: input, target\); pass --prompt-column with one"),
    ({"prompt_column": "input", "answer_column": "final"},
     r"has no column 'final' \(columns: input, target\); pass --answer-column with one of them$"),
    ({"prompt_column": "input", "task_column": "kind"}, r"has no column 'kind' .*; pass --task-column"),
    ({}, r"has no column 'prompt' \(columns: input, target\); pass --prompt-column with one of them$"),
])
def test_missing_column_names_the_columns(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    path = write(tmp_path / "d.csv", "input,target\nq,1\n")
    with pytest.raises(DataError, match=message):
        load_examples(path, **kwargs)


def test_missing_column_in_json_rows_and_for_evaluation(tmp_path: Path) -> None:
    rows = write_json(tmp_path / "d.json", [{"prompt": "a", "target": "1"}, {"prompt": "b"}])
    with pytest.raises(DataError, match=r"d.json has no column 'final' \(columns: prompt, target\); "
                                        r"pass --answer-column"):
        load_examples(rows, answer_column="final")
    table = write(tmp_path / "e.csv", "prompt,target\nq,1\n")
    with pytest.raises(DataError, match=r"eval data file .*e.csv has no column 'answer' \(columns: prompt, target\)"):
        load_examples(table, require_answers=True, what="eval data file")


@pytest.mark.parametrize("answer, fmt, cleaned", [
    ("She has 3 + 4 = 7 eggs.\n#### 7", "gsm8k", "7"),
    ("#### 5 then #### -1,250.5", "gsm8k", "-1250.5"),
    ("so $18.", "none", "so $18."),
    ("first \\boxed{1}, finally \\boxed{\\frac{1}{2}}.", "boxed", "\\frac{1}{2}"),
])
def test_answer_formats(tmp_path: Path, answer: str, fmt: str, cleaned: str) -> None:
    path = write_json(tmp_path / "d.json", [{"prompt": "q", "answer": answer}])
    assert load_examples(path, answer_format=fmt)[0].answer == cleaned


@pytest.mark.parametrize("answer, fmt, message", [
    ("just 7", "gsm8k", r"row 1: answer 'just 7' has no answer after \"####\" \(answer format gsm8k\); fix the "
                        r"row or pass --answer-format none$"),
    ("####  ", "gsm8k", r"has no answer after \"####\""),
    ("\\boxed{1", "boxed", r"row 1: answer '\\\\boxed\{1' has no complete \\boxed\{...\} \(answer format boxed\)"),
])
def test_answers_that_do_not_fit_the_format(tmp_path: Path, answer: str, fmt: str, message: str) -> None:
    path = write_json(tmp_path / "d.json", [{"prompt": "q", "answer": answer}])
    with pytest.raises(DataError, match=message):
        load_examples(path, answer_format=fmt)


def test_unknown_answer_format(tmp_path: Path) -> None:
    path = write_json(tmp_path / "d.json", [{"prompt": "q"}])
    with pytest.raises(DataError, match=r"^answer format 'latex' is unknown; pass --answer-format with one of "
                                        r"none, gsm8k, boxed$"):
        load_examples(path, answer_format="latex")


# ------------------------------------------------------------------------------------------- conversations
def test_render_plain() -> None:
    assert render_plain([{"role": "user", "content": "Hi"}]) == "Hi"
    assert render_plain(CONVERSATION[:2]) == "System: Be brief.\n\nUser: 2+2="


def test_prompt_as_a_list_of_messages(tmp_path: Path) -> None:
    path = write_json(tmp_path / "d.json", [
        {"prompt": [{"role": "user", "content": "Hi"}], "answer": "hello"},
        {"prompt": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
                    {"role": "user", "content": "3?"}]}])
    single, turns = load_examples(path)
    assert (single.prompt, single.answer, single.messages) == ("Hi", "hello", ({"role": "user", "content": "Hi"},))
    assert turns.prompt == "User: 1\n\nAssistant: 2\n\nUser: 3?"
    assert turns.messages is not None and [m["role"] for m in turns.messages] == ["user", "assistant", "user"]
    assert messages_of(turns) == turns.messages and messages_of(Example("plain")) is None


def test_messages_end_the_prompt_at_the_last_user_turn(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", json.dumps({"messages": CONVERSATION}) + "\n"
                 + json.dumps({"messages": CONVERSATION, "answer": "four"}) + "\n")
    from_reply, from_column = load_examples(path, require_answers=True)
    assert from_reply.prompt == "System: Be brief.\n\nUser: 2+2="
    assert from_reply.messages == tuple(CONVERSATION[:2])
    assert (from_reply.answer, from_column.answer) == ("4", "four")


def test_messages_in_a_saved_dataset(tmp_path: Path) -> None:
    datasets = datasets_module()
    gsm = [*CONVERSATION[:2], {"role": "assistant", "content": "2 and 2 make 4.\n#### 4"}]
    datasets.Dataset.from_list([{"messages": gsm, "task": "math"}]).save_to_disk(str(tmp_path / "ds"))
    (row,) = load_examples(tmp_path / "ds", answer_format="gsm8k", require_answers=True)
    assert (row.prompt, row.answer, row.task, row.messages) == (
        "System: Be brief.\n\nUser: 2+2=", "4", "math", tuple(CONVERSATION[:2]))


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
     r"line 1: \"messages\" has no user turn; add a \{\"role\": \"user\", \"content\": ...\} message"),
    ({"messages": [{"content": "hi"}]},
     r"line 1: message 1 of \"messages\" needs a string \"role\" and \"content\", got \{'content': 'hi'\}; "
     r"write each turn as"),
    ({"messages": [{"role": "user", "content": 5}]}, r"message 1 of \"messages\" needs a string \"role\""),
    ({"messages": [{"role": "user", "content": "a"}, "b"]}, r"message 2 of \"messages\" needs a string"),
    ({"messages": [{"role": "tool", "content": "x"}]},
     r"line 1: message 1 of \"messages\" has unknown role 'tool'; use one of system, user, assistant$"),
    ({"messages": "hi"}, r"line 1: \"messages\" must be a non-empty list of \{\"role\": ..., \"content\": ...\}"),
    ({"messages": []}, r"\"messages\" must be a non-empty list"),
    ({"messages": [{"role": "user", "content": "  "}]}, r"the last user message of \"messages\" is empty"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     r"line 1: a \"prompt\" conversation must end with the user's turn; move later turns to \"answer\""),
    ({"prompt": [{"role": "system", "content": "s"}]}, r"\"prompt\" has no user turn"),
])
def test_bad_conversations(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    path = write(tmp_path / "d.jsonl", json.dumps(row) + "\n")
    with pytest.raises(DataError, match=message) as info:
        load_examples(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_evaluation_messages_need_an_answer(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", json.dumps({"messages": CONVERSATION[:2]}) + "\n")
    assert load_examples(path)[0].answer is None
    with pytest.raises(DataError, match=r"e.jsonl line 1: missing field \"answer\" and no assistant message after "
                                        r"the last user turn \(evaluation data needs a reference answer per row\)"):
        load_examples(path, require_answers=True)


def test_conversational_examples_stay_hashable() -> None:
    a = Example("Hi", messages=({"role": "user", "content": "Hi"},))
    assert hash(a) == hash(Example("Hi")) and a != Example("Hi")
    assert a == Example("Hi", messages=({"role": "user", "content": "Hi"},))
