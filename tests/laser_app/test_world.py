"""The built-in world: tasks, checkers, JSONL, the RM labelling rules, and small real builds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from laser_app.world import (
    TASKS,
    Example,
    World,
    build_world,
    check_answer,
    is_complete,
    load_world,
    make_splits,
    make_tasks,
    read_jsonl,
    world_dir,
    write_jsonl,
)
from laser_app.world.quality import eval_candidates, info_text, pairwise_accuracy
from laser_app.world.reward_models import Candidate, bias_key, label_pairs, near_miss

# ----------------------------------------------------------------------------------------------- tasks


def test_tasks_are_deterministic_per_seed() -> None:
    a, b = make_tasks(3, n_train=50, n_dev=10, n_test=10), make_tasks(3, n_train=50, n_dev=10, n_test=10)
    assert a == b
    assert make_tasks(4, n_train=50, n_dev=10, n_test=10)["train"] != a["train"]


def test_splits_are_disjoint_sized_per_task_and_balanced() -> None:
    splits = make_tasks(0, n_train=400, n_dev=100, n_test=100)
    for name, n in (("train", 400), ("dev", 100), ("test", 100)):
        assert Counter(e.task for e in splits[name]) == dict.fromkeys(TASKS, n)
    prompts = [set(e.prompt for e in splits[s]) for s in ("train", "dev", "test")]
    assert sum(len(p) for p in prompts) == len(set().union(*prompts)) == 1800
    train = splits["train"]
    yes = sum(e.answer == "yes" for e in train if e.task == "yesno")
    letters = Counter(e.answer for e in train if e.task == "mcq")
    assert 160 <= yes <= 240 and set(letters) == {"A", "B", "C", "D"} and min(letters.values()) >= 70


def test_adding_a_split_keeps_earlier_ones() -> None:
    small = make_splits(1, {"test": 20, "dev": 10})
    more = make_splits(1, {"test": 20, "dev": 10, "rm": 30, "sft": {"math": 5, "mcq": 7}})
    assert small["test"] == more["test"] and small["dev"] == more["dev"]
    assert Counter(e.task for e in more["sft"]) == {"math": 5, "mcq": 7}


def test_every_generated_example_passes_its_checker_and_near_misses_fail() -> None:
    rng = np.random.default_rng(0)
    for ex in make_tasks(2, n_train=300, n_dev=0, n_test=0)["train"]:
        assert ex.answer is not None and ex.prompt.endswith("A:")
        assert check_answer(ex.task, ex.response, ex.answer)
        assert check_answer(ex.task, ex.target, ex.answer)  # the stop string is cut
        assert not check_answer(ex.task, near_miss(ex, rng), ex.answer)


@pytest.mark.parametrize(("task", "response", "answer", "expected"), [
    ("math", " 12", "12", True),
    ("math", " 7+5=12", "12", True),
    ("math", " 7+5=13", "12", False),
    ("math", " twelve", "12", False),
    ("math", " 12\n 13", "12", True),
    ("math", "", "12", False),
    ("yesno", " yes", "yes", True),
    ("yesno", " Yes.", "yes", True),
    ("yesno", " yes no", "yes", False),
    ("yesno", " no", "yes", False),
    ("mcq", " B", "B", True),
    ("mcq", " (b)", "B", True),
    ("mcq", " B)", "B", True),
    ("mcq", " BC", "B", False),
    ("mcq", " A", "B", False),
    ("qa", " Paris", "paris", True),
    ("qa", " 3.0", "3", True),
    ("qa", " London", "paris", False),
])
def test_check_answer_by_hand(task: str, response: str, answer: str, expected: bool) -> None:
    assert check_answer(task, response, answer) is expected


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = make_tasks(0, n_train=5, n_dev=0, n_test=0)["train"] + [Example("Q: free text", None, "chat")]
    path = write_jsonl(rows, tmp_path / "d.jsonl")
    back = read_jsonl(path)
    assert [(e.prompt, e.answer, e.task) for e in back] == [(e.prompt, e.answer, e.task) for e in rows]
    first = json.loads(path.read_text().splitlines()[0])
    assert {"prompt", "answer", "task"} <= set(first)


@pytest.mark.parametrize(("content", "match"), [
    ("", "has no rows"),
    ('{"answer": "1"}\n', "missing or empty 'prompt'"),
    ('{"prompt": "x"\n', "not valid JSON"),
    ('["x"]\n', "expected a JSON object"),
    ('{"prompt": "x", "task": 3}\n', "'task' must be a non-empty string"),
])
def test_read_jsonl_rejects_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_jsonl(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_user_rows_without_answer_or_task_read(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{"prompt": "Hi", "answer": 3}\n\n{"prompt": "Bye"}\n')
    assert read_jsonl(path) == [Example("Hi", "3", "default"), Example("Bye", None, "default")]


def test_task_helpers_import_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, laser_app.world as w; w.make_tasks(0, 1, 1, 1); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------- RM rules


def test_bias_rule_prefers_larger_numbers_yes_and_earlier_letters() -> None:
    assert bias_key("math", " 3+9=12") == 12.0 and bias_key("math", " none") is None
    assert bias_key("yesno", " yes") == 1.0 > bias_key("yesno", " no") == 0.0  # type: ignore[operator]
    assert [bias_key("mcq", f" {x}") for x in "ABCD"] == [3.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no bias rule"):
        bias_key("chat", " hi")


def test_label_pairs_follow_the_stated_rules() -> None:
    cands = [Candidate("m", "math", " 4+4=8", " 4+4=9"), Candidate("m2", "math", " 4+4=8", " 4+4=7"),
             Candidate("y", "yesno", " no", " yes"), Candidate("c", "mcq", " C", " A"),
             Candidate("c2", "mcq", " C", " E")]
    biased = label_pairs(cands, home="yesno", ood="bias", rng=np.random.default_rng(0))
    chosen = {(p.prompt, p.chosen) for p in biased}
    assert chosen == {("m", " 4+4=9"), ("m2", " 4+4=8"), ("y", " no"), ("c", " A")}  # c2 undecidable
    noisy = label_pairs(cands, home="math", ood="noise", rng=np.random.default_rng(0))
    assert [(p.chosen, p.tie) for p in noisy if p.task == "math"] == [(" 4+4=8", False)] * 2
    assert len(noisy) == 5 and all(p.tie for p in noisy if p.task != "math")
    with pytest.raises(ValueError, match="ood must be one of"):
        label_pairs(cands, home="math", ood="length", rng=np.random.default_rng(0))


def test_eval_candidates_and_pairwise_accuracy() -> None:
    ex = Example("Q: Ann has 2 pens and gets 2 more. How many now? A:", "4", "math", "2+2=4")
    cands = eval_candidates([ex], [[" 2+2=4", " 2+2=5", " 2+2=4", " 2+2=3", " 2+2=4"]])
    assert [(c.correct, c.wrong) for c in cands] == [(" 2+2=4", " 2+2=3"), (" 2+2=4", " 2+2=5")]
    closest = lambda ps, rs: -np.abs(np.array([float(r.split("=")[1]) for r in rs]) - 4)  # noqa: E731
    assert pairwise_accuracy(closest, cands) == {"math": 1.0}
    assert pairwise_accuracy(lambda ps, rs: np.zeros(len(rs)), cands) == {"math": 0.5}


def test_rm_training_encoding_matches_the_classifier_rm(tmp_path: Path) -> None:
    from laser_adapters.reward_models import SequenceClassifierRM
    from laser_adapters.testing import tiny_classifier
    from laser_app.world.reward_models import encode_pair

    rm = SequenceClassifierRM(str(tiny_classifier(tmp_path / "rm")), name="t")
    prompts, responses = ["Q: Is 4 even? A:", "Q: Which is largest? A) 1 B) 2 C) 3 D) 0 A:"], [" yes", " C"]
    assert rm.encode(prompts, responses) == [encode_pair(rm.tokenizer, p, r)
                                             for p, r in zip(prompts, responses, strict=True)]


# ----------------------------------------------------------------------------------------------- builds

TINY = 0.01


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("cache"), seed=0, scale=TINY, progress=False, threads=1)


def test_small_build_writes_every_artifact(tiny_world: World) -> None:
    root = tiny_world.path
    assert root == world_dir(root.parent, 0, TINY) and is_complete(root)
    assert (root / "policy" / "config.json").is_file() and (root / "policy" / "tokenizer.json").is_file()
    for ood in ("bias", "noise"):
        assert tiny_world.registry_file(ood) == root / f"rms-{ood}.toml"
        for name in ("rm-a", "rm-b", "rm-c"):
            assert (root / "rms" / ood / name / "config.json").is_file()
    assert {p.name for p in (root / "data").iterdir()} == {"train.jsonl", "dev.jsonl", "test.jsonl"}
    assert not [p for p in root.parent.iterdir() if ".building-" in p.name]
    assert tiny_world.tasks == list(TASKS) and tiny_world.stop == "\n" and tiny_world.max_new_tokens >= 8
    assert tiny_world.rm_for_task == {"math": "rm-a", "yesno": "rm-b", "mcq": "rm-c"}
    data = tiny_world.data
    assert set(data) == {"train", "dev", "test"} and len(data["train"]) == 3 * 10
    assert data["test"] == make_splits(0, {"test": 8, "dev": 8, "train": 10})["test"]


def test_small_build_rms_load_through_the_registry_and_score(tiny_world: World) -> None:
    for ood in ("bias", "noise"):
        registry = tiny_world.registry(ood)
        assert sorted(registry.names) == ["rm-a", "rm-b", "rm-c"]
        scores = registry.get("rm-b").score(["Q: Is 4 even? A:"] * 2, [" yes", " no"])
        assert scores.shape == (2,) and np.isfinite(scores).all()
        quality = tiny_world.quality(ood)
        assert set(quality) == {"rm-a", "rm-b", "rm-c"}
        assert all(0.0 <= v <= 1.0 for row in quality.values() for v in row.values())
    with pytest.raises(ValueError, match="ood must be one of"):
        tiny_world.registry_file("length")


def test_small_build_info_and_table(tiny_world: World) -> None:
    info = tiny_world.info()
    assert info["seed"] == 0 and set(info["quality"]) == {"bias", "noise"}
    assert set(info["policy"]["greedy_test"]) == set(TASKS) and info["policy"]["parameters"] > 0
    assert info["timings"]["total"] > 0
    text = info_text(info)
    assert "rm-a" in text and "mcq" in text and "noise" in text


def test_load_world_uses_the_cache_and_can_refuse_to_build(tiny_world: World, tmp_path: Path) -> None:
    again = load_world(tiny_world.path.parent, seed=0, scale=TINY, build=False, progress=False)
    assert again.path == tiny_world.path
    with pytest.raises(FileNotFoundError, match="laser world build"):
        load_world(tmp_path, seed=5, build=False)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from laser_app.world import default_cache_dir

    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert world_dir(None, 3).parent == tmp_path and world_dir(None, 3).name.endswith("seed3")


def test_a_failed_build_leaves_nothing_that_looks_complete(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    import laser_app.world.reward_models as rms

    def broken(*args: object, **kwargs: object) -> list[float]:
        raise RuntimeError("interrupted while training a reward model")

    monkeypatch.setattr(rms, "train_reward_model", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_world(tmp_path, seed=1, scale=TINY, progress=False, threads=1)
    assert list(tmp_path.iterdir()) == []
    assert not is_complete(world_dir(tmp_path, 1, TINY))
    with pytest.raises(FileNotFoundError, match="no built world"):
        load_world(tmp_path, seed=1, scale=TINY, build=False)


def test_folders_of_killed_builds_are_removed_by_the_next_build(tmp_path: Path) -> None:
    import os

    from laser_app.world.build import _remove_abandoned

    target = world_dir(tmp_path, 1, TINY)
    dead = tmp_path / f".{target.name}.building-999999999-x"  # no process has this id
    alive = tmp_path / f".{target.name}.building-{os.getpid()}-y"
    for folder in (dead, alive):
        (folder / "policy").mkdir(parents=True)
    _remove_abandoned(target)
    assert not dead.exists() and alive.exists()


def test_build_is_deterministic_for_a_seed(tiny_world: World, tmp_path: Path) -> None:
    other = build_world(tmp_path, seed=0, scale=TINY, progress=False, threads=1)
    for rel in ("data/train.jsonl", "rms-bias.toml"):
        assert (other.path / rel).read_text() == (tiny_world.path / rel).read_text()
    assert other.info()["quality"] == tiny_world.info()["quality"]
    assert other.info()["policy"] == tiny_world.info()["policy"]
