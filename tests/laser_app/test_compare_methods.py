"""``laser compare``'s methods: ``--methods`` parsing (aliases, overrides, errors) and the settings every
run shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from laser_adapters.methods import get_method
from laser_adapters.methods import method_names as method_table_names
from laser_app.compare import (
    METHOD_ALIASES,
    PRESETS,
    RESERVED_FIELDS,
    MethodError,
    base_config,
    check_method_configs,
    default_methods,
    evidence_methods,
    get_preset,
    parse_method,
    parse_methods,
    pick_reference,
    plan_runs,
    shared_settings,
)
from laser_app.config import RunConfig, parse_value
from laser_app.world import OOD_KINDS
from tests.laser_app.tiny_setup import RMS


def test_methods_aliases_and_overrides() -> None:
    methods = parse_methods("sft, fixed:rm-a ,linucb[scope=global, mab-reward=dpo+nll],laser,laser-paper,"
                            "egreedy[epsilon=0.2,rms=rm-a,rm-b],laser-instance[alpha=0.3]")
    labels = [m.label for m in methods]
    assert labels == ["sft", "fixed:rm-a", "linucb[scope=global,mab_reward=dpo+nll]", "laser", "laser-paper",
                      "egreedy[epsilon=0.2,rms=rm-a,rm-b]", "laser-instance[alpha=0.3]"]
    sft, fixed, linucb, laser, paper, egreedy, instance = methods
    assert sft.is_sft and sft.policy is None and not sft.learns
    assert dict(fixed.settings) == {"policy": "fixed:rm-a"} and not fixed.learns
    assert dict(linucb.settings) == {"policy": "linucb", "scope": "global", "mab_reward": "dpo+nll"}
    assert dict(laser.settings) == {"policy": RunConfig.model_fields["policy"].default} and laser.learns
    assert dict(paper.settings) == METHOD_ALIASES["laser-paper"]  # every setting of the alias, nothing more
    assert {k: paper.settings[k] for k in ("mab_reward", "scope", "normalizer", "granularity")} == {
        "mab_reward": "dpo+nll", "scope": "global", "normalizer": "quantile", "granularity": "batch"}
    assert paper.settings["reward_baseline"] == 0.0  # the paper learns from the raw normalized reward
    assert egreedy.settings["epsilon"] == 0.2 and egreedy.settings["rms"] == "rm-a,rm-b"  # a list value
    assert dict(instance.settings) == {"policy": "linucb", "mab_reward": "dpo+nll", "granularity": "instance",
                                      "alpha": 0.3}
    assert parse_method("laser-dpo").settings["mab_reward"] == "dpo"
    assert parse_method("laser-percontext").settings["scope"] == "per-context"

    # every alias and override gives a valid config, each run in its own, file-safe folder
    check_method_configs(methods, {"rms": "rm-a,rm-b,rm-c"}, list(RMS))
    slugs = [m.slug for m in methods]
    assert len(set(slugs)) == len(slugs)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-") for s in slugs)

    defaults = [m.label for m in default_methods(RMS)]
    assert defaults == ["sft", "fixed:rm-a", "fixed:rm-b", "fixed:rm-c", "random", "sequential",
                        "ensemble-score", "ensemble-agree", "oracle", *(a for a in METHOD_ALIASES if a != "laser-dev")]
    assert pick_reference(methods) == "laser"
    assert pick_reference(parse_methods("random,lints,ucb1")) == "lints"
    assert pick_reference(parse_methods("random,sequential")) is None


@pytest.mark.parametrize("text, message", [
    ("laser,greedy", "unknown method 'greedy'; valid: sft, laser, laser-paper"),
    ("linucb[alhpa=0.2]", "unknown setting 'alhpa'; did you mean alpha?"),
    ("linucb[seed=3]", "'seed' cannot be set here: compare runs seeds 0..N-1; use --seeds N"),
    ("laser[policy=lints]", "each method is its own policy; name it in --methods"),
    ("sft[alpha=1]", "sft is the starting policy and takes no settings"),
    ("linucb[alpha=0.2", "'[' is never closed"),
    ("linucb[0.2]", "expected key=value inside the brackets"),
    ("random,random", "listed twice"),
    ("fixed:", "fixed:NAME needs an RM name"),
    ("", "--methods is empty"),
])
def test_bad_methods(text: str, message: str) -> None:
    with pytest.raises(MethodError, match=None) as err:
        parse_methods(text)
    assert message in str(err.value)
    assert "fixed:NAME" in str(err.value) or "unknown method" not in message


def test_bad_override_values_give_one_line_per_field() -> None:
    methods = parse_methods("linucb[alpha=-1,granularity=atom],fixed:rm-q,"
                            "ensemble-score[granularity=instance]")
    with pytest.raises(MethodError) as err:
        check_method_configs(methods, {}, list(RMS))
    lines = err.value.lines
    assert len(lines) == 4, lines
    assert lines[0].startswith("method linucb[alpha=-1,granularity=atom]: alpha (--alpha): Input should be "
                               "greater than or equal to 0")
    assert lines[1].startswith("method linucb[alpha=-1,granularity=atom]: granularity (--granularity): Input "
                               "should be 'batch' or 'instance'")
    assert lines[2] == ("method fixed:rm-q: RM 'rm-q' is not among the RMs in use; valid names: rm-a, rm-b, "
                        "rm-c")
    assert lines[3].startswith("method ensemble-score[granularity=instance]: granularity 'instance' routes")
    with pytest.raises(MethodError, match="invalid configuration: iterations"):
        check_method_configs(methods[:1], {"iterations": 0}, list(RMS))


def test_shared_settings_from_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('policy = "lints"\nseed = 4\nood = "noise"\niterations = 2\nbatch-size = 4\n')
    shared = shared_settings(cfg, {"iterations": "3", "lr": None})
    assert shared.values == {"iterations": "3", "batch_size": 4}  # flags win; the file's policy and seed go
    assert shared.dropped == ["policy", "seed"] and shared.ood == "noise"
    with pytest.raises(MethodError, match="unknown setting 'colour'"):
        shared_settings(None, {"colour": "red"})


def test_every_alias_is_a_method_of_the_table_with_config_fields() -> None:
    for name, settings in METHOD_ALIASES.items():
        assert set(settings) <= set(RunConfig.model_fields), (name, set(settings) - set(RunConfig.model_fields))
        assert not set(settings) & (set(RESERVED_FIELDS) - {"policy"}), name
        method = parse_method(name)
        assert method.policy in method_table_names(), (name, method.policy)
        # LASeR variants are bandits; the others are named variants of a baseline (rejection-sft of gold)
        assert get_method(method.policy).learns == method.learns == name.startswith("laser"), name
        assert dict(method.settings) == {"policy": method.policy, **settings}


@pytest.mark.parametrize("raw", ["0.5", "3", "true", "null", "dpo+nll", "rm-a,rm-b", "math=rm-a", "1e-4"])
def test_override_values_read_as_run_settings_read_them(raw: str) -> None:
    # one value parser for --set and for method[key=value]
    assert parse_method(f"linucb[alpha={raw}]").settings["alpha"] == parse_value(raw)


def test_presets_name_valid_methods_and_settings() -> None:
    for preset in PRESETS.values():
        methods = preset.method_list(list(RMS))
        check_method_configs(methods, dict(preset.settings), list(RMS))
        base_config(preset.settings)
        assert set(preset.oods or ()) <= set(OOD_KINDS)
    evidence = get_preset("evidence")
    labels = [m.label for m in evidence.method_list(list(RMS))]
    assert labels[:14] == ["sft", "fixed:rm-a", "fixed:rm-b", "fixed:rm-c", "random", "sequential",
                           "ensemble-score", "ensemble-agree", "laser-paper", "laser-shift", "laser-percontext",
                           "laser-instance", "laser-consistency", "laser-agreement"]
    assert labels[-1] == "oracle" and "laser" not in labels  # every LASeR row names its reward
    assert all(METHOD_ALIASES[m].get("mab_reward") for m in labels if m.startswith("laser-"))
    assert (evidence.seeds, evidence.world_seeds, evidence.oods) == (3, (0, 1), None)  # None: every ood kind
    assert dict(evidence.settings) == {"mab_reward": "dpo+nll"}  # prior-router's reward, as BayesianRouter's
    for name in ("gold", "rejection-sft", "prior-router", "agree-estimate", "laser-dev", "laser-gold"):
        assert name in labels, name
    assert [x for x in labels if x.startswith("dev-pick")] == [
        "dev-pick[dev_labels=8]", "dev-pick", "dev-pick[dev_labels=128]"]
    assert evidence_methods() == evidence.methods()
    with pytest.raises(MethodError, match="--preset 'full' is unknown; valid: evidence, evidence-quick"):
        get_preset("full")


def test_quick_preset_plans_one_small_run_per_trained_method(tmp_path: Path) -> None:
    quick = get_preset("evidence-quick")
    methods = quick.method_list(list(RMS))
    assert [m.label for m in methods] == ["sft", "random", "laser"]
    assert (quick.seeds, quick.world_seeds, quick.oods) == (1, None, ("bias",))
    runs = plan_runs(methods, quick.settings, seeds=quick.seeds or 0, oods=quick.oods or (), root=tmp_path)
    assert [(r.ood, r.world_seed, r.method, r.seed) for r in runs] == [("bias", 0, "random", 0),
                                                                      ("bias", 0, "laser", 0)]
    for r in runs:
        assert (r.config.iterations, r.config.batches_per_iteration, r.config.eval_size) == (1, 2, 10)
    # world seeds multiply the runs, each in its own folder
    runs = plan_runs(methods, quick.settings, seeds=2, oods=["bias"], root=tmp_path, world_seeds=[0, 3])
    assert [r.key for r in runs][:3] == [("bias", 0, "random", 0), ("bias", 0, "laser", 0), ("bias", 0, "random", 1)]
    assert len(runs) == 8 and runs[-1].key == ("bias", 3, "laser", 1)
    assert runs[-1].config.world_seed == 3 and runs[-1].path == tmp_path / "runs/bias/world3/laser/seed1"


def test_reuse_compares_the_reward_auto_resolved_to_and_fills_settings_added_since(tmp_path: Path) -> None:
    from laser_app.compare import run_state
    from laser_app.errors import RunDirError
    from laser_app.run_dir import RunDir

    def finished(path: Path, config: dict, resolved_reward: str) -> None:
        run = RunDir.create(path)
        run.write_config(config, {"mab_reward": resolved_reward})
        run.write_metrics({"accuracy": {}})
        run.mark_complete()

    made = RunConfig(policy="linucb").model_dump(mode="json")
    del made["dev_probes"]  # a run from before this setting existed ran with its default
    finished(tmp_path / "a", made, "dpo+nll")  # "auto" meant dpo+nll when this run was made
    [run] = plan_runs(parse_methods("laser-shift"), {}, seeds=1, oods=["weak"], root=tmp_path)
    run.path = tmp_path / "a"
    assert run_state(run) == "complete"  # laser-shift names dpo+nll: the same run
    [now] = plan_runs(parse_methods("laser"), {}, seeds=1, oods=["weak"], root=tmp_path)
    now.path = tmp_path / "a"
    with pytest.raises(RunDirError, match=r"made with other settings \(mab_reward: dpo\+nll -> consistency\)"):
        run_state(now)  # today's "auto" is another reward: not mixed in silently
