"""RunConfig: defaults, validation of contradictions, file loading and the file < flags merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from laser_adapters.methods import method_names
from laser_app.config import (
    RunConfig,
    field_help,
    format_validation_error,
    load_config_file,
    resolve_config,
)
from laser_app.errors import ConfigError


def errors_of(**values: object) -> list[str]:
    with pytest.raises(ValidationError) as info:
        RunConfig(**values)  # type: ignore[arg-type]
    return format_validation_error(info.value)


def test_defaults_are_the_documented_starting_point() -> None:
    cfg = RunConfig()
    assert (cfg.policy, cfg.iterations, cfg.batch_size, cfg.n_responses, cfg.pairs_per_prompt) == (
        "linucb", 3, 8, 6, 1)
    assert (cfg.temperature, cfg.lr, cfg.beta, cfg.nll_weight, cfg.alpha) == (0.8, 1e-4, 0.1, 1.0, 0.1)
    assert (cfg.granularity, cfg.batching, cfg.mab_reward, cfg.scope, cfg.context) == (
        "batch", "homogeneous", "auto", "global", "policy")


def test_every_field_is_documented_and_has_help() -> None:
    for name, info in RunConfig.model_fields.items():
        assert info.description and len(info.description) > 8, name
        assert "(default: " in field_help(name)
    assert field_help("n_responses").endswith("(default: 6)")
    assert field_help("lora").endswith("(default: false)")


def test_frozen_and_unknown_keys_rejected() -> None:
    cfg = RunConfig()
    with pytest.raises(ValidationError):
        cfg.alpha = 1.0  # type: ignore[misc]
    lines = errors_of(alpah=0.3)
    assert lines == ["alpah: Extra inputs are not permitted (got 0.3)"]


def test_n_responses_below_two_is_rejected_with_the_reason() -> None:
    assert errors_of(n_responses=1) == [
        "n_responses (--n-responses): n_responses must be >= 2 to form a preference pair, got 1"]


def test_pairs_per_prompt_needs_two_responses_each() -> None:
    (line,) = errors_of(n_responses=4, pairs_per_prompt=3)
    assert "pairs_per_prompt=3 needs at least 6" in line and "n_responses=4" in line
    assert RunConfig(n_responses=4, pairs_per_prompt=2).pairs_per_prompt == 2


def test_unknown_policy_lists_the_valid_names() -> None:
    (line,) = errors_of(policy="greedy")
    assert line.startswith("policy (--policy): unknown policy 'greedy'; valid: ")
    for name in method_names():
        assert name in line
    assert "fixed:NAME needs an RM name" in errors_of(policy="fixed:")[0]


def test_fixed_rm_must_be_among_rms() -> None:
    (line,) = errors_of(policy="fixed:rm-z", rms="rm-a,rm-b")
    assert "'fixed:rm-z' names an RM that is not among rms (rm-a, rm-b)" in line
    cfg = RunConfig(policy="fixed:rm-b", rms="rm-a,rm-b")
    assert cfg.fixed_rm == "rm-b" and cfg.rms == ("rm-a", "rm-b")


def test_name_lists_and_task_maps_parse_from_strings() -> None:
    cfg = RunConfig(rms=" rm-a , rm-b ", rm_for_task="math=rm-a,yesno=rm-b")
    assert cfg.rms == ("rm-a", "rm-b")
    assert cfg.rm_for_task == {"math": "rm-a", "yesno": "rm-b"}
    assert "must not repeat" in errors_of(rms="rm-a,rm-a")[0]
    assert "non-empty" in errors_of(rms="rm-a,,rm-b")[0]
    assert "task=rm pairs" in errors_of(rm_for_task="math:rm-a")[0]
    assert "rm_for_task names RMs not among rms: rm-z" in errors_of(rms="rm-a", rm_for_task="math=rm-z")[0]


def test_other_contradictions() -> None:
    assert "never chooses between RMs" in errors_of(policy="ensemble-score", granularity="instance")[0]
    assert "never chooses between RMs" in errors_of(policy="fixed:rm-a", granularity="instance")[0]
    assert RunConfig(policy="random", granularity="instance").granularity == "instance"
    assert "must be below quantile_high" in errors_of(quantile_low=0.8, quantile_high=0.5)[0]
    assert "lora is off" in errors_of(lora_target_modules="q_proj")[0]
    assert "unknown context encoder 'bert'" in errors_of(context="bert")[0]
    assert RunConfig(context="sentence:/some/path").context == "sentence:/some/path"
    assert "unknown device 'gpu'" in errors_of(device="gpu")[0]


def test_lora_with_a_model_peft_cannot_wrap_is_rejected(tmp_path: Path) -> None:
    model = tmp_path / "odd-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "not-a-real-architecture"}))
    (line,) = errors_of(lora=True, model=str(model))
    assert "peft has no default LoRA target modules for model type 'not-a-real-architecture'" in line
    assert "lora_target_modules" in line
    # naming the modules is the fix
    cfg = RunConfig(lora=True, model=str(model), lora_target_modules="q_proj,v_proj")
    assert cfg.lora_target_modules == ("q_proj", "v_proj")
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert RunConfig(lora=True, model=str(model)).lora


def test_several_bad_fields_give_one_line_each() -> None:
    lines = errors_of(alpha=-1, iterations=0, temperature="hot")
    assert len(lines) == 3
    assert "alpha (--alpha): Input should be greater than or equal to 0 (got -1)" in lines
    assert "iterations (--iterations): Input should be greater than or equal to 1 (got 0)" in lines
    assert any(line.startswith("temperature (--temperature): Input should be a valid number")
               for line in lines)


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'policy = "random"\nn-responses = 4\nrms = ["rm-a", "rm-b"]\n'),
    (".yaml", "policy: random\nn_responses: 4\nrms: [rm-a, rm-b]\n"),
    (".json", '{"policy": "random", "n_responses": 4, "rms": ["rm-a", "rm-b"]}'),
    (".toml", '[run]\npolicy = "random"\nn_responses = 4\nrms = "rm-a,rm-b"\n'),
])
def test_config_files_in_every_format(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text)
    cfg = resolve_config(path)
    assert (cfg.policy, cfg.n_responses, cfg.rms) == ("random", 4, ("rm-a", "rm-b"))


def test_flags_override_the_file_only_when_given(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text('alpha = 0.5\nseed = 7\niterations = 2\n')
    cfg = resolve_config(path, {"alpha": 0.2, "seed": None, "lora": None})
    assert (cfg.alpha, cfg.seed, cfg.iterations, cfg.lora) == (0.2, 7, 2, False)


def test_resolved_config_round_trips_through_json(tmp_path: Path) -> None:
    cfg = RunConfig(policy="fixed:rm-a", rms="rm-a,rm-b", data=tmp_path / "d.jsonl", rm_for_task="m=rm-a")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert resolve_config(path) == cfg


def test_malformed_files(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('alpha = \n')
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML: .*line 1"):
        load_config_file(bad_toml)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("alpha: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config_file(bad_yaml)
    not_table = tmp_path / "list.yaml"
    not_table.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a table of settings, got list"):
        load_config_file(not_table)
    ini = tmp_path / "x.ini"
    ini.write_text("alpha = 1\n")
    with pytest.raises(ConfigError, match=r"unknown format '\.ini'"):
        load_config_file(ini)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert resolve_config(empty) == RunConfig()


def test_the_paper_config_file_matches_the_compare_alias() -> None:
    from laser_app.compare import METHOD_ALIASES

    cfg = resolve_config(Path(__file__).parents[2] / "examples" / "laser-paper.toml")
    for field, value in METHOD_ALIASES["laser-paper"].items():
        assert getattr(cfg, field) == value, field
