r"""Reading answers out of real instruct-model responses, and checking them against reference answers.

An extractor maps a response to its answer (``None`` when nothing fits): :data:`EXTRACTORS` by name, or
:func:`pattern_extractor` for ``--answer-pattern``. :class:`AnswerChecker` is the ``check`` of the loop and
the evaluation on user data (the toy world keeps its own); :func:`clean_answer` cleans dataset references.

>>> check = AnswerChecker()
>>> check("math", "She has 3,200 dollars left.", "3200"), check("qa", "No, it does not.", "yes")
(True, False)
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

Extractor = Callable[[str], str | None]

_NUM = r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
# A sign only when the minus does not follow a word or a digit, so "10-3" reads as 3.
_NUMBER = re.compile(r"(?<![\w.])" + _NUM)
_WHOLE_NUMBER = re.compile(r"\s*(?:\\?\$)?\s*(" + _NUM + r")\s*(?:\\?%)?\s*\.?\s*")
_YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_YESNO_ANSWER = re.compile(r"\banswer\b(?:\s+is)?\s*[:=\-]?\s*[*\"']*\s*(yes|no)\b", re.IGNORECASE)
_LETTER = r"([A-J])(?![A-Za-z0-9])"
_CHOICE_ANSWER = re.compile(r"(?i:\banswer\b)(?:\s+(?i:is|would be|should be|will be))?\s*(?i:option|choice)?"
                            r"\s*[:=\-]?\s*[*(\[]*\s*" + _LETTER)
_CHOICE_FORMS = re.compile(
    r"\(([A-J])\)"                                          # (B)
    r"|\*\*\(?([A-J])\)?[.):]?\*\*"                         # **B**, **(B)**, **B.**
    r"|(?i:\b(?:option|choice)(?:\s+is)?:?)\s+\(?" + _LETTER +  # option D, the best choice is D
    r"|(?<![A-Za-z0-9(])([A-J])\)"                          # B) Paris
    r"|^[ \t]*([A-J])[.:](?!\S)"                            # B. at the start of a line
    r"|\A\s*([A-J])\s*\Z",                                  # the whole response is the letter
    re.MULTILINE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_LETTER_REF = re.compile(r"\s*\(?([A-Ja-j])\)?\s*")
_BOXED_LETTER = re.compile(r"(?:\\text\{)?\(?([A-J])\)?\}?")


def canonical_number(text: str) -> str | None:
    r"""``text`` as a canonical number string when the whole of it is one number (``$``, ``%``, thousands
    commas and a final period allowed), else ``None``.

    >>> canonical_number("3,200"), canonical_number("2.50"), canonical_number("42.0"), canonical_number("x")
    ('3200', '2.5', '42', None)
    """
    found = _WHOLE_NUMBER.fullmatch(text)
    return _canonical(found.group(1)) if found else None


def _canonical(number: str) -> str:
    value = Decimal(number.replace(",", ""))
    return "0" if value == 0 else format(value.normalize(), "f")


def extract_number(text: str) -> str | None:
    """The last number in ``text``, canonical (``"42.0"`` and ``"42"`` both read ``"42"``).

    >>> extract_number("The answer is 42."), extract_number("= 3,200"), extract_number("-7"), extract_number("no")
    ('42', '3200', '-7', None)
    """
    found = _NUMBER.findall(text)
    return _canonical(found[-1]) if found else None


def extract_gsm8k(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's marker), else the last number.

    >>> extract_gsm8k("4 + 14 = 18 apples.\\n#### 18"), extract_gsm8k("So 7 in all.")
    ('18', '7')
    """
    _, marker, tail = text.rpartition("####")
    found = _NUMBER.search(tail) if marker else None
    return _canonical(found.group()) if found else extract_number(text)


def extract_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (nested braces kept), canonical when it is a number.

    >>> extract_boxed(r"so $\boxed{\frac{1}{2}}$"), extract_boxed(r"\boxed{1,000}"), extract_boxed("42")
    ('\\frac{1}{2}', '1000', None)
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth < 0:
            content = text[begin:i].strip()
            return canonical_number(content) or content
    return None  # unbalanced: the response was cut off inside the box


def extract_yesno(text: str) -> str | None:
    """``"yes"`` or ``"no"``: an explicit "answer is ..." if any, else the first standalone yes/no word.

    >>> extract_yesno("No, because it is closed."), extract_yesno("Yes."), extract_yesno("Yesterday, nothing.")
    ('no', 'yes', None)
    """
    found = _YESNO_ANSWER.findall(text) or _YESNO.findall(text)[:1]
    return found[-1].lower() if found else None


def extract_choice(text: str) -> str | None:
    r"""An option letter A-J: a boxed letter or the last "answer is ..." mention, else the first option form
    ("(B)", "**B**", "B)", "option B", "B." starting a line, or the bare letter); "A cat sat" has no option.

    >>> extract_choice("The answer is (C)."), extract_choice("B) Paris"), extract_choice("A cat sat.")
    ('C', 'B', None)
    """
    boxed = _BOXED_LETTER.fullmatch(extract_boxed(text) or "")
    answers = [boxed.group(1)] if boxed else _CHOICE_ANSWER.findall(text)
    if answers:
        return str(answers[-1])
    found = _CHOICE_FORMS.search(text)
    return next(g for g in found.groups() if g) if found else None


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD's normalization).

    >>> normalize_text("  The Eiffel-Tower, in PARIS! ")
    'eiffeltower in paris'
    """
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def extract_text(text: str) -> str | None:
    """The whole response, normalized (:func:`normalize_text`); ``None`` when nothing is left.

    >>> extract_text("Paris."), extract_text(" ... ")
    ('paris', None)
    """
    return normalize_text(text) or None


EXTRACTORS: dict[str, Extractor] = {
    "number": extract_number, "gsm8k": extract_gsm8k, "boxed": extract_boxed,
    "yesno": extract_yesno, "choice": extract_choice, "text": extract_text,
}
"""The built-in extractors by name (the values of ``--answer-extractor``, besides ``auto``)."""


def pattern_extractor(regex: str) -> Extractor:
    r"""An extractor that returns the first capture group of the first match of ``regex``, stripped.

    >>> pattern_extractor(r"Final: (\S+)")("Work... Final: 12 apples"), pattern_extractor(r"Final: (\S+)")("12")
    ('12', None)
    """
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"--answer-pattern '{regex}' is not a valid regular expression ({exc}); "
                         "fix it, e.g. 'Answer: (\\d+)'") from exc
    if compiled.groups < 1:
        raise ValueError(f"--answer-pattern '{regex}' has no capture group; wrap the answer in parentheses, "
                         "e.g. 'Answer: (\\d+)'")

    def extract(text: str) -> str | None:
        found = compiled.search(text)
        return (found.group(1) or "").strip() or None if found else None
    return extract


@dataclass(frozen=True)
class AnswerChecker:
    r"""``checker(task, response, answer) -> bool``: whether the response's answer matches the reference.

    ``extractor`` is a name from :data:`EXTRACTORS` or ``"auto"``; ``per_task`` overrides it for some tasks;
    ``pattern`` (a regex with a capture group) wins over both. ``auto`` reads the reference's form: a number
    -> ``number`` (``gsm8k`` when the response has ``####``); yes/no -> ``yesno``; one letter A-J ->
    ``choice``; else ``text``, right when the normalized reference equals the normalized response or appears
    in it as a whole-word phrase. Numbers and free text switch to ``boxed`` when the response has a
    ``\boxed{}``. The reference goes through the same extractor (so ``"#### 18"`` and ``"(B)"`` work);
    numbers compare by value.

    >>> check = AnswerChecker(per_task={"mmlu": "choice"})
    >>> check("gsm8k", "The answer is 41.", "42"), check("mmlu", "**B**", "(B)"), check("geo", "It is Paris.", "paris")
    (False, True, True)
    >>> check.extract("mmlu", "The answer is (C)."), check.resolve("geo", "#### 18", "12")
    ('C', 'gsm8k')
    """

    extractor: str = "auto"
    per_task: Mapping[str, str] = field(default_factory=dict)
    pattern: str | None = None
    _pattern: Extractor | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for where, name in [("", self.extractor), *((f" for task {t!r}", n) for t, n in self.per_task.items())]:
            if name != "auto" and name not in EXTRACTORS:
                raise ValueError(f"unknown answer extractor {name!r}{where}; valid names: {['auto', *EXTRACTORS]}")
        object.__setattr__(self, "per_task", dict(self.per_task))
        if self.pattern is not None:
            object.__setattr__(self, "_pattern", pattern_extractor(self.pattern))

    def resolve(self, task: str, response: str, answer: str | None = None) -> str:
        """The extractor used for this task, response and (for ``auto``) reference: a name from
        :data:`EXTRACTORS`, or ``"pattern"``. Without a reference, ``auto`` treats the answer as free text."""
        if self._pattern is not None:
            return "pattern"
        name = self.per_task.get(task, self.extractor)
        if name != "auto":
            return name
        kind = "text" if answer is None else _answer_kind(answer)
        if kind == "number" and "####" in response:
            return "gsm8k"
        return "boxed" if kind in ("number", "text") and "\\boxed{" in response else kind

    def extract(self, task: str, response: str, answer: str | None = None) -> str | None:
        """What the response's answer was read as (for logging); ``answer`` only guides ``auto``."""
        return self._function(self.resolve(task, response, answer))(response)

    def __call__(self, task: str, response: str, answer: str) -> bool:
        name = self.resolve(task, response, answer)
        extract = self._function(name)
        got = extract(response)
        if got is None:
            return False
        if name == "text":
            want = normalize_text(answer)
            return got == want or (bool(want) and f" {want} " in f" {got} ")
        return _same(got, extract(answer) or _plain(answer))

    def _function(self, name: str) -> Extractor:
        return self._pattern if self._pattern is not None else EXTRACTORS[name]


def _answer_kind(answer: str) -> str:
    """The built-in extractor a reference answer's form calls for."""
    if canonical_number(_plain(answer)) is not None:
        return "number"
    if normalize_text(answer) in ("yes", "no"):
        return "yesno"
    return "choice" if _LETTER_REF.fullmatch(answer) else "text"


def _plain(answer: str) -> str:
    """A reference answer without its GSM8K marker or box, when it has one."""
    marked = extract_gsm8k(answer) if "####" in answer else extract_boxed(answer) if "\\boxed{" in answer else None
    return marked or answer.strip()


def _same(got: str, want: str) -> bool:
    got_number, want_number = canonical_number(got), canonical_number(want)
    if got_number is not None and want_number is not None:
        return got_number == want_number
    strip = " .,!?;:()[]*'\""
    return " ".join(got.split()).strip(strip).casefold() == " ".join(want.split()).strip(strip).casefold()


ANSWER_FORMATS: tuple[str, ...] = ("none", "gsm8k", "boxed")
"""The reference-answer formats :func:`clean_answer` understands."""


def clean_answer(answer: str, fmt: str) -> str:
    r"""A dataset's reference answer in plain form: ``gsm8k`` keeps what follows the last ``####``,
    ``boxed`` the content of the last ``\boxed{}``, ``none`` the answer as is.

    >>> clean_answer("She pays 6 * 12 = 72 dollars.\n#### 72", "gsm8k"), clean_answer(r"\boxed{x+1}", "boxed")
    ('72', 'x+1')
    """
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"answer format {fmt!r} is unknown; pass --answer-format with one of "
                         f"{', '.join(ANSWER_FORMATS)}")
    if fmt == "none":
        return answer
    cleaned = (extract_boxed(answer) if fmt == "boxed" else answer.rpartition("####")[2].strip() if "####" in answer
               else canonical_number(answer))
    if not cleaned:
        what = "complete \\boxed{...}" if fmt == "boxed" else 'answer after "####"'
        shown = answer if len(answer) <= 60 else answer[:57] + "..."
        raise ValueError(f"answer {shown!r} has no {what} (answer format {fmt}); fix the row or pass "
                         "--answer-format none")
    return canonical_number(cleaned) or cleaned
