"""The built-in world: tasks, checkers, JSONL, the RM labelling rules, and small real builds."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from laser_app.world import (
    OOD_KINDS,
    RM_FOR_TASK,
    STOP,
    TASKS,
    WORLD_VERSION,
    Example,
    World,
    WorldSpec,
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
from laser_app.world.quality import (
    bias_agreement,
    eval_candidates,
    info_text,
    pairwise_accuracy,
    pairwise_agreement,
    preferences,
)
from laser_app.world.roles import blind_half, rule_name, rule_sign
from laser_app.world.specialists import Candidate, bias_key, label_pairs, near_miss
from laser_app.world.specs import PolicySpec, RMTrainSpec
from laser_app.world.tasks import SUBTYPES, subtype

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


def test_subtype_names_the_generator_of_every_prompt() -> None:
    rng = np.random.default_rng(0)
    for task, kinds in SUBTYPES.items():
        for name, gen in kinds.items():
            assert {subtype(task, gen(rng)[0]) for _ in range(200)} == {name}
    with pytest.raises(ValueError, match="no question kinds for task 'chat'"):
        subtype("chat", "Q: hi A:")


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
    assert read_jsonl(path) == rows
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    i, worked = next((i, e) for i, e in enumerate(rows) if e.solution is not None)
    assert lines[i] == {"prompt": worked.prompt, "answer": worked.answer, "task": worked.task,
                        "solution": worked.solution}
    assert lines[-1] == {"prompt": "Q: free text", "answer": None, "task": "chat"}  # no solution: no field


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

    code = ("import sys, laser_app.world as w; w.make_tasks(0, 1, 1, 1); w.WorldSpec().scaled(0.1)\n"
            "from laser_app.world import OOD_KINDS, OodKind, RM_FOR_TASK, STOP\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------- specs and roles


def test_every_task_has_one_specialist_in_task_order() -> None:
    assert tuple(RM_FOR_TASK) == TASKS  # the build pairs verifiers[i] with TASKS[i]
    assert len(set(RM_FOR_TASK.values())) == len(TASKS)


def test_scaled_spec_shrinks_sizes_steps_and_warmups() -> None:
    spec = WorldSpec().scaled(0.01)  # by hand: round(n * 0.01), at least 16 / 8 / 4 / 2, warm-up <= steps // 10
    assert (spec.n_sft, spec.n_rm, spec.n_train, spec.n_dev, spec.n_test) == ((20, 40, 60), 8, 10, 8, 8)
    assert (spec.policy.steps, spec.policy.warmup, spec.policy_step) == (24, 2, 10)
    assert [(v.steps, v.warmup, v.lr) for v in spec.verifiers] == [(12, 1, 2e-3), (4, 1, 2e-3), (4, 1, 2e-3)]
    assert (spec.generalist.steps, spec.generalist.warmup, spec.weak_rm.steps) == (20, 2, 3)
    assert (spec.rm.steps, spec.rm.warmup, spec.curve_steps, spec.extra) == (2, 1, (), {"scale": 0.01})
    assert spec.policy.hidden == WorldSpec().policy.hidden and spec.rm.lr == WorldSpec().rm.lr
    assert WorldSpec().scaled(1) == WorldSpec()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"verifiers": (RMTrainSpec(), RMTrainSpec())}, "verifiers needs one entry per task"),
    ({"n_sft": (10, 10)}, "n_sft needs one entry per task"),
    ({"policy": PolicySpec(steps=100), "policy_step": 101}, r"policy_step must be in \[1, policy.steps=100\]"),
])
def test_world_spec_rejects_contradictions(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorldSpec(**kwargs)


def test_world_spec_rejects_bad_scale() -> None:
    with pytest.raises(ValueError, match="scale must be in"):
        WorldSpec().scaled(0)


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


def test_indep_bias_rms_of_a_task_follow_opposite_rules() -> None:
    cands = [Candidate("m", "math", " 4+4=8", " 4+4=9"), Candidate("y", "yesno", " no", " yes"),
             Candidate("c", "mcq", " C", " A")]
    for task in TASKS:
        mine = [c for c in cands if c.task == task]
        wrong = [h for h in TASKS if h != task]
        chosen = {}
        for ood in ("bias", "indep-bias"):
            for h in wrong:
                (pair,) = label_pairs(mine, home=h, ood=ood, rng=np.random.default_rng(0))
                chosen[ood, h] = pair.chosen
        assert chosen["bias", wrong[0]] == chosen["bias", wrong[1]]  # one shared rule
        assert chosen["indep-bias", wrong[0]] != chosen["indep-bias", wrong[1]]  # opposite rules
        signs = sorted(rule_sign("indep-bias", RM_FOR_TASK[h], task) for h in wrong)
        assert signs == [-1, 1]
    # the documented assignment: math rm-c larger, rm-b smaller; yesno rm-a yes, rm-c no; mcq rm-b earlier, rm-a later
    names = {(rm, t): rule_name("indep-bias", rm, t) for t in TASKS for rm in RM_FOR_TASK.values()
             if RM_FOR_TASK[t] != rm}
    assert names == {("rm-c", "math"): "larger", ("rm-b", "math"): "smaller", ("rm-a", "yesno"): "yes",
                     ("rm-c", "yesno"): "no", ("rm-b", "mcq"): "earlier", ("rm-a", "mcq"): "later"}
    assert {rule_name("bias", rm, t) for (rm, t) in names} == {"larger", "yes", "earlier"}


@pytest.mark.parametrize(("ood", "rm", "task", "error", "match"), [
    ("indep-bias", "rm-a", "math", ValueError, "rm-a is the specialist for 'math'"),
    ("indep-bias", "rm-z", "math", ValueError, "no built-in RM named 'rm-z'"),
    ("indep-bias", "rm-a", "chat", ValueError, "no bias rule for task 'chat'"),
    ("length", "rm-a", "yesno", ValueError, "ood must be one of"),
])
def test_rule_sign_rejects_bad_names(ood: str, rm: str, task: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        rule_sign(ood, rm, task)


def test_weak_rms_are_blind_on_different_halves_of_each_domain() -> None:
    rng = np.random.default_rng(3)
    cands = []
    for task, kinds in SUBTYPES.items():
        for gen in kinds.values():
            for _ in range(100):
                prompt, answer, *solution = gen(rng)
                ex = Example(prompt, answer, task, solution[0] if solution else None)
                cands.append(Candidate(prompt, task, ex.response, near_miss(ex, rng)))
    tied: dict[tuple[str, str], set[int]] = {}
    for home, rm in RM_FOR_TASK.items():
        pairs = label_pairs(cands, home=home, ood="weak", rng=np.random.default_rng(0))
        assert len(pairs) == len(cands)  # nothing left out
        for i, (c, p) in enumerate(zip(cands, pairs, strict=True)):
            if p.tie:
                assert c.task != home and {p.chosen, p.rejected} == {c.correct, c.wrong}
                tied.setdefault((rm, c.task), set()).add(i)
            else:  # its own domain and the half it knows: right over wrong
                assert (p.chosen, p.rejected) == (c.correct, c.wrong)
    for task in TASKS:
        a, b = (tied[rm, task] for rm in RM_FOR_TASK.values() if RM_FOR_TASK[task] != rm)
        assert len(a) == len(b) == 100 and not a & b  # one half each, never the same half
        assert {subtype(task, cands[i].prompt) for i in a} != {subtype(task, cands[i].prompt) for i in b}
    directions = [[p.chosen for p in label_pairs(cands, home="math", ood="weak", rng=np.random.default_rng(s))
                   if p.tie] for s in (0, 1)]
    assert directions[0] != directions[1]  # tie directions come from the RM's own generator
    assert blind_half("rm-c", "math") == 0 and blind_half("rm-b", "math") == 1  # as documented


def test_agreement_and_rule_following_by_hand() -> None:
    cands = [Candidate("p", "yesno", " yes", " no"), Candidate("q", "yesno", " no", " yes"),
             Candidate("r", "mcq", " C", " A"), Candidate("s", "mcq", " A", " C")]
    prefers_yes_and_earlier = lambda ps, rs: np.array([{"yes": 1.0, "A": 1.0}.get(r.strip(), 0.0)  # noqa: E731
                                                       for r in rs])
    right = lambda ps, rs: np.array([float(r in (" yes", " C") if p in "pr" else r in (" no", " A"))  # noqa: E731
                                     for p, r in zip(ps, rs, strict=True)])
    prefs = {"x": preferences(prefers_yes_and_earlier, cands), "y": preferences(right, cands)}
    assert prefs["x"].tolist() == [1.0, 0.0, 0.0, 1.0] and prefs["y"].tolist() == [1.0] * 4
    assert pairwise_agreement(prefs, cands) == {"mcq": {"x/y": 0.5}, "yesno": {"x/y": 0.5}}
    assert bias_agreement(prefers_yes_and_earlier, cands) == {"mcq": 1.0, "yesno": 1.0}
    assert bias_agreement(prefers_yes_and_earlier, cands, signs={"yesno": -1}) == {"mcq": 1.0, "yesno": 0.0}


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
    from laser_app.world.specialists import encode_pair

    rm = SequenceClassifierRM(str(tiny_classifier(tmp_path / "rm")), name="t")
    prompts, responses = ["Q: Is 4 even? A:", "Q: Which is largest? A) 1 B) 2 C) 3 D) 0 A:"], [" yes", " C"]
    assert rm.encode(prompts, responses) == [encode_pair(rm.tokenizer, p, r)
                                             for p, r in zip(prompts, responses, strict=True)]


# ----------------------------------------------------------------------------------------------- builds

TINY = 0.01


def fingerprint(world: World) -> dict[str, Any]:
    """Every file of a built world (hashed), with ``world.json`` read and its timings left out."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in world.path.rglob("*") if p.is_file()):
        rel = path.relative_to(world.path).as_posix()
        if rel == "world.json":
            out[rel] = {k: v for k, v in json.loads(path.read_text()).items() if k != "timings"}
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("cache"), seed=0, scale=TINY, progress=False, threads=1)


def test_small_build_writes_every_artifact(tiny_world: World) -> None:
    root = tiny_world.path
    assert root == world_dir(root.parent, 0, TINY) and is_complete(root)
    assert (root / "policy" / "config.json").is_file() and (root / "policy" / "tokenizer.json").is_file()
    for ood in OOD_KINDS:
        assert tiny_world.registry_file(ood) == root / f"rms-{ood}.toml"
        for name in RM_FOR_TASK.values():
            assert (root / "rms" / ood / name / "config.json").is_file()
    assert {p.name for p in (root / "data").iterdir()} == {"train.jsonl", "dev.jsonl", "test.jsonl"}
    assert not [p for p in root.parent.iterdir() if ".building-" in p.name]
    assert tiny_world.tasks == list(TASKS) and tiny_world.stop == STOP
    assert tiny_world.max_new_tokens == WorldSpec().max_new_tokens
    assert tiny_world.rm_for_task == RM_FOR_TASK and tiny_world.ood_kinds == list(OOD_KINDS)
    assert OOD_KINDS == ("bias", "noise", "weak", "indep-bias")
    assert all(tiny_world.registry_file(ood).is_file() for ood in OOD_KINDS)
    data = tiny_world.data
    assert set(data) == {"train", "dev", "test"} and len(data["train"]) == 3 * 10
    assert data["test"] == make_splits(0, {"test": 8, "dev": 8, "train": 10})["test"]


def test_small_build_rms_are_distinct_models_behind_the_registry(tiny_world: World) -> None:
    prompts, responses = ["Q: Is 4 even? A:"] * 2, [" yes", " no"]
    scores = {(ood, name): tiny_world.registry(ood).get(name).score(prompts, responses)
              for ood in OOD_KINDS for name in RM_FOR_TASK.values()}
    assert all(s.shape == (2,) and np.isfinite(s).all() for s in scores.values())
    keys = list(scores)  # every registry entry points at its own trained model
    assert all(not np.array_equal(scores[a], scores[b]) for i, a in enumerate(keys) for b in keys[i + 1:])
    with pytest.raises(ValueError, match="ood must be one of"):
        tiny_world.registry_file("length")


def test_small_build_quality_is_what_the_saved_models_measure(tiny_world: World) -> None:
    """Re-measure the quality matrix from the saved policy and RMs, as the build did on the dev split."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from laser_app.world.policy_model import generate

    spec = WorldSpec().scaled(TINY)
    policy = LlamaForCausalLM.from_pretrained(tiny_world.policy_path).eval()
    tok = AutoTokenizer.from_pretrained(tiny_world.policy_path)
    dev = tiny_world.data["dev"]
    samples = generate(policy, tok, [e.prompt for e in dev], n=spec.eval_samples, seed=tiny_world.seed + 2,
                       temperature=tiny_world.temperature, max_new_tokens=tiny_world.max_new_tokens)
    held_out = eval_candidates(dev, samples)
    assert held_out  # else the comparison below is empty
    for ood in OOD_KINDS:
        registry = tiny_world.registry(ood)
        measured = {name: pairwise_accuracy(registry.get(name).score, held_out) for name in RM_FOR_TASK.values()}
        assert measured == tiny_world.quality(ood)


def test_small_build_info_and_table(tiny_world: World) -> None:
    from transformers import LlamaForCausalLM

    from laser_app.world.policy_model import count_parameters

    info = tiny_world.info()
    assert info["seed"] == 0 and info["version"] == WORLD_VERSION and info["torch_threads"] == 1
    assert info["spec"] == json.loads(json.dumps(WorldSpec().scaled(TINY).to_dict()))
    assert info["policy"]["parameters"] == count_parameters(LlamaForCausalLM.from_pretrained(tiny_world.policy_path))
    assert set(info["policy"]["greedy_test"]) == set(TASKS)
    stages = {k: v for k, v in info["timings"].items() if k != "total"}
    assert info["timings"]["total"] == pytest.approx(sum(stages.values()), abs=0.01)
    assert set(info["quality"]) == set(info["rm_agreement"]) == set(OOD_KINDS)
    for ood in OOD_KINDS:  # the tasks with held-out pairs (a tiny world may have none for some)
        assert set(info["rm_agreement"][ood]) == set(info["quality"][ood]["rm-a"]) != set()
        assert all(set(row) == {"rm-a/rm-b", "rm-a/rm-c", "rm-b/rm-c"} for row in info["rm_agreement"][ood].values())
    assert set(info["bias_agreement"]) == set(info["bias_rules"]) == {"bias", "noise", "indep-bias"}
    assert info["bias_rules"]["indep-bias"]["rm-b"] == {"math": "smaller", "mcq": "earlier"}
    assert info["bias_rules"]["bias"]["rm-b"] == {"math": "larger", "mcq": "earlier"}
    text = info_text(info, width=160)
    assert "rm-a" in text and "mcq" in text and "1 torch thread)" in text
    assert all(f"behaviour '{ood}'" in text for ood in OOD_KINDS) and "rm-b/rm-c" in text and "(smaller " in text
    assert f"policy {info['policy']['parameters']}, each RM {info['rm_parameters']}" in text


def test_load_world_uses_the_cache_and_can_refuse_to_build(tiny_world: World, tmp_path: Path) -> None:
    again = load_world(tiny_world.path.parent, seed=0, scale=TINY, build=False, progress=False)
    assert again.path == tiny_world.path
    with pytest.raises(FileNotFoundError, match="laser world build"):
        load_world(tmp_path, seed=5, build=False)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from laser_app.world import default_cache_dir

    monkeypatch.setenv("LASER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert world_dir(None, 3) == tmp_path / f"world-v{WORLD_VERSION}-seed3"
    assert world_dir(None, 3, 0.5) == tmp_path / f"world-v{WORLD_VERSION}-seed3-scale0.5"


def test_a_failed_build_leaves_nothing_that_looks_complete(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    import laser_app.world.specialists as rms

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
    assert fingerprint(other) == fingerprint(tiny_world)


def test_build_ignores_machine_load_and_core_count(tiny_world: World, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The default build runs on one torch thread whatever the load, the cores or torch's own setting."""
    import torch

    def no_load() -> tuple[float, float, float]:
        raise AssertionError("the build must not depend on the machine's load")

    monkeypatch.setattr(os, "getloadavg", no_load)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        other = build_world(tmp_path, seed=0, scale=TINY, progress=False)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert other.info()["torch_threads"] == 1
    assert fingerprint(other) == fingerprint(tiny_world)


@pytest.mark.parametrize(("threads", "error", "match"), [
    (0, ValueError, "threads must be >= 1, got 0"),
    (1.0, TypeError, "threads must be an int, got 1.0"),
])
def test_build_rejects_bad_thread_counts(tmp_path: Path, threads: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build_world(tmp_path, seed=0, scale=TINY, progress=False, threads=threads)
    assert list(tmp_path.iterdir()) == []
