"""LongBench items for long-context best-of-n answering: prompts, loading, and truncation from the middle.

:data:`PROMPTS` follows how LongBench (``config/dataset2prompt.json`` in THUDM/LongBench) lays out each
dataset's prompt: the instruction, then the ``{context}``; for the QA datasets the instruction is repeated
after the context (so it survives truncation from the middle), then the question ``{input}`` and an answer
cue; the few-shot datasets end with the ``{input}`` itself, whose examples in the context show the format. The
instruction wording is this project's own paraphrase, not LongBench's text, so scores are comparable in
spirit but not byte-for-byte. :data:`MAX_NEW_TOKENS` are LongBench's generation lengths (``dataset2maxlen``).

LongBench also leaves the few-shot prompts without a chat template and stops samsum at a newline; those
choices belong to whoever calls the model.

>>> ex = LongExample.build("hotpotqa", context="Passage 1: Ann was born in Oslo.", input="Where was Ann born?",
...                        answers=("Oslo",))
>>> print(ex.prompt.splitlines()[-2:])
['Question: Where was Ann born?', 'Answer:']
>>> ex.answer, ex.task
('Oslo', 'hotpotqa')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from laser_app.data import load_examples
from laser_app.data_sources import read_json_lines
from laser_app.errors import DataError

_MULTI_DOC = ("Use the passages below to answer the question. Reply with the answer alone, nothing else.\n\n"
              "Passages:\n{context}\n\n"
              "Using the passages above, answer the question. Reply with the answer alone, nothing else.\n\n"
              "Question: {input}\nAnswer:")
_QASPER_RULES = ("Keep the answer as short as you can, one phrase or sentence if possible. If the paper does "
                 "not say, reply \"unanswerable\"; to a yes/no question reply \"yes\", \"no\" or "
                 "\"unanswerable\". Do not explain.")

#: Prompt template per LongBench dataset, with ``{context}`` and ``{input}`` slots (wording paraphrased).
PROMPTS: dict[str, str] = {
    "narrativeqa": ("Below are a story (a novel or a film script) and a question about it. Answer in as few "
                    "words as you can, one phrase if possible, and do not explain.\n\n"
                    "Story: {context}\n\n"
                    "Using the story above, answer in as few words as you can, one phrase if possible, and do "
                    "not explain.\n\n"
                    "Question: {input}\n\nAnswer:"),
    "qasper": ("Below are a scientific paper and a question about it. " + _QASPER_RULES + "\n\n"
               "Article: {context}\n\n"
               "Using the paper above, answer the question. " + _QASPER_RULES + "\n\n"
               "Question: {input}\n\nAnswer:"),
    "multifieldqa_en": ("Read the text below and answer in brief.\n\n{context}\n\n"
                        "Using the text above, answer the question below. Reply with the answer alone, "
                        "nothing else.\n\nQuestion: {input}\nAnswer:"),
    "multifieldqa_zh": ("请阅读下面的文本，用中文简要作答：\n\n{context}\n\n"
                        "请根据上文回答下面的问题，只写出答案本身，不要写别的内容。\n\n问题：{input}\n回答："),
    "hotpotqa": _MULTI_DOC,
    "2wikimqa": _MULTI_DOC,
    "musique": _MULTI_DOC,
    "dureader": ("请根据给出的文章回答问题。\n\n文章：{context}\n\n"
                 "请根据上面的文章回答下面的问题。\n\n问题：{input}\n回答："),
    "trec": ("Say which type of question the last question is. Labelled example questions come first.\n\n"
             "{context}\n{input}"),
    "triviaqa": ("Use the passage to answer the question, replying with the answer alone and nothing else. "
                 "Worked examples come first.\n\n{context}\n\n{input}"),
    "samsum": "Sum up the dialogue in a few short sentences. Worked examples come first.\n\n{context}\n\n{input}",
    "lsht": "请判断下面这条新闻属于哪一类，先给出几个示例。\n\n{context}\n{input}",
    # the built-in long-document suite (laser_app.world.longdoc): its word-level policy reads lower-case words
    # and separate punctuation marks only
    "doc-single": "read the document and answer the question .\n{context}\nquestion : {input}\nanswer :",
    "doc-multi": "read the passages and answer the question .\n{context}\nquestion : {input}\nanswer :",
    "doc-fewshot": ("read the examples and the document , then answer the last question .\n{context}\n"
                    "question : {input}\nanswer :"),
}

#: LongBench's task groups covered here.
SUBSETS: dict[str, tuple[str, ...]] = {
    "single-doc": ("narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh"),
    "multi-doc": ("hotpotqa", "2wikimqa", "musique", "dureader"),
    "few-shot": ("trec", "triviaqa", "samsum", "lsht"),
    "built-in": ("doc-single", "doc-multi", "doc-fewshot"),
}

#: LongBench's ``max_new_tokens`` per dataset (``config/dataset2maxlen.json``).
MAX_NEW_TOKENS: dict[str, int] = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64,
    "hotpotqa": 32, "2wikimqa": 32, "musique": 32, "dureader": 128,
    "trec": 64, "triviaqa": 32, "samsum": 128, "lsht": 64,
    "doc-single": 4, "doc-multi": 4, "doc-fewshot": 4,
}

#: Datasets whose rows must carry ``all_classes`` (classification accuracy needs the label set).
CLASSIFICATION = frozenset({"trec", "lsht"})

_REQUIRED = ("input", "context", "answers", "dataset")


@dataclass(frozen=True)
class LongExample:
    """One LongBench item; ``prompt`` is the text the policy reads. Fits :class:`laser_app.data.ExampleLike`
    (``answer`` is the first reference, ``task`` the dataset name)."""

    id: str
    dataset: str
    context: str
    input: str
    answers: tuple[str, ...]
    prompt: str
    length: int | None = None
    language: str | None = None
    all_classes: tuple[str, ...] | None = None

    @property
    def answer(self) -> str | None:
        """The first reference answer (``None`` when there is none)."""
        return self.answers[0] if self.answers else None

    @property
    def task(self) -> str:
        """The dataset name (what per-task routing and reporting group by)."""
        return self.dataset

    @classmethod
    def build(cls, dataset: str, *, context: str, input: str, answers: Sequence[str], id: str = "",
              length: int | None = None, language: str | None = None,
              all_classes: Sequence[str] | None = None) -> LongExample:
        """An item with its prompt built from :data:`PROMPTS` (``ValueError`` for a dataset without one)."""
        return cls(id=id, dataset=dataset, context=context, input=input, answers=tuple(answers),
                   prompt=build_prompt(dataset, context, input), length=length, language=language,
                   all_classes=None if all_classes is None else tuple(all_classes))


def build_prompt(dataset: str, context: str, input: str) -> str:
    """``dataset``'s template filled with ``context`` and ``input``.

    >>> build_prompt("lsht", "新闻：…\\n类别：体育", "新闻：…")
    '请判断下面这条新闻属于哪一类，先给出几个示例。\\n\\n新闻：…\\n类别：体育\\n新闻：…'
    """
    template = PROMPTS.get(dataset)
    if template is None:
        raise ValueError(f"LongBench dataset {dataset!r} has no prompt template; use one of {', '.join(PROMPTS)}")
    return template.format(context=context, input=input)


def load_longbench(path: str | Path, *, datasets: Iterable[str] | None = None) -> list[LongExample]:
    """LongBench items from a JSONL file in LongBench's format (``_id``, ``dataset``, ``context``, ``input``,
    ``answers``, ``length``, ``language``, ``all_classes``), keeping only ``datasets`` when given.

    Raises :class:`DataError` naming the line for bad JSON, a missing field, ``answers`` that is not a
    non-empty list of strings, a dataset without a prompt template, or a trec/lsht row without ``all_classes``.
    """
    keep = None if datasets is None else set(datasets)
    if keep is not None and keep - PROMPTS.keys():
        raise DataError(f"LongBench datasets {', '.join(sorted(keep - PROMPTS.keys()))} have no prompt template; "
                        f"choose from {', '.join(PROMPTS)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"LongBench file {path} does not exist; pass a JSONL file with one LongBench item per line")
    out: list[LongExample] = []
    seen: set[str] = set()
    for lineno, row in read_json_lines(path, what="LongBench file").rows:
        where = f"LongBench file {path} line {lineno}"
        dataset = row.get("dataset")
        if isinstance(dataset, str):
            seen.add(dataset)
            if keep is not None and dataset not in keep:
                continue
        out.append(_to_long_example(row, where, lineno))
    if not out:
        found = f" (it has {', '.join(sorted(seen))})" if seen else ""
        which = f" for datasets {', '.join(sorted(keep))}" if keep is not None else ""
        raise DataError(f"LongBench file {path} has no items{which}{found}; pass a file with at least one item")
    return out


def _to_long_example(row: Mapping[str, Any], where: str, lineno: int) -> LongExample:
    missing = [f for f in _REQUIRED if f not in row]
    if missing:
        raise DataError(f"{where}: missing field {', '.join(repr(f) for f in missing)} (fields present: "
                        f"{', '.join(sorted(row)) or 'none'}); LongBench items need {', '.join(_REQUIRED)}")
    dataset = row["dataset"]
    if not isinstance(dataset, str) or dataset not in PROMPTS:
        raise DataError(f"{where}: dataset {dataset!r} has no prompt template; use one of {', '.join(PROMPTS)} "
                        "or filter with datasets=")
    for field in ("input", "context"):
        if not isinstance(row[field], str):
            raise DataError(f"{where}: {field!r} must be a string, got {type(row[field]).__name__}")
    answers = _strings(row["answers"], where, "answers")
    if answers is None or not answers:
        raise DataError(f"{where}: 'answers' must be a non-empty list of strings, got {row['answers']!r}")
    classes = _strings(row.get("all_classes"), where, "all_classes")
    if dataset in CLASSIFICATION and not classes:
        raise DataError(f"{where}: {dataset} items need 'all_classes', the list of labels to score against")
    length = row.get("length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise DataError(f"{where}: 'length' must be a whole number or null, got {length!r}")
    language = row.get("language")
    if language is not None and not isinstance(language, str):
        raise DataError(f"{where}: 'language' must be a string or null, got {language!r}")
    ident = row.get("_id")
    return LongExample.build(dataset, context=row["context"], input=row["input"], answers=answers,
                             id=str(ident) if ident is not None else f"{dataset}-{lineno}",
                             length=length, language=language, all_classes=classes)


def _strings(value: Any, where: str, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: {field!r} must be a list of strings, got {value!r}")
    return tuple(value)


def load_qa(path: str | Path) -> list[LongExample]:
    """Items from the project's own rows (``prompt``, ``answer``, optional ``task``; every source
    :func:`laser_app.data.load_examples` reads), prompts kept as given; ``dataset`` is the task.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "qa.jsonl"
    >>> _ = path.write_text('{"prompt": "Long text... Q: Who? A:", "answer": "Ann", "task": "hotpotqa"}\\n')
    >>> [(e.id, e.dataset, e.prompt, e.answers) for e in load_qa(path)]
    [('hotpotqa-1', 'hotpotqa', 'Long text... Q: Who? A:', ('Ann',))]
    """
    rows = load_examples(path, require_answers=True, what="QA file")
    return [LongExample(id=f"{ex.task}-{i}", dataset=ex.task, context="", input=ex.prompt,
                        answers=(str(ex.answer),), prompt=ex.prompt)
            for i, ex in enumerate(rows, start=1)]


def truncate_middle(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut to ``max_tokens`` tokens by dropping the middle, and whether it was cut.

    Tokens are counted without special tokens; a longer text keeps its first ``max_tokens // 2`` and its last
    ``max_tokens - max_tokens // 2`` tokens, each half decoded on its own (special tokens skipped), as
    LongBench does so the instructions at both ends survive.

    >>> from laser_adapters.tokenization import char_tokenizer
    >>> truncate_middle(char_tokenizer(), "abcdefghij", 5), truncate_middle(char_tokenizer(), "abc", 5)
    (('abhij', True), ('abc', False))
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}")
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) <= max_tokens:
        return text, False
    head, tail = max_tokens // 2, max_tokens - max_tokens // 2
    kept = (tokenizer.decode(ids[:head], skip_special_tokens=True)
            + tokenizer.decode(ids[len(ids) - tail:], skip_special_tokens=True))
    return kept, True


def truncate_examples(tokenizer: Any, examples: Sequence[LongExample],
                      max_tokens: int) -> tuple[list[LongExample], list[bool]]:
    """Every example with its prompt cut by :func:`truncate_middle`, and which ones were cut."""
    cut = [truncate_middle(tokenizer, ex.prompt, max_tokens) for ex in examples]
    return [replace(ex, prompt=p) for ex, (p, _) in zip(examples, cut, strict=True)], [c for _, c in cut]


def truncated_counts(examples: Sequence[LongExample], flags: Sequence[bool]) -> dict[str, int]:
    """How many examples of each dataset were truncated (every dataset listed, zeros included).

    >>> exs = [LongExample.build(d, context="c", input="q", answers=("a",)) for d in ("trec", "musique", "trec")]
    >>> truncated_counts(exs, [True, False, True])
    {'musique': 0, 'trec': 2}
    """
    if len(examples) != len(flags):
        raise ValueError(f"examples and flags differ in length ({len(examples)} vs {len(flags)}); pass one flag "
                         "per example")
    counts = dict.fromkeys(sorted({ex.dataset for ex in examples}), 0)
    for ex, flag in zip(examples, flags, strict=True):
        counts[ex.dataset] += int(bool(flag))
    return counts
