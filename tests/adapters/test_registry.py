"""The RM registry: TOML/YAML files, spec validation, lazy loading, the device policy and LRU unloading."""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from laser_adapters.reward_models import (
    FunctionRM,
    ImplicitDPORM,
    JudgeRM,
    LikelihoodRM,
    RegistryError,
    RewardModelError,
    RMRegistry,
    RMSpec,
    SequenceClassifierRM,
    UnknownRMError,
    build_rm,
    parse_specs,
)
from laser_adapters.reward_models.registry import ALLOWED_OPTIONS
from laser_adapters.testing import tiny_causal_lm, tiny_classifier
from tests.adapters.test_reward_models import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def brevity(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """A batched reward function for the ``function`` kind: shorter is better."""
    return [-float(len(r)) for r in responses]


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny causal LM (``lm``), a tiny classifier (``clf``) and a GGUF copy of the LM."""
    path = tmp_path_factory.mktemp("registry")
    tiny_causal_lm(path / "lm")
    tiny_classifier(path / "clf")
    write_tiny_gguf(path / "lm", path / "gguf", "lm.gguf")
    return path


TOML = """
[rms.clf]
kind = "classifier"
model = "./clf"
options = { batch_size = 4, max_length = 64 }

[rms.lik]
kind = "likelihood"
model = "./lm"
options = { normalize = "sum" }

[rms.dpo]
kind = "implicit_dpo"
model = "./lm"
ref_model = "./lm"
options = { beta = 0.5 }

[rms.judge]
kind = "judge"
model = "./gguf"
gguf_file = "lm.gguf"
options = { grades = ["1", "2", "3"], max_length = 200 }

[rms.short]
kind = "function"
options = { callable = "tests.adapters.test_registry:brevity" }
"""

YAML = """
rms:
  clf: {kind: classifier, model: ./clf, options: {batch_size: 4, max_length: 64}}
  lik: {kind: likelihood, model: ./lm, options: {normalize: sum}}
  dpo: {kind: implicit_dpo, model: ./lm, ref_model: ./lm, options: {beta: 0.5}}
  judge:
    kind: judge
    model: ./gguf
    gguf_file: lm.gguf
    options: {grades: ["1", "2", "3"], max_length: 200}
  short: {kind: function, options: {callable: "tests.adapters.test_registry:brevity"}}
"""


@pytest.mark.parametrize(("suffix", "text"), [(".toml", TOML), (".yaml", YAML)])
def test_registry_from_file_builds_every_kind(root: Path, suffix: str, text: str) -> None:
    path = root / f"rms{suffix}"
    path.write_text(text)
    registry = RMRegistry.from_file(path, max_loaded=5)
    assert registry.names == ["clf", "lik", "dpo", "judge", "short"]
    assert registry.loaded == []  # nothing is built before get()
    spec = registry.spec("lik")
    assert spec is not None and spec.model == str(root / "lm") and spec.trust_remote_code is False
    expected = {"clf": SequenceClassifierRM, "lik": LikelihoodRM, "dpo": ImplicitDPORM, "judge": JudgeRM,
                "short": FunctionRM}
    prompts, responses = ["What is 2+2?", "Say hi"], ["4", "hello there"]
    for name, cls in expected.items():
        rm = registry.get(name)
        assert isinstance(rm, cls) and rm.name == name
        scores = registry.score(name, prompts, responses, batch=0)
        assert scores.shape == (2,) and np.isfinite(scores).all()
    assert registry.get("clf").batch_size == 4
    np.testing.assert_allclose(registry.score("dpo", prompts, responses), 0.0, atol=1e-6)  # model == ref
    assert registry.score("short", prompts, responses).tolist() == [-1.0, -11.0]
    judge_scores = registry.score("judge", prompts, responses)
    assert ((judge_scores >= 1) & (judge_scores <= 3)).all()
    assert sorted(registry.loaded) == sorted(expected)


def test_example_files_parse_to_the_same_specs() -> None:
    toml, yaml = RMRegistry.from_file(EXAMPLES / "rms.toml"), RMRegistry.from_file(EXAMPLES / "rms.yaml")
    assert toml.names == yaml.names
    assert [toml.spec(n) for n in toml.names] == [yaml.spec(n) for n in yaml.names]
    rm_a = toml.spec("rm-a")
    assert rm_a is not None and rm_a.model == str(EXAMPLES / "models" / "rm-a")
    zephyr = toml.spec("zephyr")
    assert zephyr is not None and zephyr.model == "HuggingFaceH4/zephyr-7b-beta" and zephyr.device == "cuda"
    assert {s.kind for n in toml.names if (s := toml.spec(n))} == set(ALLOWED_OPTIONS)


def test_relative_paths_resolve_against_the_registry_folder(tmp_path: Path) -> None:
    table = {"x": {"kind": "implicit_dpo", "model": "./policy", "ref_model": "../ref",
                   "options": {"tokenizer": "./tok", "beta": 0.2}},
             "y": {"kind": "likelihood", "model": "org/hub-model"}}
    x, y = parse_specs(table, base_dir=tmp_path / "conf")
    assert x.model == str(tmp_path / "conf" / "policy") and x.ref_model == str(tmp_path / "ref")
    assert x.options == {"tokenizer": str(tmp_path / "conf" / "tok"), "beta": 0.2}
    assert y.model == "org/hub-model"


def test_malformed_specs_report_one_line_per_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("""
[rms.rm-a]
kind = "classifier"
modle = "typo"
dtype = "float64"

[rms.rm-b]
kind = "judge"
model = "m"
options = { temperature = 0.5 }

[rms.rm-c]
kind = "magic"

[rms.rm-d]
kind = "function"
options = { callable = "not a callable" }

[rms.rm-e]
kind = "classifier"
gguf_file = "x.gguf"
ref_model = "r"
options = { beta = 0.1 }
""")
    with pytest.raises(RegistryError) as info:
        RMRegistry.from_file(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"invalid RM registry {path}:"
    body = [line.strip() for line in lines[1:]]
    expected = [
        "rm-a.dtype: Input should be 'float32', 'float16', 'bfloat16' or 'auto' (got 'float64')",
        "rm-a.modle: Extra inputs are not permitted (got 'typo')",
        "rm-a.model: required for kind 'classifier'",  # the typo above means it is missing
        "rm-b.options: unknown option 'temperature' for kind 'judge'; valid: batch_size, grades,",
        "rm-c.kind: Input should be 'classifier', 'implicit_dpo', 'likelihood', 'function' or 'judge'",
        "rm-d.options: kind 'function' needs callable = 'package.module:function', got 'not a callable'",
        "rm-e.model: required for kind 'classifier'",
        "rm-e.ref_model: only used by kind 'implicit_dpo', not 'classifier'",
        "rm-e.gguf_file: GGUF loading is for causal-LM kinds",
        "rm-e.options: unknown option 'beta' for kind 'classifier'",
    ]
    assert len(body) == len(expected)
    for prefix in expected:
        assert sum(line.startswith(prefix) for line in body) == 1, (prefix, body)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("text", "suffix", "pattern"), [
    ("[rm.x]\nkind = 'likelihood'\n", ".toml", "expected a top-level `rms` table"),
    ("[rms.x]\nkind = 'likelihood'\nmodel = 'm'\n[other]\na = 1\n", ".toml",
     r"unknown top-level keys \['other'\]"),
    ("[rms.x\nkind = ", ".toml", "not valid TOML"),
    ("rms: [1, 2]\n", ".yaml", "`rms` must be a table of name -> spec"),
    ("rms:\n  x: 3\n", ".yaml", "x: must be a table of fields"),
    ("rms: {x: {name: y, kind: likelihood, model: m}}\n", ".yml", "x.name: 'y' differs from the "
                                                                  "table's key 'x'"),
    ("rms: {'bad name': {kind: likelihood, model: m}}\n", ".yaml", "bad name.name: must start with a letter"),
    ("rms: {x: {kind: likelihood, model: m, device: 'gpu 0'}}\n", ".yaml", "x.device: must be 'cpu', 'cuda'"),
    ("rms: {x: {kind: likelihood}\n", ".yaml", "not valid YAML"),
    ("{}", ".json", r"must end in .toml, .yaml or .yml, got '.json'"),
])
def test_bad_registry_files(tmp_path: Path, text: str, suffix: str, pattern: str) -> None:
    path = tmp_path / f"registry{suffix}"
    path.write_text(text)
    with pytest.raises(RegistryError, match=pattern):
        RMRegistry.from_file(path)


def test_missing_file_and_unbuildable_specs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RMRegistry.from_file(tmp_path / "nope.toml")
    registry = RMRegistry([RMSpec(name="gone", kind="likelihood", model=str(tmp_path / "missing")),
                           RMSpec(name="noimport", kind="function", options={"callable": "no_such_mod_q:f"})])
    with pytest.raises(FileNotFoundError, match=r"could not build reward model 'gone' \(kind "
                                                 "'likelihood' from"):
        registry.get("gone")
    with pytest.raises(ValueError, match=r"could not build reward model 'noimport'.*cannot import module"):
        registry.get("noimport")
    assert registry.loaded == []


def test_unknown_name_lists_valid_names() -> None:
    registry = RMRegistry([RMSpec(name="rm-a", kind="function", options={"callable": "operator:eq"})])
    registry.register("rm-b", FunctionRM(brevity, name="rm-b"))
    with pytest.raises(UnknownRMError) as info:
        registry.get("rm-z")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "unknown reward model 'rm-z'; valid names: rm-a, rm-b"
    with pytest.raises(UnknownRMError, match="'rm-x'; valid names: rm-a, rm-b"):
        registry.check_names(["rm-a", "rm-x"])
    assert registry.check_names(["rm-b", "rm-a"]) == ["rm-b", "rm-a"]
    with pytest.raises(UnknownRMError, match=r"valid names: \(none: the registry is empty\)"):
        RMRegistry().get("x")
    assert "rm-a" in registry and "rm-z" not in registry
    assert len(registry) == 2 and list(registry) == ["rm-a", "rm-b"]


def test_register_objects_and_specs() -> None:
    registry = RMRegistry()
    rm = FunctionRM(brevity, name="short")
    registry.register("short", rm)
    assert registry.get("short") is rm and registry.spec("short") is None
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        registry.register("short", rm)
    with pytest.raises(ValueError, match="got an RM whose name is 'short'; the names must match"):
        registry.register("other", rm)
    with pytest.raises(TypeError, match="takes a RewardModel"):
        registry.register("thing", object())
    spec = RMSpec(name="orig", kind="function", options={"callable": f"{__name__}:brevity"})
    registry.register("renamed", spec)
    assert registry.spec("renamed") == spec.model_copy(update={"name": "renamed"})
    assert registry.get("renamed").name == "renamed"
    registry.register("short", spec, replace=True)
    assert isinstance(registry.get("short"), FunctionRM) and registry.get("short") is not rm
    with pytest.raises(RewardModelError, match="reward model 'renamed' on batch 3: asked to score 0 pairs"):
        registry.score("renamed", [], [], batch=3)
    with pytest.raises(ValueError, match="max_loaded must be an int >= 1, got 0"):
        RMRegistry(max_loaded=0)
    with pytest.raises(ValueError, match="duplicate reward model name 'a'"):
        RMRegistry([spec.model_copy(update={"name": "a"})] * 2)


def test_lru_unloads_beyond_max_loaded(root: Path) -> None:
    specs = [RMSpec(name=n, kind="likelihood", model=str(root / "lm")) for n in ("a", "b", "c")]
    specs.append(RMSpec(name="fn", kind="function", options={"callable": f"{__name__}:brevity"}))
    registry = RMRegistry(specs, max_loaded=2)
    first = weakref.ref(registry.get("a"))
    registry.get("b")
    registry.get("fn")  # function RMs do not count towards max_loaded
    assert registry.loaded == ["a", "b", "fn"]
    registry.get("a")  # a becomes the most recent: b is now the least recently used model
    registry.get("c")
    assert registry.loaded == ["fn", "a", "c"]
    assert first() is registry.get("a")  # still the same object: it was never dropped
    second = weakref.ref(registry.get("c"))
    registry.get("b")  # a was least recent
    gc.collect()
    assert registry.loaded == ["fn", "c", "b"]
    assert first() is None  # dropped and garbage-collected
    registry.get("a")
    assert registry.loaded == ["fn", "b", "a"] and second() is None
    registry.unload("b")
    assert registry.loaded == ["fn", "a"]
    registry.clear()
    assert registry.loaded == []


class DeviceTrackingRM:
    """An RM that only records the moves the registry asks of it (it holds no tensors)."""

    def __init__(self, name: str, device: str) -> None:
        self.name, self.device, self.moves = name, device, list[str]()

    def to(self, device: str) -> DeviceTrackingRM:
        self.moves.append(device)
        self.device = device
        return self

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.zeros(len(prompts))


def test_only_the_rm_in_use_stays_on_an_accelerator(root: Path) -> None:
    registry = RMRegistry([RMSpec(name="lik", kind="likelihood", model=str(root / "lm"))])
    gpu0, gpu1 = DeviceTrackingRM("gpu0", "cuda:0"), DeviceTrackingRM("gpu1", "cuda:1")
    registry.register("gpu0", gpu0)
    registry.register("gpu1", gpu1)
    assert registry.get("gpu0") is gpu0
    assert gpu0.moves == [] and gpu1.moves == ["cpu"]
    lik = registry.get("lik")
    assert gpu0.moves == ["cpu"] and gpu0.device == "cpu" and gpu1.moves == ["cpu"]
    assert lik.device == "cpu"
    registry.get("gpu1")
    assert gpu1.moves == ["cpu", "cuda:1"] and gpu1.device == "cuda:1" and gpu0.moves == ["cpu"]
    registry.get("gpu0")
    assert gpu0.moves == ["cpu", "cuda:0"] and gpu1.moves == ["cpu", "cuda:1", "cpu"]
    # a torch RM moves all of its models (policy and reference) when asked
    dpo = ImplicitDPORM(lik.model, lik.model, tokenizer=lik.tokenizer, name="dpo")
    assert dpo.to("cpu") is dpo and dpo.device == "cpu" and len(dpo._modules()) == 2


def test_spec_fields_reach_the_model(root: Path) -> None:
    spec = RMSpec(name="bf16", kind="likelihood", model=str(root / "lm"), dtype="bfloat16",
                  trust_remote_code=True, options={"batch_size": 3})
    rm = build_rm(spec)
    assert isinstance(rm, LikelihoodRM)
    assert rm.model.dtype == torch.bfloat16 and rm.trust_remote_code is True and rm.batch_size == 3
    assert np.isfinite(rm.score(["2+2="], ["4"])).all()
    default = build_rm(RMSpec(name="f32", kind="likelihood", model=str(root / "lm")))
    assert isinstance(default, LikelihoodRM)
    assert default.model.dtype == torch.float32 and default.trust_remote_code is False
    gguf = build_rm(RMSpec(name="g", kind="likelihood", model=str(root / "gguf" / "lm.gguf")))
    np.testing.assert_allclose(gguf.score(["2+2="], ["4"]), default.score(["2+2="], ["4"]), atol=1e-5)


def test_allowed_options_match_the_class_signatures() -> None:
    spec_fields = {"self", "model", "ref_model", "name", "device", "dtype", "trust_remote_code", "gguf_file"}
    classes = {"classifier": SequenceClassifierRM, "implicit_dpo": ImplicitDPORM, "likelihood": LikelihoodRM,
               "judge": JudgeRM}
    for kind, cls in classes.items():
        params = set(inspect.signature(cls.__init__).parameters) - spec_fields
        assert params == ALLOWED_OPTIONS[kind], kind
    function_params = set(inspect.signature(FunctionRM.from_import).parameters) - {"name", "target"}
    assert function_params | {"callable"} == ALLOWED_OPTIONS["function"]


def test_importing_the_registry_does_not_import_torch() -> None:
    code = ("import sys\n"
            "from laser_adapters.reward_models import RMRegistry, RMSpec, FunctionRM, checked_scores\n"
            f"registry = RMRegistry.from_file({str(EXAMPLES / 'rms.toml')!r})\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch was imported'\n"
            "print(len(registry.names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"
