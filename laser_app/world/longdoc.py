"""The built-in long-document QA suite: seeded documents of facts about invented people, in three LongBench-like
subsets whose questions need the whole document.

Each item is a :class:`~laser_app.longbench.LongExample`. Its context is many sentences of facts (``ka lives in
north vale .``, ``ros works as a salt smith .``, ``mi keeps a grey owl .``) with a little filler, and its
question asks which place, trade or pet the document names most or least often. Answers are two words, and the
strongest distractor is a near miss sharing one word with the answer (``north ford`` beside ``north vale``),
so token F1 gives partial credit where exact match gives none.

- ``doc-single`` (single-document QA): one document; the answer is the value named most often, one or two
  mentions ahead of the near miss.
- ``doc-multi`` (multi-document QA): three or four passages; the answer is the value named in the most
  passages, while the near miss is named more often in all but crowded into fewer passages, so the answer
  needs the passages counted apart (counting mentions over the whole context gives the near miss).
- ``doc-fewshot`` (few-shot): a solved example on a short document, then a document whose most named value is
  asked; the example's document names the last one's runner-up often, so the answer needs the last document
  counted apart. Only the first line of an answer counts (LongBench's rule for its few-shot subsets).

Why aggregation rather than looking up one fact: a policy small enough to train in a minute on two CPU cores
learns to count over a document (an attention average) in a few hundred steps, while a two-layer model trained
for as long never learned to retrieve one fact keyed by a name (measured: F1 stayed at the level of guessing
the right kind of value). The task still reads the whole document, and cutting its middle changes the counts.

Every word is lower case and every punctuation mark a separate word, so a word-level tokenizer
(:func:`suite_tokenizer`) covers the suite exactly. Prompts run from about 70 to 300 words; the longest
(mostly few-shot) exceed the suite policy's 256-token window and are cut in the middle (LongBench's
convention). Splits are drawn from one seeded stream per subset without repeating a prompt, so they are
disjoint.

>>> items = make_suite(0, {"test": 2})["test"]
>>> sorted({ex.dataset for ex in items}), len(items)
(['doc-fewshot', 'doc-multi', 'doc-single'], 6)
>>> ex = [e for e in items if e.dataset == "doc-single"][0]
>>> ex.prompt.endswith("answer :"), len(ex.answers[0].split())
(True, 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from laser_app.longbench import PROMPTS, LongExample, build_prompt

SUBSETS: tuple[str, ...] = ("doc-single", "doc-multi", "doc-fewshot")
#: What LongBench subset each built-in subset plays.
LIKE: dict[str, str] = {"doc-single": "single-document QA", "doc-multi": "multi-document QA",
                        "doc-fewshot": "few-shot"}
STOP = "\n"

_SYLLABLES = ("ka", "lo", "mi", "ren", "sa", "tor", "vel", "zan", "bri", "dum", "fen", "gar", "hol", "jun",
              "kel", "mor", "nes", "pil", "quin", "ros")
#: relation -> (first words, second words, the fact sentence, the noun its questions ask for)
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str]] = {
    "home": (("north", "south", "east", "west", "old", "new"),
             ("vale", "ford", "port", "hill", "field", "bridge"), "{p} lives in {v} .", "place"),
    "trade": (("glass", "stone", "wood", "salt", "iron", "silk"),
              ("maker", "trader", "carver", "keeper", "smith", "cutter"), "{p} works as a {v} .", "trade"),
    "pet": (("grey", "black", "white", "red", "small", "old"),
            ("cat", "dog", "crow", "goat", "hare", "owl"), "{p} keeps a {v} .", "pet"),
}
#: Per subset, how its question reads ({noun}: place, trade or pet).
QUESTIONS = {"doc-single": "which {noun} is named most often in the document ?",
             "doc-multi": "which {noun} is named in the most passages ?",
             "doc-fewshot": "which {noun} is named most often in the last document ?"}
LONG_SHARE = 1 / 6
_FILLER = ("the weather was mild that year .", "many people came to the market .",
           "the road to the coast was long .", "nobody remembers when the town was built .",
           "the river rose in the spring .", "a fair was held in the old square .")
Item = tuple[str, str, str]
"""What a generator draws: context, question, answer."""


def _name(rng: np.random.Generator) -> str:
    a, b = rng.choice(len(_SYLLABLES), size=2, replace=False)
    return _SYLLABLES[int(a)] + _SYLLABLES[int(b)]


def _value(rng: np.random.Generator, relation: str) -> str:
    first, second, *_ = RELATIONS[relation]
    return f"{first[int(rng.integers(len(first)))]} {second[int(rng.integers(len(second)))]}"


def _candidates(rng: np.random.Generator, relation: str, n: int) -> list[str]:
    """``n`` distinct values of ``relation``, the second sharing a word with the first (a near miss)."""
    first = _value(rng, relation)
    a, b = first.split()
    words = RELATIONS[relation][:2]
    while True:
        near = (f"{a} {words[1][int(rng.integers(6))]}" if rng.random() < 0.5
                else f"{words[0][int(rng.integers(6))]} {b}")
        if near != first:
            break
    out = [first, near]
    while len(out) < n:
        v = _value(rng, relation)
        if v not in out:
            out.append(v)
    return out


def _facts(rng: np.random.Generator, relation: str, values: Sequence[str], n_other: int) -> list[str]:
    """Sentences naming each of ``values`` once (as ``relation``), ``n_other`` facts of other relations and a
    little filler, shuffled."""
    others = [r for r in RELATIONS if r != relation]
    lines = [RELATIONS[relation][2].format(p=_name(rng), v=v) for v in values]
    for _ in range(n_other):
        r = others[int(rng.integers(len(others)))]
        lines.append(RELATIONS[r][2].format(p=_name(rng), v=_value(rng, r)))
    lines += [_FILLER[int(i)] for i in rng.integers(len(_FILLER), size=int(rng.integers(0, 2)))]
    return [lines[int(i)] for i in rng.permutation(len(lines))]


def _n_other(rng: np.random.Generator, low: int, high: int) -> int:
    """How many facts of other relations a document holds: ``low``..``high``, and for about one document in
    six 15-30 more (the long tail that outgrows the policy's window and is cut in the middle)."""
    return int(rng.integers(low, high)) + (int(rng.integers(15, 31)) if rng.random() < LONG_SHARE else 0)


def _question(subset: str, relation: str) -> str:
    return QUESTIONS[subset].format(noun=RELATIONS[relation][3])


def _relation(rng: np.random.Generator) -> str:
    return list(RELATIONS)[int(rng.integers(len(RELATIONS)))]


def _single(rng: np.random.Generator) -> Item:
    """The most frequent value wins by one or two mentions over a near miss."""
    relation = _relation(rng)
    top, near, *rest = _candidates(rng, relation, int(rng.integers(3, 5)))
    k = int(rng.integers(3, 6))
    counts = [k, k - int(rng.integers(1, 3)), *(int(rng.integers(1, k - 1)) for _ in rest)]
    values = [v for v, c in zip((top, near, *rest), counts, strict=True) for _ in range(c)]
    lines = _facts(rng, relation, values, _n_other(rng, 2, 8))
    return " ".join(lines), _question("doc-single", relation), top


def _multi(rng: np.random.Generator) -> Item:
    """The value named in the most passages wins; a near miss is named more often in all, but crowded into
    fewer passages, so counting mentions gives the wrong answer."""
    relation = _relation(rng)
    top, near, *rest = _candidates(rng, relation, int(rng.integers(2, 4)))
    n = int(rng.integers(3, 5))
    spread = int(rng.integers(2, n)) if n > 2 else 2  # passages naming the answer, once each
    crowd = int(rng.integers(1, spread))  # passages naming the near miss, several times each
    hosts_top = rng.choice(n, size=spread, replace=False)
    hosts_near = rng.choice(n, size=crowd, replace=False)
    passages: list[list[str]] = [[] for _ in range(n)]
    for k in hosts_top:
        passages[int(k)].append(top)
    per_host = -(-(spread + 1) // crowd)  # enough that the near miss is named more often than the answer
    for k in hosts_near:
        passages[int(k)] += [near] * (per_host + int(rng.integers(0, 2)))
    for v in rest:  # the others in fewer passages than the answer
        for k in rng.choice(n, size=int(rng.integers(1, spread)), replace=False):
            passages[int(k)].append(v)
    text = [f"passage {k + 1} : " + " ".join(_facts(rng, relation, vs, _n_other(rng, 0, 3) // 2))
            for k, vs in enumerate(passages)]
    return "\n".join(text), _question("doc-multi", relation), top


def _fewshot(rng: np.random.Generator) -> Item:
    """A solved example on a short document, then the most named value of the last document. The example's
    document names the last one's runner-up often, so counting over the whole context gives that instead."""
    relation = _relation(rng)
    top, near, *rest = _candidates(rng, relation, int(rng.integers(3, 5)))
    k = int(rng.integers(2, 5))
    counts = [k, k - 1, *(int(rng.integers(1, k)) for _ in rest)]
    values = [v for v, c in zip((top, near, *rest), counts, strict=True) for _ in range(c)]
    shot_top = rest[0]  # the example's answer: named most there, with the near miss close behind
    shot_values = [shot_top] * 3 + [near] * 2
    shot = " ".join(_facts(rng, relation, shot_values, int(rng.integers(0, 2))))
    last = " ".join(_facts(rng, relation, values, _n_other(rng, 1, 5)))
    question = _question("doc-fewshot", relation)
    return f"document : {shot}\nquestion : {question}\nanswer : {shot_top}\ndocument : {last}", question, top


GENERATORS = {"doc-single": _single, "doc-multi": _multi, "doc-fewshot": _fewshot}


def build_item(subset: str, context: str, question: str, answer: str, *, id: str = "") -> LongExample:
    """One suite item as a :class:`~laser_app.longbench.LongExample` with the subset's prompt."""
    prompt = build_prompt(subset, context, question)
    return LongExample(id=id, dataset=subset, context=context, input=question, answers=(answer,), prompt=prompt,
                       length=len(context.split()), language="en")


def make_suite(seed: int, sizes: Mapping[str, int], *,
               subsets: Sequence[str] = SUBSETS) -> dict[str, list[LongExample]]:
    """Disjoint splits with ``sizes[split]`` items per subset, filled in the order of ``sizes``; each split
    shuffled. One generator per subset seeded from ``(seed, subset)``, as the short tasks do."""
    out: dict[str, list[LongExample]] = {name: [] for name in sizes}
    for s_index, subset in enumerate(subsets):
        if subset not in GENERATORS:
            raise ValueError(f"unknown subset {subset!r}; built-in subsets: {list(SUBSETS)}")
        rng = np.random.default_rng([seed, 31_337, s_index])
        seen: set[str] = set()
        for name, n in sizes.items():
            made = 0
            while made < n:
                context, question, answer = GENERATORS[subset](rng)
                if context + question in seen:
                    continue
                seen.add(context + question)
                out[name].append(build_item(subset, context, question, answer, id=f"{subset}-{name}-{made}"))
                made += 1
    for k, name in enumerate(sizes):
        order = np.random.default_rng([seed, 65_537, k]).permutation(len(out[name]))
        out[name] = [out[name][int(i)] for i in order]
    return out


def vocabulary() -> list[str]:
    """Every word the suite writes (prompts, documents, answers), sorted: the word tokenizer's vocabulary."""
    words = {a + b for a in _SYLLABLES for b in _SYLLABLES if a != b}
    for first, second, sentence, noun in RELATIONS.values():
        words.update((*first, *second, noun))
        words.update(w for w in sentence.split() if not w.startswith("{"))
    for text in (*_FILLER, *(PROMPTS[s] for s in SUBSETS), *QUESTIONS.values(), "document :"):
        words.update(w for w in text.replace("\n", " ").split() if not w.startswith("{"))
    words.update(("passage", *(str(k) for k in range(1, 10))))
    return sorted(words)


def suite_tokenizer() -> Any:
    """A word-level fast tokenizer over :func:`vocabulary` (newlines are words too), saved and loaded like
    any hub tokenizer; decoding joins words with single spaces.

    >>> tok = suite_tokenizer()
    >>> ids = tok("which pet is named most often ?\\nanswer : grey owl")["input_ids"]
    >>> len(ids), tok.decode(ids, skip_special_tokens=True)
    (13, 'which pet is named most often ? \\n answer : grey owl')
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ("<pad>", "<s>", "</s>", "<unk>")
    vocab = {t: i for i, t in enumerate((*special, STOP, *vocabulary()))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n|[^\s]+"), behavior="removed", invert=True)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", padding_side="left")


def write_suite(items: Iterable[LongExample], path: str | Path) -> Path:
    """Write items as LongBench-format JSONL (``input``, ``context``, ``answers``, ``length``, ``dataset``,
    ``language``, ``all_classes``, ``_id``), which ``laser bon --longbench`` and the suite loader read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in items:
            fh.write(json.dumps({"input": ex.input, "context": ex.context, "answers": list(ex.answers),
                                 "length": ex.length, "dataset": ex.dataset, "language": ex.language,
                                 "all_classes": None, "_id": ex.id}) + "\n")
    return path
