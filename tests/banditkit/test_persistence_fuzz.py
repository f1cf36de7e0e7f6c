"""Damaged saved states: random bytes and mutated valid files either load (a flipped digit can still be a
valid number: there are no checksums yet) or fail with a clean ``ValueError`` (or ``FileNotFoundError``),
never another exception."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import banditkit
from banditkit.persistence import STATE_FILE
from banditkit.policies.linucb import LinUCB

CLEAN = (ValueError, FileNotFoundError)


def _saved(root: Path) -> Path:
    policy = LinUCB(3, 4, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.normal(size=4)
        policy.update(policy.select(x), float(rng.random()), x)
    banditkit.save(policy, root / "p")
    return root / "p"


def _load_cleanly(path: Path) -> None:
    try:
        banditkit.load(path)
    except CLEAN:
        return


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["json", "npz"]), data=st.binary(max_size=600))
def test_random_bytes_in_place_of_a_file(which: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = _saved(Path(d))
        target = path / STATE_FILE if which == "json" else next(path.glob("*.npz"))
        target.write_bytes(data)
        _load_cleanly(path)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["json", "npz"]), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                              min_size=1, max_size=4))
def test_mutated_valid_files(which: str, flips: list[tuple[float, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = _saved(Path(d))
        target = path / STATE_FILE if which == "json" else next(path.glob("*.npz"))
        raw = bytearray(target.read_bytes())
        for where, value in flips:
            raw[min(int(where * len(raw)), len(raw) - 1)] = value
        target.write_bytes(bytes(raw))
        _load_cleanly(path)


def test_a_missing_folder_is_file_not_found(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    shutil.rmtree(path)
    try:
        banditkit.load(path)
    except FileNotFoundError as err:
        assert "no saved policy" in str(err)
    else:
        raise AssertionError("loaded a policy from a missing folder")
