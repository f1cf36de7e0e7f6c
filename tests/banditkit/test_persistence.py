"""save/load: exact continuation, nested arrays, atomic replacement, clear errors, no pickle, the class
registry, older states."""

from __future__ import annotations

import copy
import json
import os
import pickle
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditkit import base
from banditkit.base import BasePolicy, policy_class
from banditkit.persistence import STATE_FILE, load, read_state, save
from banditkit.policies._linear_arms import _TRIANGLE_MIN_DIM
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB
from tests.banditkit.states import assert_same_state


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def play(policy: BasePolicy, seed: int, steps: int) -> list[int]:
    assert policy.dim is not None
    rng = np.random.default_rng(seed)
    choices = []
    for _ in range(steps):
        x = rng.normal(size=policy.dim)
        arm = policy.select(x)
        choices.append(arm)
        policy.update(arm, float(np.tanh(x[0] * (arm - 1)) + 0.1 * rng.normal()), x)
    return choices


POLICIES: dict[str, Callable[[], BasePolicy]] = {
    "linucb": lambda: LinUCB(3, 5, alpha=0.4, seed=1),
    "linucb-float32-discounted": lambda: LinUCB(3, 5, alpha=0.4, discount=0.9, dtype="float32", seed=1),
    "linucb-triangle": lambda: LinUCB(2, _TRIANGLE_MIN_DIM, alpha=0.4, discount=0.95),
    "lin-ts": lambda: LinearThompsonSampling(3, 5, v=0.3, seed=1),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_round_trip_continues_identically(name: str, tmp_path: Path) -> None:
    policy = POLICIES[name]()
    play(policy, seed=0, steps=60)
    save(policy, tmp_path / "saved")
    loaded = load(tmp_path / "saved")
    assert type(loaded) is type(policy)
    assert_same_state(loaded.state_dict(), policy.state_dict())
    assert play(loaded, seed=1, steps=80) == play(policy, seed=1, steps=80)
    assert_same_state(loaded.state_dict(), policy.state_dict())


def test_the_files_are_json_and_npz(tmp_path: Path) -> None:
    policy = LinearThompsonSampling(2, 3, seed=2**100 + 7)
    play(policy, seed=0, steps=5)
    path = save(policy, tmp_path / "p")
    assert path == tmp_path / "p" and path.is_dir()
    names = sorted(p.name for p in path.iterdir())
    assert names[0].startswith("arrays-") and names[0].endswith(".npz") and names[1:] == [STATE_FILE]
    document = json.loads((path / STATE_FILE).read_text())
    assert document["format"] == "banditkit.policy" and document["arrays"] == names[0]
    state = document["state"]
    assert state["policy"] == "LinearThompsonSampling"
    assert state["hyperparams"] == {"dim": 3, "v": 1.0, "ridge": 1.0}
    assert state["rng"] == policy._rng.bit_generator.state  # 128-bit integers survive JSON
    assert state["state"]["A_inv"] == {"__ndarray__": "a1"}
    with np.load(path / names[0], allow_pickle=False) as npz:
        assert sorted(npz.files) == ["a0", "a1", "a2", "a3", "a4"]
        assert all(npz[key].dtype != object for key in npz.files)


class NestedState(BasePolicy, register=True):
    """A policy whose state nests arrays in dicts and lists at several depths (as wrappers do); registered,
    so that ``load`` can rebuild it."""

    def __init__(self, n_arms: int, *, label: str = "x", seed: int | None = None) -> None:
        super().__init__(n_arms, seed=seed)
        self.label = label
        self.payload: dict[str, Any] = {}

    def _select(self, context: Any) -> int:
        return 0

    def _probabilities(self, context: Any) -> np.ndarray:
        return np.ones(self.n_arms) / self.n_arms

    def _update(self, arm: int, reward: float, context: Any) -> None:
        pass

    def _hyperparams(self) -> dict[str, Any]:
        return {"label": self.label}

    def _get_state(self) -> dict[str, Any]:
        return self.payload

    def _set_state(self, state: dict[str, Any]) -> None:
        self.payload = state

    def _add_arm(self) -> None:
        pass

    def _remove_arm(self, arm: int) -> None:
        pass


def test_nested_arrays_and_plain_values_round_trip(tmp_path: Path) -> None:
    policy = NestedState(2, label="nested", seed=5)
    policy.payload = {
        "inner": {"deeper": {"weights": np.arange(6, dtype=np.float32).reshape(2, 3)},
                  "list": [np.array([1, 2], dtype=np.int16), {"flag": np.array([True, False])}, 3.5]},
        "scalars": [np.float64(0.25), np.int64(-4), np.bool_(True), None, "text", 2**127 + 1],
        "tuple": (np.zeros(0), 1),
        "empty": {},
        "string_array": np.array(["a", "bc"]),
    }
    save(policy, tmp_path / "nested")
    loaded = load(tmp_path / "nested")
    assert isinstance(loaded, NestedState) and loaded.label == "nested"
    got = loaded.payload
    np.testing.assert_array_equal(got["inner"]["deeper"]["weights"], np.arange(6).reshape(2, 3))
    assert got["inner"]["deeper"]["weights"].dtype == np.float32
    assert got["inner"]["list"][0].dtype == np.int16 and got["inner"]["list"][0].tolist() == [1, 2]
    assert got["inner"]["list"][1]["flag"].tolist() == [True, False] and got["inner"]["list"][2] == 3.5
    assert got["scalars"] == [0.25, -4, True, None, "text", 2**127 + 1]
    assert got["tuple"][0].shape == (0,) and got["tuple"][1] == 1
    assert got["empty"] == {} and got["string_array"].tolist() == ["a", "bc"]
    assert loaded._rng.bit_generator.state == policy._rng.bit_generator.state


def test_unsavable_values_are_refused(tmp_path: Path) -> None:
    policy = NestedState(2)
    policy.payload = {"objects": np.array([{"a": 1}], dtype=object)}
    with pytest.raises(TypeError, match=r"state\.state\.objects is an object array"):
        save(policy, tmp_path / "a")
    policy.payload = {"thing": object()}
    with pytest.raises(TypeError, match=r"state\.state\.thing holds a object"):
        save(policy, tmp_path / "b")
    policy.payload = {1: np.zeros(2)}  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="non-string key 1"):
        save(policy, tmp_path / "c")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_never_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    policy = LinUCB(2, 4, seed=0)
    play(policy, seed=0, steps=10)
    save(policy, tmp_path / "p")
    assert play(load(tmp_path / "p"), seed=1, steps=10) == play(policy, seed=1, steps=10)


def test_saving_again_replaces_the_save(tmp_path: Path) -> None:
    policy = LinUCB(2, 3, seed=0)
    save(policy, tmp_path / "p")
    play(policy, seed=0, steps=20)
    save(policy, tmp_path / "p")
    assert len(list((tmp_path / "p").glob("arrays-*.npz"))) == 1
    assert len(list((tmp_path / "p").iterdir())) == 2
    assert_same_state(load(tmp_path / "p").state_dict(), policy.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary directories left


def test_a_crash_while_replacing_keeps_the_old_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = LinUCB(2, 3, seed=0)
    play(policy, seed=0, steps=10)
    save(policy, tmp_path / "p")
    old = policy.state_dict()
    play(policy, seed=1, steps=10)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save(policy, tmp_path / "p")
    monkeypatch.undo()
    assert_same_state(load(tmp_path / "p").state_dict(), old)
    assert len(list((tmp_path / "p").glob("arrays-*.npz"))) == 1


def test_a_crash_while_creating_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="power cut"):
        save(LinUCB(2, 3), tmp_path / "p")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_write_into_an_unrelated_path(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"is not a directory written by banditkit\.save"):
        save(LinUCB(2, 3), tmp_path / "notes")
    (tmp_path / "file").write_text("plain file")
    with pytest.raises(ValueError, match=r"is not a directory written by banditkit\.save"):
        save(LinUCB(2, 3), tmp_path / "file")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_missing_and_corrupt_saves_raise_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no saved policy at .*nowhere: it has no state\.json"):
        load(tmp_path / "nowhere")
    path = save(LinUCB(2, 3, seed=0), tmp_path / "p")
    array_file = next(path.glob("arrays-*.npz"))
    good_json = (path / STATE_FILE).read_text()
    good_npz = array_file.read_bytes()

    array_file.write_bytes(good_npz[: len(good_npz) // 2])  # truncated
    with pytest.raises(ValueError, match=r"corrupt saved policy: cannot read .*arrays-.*\.npz"):
        load(path)
    damaged = bytearray(good_npz)
    damaged[good_npz.index(np.float64(1.0).tobytes()) + 7] ^= 0x01  # a diagonal 1.0 of A: the zip CRC
    array_file.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="corrupt saved policy"):
        load(path)
    array_file.unlink()
    with pytest.raises(ValueError, match=r"corrupt saved policy: .*arrays-.*\.npz is missing"):
        load(path)
    array_file.write_bytes(good_npz)

    (path / STATE_FILE).write_text(good_json[:-10])
    with pytest.raises(ValueError, match=r"corrupt saved policy: .*state\.json is not valid JSON"):
        load(path)
    (path / STATE_FILE).write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ValueError, match="is not a banditkit policy file"):
        load(path)
    document = json.loads(good_json)
    document["state"]["state"]["A"] = {"__ndarray__": "a99"}
    (path / STATE_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"array 'a99' \(state\.state\.A\) is missing from the \.npz"):
        load(path)
    document = json.loads(good_json)
    document["state"]["policy"] = "NoSuchPolicy"
    (path / STATE_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError, match="unknown policy class 'NoSuchPolicy'"):
        load(path)
    (path / STATE_FILE).write_text(good_json)
    assert isinstance(load(path), LinUCB)
    assert read_state(path)["policy"] == "LinUCB"


def test_a_damaged_zip_directory_is_reported(tmp_path: Path) -> None:
    path = save(LinUCB(2, 3, seed=0), tmp_path / "p")
    array_file = next(path.glob("arrays-*.npz"))
    with zipfile.ZipFile(array_file) as archive:
        assert archive.testzip() is None
    array_file.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt saved policy"):
        load(path)


# --------------------------------------------------------------------- the class registry
@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classes a test registers are forgotten after it."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_only_declared_classes_are_registered() -> None:
    builtin = {cls.__name__ for cls in base._REGISTRY.values() if base._is_builtin(cls)}
    assert builtin == {"EXP3", "EpsilonGreedy", "FixedArm", "LinUCB", "LinearThompsonSampling", "Normalized",
                       "RandomPolicy", "RoundRobin", "ThompsonSampling", "UCB1"}
    # Abstract bases and the test suite's undeclared classes stay out.
    names = {cls.__name__ for cls in base._REGISTRY.values()}
    assert not {"_LinearArms", "ArmStatistics", "LinearOracle", "RewardRecorder", "SampleMeanGreedy"} & names


@pytest.mark.usefixtures("scratch_registry")
def test_a_class_named_like_a_builtin_does_not_shadow_it(tmp_path: Path) -> None:
    policy = LinUCB(2, 3, alpha=0.4, seed=0)
    play(policy, seed=0, steps=10)
    path = save(policy, tmp_path / "linucb")
    impostor: type[NestedState] = type("LinUCB", (NestedState,), {})  # a class here named like banditkit's
    registered: type[NestedState] = types.new_class("LinUCB", (NestedState,), {"register": True},
                                 lambda ns: ns.update(__module__=__name__))
    assert impostor not in base._REGISTRY.values()
    assert base._REGISTRY[f"{__name__}.LinUCB"] is registered
    assert policy_class("LinUCB") is LinUCB
    loaded = load(path)
    assert type(loaded) is LinUCB
    assert play(loaded, seed=1, steps=10) == play(policy, seed=1, steps=10)
    # The registered one is saved under its full name and comes back as itself.
    mine = registered(2, label="mine")
    assert mine.state_dict()["policy"] == f"{__name__}.LinUCB"
    again = load(save(mine, tmp_path / "mine"))
    assert isinstance(again, registered) and type(again) is registered and again.label == "mine"


def test_a_registered_class_loads_from_saves_that_name_it_bare(tmp_path: Path) -> None:
    """Saves written before classes were named by ``module.QualName`` hold the bare class name."""
    path = save(NestedState(2, label="old", seed=3), tmp_path / "p")
    assert read_state(path)["policy"] == f"{__name__}.NestedState"
    document = json.loads((path / STATE_FILE).read_text())
    document["state"]["policy"] = "NestedState"
    (path / STATE_FILE).write_text(json.dumps(document))
    loaded = load(path)
    assert type(loaded) is NestedState and loaded.label == "old"


@pytest.mark.usefixtures("scratch_registry")
def test_an_unregistered_class_is_rebuilt_only_through_itself(tmp_path: Path) -> None:
    unlisted: type[NestedState] = type("Unlisted", (NestedState,), {})
    path = save(unlisted(2, label="u"), tmp_path / "p")
    with pytest.raises(ValueError, match=r"unknown policy class '.*\.Unlisted'.*register=True"):
        load(path)
    rebuilt = unlisted.from_state_dict(read_state(path))
    assert isinstance(rebuilt, unlisted) and type(rebuilt) is unlisted and rebuilt.label == "u"


def test_a_state_saved_when_discount_was_gamma_still_loads(tmp_path: Path) -> None:
    policy = LinUCB(3, 5, alpha=0.4, discount=0.9, seed=1)
    play(policy, seed=0, steps=40)
    state = policy.state_dict()
    assert state["hyperparams"]["discount"] == 0.9 and "gamma" not in state["hyperparams"]
    old = copy.deepcopy(state)
    old["hyperparams"]["gamma"] = old["hyperparams"].pop("discount")
    path = save(policy, tmp_path / "p")
    document = json.loads((path / STATE_FILE).read_text())
    document["state"]["hyperparams"] = {k.replace("discount", "gamma"): v
                                        for k, v in document["state"]["hyperparams"].items()}
    (path / STATE_FILE).write_text(json.dumps(document))
    restored = LinUCB(3, 5)
    restored.load_state_dict(copy.deepcopy(old))
    for twin in (BasePolicy.from_state_dict(copy.deepcopy(old)), restored, load(path)):
        assert isinstance(twin, LinUCB) and twin.discount == 0.9 and not hasattr(twin, "gamma")
        assert_same_state(twin.state_dict(), state)
        assert play(twin, seed=1, steps=30) == play(copy.deepcopy(policy), seed=1, steps=30)
