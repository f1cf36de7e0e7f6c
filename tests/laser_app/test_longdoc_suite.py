"""The built-in long-document suite: its generators' answers, splits and tokenizer; a tiny build; laser bon and
laser bon --compare on it end to end; bad input."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laser_app.commands import app
from laser_app.longbench import load_longbench
from laser_app.qa_metrics import exact_match_prediction, score_prediction
from laser_app.world.longdoc import RELATIONS, SUBSETS, make_suite, suite_tokenizer, write_suite
from laser_app.world.suite import RM_FOR_SUBSET, build_suite, load_suite

_VALUE = {r: re.compile(sentence.format(p=r"\w+", v=r"(\w+ \w+)").replace(".", r"\.")) for r, (_, _, sentence, _)
          in RELATIONS.items()}


def _relation(question: str) -> str:
    return next(r for r, spec in RELATIONS.items() if f"which {spec[3]} " in question)


def _mentions(text: str, relation: str) -> list[str]:
    return _VALUE[relation].findall(text)


@pytest.fixture(scope="module")
def items() -> dict[str, list[object]]:
    return make_suite(3, {"test": 40, "dev": 20})


def test_answers_are_what_the_documents_say(items: dict[str, list[object]]) -> None:
    for ex in items["test"]:
        relation = _relation(ex.input)  # type: ignore[attr-defined]
        context, answer = ex.context, ex.answers[0]  # type: ignore[attr-defined]
        if ex.dataset == "doc-single":  # type: ignore[attr-defined]
            counts = Counter(_mentions(context, relation)).most_common()
            assert counts[0][0] == answer and counts[0][1] > counts[1][1]
        elif ex.dataset == "doc-multi":  # type: ignore[attr-defined]
            passages = Counter(v for line in context.split("\n") for v in set(_mentions(line, relation)))
            ranked = passages.most_common()
            assert ranked[0][0] == answer and ranked[0][1] > ranked[1][1]
            mentions = Counter(_mentions(context, relation))
            assert max(mentions.values()) > mentions[answer]  # counting mentions picks a near miss instead
        else:  # few-shot: the last document's most named value; the example's answer is its own
            *shots, last = context.split("document : ")[1:]
            counts = Counter(_mentions(last, relation)).most_common()
            assert counts[0][0] == answer and counts[0][1] > counts[1][1]
            assert Counter(_mentions(context, relation)).most_common()[0][0] != answer  # the whole context misleads
            for shot in shots:
                doc, _, shot_answer = shot.strip().rpartition("answer : ")
                assert Counter(_mentions(doc, _relation(doc))).most_common()[0][0] == shot_answer
        assert len(answer.split()) == 2


def test_near_misses_share_a_word_and_f1_differs_from_em(items: dict[str, list[object]]) -> None:
    ex = next(e for e in items["test"] if e.dataset == "doc-single")  # type: ignore[attr-defined]
    relation = _relation(ex.input)  # type: ignore[attr-defined]
    runner_up = Counter(_mentions(ex.context, relation)).most_common()[1][0]  # type: ignore[attr-defined]
    assert set(runner_up.split()) & set(ex.answers[0].split())  # type: ignore[attr-defined]
    assert score_prediction("doc-single", runner_up, ex.answers) == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert exact_match_prediction("doc-single", runner_up, ex.answers) == 0.0  # type: ignore[attr-defined]
    # few-shot: only the first line counts
    assert score_prediction("doc-fewshot", "grey owl\nquestion : which", ["grey owl"]) == 1.0


def test_splits_are_disjoint_seeded_and_balanced(items: dict[str, list[object]]) -> None:
    test, dev = ({e.prompt for e in items[s]} for s in ("test", "dev"))  # type: ignore[attr-defined]
    assert not test & dev
    assert Counter(e.dataset for e in items["test"]) == dict.fromkeys(SUBSETS, 40)  # type: ignore[attr-defined]
    again = make_suite(3, {"test": 40})["test"]
    assert [e.prompt for e in again] == [e.prompt for e in items["test"]]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown subset 'doc-x'"):
        make_suite(0, {"test": 1}, subsets=["doc-x"])


def test_tokenizer_covers_the_suite_and_documents_outgrow_the_window(items: dict[str, list[object]]) -> None:
    tok = suite_tokenizer()
    lengths = []
    for ex in items["test"]:
        ids = tok(ex.prompt + " " + ex.answers[0])["input_ids"]  # type: ignore[attr-defined]
        assert tok.unk_token_id not in ids
        lengths.append(len(ids))
    assert max(lengths) > 256 > min(lengths)  # some are cut to fit a 256-token window, most are not


def test_written_suite_reads_back_as_longbench(tmp_path: Path, items: dict[str, list[object]]) -> None:
    path = write_suite(items["dev"], tmp_path / "dev.jsonl")  # type: ignore[arg-type]
    back = load_longbench(path)
    assert [(e.prompt, e.answers, e.dataset) for e in back] == \
        [(e.prompt, e.answers, e.dataset) for e in items["dev"]]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("suite-cache")
    build_suite(cache, seed=0, scale=0.02, progress=False)
    return cache


def test_tiny_build_is_complete_and_cached(tiny_suite: Path) -> None:
    suite = load_suite(tiny_suite, seed=0, scale=0.02, build=False)
    meta = suite.meta
    assert meta["complete"] and meta["rm_for_task"] == RM_FOR_SUBSET
    assert set(meta["dev_f1"]["greedy"]) == set(SUBSETS)
    for name in RM_FOR_SUBSET.values():
        assert (suite.path / "rms" / name / "config.json").is_file()
        assert f"[rms.{name}]" in suite.registry_file.read_text()
    assert {e.dataset for e in suite.data["test"]} == set(SUBSETS)
    with pytest.raises(FileNotFoundError, match="laser world build --suite"):
        load_suite(tiny_suite, seed=1, scale=0.02, build=False)


def _bon(cache: Path, out: Path, *extra: str) -> list[str]:
    return ["bon", "--suite", "longbench", "--cache-dir", str(cache), "--world-scale", "0.02", "--eval-size", "2",
            "--n-responses", "2", "--batch-size", "4", "--out", str(out), "--no-progress", *extra]


def test_laser_bon_on_the_suite_end_to_end(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "bon"
    result = CliRunner().invoke(app, _bon(tiny_suite, out, "--policy", "linucb"))
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == sorted(SUBSETS) and metrics["prompts"] == 6
    assert set(metrics["f1"]) == {*SUBSETS, "mean"} and metrics["rm_passes_per_prompt"] == 2.0
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["longbench"]["max_prompt_tokens"] < 256 and resolved["rm_for_task"] == RM_FOR_SUBSET
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert {rm for e in events for rm in e["rms"]} <= set(RM_FOR_SUBSET.values())


def test_laser_bon_compare_on_the_suite(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = _bon(tiny_suite, out, "--compare", "--seeds", "2", "--methods",
                "greedy,fixed:rm-single,ensemble-score,linucb,linucb[mab_reward=gold]")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads((out / "bon_compare.json").read_text())
    rows = data["methods"]
    assert list(rows) == ["greedy", "fixed:rm-single", "ensemble-score", "linucb", "linucb[mab_reward=gold]",
                          "pass@n"]
    assert rows["greedy"]["units"] == ["w0s0"] and rows["linucb"]["units"] == ["w0s0", "w0s1"]
    assert rows["ensemble-score"]["rm_passes"] == 6.0 and rows["linucb"]["rm_passes"] == 2.0
    assert rows["linucb[mab_reward=gold]"]["labels"] == "references (oracle-only)"
    assert rows["pass@n"]["labels"] == "references (oracle-only)"
    for method in ("fixed:rm-single", "linucb"):  # pass@n bounds every picker, seed by seed
        for pick, best in zip(rows[method]["f1"]["mean"]["values"], rows["pass@n"]["f1"]["mean"]["values"],
                              strict=True):
            assert pick <= best + 1e-9
    for name in ("bon_compare.csv", "bon_compare.md", "bon_compare.png"):
        assert (out / name).is_file()
    assert "Mean F1 minus ensemble-score" in (out / "bon_compare.md").read_text()
    # finished runs are kept: a second call reruns nothing and gives the same table
    done = out / "runs" / "world0" / "linucb" / "seed1" / "metrics.json"
    stamp = done.stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and done.stat().st_mtime_ns == stamp
    report = CliRunner().invoke(app, ["report", str(out), "--no-plots"])
    assert report.exit_code == 0 and "pass@n" in report.stdout


@pytest.mark.parametrize("extra, message", [
    (["--suite", "nosuch"], "unknown suite 'nosuch'"),
    (["--datasets", "doc-single,hotpotqa"], "unknown dataset 'hotpotqa' in --suite longbench"),
    (["--rms", "rm-single,rm-x"], "unknown RM 'rm-x'"),
    (["--n-responses", "0"], "n_responses"),
    (["--compare", "--methods", "greedy,nosuch"], "unknown method"),
    (["--compare", "--seeds", "0"], "--seeds must be >= 1"),
    (["--data", "x.jsonl"], "--suite and --data both name the prompts"),
    (["--split", "train"], "--split must be test or dev"),
    (["--compare", "--world-seeds", "0,x"], "--world-seeds '0,x': expected integers >= 0"),
    (["--compare", "--world-seeds", "0,0"], "--world-seeds must be distinct"),
])
def test_bad_input_is_one_line(tiny_suite: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    args = _bon(tiny_suite, tmp_path / "out")
    if "--suite" in extra:
        args = [a for i, a in enumerate(args) if a != "--suite" and (i == 0 or args[i - 1] != "--suite")]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.output, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()
