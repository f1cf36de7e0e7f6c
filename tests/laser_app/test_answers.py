"""Answer extraction and checking on realistic instruct-model outputs (no models)."""

from __future__ import annotations

import pytest

from laser_app.answers import (
    ANSWER_FORMATS,
    EXTRACTORS,
    AnswerChecker,
    canonical_number,
    clean_answer,
    pattern_extractor,
)


@pytest.mark.parametrize(("name", "response", "expected"), [
    ("number", "The answer is 42.", "42"),
    ("number", "So she has 3,200 dollars left.", "3200"),
    ("number", "x = -7", "-7"),
    ("number", "Each costs $2.50.", "2.5"),
    ("number", "10-3 leaves 7, so 42.0", "42"),
    ("number", "I cannot tell.", None),
    ("gsm8k", "She buys 4 + 14 = 18 apples.\n#### 18", "18"),
    ("gsm8k", "#### 1,000 and 3 more words", "1000"),
    ("gsm8k", "No marker, just 12 then 15.", "15"),
    ("boxed", "Thus $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("boxed", "First \\boxed{3}, then \\boxed{ 4.0 }", "4"),
    ("boxed", "cut off \\boxed{\\frac{1}{2}", None),
    ("yesno", "No, because Southwest Airlines does not fly there.", "no"),
    ("yesno", "Yes.", "yes"),
    ("yesno", "Yesterday I saw nothing of the kind.", None),
    ("yesno", "I don't know.", None),
    ("yesno", "There is no proof, but the answer is yes.", "yes"),
    ("yesno", "**Answer:** Yes", "yes"),
    ("choice", "**B**", "B"),
    ("choice", "The answer is (C).", "C"),
    ("choice", "B) Paris", "B"),
    ("choice", "Answer: D", "D"),
    ("choice", "I would pick option E because it is larger.", "E"),
    ("choice", "A.", "A"),
    ("choice", "A", "A"),
    ("choice", "Option A is wrong and B is too, so the answer is C.", "C"),
    ("choice", "**Answer:** B", "B"),
    ("choice", "The best option is B.", "B"),
    ("choice", "The final answer is $\\boxed{\\text{(D)}}$", "D"),
    ("choice", "A cat sat on the mat.", None),
    ("choice", "Both options are Bad.", None),
    ("text", "The capital of France is Paris!", "capital of france is paris"),
    ("text", "  ...  ", None),
])
def test_builtin_extractors_read_realistic_outputs(name: str, response: str, expected: str | None) -> None:
    assert EXTRACTORS[name](response) == expected


@pytest.mark.parametrize(("response", "answer", "extractor"), [
    ("The answer is 42.", "42", "number"),
    ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", "gsm8k"),
    ("So the result is $\\boxed{12}$.", "12", "boxed"),
    ("So the result is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "boxed"),
    ("No, it does not.", "No", "yesno"),
    ("The answer is (C).", "(C)", "choice"),
    ("**B**", "b", "choice"),
    ("The capital of France is Paris.", "Paris", "text"),
])
def test_auto_picks_the_extractor_from_the_answer_form(response: str, answer: str, extractor: str) -> None:
    check = AnswerChecker()
    assert check.resolve("t", response, answer) == extractor
    assert check("t", response, answer)


@pytest.mark.parametrize(("response", "answer"), [
    ("The answer is 41.", "42"),
    ("She makes 18 dollars.\n#### 17", "#### 18"),
    ("$\\boxed{\\frac{1}{3}}$", "\\frac{1}{2}"),
    ("Yes, it does.", "no"),
    ("The answer is (C).", "B"),
    ("A cat sat on the mat.", "A"),
    ("Yesterday I went home.", "yes"),
    ("The capital of France is Lyon.", "Paris"),
    ("Parisian food is great.", "Paris"),
    ("I cannot tell.", "42"),
])
def test_wrong_or_missing_answers_are_false(response: str, answer: str) -> None:
    assert not AnswerChecker()("t", response, answer)


def test_reference_goes_through_the_extractor() -> None:
    check = AnswerChecker()
    assert check("gsm8k", "so 18 in total", "Janet has 16 - 3 - 4 = 9 eggs... 9 * 2 = 18\n#### 18")
    assert check("q", "The answer is 42.0", "42")
    assert check("q", "So she has 3,200 dollars left.", "3200")
    assert AnswerChecker("number")("q", "she has 3,200", "#### 3200")


def test_free_text_matches_whole_words_only() -> None:
    check = AnswerChecker()
    assert check("geo", "The capital of France is Paris.", "paris")
    assert check("geo", "the Eiffel Tower", "Eiffel tower.")
    assert not check("geo", "The capital is Parisville.", "paris")


def test_per_task_overrides_and_default() -> None:
    check = AnswerChecker("number", per_task={"mcq": "choice", "sqa": "yesno"})
    assert check.resolve("mcq", "x", "B") == "choice"
    assert check.resolve("math", "x", "B") == "number"
    assert check("mcq", "The answer is (B).", "B")
    assert check("sqa", "No, because it is closed.", "no")
    assert check("math", "I think 7.", "7")
    assert not check("math", "I think B.", "B")  # number extractor reads no number: not correct
    assert check.extract("mcq", "Answer: **D**") == "D"


def test_pattern_wins_and_extract_reports_what_was_read() -> None:
    check = AnswerChecker("yesno", per_task={"mcq": "choice"}, pattern=r"Final answer:\s*(.+)")
    assert check.resolve("mcq", "x", "B") == "pattern"
    assert check.extract("mcq", "Reasoning (A)... Final answer: B ") == "B"
    assert check("mcq", "Reasoning (A)... Final answer: B", "B")
    assert check("math", "Steps: 3 then 4. Final answer: 7.0", "7")
    assert not check("mcq", "Reasoning (A) only", "A")


def test_pattern_extractor_reads_the_first_capture_of_the_first_match() -> None:
    extract = pattern_extractor(r"Answer: (\d+)")
    assert extract("Answer: 3 ... Answer: 4") == "3"
    assert extract("no answer here") is None
    assert pattern_extractor(r"(x)?y")("y") is None  # the group did not take part in the match


def test_pattern_without_capture_group_says_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"^--answer-pattern 'Answer: \\d\+' has no capture group; wrap the answer "
                                         r"in parentheses, e.g. 'Answer: \(\\d\+\)'$"):
        pattern_extractor(r"Answer: \d+")
    with pytest.raises(ValueError, match="has no capture group"):
        AnswerChecker(pattern="Final")


def test_pattern_that_does_not_compile_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"^--answer-pattern 'Answer: \(\\d\+' is not a valid regular") as err:
        pattern_extractor(r"Answer: (\d+")
    assert "\n" not in str(err.value)


def test_unknown_extractor_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown answer extractor 'numbers'.*'auto', 'number', 'gsm8k'"):
        AnswerChecker("numbers")
    with pytest.raises(ValueError, match=r"'letters' for task 'mcq'; valid names: \['auto'"):
        AnswerChecker(per_task={"mcq": "letters"})


def test_checker_is_frozen_and_copies_per_task() -> None:
    overrides = {"mcq": "choice"}
    check = AnswerChecker(per_task=overrides)
    overrides["mcq"] = "number"
    assert check.resolve("mcq", "x", "42") == "choice"
    with pytest.raises(AttributeError):
        check.extractor = "number"  # type: ignore[misc]


def test_canonical_number() -> None:
    assert [canonical_number(t) for t in ("42", "42.0", "-0", "$1,000", "12%", "7.", "1 2", "")] == \
        ["42", "42", "0", "1000", "12", "7", None, None]


def test_clean_answer_formats() -> None:
    assert ANSWER_FORMATS == ("none", "gsm8k", "boxed")
    assert clean_answer("Natalia sold 48/2 = 24 clips.\n48 + 24 = 72\n#### 72", "gsm8k") == "72"
    assert clean_answer("#### 1,200", "gsm8k") == "1200"
    assert clean_answer("72", "gsm8k") == "72"
    assert clean_answer("so $\\boxed{\\frac{1}{2}}$", "boxed") == "\\frac{1}{2}"
    assert clean_answer(" Paris ", "none") == " Paris "


def test_clean_answer_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"answer format 'jsonl' is unknown; pass --answer-format with one of "
                                         r"none, gsm8k, boxed"):
        clean_answer("72", "jsonl")
    with pytest.raises(ValueError, match=r"answer 'She has some apples\.' has no answer after \"####\" \(answer "
                                         r"format gsm8k\); fix the row or pass --answer-format none"):
        clean_answer("She has some apples.", "gsm8k")
    with pytest.raises(ValueError, match=r"answer '42' has no complete \\boxed\{\.\.\.\} \(answer format boxed\)"):
        clean_answer("42", "boxed")
