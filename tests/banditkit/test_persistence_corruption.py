"""Saved linear-policy states that are corrupt are refused on load, with one clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import banditkit
from banditkit.persistence import read_state
from banditkit.policies.lin_ts import LinearThompsonSampling
from banditkit.policies.linucb import LinUCB


@pytest.mark.parametrize("make", [lambda: LinUCB(3, 4, seed=0), lambda: LinearThompsonSampling(3, 4, seed=0)])
@pytest.mark.parametrize(("key", "damage", "message"), [
    ("b", "nan", r"state\['b'\] holds NaN or inf"),
    ("A_inv", "nan", r"state\['A_inv'\] holds NaN or inf"),
    ("theta", "inf", r"state\['theta'\] holds NaN or inf"),
    ("A", "asymmetric", r"state\['A'\] is not symmetric positive definite"),
    ("A_inv", "negative", r"state\['A_inv'\] is not symmetric positive definite"),
])
def test_damaged_arrays_are_refused(tmp_path: Path, make: object, key: str, damage: str, message: str) -> None:
    policy = make()  # type: ignore[operator]
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=4)
        policy.update(policy.select(x), float(rng.random()), x)
    banditkit.save(policy, tmp_path / "p")
    state = read_state(tmp_path / "p")
    assert type(policy).from_state_dict(state).select(np.ones(4)) in range(3)  # the intact state loads
    bad = {**state, "state": dict(state["state"])}  # the learned arrays sit under "state"
    target = bad["state"]
    value = np.array(target[key], dtype=np.float64)
    if damage == "nan":
        value.flat[0] = np.nan
    elif damage == "inf":
        value.flat[0] = np.inf
    elif damage == "asymmetric":
        value[0, 0, 1] += 1.0
    else:
        value[0] = -np.eye(4)
    target[key] = value
    with pytest.raises(ValueError, match=message):
        type(policy).from_state_dict(bad)


@pytest.mark.parametrize("edit", ["relabel", "unknown hyperparameter"])
def test_a_state_that_does_not_fit_its_class_is_a_value_error(tmp_path: Path, edit: str) -> None:
    import json

    banditkit.save(LinUCB(3, 4, seed=0), tmp_path / "p")
    state_file = tmp_path / "p" / "state.json"
    document = json.loads(state_file.read_text())
    if edit == "relabel":  # a LinUCB state named as another policy class
        document["state"]["policy"] = "EXP3"
    else:
        document["state"]["hyperparams"]["dtyp "] = "float64"
    state_file.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"corrupt saved policy: the state at .* does not fit"):
        banditkit.load(tmp_path / "p")
