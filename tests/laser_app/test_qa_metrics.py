"""LongBench's answer scores: F1/EM against hand-computed cases, the first-line rule, classification with its
label set, the Chinese variant, and the percentages of :func:`summarize_scores`."""

from __future__ import annotations

import sys

import pytest

from laser_app.errors import DataError
from laser_app.longbench import SUBSETS
from laser_app.qa_metrics import (
    DATASET_METRIC,
    FIRST_LINE_DATASETS,
    best_over_references,
    classification_accuracy,
    exact_match,
    exact_match_prediction,
    first_line,
    normalize_answer,
    normalize_answer_zh,
    score_prediction,
    summarize_scores,
    token_f1,
    token_f1_zh,
)

TREC = ["City", "Country", "Other location", "location"]


@pytest.mark.parametrize("text, expected", [
    ("The Cat.", "cat"),
    ("an apple, a pear & the plum!", "apple pear plum"),
    ("Theater anna Atlas", "theater anna atlas"),  # articles only as whole words
    ("  U.S.  army\n\tbase ", "us army base"),
    ("", ""),
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, reference, expected", [
    ("The quick, brown fox!", "quick fox jumps", 2 / 3),  # 2 shared of 3 each
    ("red red blue", "red blue blue", 2 / 3),  # shared counts are clipped per token
    ("Paris", "paris.", 1.0),
    ("the cat sat", "The cat", 2 / 3),  # "the" dropped: 1 shared, P = 1/2, R = 1
    ("dog", "cat", 0.0),
    ("", "cat", 0.0),  # empty prediction
    ("cat", "", 0.0),
    ("", "", 1.0),  # both empty: SQuAD v2's rule
    ("The.", "a", 1.0),  # both normalize to nothing
])
def test_token_f1_hand_computed(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, reference, expected", [
    ("The Beatles!", "beatles", 1.0), ("BEATLES", "the beatles", 1.0), ("Beatles band", "beatles", 0.0),
    ("", "", 1.0), ("", "beatles", 0.0),
])
def test_exact_match(prediction: str, reference: str, expected: float) -> None:
    assert exact_match(prediction, reference) == expected


def test_best_over_references_takes_the_max() -> None:
    assert best_over_references(token_f1, "blue whale", ["dog", "whale", "the blue whale"]) == 1.0
    assert best_over_references(token_f1, "blue whale", ["dog", "whale"]) == pytest.approx(2 / 3)


def test_best_over_references_rejects_empty_and_bare_strings() -> None:
    with pytest.raises(ValueError, match=r"^references is empty; pass at least one reference answer$"):
        best_over_references(token_f1, "x", [])
    with pytest.raises(TypeError, match=r"must be a list of strings, got the string 'x'; wrap it in a list"):
        best_over_references(token_f1, "x", "x")


@pytest.mark.parametrize("prediction, expected", [
    ("Paris", "Paris"), ("\n\nParis\nQuestion: where?", "Paris"), ("Paris is\nnice", "Paris is"), ("", ""),
])
def test_first_line(prediction: str, expected: str) -> None:
    assert first_line(prediction) == expected


def test_first_line_rule_applies_to_few_shot_datasets_only() -> None:
    prediction, refs = "\nParis\nQuestion: capital of Peru?", ["Paris"]
    assert score_prediction("triviaqa", prediction, refs) == 1.0
    # hotpotqa scores every line: tokens paris, question, capital, of, peru -> P = 1/5, R = 1
    assert score_prediction("hotpotqa", prediction, refs) == pytest.approx(2 * 0.2 / 1.2)
    assert exact_match_prediction("triviaqa", prediction, refs) == 1.0
    assert exact_match_prediction("hotpotqa", prediction, refs) == 0.0


def test_few_shot_datasets_match_longbench_subset() -> None:
    assert set(SUBSETS["few-shot"]) | {"doc-fewshot"} == FIRST_LINE_DATASETS  # and the built-in suite's
    assert {d for names in SUBSETS.values() for d in names} <= DATASET_METRIC.keys()


@pytest.mark.parametrize("prediction, reference, expected", [
    ("City", "City", 1.0),
    ("City or Country", "City", 0.5),  # two labels named: credit split
    ("Country", "City", 0.0),
    ("city", "City", 0.0),  # labels match case-sensitively
    ("Other location", "Other location", 1.0),  # "location" only as part of the reference: not counted
    ("Other location", "location", 0.5),  # here both labels count
    ("no label at all", "City", 0.0),
])
def test_classification_accuracy(prediction: str, reference: str, expected: float) -> None:
    assert classification_accuracy(prediction, reference, TREC) == pytest.approx(expected)


def test_classification_through_score_prediction() -> None:
    assert score_prediction("trec", "City\nQuestion: Country?", ["City"], TREC) == 1.0  # first line only
    assert score_prediction("lsht", "体育\n新闻：财经", ["体育"], ["体育", "财经"]) == 1.0
    with pytest.raises(ValueError, match=r"dataset 'trec' is scored by classification and needs its label set"):
        score_prediction("trec", "City", ["City"])


@pytest.mark.parametrize("dataset, metric", [
    ("dureader", "rouge_zh"), ("samsum", "rouge"), ("gov_report", "rouge"), ("lcc", "code_sim"),
    ("passage_count", "count"),
])
def test_unsupported_metrics_name_the_dataset(dataset: str, metric: str) -> None:
    message = rf"^dataset '{dataset}' is scored with {metric}, which is not supported yet; use a dataset scored"
    with pytest.raises(ValueError, match=message):
        score_prediction(dataset, "x", ["x"])
    with pytest.raises(ValueError, match=message):
        exact_match_prediction(dataset, "x", ["x"])


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^unknown LongBench dataset 'squad'; use one of narrativeqa, qasper"):
        score_prediction("squad", "x", ["x"])


def test_scores_stay_in_the_unit_interval() -> None:
    cases = [("hotpotqa", "a b c the", ["b c d e"], None), ("trec", "City Country", ["City"], TREC),
             ("musique", "", ["x"], None)]
    for dataset, prediction, refs, classes in cases:
        assert 0.0 <= score_prediction(dataset, prediction, refs, classes) <= 1.0


def test_normalize_answer_zh() -> None:
    assert normalize_answer_zh("北京，是 首都！「好」") == "北京是首都好"
    assert normalize_answer_zh("＄１００。\tAB.") == "１００ab"  # full-width symbol dropped, digits kept


def test_token_f1_zh_hand_computed() -> None:
    pytest.importorskip("jieba")
    assert token_f1_zh("我爱北京。", "我爱北京") == 1.0
    assert token_f1_zh("我爱北京", "我爱上海") == pytest.approx(2 / 3)  # 我 爱 shared of 3 words each
    assert token_f1_zh("北京是中国的首都", "首都是北京") == pytest.approx(0.75)  # 3 shared: P 3/5, R 1
    assert token_f1_zh("", "北京") == 0.0
    assert score_prediction("multifieldqa_zh", "我爱上海", ["北京", "我爱上海！"]) == 1.0
    assert exact_match_prediction("multifieldqa_zh", "我爱 上海。", ["我爱上海"]) == 1.0


def test_token_f1_zh_without_jieba_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jieba", None)  # makes `import jieba` raise ImportError
    with pytest.raises(DataError, match=r"jieba, which is not installed; pip install jieba$"):
        token_f1_zh("北京", "北京")


def test_summarize_scores_percentages() -> None:
    rows = [{"dataset": "trec", "score": 1.0, "em": 1.0}, {"dataset": "trec", "score": 0.5, "em": 0.0},
            {"dataset": "hotpotqa", "score": 0.2, "em": 0.0}, {"dataset": "hotpotqa", "score": 0.3, "em": 1.0},
            {"dataset": "hotpotqa", "score": 0.1, "em": 0.0}, {"dataset": "musique", "score": 0.0, "em": 0.0}]
    out = summarize_scores(rows, subsets=SUBSETS)
    assert out["datasets"] == {"hotpotqa": {"n": 3, "score": 20.0, "em": 33.33},
                               "musique": {"n": 1, "score": 0.0, "em": 0.0},
                               "trec": {"n": 2, "score": 75.0, "em": 50.0}}
    # overall: unweighted over datasets, not rows ((20 + 0 + 75) / 3, (33.3 + 0 + 50) / 3)
    assert out["overall"] == {"datasets": 3, "n": 6, "score": 31.67, "em": 27.78}
    assert out["subsets"] == {"multi-doc": {"datasets": 2, "score": 10.0, "em": 16.67},
                              "few-shot": {"datasets": 1, "score": 75.0, "em": 50.0}}
    assert out["overall_by_subset"] == {"score": 42.5, "em": 33.33}
    assert "subsets" not in summarize_scores(rows)


@pytest.mark.parametrize("rows, message", [
    ([], r"^no score rows to summarize"),
    ([{"score": 1.0, "em": 1.0}], r"^score row 0 has no \"dataset\" name"),
    ([{"dataset": "trec", "score": 1.5, "em": 1.0}], r"^score row 0 needs \"score\" as a number in \[0, 1\], got 1.5"),
    ([{"dataset": "trec", "score": 1.0}], r"^score row 0 needs \"em\" as a number in \[0, 1\], got None"),
])
def test_summarize_scores_rejects_bad_rows(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize_scores(rows)
