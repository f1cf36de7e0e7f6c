"""Answer scores for short-answer QA and LongBench's QA and classification datasets.

LongBench's own definitions (``metrics.py`` and ``eval.py`` in THUDM/LongBench), re-implemented here:

- English QA: token F1 over the whitespace tokens of SQuAD-normalized strings (lower-case, ASCII punctuation
  and the words a/an/the removed, whitespace collapsed); :func:`token_f1`. :func:`exact_match` compares the
  normalized strings (SQuAD's EM; LongBench reports no EM).
- Chinese QA: :func:`token_f1_zh` segments with ``jieba`` (``pip install jieba``), then drops Chinese and
  English punctuation and whitespace from each word.
- Classification (trec, lsht): :func:`classification_accuracy`, credit split over the labels the answer names.
- Few-shot datasets (trec, triviaqa, samsum, lsht): only the first line of an answer counts (:func:`first_line`).
- Several references: the best score over them (:func:`best_over_references`).

Conventions where LongBench leaves a choice: when both normalized strings are empty, F1 is 1.0 (SQuAD v2's
rule, so F1 >= EM always; LongBench returns 0.0 there, which only happens when a reference normalizes to
nothing); one side empty gives 0.0. Scores are in [0, 1]; :func:`summarize_scores` reports percentages.

>>> score_prediction("hotpotqa", "The Eiffel Tower.", ["Eiffel Tower", "Paris"])
1.0
>>> score_prediction("triviaqa", "Paris\\nQuestion: next one", ["paris"])
1.0
"""

from __future__ import annotations

import logging
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from laser_app.errors import DataError

#: The metric LongBench scores each of its datasets with.
DATASET_METRIC: dict[str, str] = {
    "narrativeqa": "qa_f1", "qasper": "qa_f1", "multifieldqa_en": "qa_f1", "multifieldqa_zh": "qa_f1_zh",
    "hotpotqa": "qa_f1", "2wikimqa": "qa_f1", "musique": "qa_f1", "dureader": "rouge_zh",
    "gov_report": "rouge", "qmsum": "rouge", "multi_news": "rouge", "vcsum": "rouge_zh",
    "trec": "classification", "triviaqa": "qa_f1", "samsum": "rouge", "lsht": "classification",
    "passage_retrieval_en": "retrieval", "passage_count": "count", "passage_retrieval_zh": "retrieval_zh",
    "lcc": "code_sim", "repobench-p": "code_sim",
    # the built-in long-document suite (laser_app.world.longdoc), scored like LongBench's QA datasets
    "doc-single": "qa_f1", "doc-multi": "qa_f1", "doc-fewshot": "qa_f1",
}
#: Metrics :func:`score_prediction` implements.
SUPPORTED_METRICS = ("qa_f1", "qa_f1_zh", "classification")
#: Datasets whose answers are cut to their first line before scoring (LongBench's few-shot datasets).
FIRST_LINE_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht", "doc-fewshot"})
#: Datasets whose exact match uses the Chinese normalization.
CHINESE_DATASETS = frozenset({"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"})

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)

Metric = Callable[[str, str], float]


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation and the articles a/an/the, collapse whitespace.

    >>> normalize_answer("  The  Cat's  hat, an Apple! ")
    'cats hat apple'
    """
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_answer_zh(text: str) -> str:
    """Lower-case, drop Chinese and English punctuation (including full-width forms) and all whitespace.

    >>> normalize_answer_zh("北京， 是 首都！ A.B")
    '北京是首都ab'
    """
    return "".join(ch for ch in text.lower() if not ch.isspace() and not _is_punctuation(ch))


def _is_punctuation(ch: str) -> bool:
    # Unicode P* covers CJK marks (，。、「」…); full-width symbols such as ＄＋＝ are category S*, so they are
    # mapped to their ASCII twins (U+FF01..U+FF5E sit 0xFEE0 above ASCII).
    if ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P"):
        return True
    return 0xFF01 <= ord(ch) <= 0xFF5E and chr(ord(ch) - 0xFEE0) in _ASCII_PUNCT


def _f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    if not prediction or not reference:
        return float(not prediction and not reference)
    common = sum((Counter(prediction) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 between the normalized strings (see the module docstring for empty strings).

    >>> token_f1("the cat sat", "The cat"), token_f1("", ""), token_f1("", "cat"), token_f1("dog", "cat")
    (0.6666666666666666, 1.0, 0.0, 0.0)
    """
    return _f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0.

    >>> exact_match("The Beatles!", "beatles"), exact_match("Beatles band", "beatles")
    (1.0, 0.0)
    """
    return float(normalize_answer(prediction) == normalize_answer(reference))


def exact_match_zh(prediction: str, reference: str) -> float:
    """1.0 when the strings are equal after the Chinese normalization, else 0.0.

    >>> exact_match_zh("北京。", "北 京"), exact_match_zh("上海", "北京")
    (1.0, 0.0)
    """
    return float(normalize_answer_zh(prediction) == normalize_answer_zh(reference))


def _jieba() -> Any:
    try:
        import jieba
    except ImportError:
        raise DataError("Chinese answers are scored with jieba, which is not installed; pip install jieba") from None
    jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" lines are debug chatter
    return jieba


def chinese_words(text: str) -> list[str]:
    """``text`` segmented by jieba, each word normalized (:func:`normalize_answer_zh`), empty ones dropped."""
    words = (normalize_answer_zh(w) for w in _jieba().cut(text, cut_all=False))
    return [w for w in words if w]


def token_f1_zh(prediction: str, reference: str) -> float:
    """Token F1 over jieba words (LongBench's ``qa_f1_zh``); needs ``pip install jieba``.

    Segmentation comes first and normalization per word after, as LongBench does it.
    """
    return _f1(chinese_words(prediction), chinese_words(reference))


def classification_accuracy(prediction: str, reference: str, all_classes: Sequence[str]) -> float:
    """LongBench's classification score: the labels of ``all_classes`` the prediction contains (case-sensitive
    substrings), less those that are only a part of the reference; ``1 / count`` when the reference is among
    them, else 0.0.

    >>> classes = ["City", "Country", "Other location"]
    >>> classification_accuracy("City", "City", classes), classification_accuracy("City or Country", "City", classes)
    (1.0, 0.5)
    >>> classification_accuracy("Country", "City", classes)
    0.0
    """
    named = [c for c in dict.fromkeys(all_classes) if c in prediction]
    named = [c for c in named if c == reference or c not in reference]
    return 1.0 / len(named) if reference in named else 0.0


def best_over_references(metric: Metric, prediction: str, references: Sequence[str]) -> float:
    """The best ``metric(prediction, reference)`` over ``references``.

    >>> best_over_references(token_f1, "blue whale", ["whale", "blue whale"])
    1.0
    """
    if isinstance(references, str):
        raise TypeError(f"references must be a list of strings, got the string {references!r}; wrap it in a list")
    if len(references) == 0:
        raise ValueError("references is empty; pass at least one reference answer")
    return max(metric(prediction, ref) for ref in references)


def first_line(prediction: str) -> str:
    """The first line of ``prediction`` after leading newlines (what LongBench scores on few-shot datasets).

    >>> first_line("\\n\\nLocation\\nQuestion: Who...")
    'Location'
    """
    return prediction.lstrip("\n").split("\n", 1)[0]


def _supported_metric(dataset: str) -> str:
    kind = DATASET_METRIC.get(dataset)
    if kind is None:
        raise ValueError(f"unknown LongBench dataset {dataset!r}; use one of {', '.join(DATASET_METRIC)}")
    if kind not in SUPPORTED_METRICS:
        raise ValueError(f"dataset {dataset!r} is scored with {kind}, which is not supported yet; "
                         f"use a dataset scored with {', '.join(SUPPORTED_METRICS)}")
    return kind


def _metric_for(dataset: str, all_classes: Sequence[str] | None) -> Metric:
    kind = _supported_metric(dataset)
    if kind == "qa_f1_zh":
        return token_f1_zh
    if kind == "classification":
        if not all_classes:
            raise ValueError(f"dataset {dataset!r} is scored by classification and needs its label set; "
                             "pass all_classes=[...]")
        classes = tuple(all_classes)
        return lambda p, r: classification_accuracy(p, r, classes)
    return token_f1


def score_prediction(dataset: str, prediction: str, references: Sequence[str],
                     all_classes: Sequence[str] | None = None) -> float:
    """The LongBench score in [0, 1] of one prediction: the dataset's metric, best over references, on the
    first line only for few-shot datasets. ROUGE, code-similarity, retrieval and count datasets raise
    ``ValueError``.

    >>> score_prediction("trec", "Other location\\nQuestion: ...", ["Other location"], ["City", "Other location"])
    1.0
    """
    metric = _metric_for(dataset, all_classes)
    if dataset in FIRST_LINE_DATASETS:
        prediction = first_line(prediction)
    return best_over_references(metric, prediction, references)


def exact_match_prediction(dataset: str, prediction: str, references: Sequence[str]) -> float:
    """Exact match (1.0 or 0.0) of one prediction, best over references, with the same first-line rule as
    :func:`score_prediction` and the Chinese normalization on Chinese datasets; the same datasets raise.

    >>> exact_match_prediction("triviaqa", "The Nile\\nQuestion: ...", ["Nile"])
    1.0
    """
    _supported_metric(dataset)
    if dataset in FIRST_LINE_DATASETS:
        prediction = first_line(prediction)
    metric = exact_match_zh if dataset in CHINESE_DATASETS else exact_match
    return best_over_references(metric, prediction, references)


def summarize_scores(rows: Iterable[Mapping[str, Any]], *,
                     subsets: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Percentages (two decimals) of ``score`` and ``em`` per dataset, per subset and overall.

    Each row is ``{"dataset", "score", "em"}`` with scores in [0, 1]. A dataset's value is the mean over its
    rows (LongBench's per-dataset result); ``overall`` is the unweighted mean over datasets. With ``subsets``
    (``{"single-doc": (...), ...}``) each subset gets the mean over its datasets present, and
    ``overall_by_subset`` is the mean over those subset means (how LongBench's leaderboard averages).

    >>> rows = [{"dataset": "trec", "score": 1.0, "em": 1.0}, {"dataset": "trec", "score": 0.5, "em": 0.0},
    ...         {"dataset": "hotpotqa", "score": 0.25, "em": 0.0}]
    >>> out = summarize_scores(rows)
    >>> out["datasets"]["trec"], out["overall"]
    ({'n': 2, 'score': 75.0, 'em': 50.0}, {'datasets': 2, 'n': 3, 'score': 50.0, 'em': 25.0})
    """
    per: dict[str, dict[str, list[float]]] = {}
    for i, row in enumerate(rows):
        dataset = row.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"score row {i} has no \"dataset\" name, got {dataset!r}; add one to every row")
        lists = per.setdefault(dataset, {"score": [], "em": []})
        for key in ("score", "em"):
            lists[key].append(_unit(row.get(key), key, i))
    if not per:
        raise ValueError("no score rows to summarize; score at least one prediction first")
    means = {d: {k: float(np.mean(v)) for k, v in lists.items()} for d, lists in sorted(per.items())}
    out: dict[str, Any] = {
        "datasets": {d: {"n": len(per[d]["score"]), **_pct(m)} for d, m in means.items()},
        "overall": {"datasets": len(means), "n": sum(len(v["score"]) for v in per.values()),
                    **_pct(_mean(means.values()))},
    }
    if subsets is not None:
        groups = {name: [means[d] for d in names if d in means] for name, names in subsets.items()}
        group_means = {name: _mean(ms) for name, ms in groups.items() if ms}
        out["subsets"] = {name: {"datasets": len(groups[name]), **_pct(m)} for name, m in group_means.items()}
        out["overall_by_subset"] = _pct(_mean(group_means.values())) if group_means else None
    return out


def _unit(value: Any, key: str, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"score row {i} needs \"{key}\" as a number in [0, 1], got {value!r}")
    return float(value)


def _mean(items: Iterable[Mapping[str, float]]) -> dict[str, float]:
    items = list(items)
    return {k: float(np.mean([m[k] for m in items])) for k in ("score", "em")}


def _pct(means: Mapping[str, float]) -> dict[str, float]:
    return {k: round(100 * v, 2) for k, v in means.items()}
