"""A damaged built-in world: found on load from the sums ``world.json`` records, reported in one line naming
the file, never rebuilt behind the user's back, and repaired by ``laser world build --force``."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import laser_app.world.build as build_module
from laser_app.commands import app
from laser_app.world import (
    World,
    WorldDamagedError,
    build_world,
    load_world,
    rebuild_command,
    world_dir,
)

SCALE = 0.005
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("cache"), seed=0, scale=SCALE, progress=False, threads=1)


@pytest.fixture
def cache(built: World, tmp_path: Path) -> Path:
    """A cache folder holding a copy of the toy world, free to damage."""
    root = tmp_path / "cache"
    shutil.copytree(built.path, world_dir(root, 0, SCALE))
    return root


@pytest.fixture
def no_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any build fails loudly: a damaged world must never be rebuilt unasked."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a damaged world was rebuilt without --force")

    monkeypatch.setattr(build_module, "_build_into", refuse)


def damage(cache: Path, how: str) -> Path:
    """Damage the world in ``cache`` as ``how`` says; the file damaged, relative to the world's folder."""
    root = world_dir(cache, 0, SCALE)
    name = {"truncate world.json": "world.json", "empty world.json": "world.json",
            "delete world.json": "world.json", "truncate policy": "policy/model.safetensors",
            "flip a byte in an RM": "rms/bias/rm-b/model.safetensors",
            "delete a data file": "data/dev.jsonl"}[how]
    file = root / name
    if how.startswith("truncate"):
        os.truncate(file, file.stat().st_size // 2)
    elif how.startswith("empty"):
        file.write_bytes(b"")
    elif how.startswith("delete"):
        file.unlink()
    else:  # the same size: only the checksum can tell
        data = bytearray(file.read_bytes())
        data[len(data) * 2 // 3] ^= 0x01
        file.write_bytes(bytes(data))
    return Path(name)


def files_of(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- the record
def test_world_json_records_every_file_the_build_wrote(built: World) -> None:
    recorded = built.meta["files"]
    on_disk = files_of(built.path)
    assert set(recorded) == set(on_disk) - {"world.json"}
    assert {"data/train.jsonl", "data/dev.jsonl", "data/test.jsonl", "policy/model.safetensors",
            "policy/config.json", "rms/weak/rm-c/model.safetensors", "rms-bias.toml"} <= set(recorded)
    for name, record in recorded.items():
        assert record == {"size": (built.path / name).stat().st_size, "sha256": on_disk[name]}
    assert built.verified and World(built.path).verified


# ----------------------------------------------------------------------------------------------- damage found
@pytest.mark.parametrize(("how", "reason"), [
    ("truncate world.json", "not valid JSON at line "),
    ("empty world.json", "not valid JSON at line 1 column 1: Expecting value"),
    ("delete world.json", "missing"),
    ("truncate policy", "bytes, the build wrote"),
    ("flip a byte in an RM", "its SHA-256 differs from the one the build recorded"),
    ("delete a data file", "missing"),
])
@pytest.mark.usefixtures("no_rebuild")
def test_damage_is_one_clear_error_and_never_a_rebuild(cache: Path, how: str, reason: str) -> None:
    name = damage(cache, how)
    root = world_dir(cache, 0, SCALE)
    before = files_of(root)
    for load in (lambda: load_world(cache, seed=0, scale=SCALE, build=True, progress=False),
                 lambda: build_world(cache, seed=0, scale=SCALE, progress=False)):
        with pytest.raises(WorldDamagedError) as caught:
            load()
        message = str(caught.value)
        assert message.startswith(f"the built-in world at {root} is damaged ({name}: ")
        assert reason in message and "\n" not in message
        assert message.endswith(f"; rebuild it with laser world build --force --cache-dir {cache} --scale {SCALE}")
        assert (caught.value.path, caught.value.file) == (root, name.as_posix())
    assert files_of(root) == before  # left as it was


def test_world_json_that_is_not_a_complete_world_is_damaged(cache: Path) -> None:
    meta_file = world_dir(cache, 0, SCALE) / "world.json"
    meta = json.loads(meta_file.read_text())
    for broken, reason in ((dict(meta, complete=False), "not marked complete"), ([1, 2], "a JSON list"),
                           ({k: v for k, v in meta.items() if k != "seed"}, "a bad or missing field"),
                           (dict(meta, files={"data/dev.jsonl": 3}), "`files`) is malformed"),
                           (dict(meta, version=4), "version 4 in a folder of version 5")):
        meta_file.write_text(json.dumps(broken))
        with pytest.raises(WorldDamagedError, match=rf"\(world\.json: .*{re.escape(reason)}"):
            load_world(cache, seed=0, scale=SCALE, build=False)


def test_an_absent_world_is_still_built_or_reported_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no built world at"):
        load_world(tmp_path, seed=0, scale=SCALE, build=False)


def test_damage_found_later_names_the_file(cache: Path) -> None:
    world = load_world(cache, seed=0, scale=SCALE, build=False)
    (world.path / "data" / "train.jsonl").write_text('{"prompt": "Q: 1+1?\n')
    with pytest.raises(WorldDamagedError, match=r"\(data/train.jsonl: .*not valid JSON"):
        world.data  # noqa: B018
    (world.path / "rms-noise.toml").write_text("[rms.rm-a\n")
    with pytest.raises(WorldDamagedError, match=r"\(rms-noise.toml: .*not valid TOML"):
        world.registry("noise")


def test_the_error_survives_pickling_and_the_command_names_the_world(tmp_path: Path) -> None:
    err = WorldDamagedError(tmp_path / "world-v5-seed3-scale0.25", "world.json", "missing")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.file == "world.json"
    assert str(err).endswith(f"laser world build --force --cache-dir {tmp_path} --seed 3 --scale 0.25")
    assert rebuild_command(Path("/a b/world-v5-seed0")) == "laser world build --force --cache-dir '/a b'"


# ----------------------------------------------------------------------------------------------- older worlds
def test_a_world_built_before_checksums_loads_unverified(cache: Path) -> None:
    meta_file = world_dir(cache, 0, SCALE) / "world.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "files"}, indent=2))
    world = load_world(cache, seed=0, scale=SCALE, build=False)
    assert not world.verified
    assert len(world.data["test"]) > 0 and sorted(world.registry("weak").names) == ["rm-a", "rm-b", "rm-c"]
    policy = world.policy_path / "model.safetensors"  # what needs no sums is still checked
    os.truncate(policy, policy.stat().st_size - 100)
    with pytest.raises(WorldDamagedError, match=r"\(policy/model.safetensors: \d+ bytes, its header says \d+\)"):
        load_world(cache, seed=0, scale=SCALE, build=False)
    policy.unlink()
    with pytest.raises(WorldDamagedError, match=r"\(policy/model.safetensors: missing\)"):
        load_world(cache, seed=0, scale=SCALE, build=False)


# ----------------------------------------------------------------------------------------------- the CLI
def one_error_line(result: object) -> str:
    exit_code, stderr, exception = (getattr(result, k) for k in ("exit_code", "stderr", "exception"))
    assert exit_code == 2 and isinstance(exception, SystemExit), (stderr, exception)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return str(lines[0])


@pytest.mark.usefixtures("no_rebuild")
def test_laser_run_on_a_damaged_world_prints_one_line(cache: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    damage(cache, "truncate policy")
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--policy", "linucb", "--cache-dir", str(cache), "--world-scale",
                                 str(SCALE), "--iterations", "1", "--batches-per-iteration", "1", "--out", str(out),
                                 "--no-progress"])
    line = one_error_line(result)
    assert line.startswith("error: the built-in world at ") and "(policy/model.safetensors: " in line
    assert not out.exists()
    monkeypatch.setenv("LASER_CACHE_DIR", str(cache))  # the cache named by the environment: no --cache-dir
    line = one_error_line(runner.invoke(app, ["world", "info", "--scale", str(SCALE)]))
    assert line.endswith(f"rebuild it with laser world build --force --scale {SCALE}")
    line = one_error_line(runner.invoke(app, ["world", "build", "--scale", str(SCALE), "--no-progress"]))
    assert "(policy/model.safetensors: " in line


def test_the_command_in_the_message_repairs_the_world(built: World, cache: Path) -> None:
    damage(cache, "flip a byte in an RM")
    with pytest.raises(WorldDamagedError) as caught:
        load_world(cache, seed=0, scale=SCALE, build=False)
    command = shlex.split(str(caught.value).split("; rebuild it with ")[1])
    assert command[:4] == ["laser", "world", "build", "--force"]
    result = runner.invoke(app, [*command[1:], "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    repaired = load_world(cache, seed=0, scale=SCALE, build=False)
    assert repaired.verified and repaired.meta["files"] == built.meta["files"]  # the build is deterministic
    assert not [p for p in cache.iterdir() if ".building-" in p.name]
