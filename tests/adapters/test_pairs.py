from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from laser_adapters.pairs import PairResult, make_pairs, read_pairs_jsonl, write_pairs_jsonl


def _texts(result: PairResult) -> list[tuple[str, str]]:
    return [(p["chosen"], p["rejected"]) for p in result.pairs]


def test_top_vs_bottom_pairing() -> None:
    responses = ["r0", "r1", "r2", "r3", "r4", "r5"]
    scores = [0.3, 0.9, 0.1, 0.5, 0.7, 0.2]  # ranking: r1 r4 r3 r0 r5 r2
    assert _texts(make_pairs("p", responses, scores, max_pairs=1)) == [("r1", "r2")]
    assert _texts(make_pairs("p", responses, scores, max_pairs=2)) == [("r1", "r2"), ("r4", "r5")]
    result = make_pairs("p", responses, scores, max_pairs=10)  # capped at n // 2
    assert _texts(result) == [("r1", "r2"), ("r4", "r5"), ("r3", "r0")]
    assert (result.dropped_ties, result.dropped_duplicates) == (0, 0)
    first = result.pairs[0]
    assert first == {"prompt": "p", "chosen": "r1", "rejected": "r2",
                     "chosen_score": 0.9, "rejected_score": 0.1}
    assert isinstance(first["chosen_score"], float)


def test_duplicates_keep_the_highest_scored_copy() -> None:
    result = make_pairs("p", ["a", "b", "a", "c"], [0.1, 0.5, 0.9, 0.2], max_pairs=2)
    assert result.dropped_duplicates == 1
    assert _texts(result) == [("a", "c")]  # 3 distinct texts -> one pair
    assert result.pairs[0]["chosen_score"] == 0.9


def test_identical_responses_form_no_pair() -> None:
    result = make_pairs("p", ["same"] * 5, [0.1, 0.2, 0.3, 0.4, 0.5], max_pairs=2)
    assert result.pairs == [] and result.dropped_duplicates == 4 and result.dropped_ties == 0


def test_ties_are_dropped_and_counted() -> None:
    result = make_pairs("p", list("abcdef"), [3.0, 2.0, 2.0, 2.0, 2.0, 1.0], max_pairs=3)
    assert _texts(result) == [("a", "f")]
    assert result.dropped_ties == 2
    all_tied = make_pairs("p", list("abcd"), [1.0] * 4, max_pairs=5)
    assert all_tied.pairs == [] and all_tied.dropped_ties == 2


def test_equal_scores_rank_in_sampling_order() -> None:
    result = make_pairs("p", list("abcd"), [1.0, 1.0, 0.0, 0.0], max_pairs=2)
    assert _texts(result) == [("a", "d"), ("b", "c")]


def test_accepts_numpy_scores() -> None:
    result = make_pairs("p", ("x", "y"), np.array([2, 1], dtype=np.int64), max_pairs=1)
    assert _texts(result) == [("x", "y")] and result.pairs[0]["chosen_score"] == 2.0


@pytest.mark.parametrize(("responses", "scores", "max_pairs", "error", "match"), [
    (["a", "b"], [1.0], 1, ValueError, "got 1 scores for 2 responses"),
    (["a", "b"], [1.0, float("nan")], 1, ValueError, "finite, got nan at index 1"),
    (["a", "b"], [float("inf"), 0.0], 1, ValueError, "finite, got inf at index 0"),
    (["a"], [1.0], 1, ValueError, "at least 2 responses"),
    ([], [], 1, ValueError, "responses is empty"),
    (["a", "b"], [1.0, 0.0], 0, ValueError, "max_pairs must be >= 1, got 0"),
    (["a", "b"], [1.0, 0.0], True, TypeError, "max_pairs must be an int"),
    (["a", "b"], [[1.0, 0.0]], 1, ValueError, "one-dimensional"),
    ("ab", [1.0, 0.0], 1, TypeError, "sequence of strings"),
    (["a", 2], [1.0, 0.0], 1, TypeError, r"responses\[1\] must be a str"),
])
def test_bad_input(responses: object, scores: object, max_pairs: object, error: type[Exception],
                   match: str) -> None:
    with pytest.raises(error, match=match):
        make_pairs("p", responses, scores, max_pairs)  # type: ignore[arg-type]


def test_prompt_must_be_text() -> None:
    with pytest.raises(TypeError, match="prompt must be a str"):
        make_pairs(None, ["a", "b"], [1.0, 0.0], 1)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list("abcdefgh")), st.integers(-3, 3)), min_size=2, max_size=12),
       st.integers(1, 6))
def test_pairing_invariants(items: list[tuple[str, int]], max_pairs: int) -> None:
    responses = [r for r, _ in items]
    scores = [float(s) for _, s in items]
    result = make_pairs("p", responses, scores, max_pairs)
    unique = len(set(responses))
    assert result.dropped_duplicates == len(responses) - unique
    assert len(result.pairs) + result.dropped_ties == min(max_pairs, unique // 2)
    used = [t for p in result.pairs for t in (p["chosen"], p["rejected"])]
    assert len(used) == len(set(used))  # no response in two pairs
    best = {r: max(s for rr, s in items if rr == r) for r in set(responses)}
    for p in result.pairs:
        assert p["chosen_score"] > p["rejected_score"]
        assert p["chosen_score"] == best[p["chosen"]] and p["rejected_score"] == best[p["rejected"]]
    if result.pairs:  # top-vs-bottom: every chosen scores at least every rejected
        assert min(p["chosen_score"] for p in result.pairs) >= max(p["rejected_score"] for p in result.pairs)


def test_jsonl_round_trip_through_datasets(tmp_path: Path) -> None:
    from datasets import load_dataset

    pairs = make_pairs("Qu'est-ce que 2+2 ? ", ["4", "cinq", "22", "four\n"], [1.0, 0.0, 0.25, 0.5], 2).pairs
    path = write_pairs_jsonl(pairs, tmp_path / "run" / "pairs.jsonl")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]
    assert read_pairs_jsonl(path) == pairs
    dataset = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert set(dataset.column_names) == {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
    assert [dict(row) for row in dataset] == pairs


def test_write_replaces_atomically_and_rejects_bad_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    write_pairs_jsonl([{**pair, "chosen_score": np.float32(0.5)}], path)
    assert json.loads(path.read_text())["chosen_score"] == 0.5
    before = path.read_text()
    with pytest.raises(ValueError, match="missing key 'rejected'"):
        write_pairs_jsonl([{"prompt": "p", "chosen": "a"}], path)
    with pytest.raises(ValueError, match="must be finite"):
        write_pairs_jsonl([{**pair, "chosen_score": float("nan")}], path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]
    write_pairs_jsonl([], path)
    assert path.read_text() == "" and read_pairs_jsonl(path) == []
