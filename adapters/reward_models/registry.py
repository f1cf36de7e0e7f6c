"""Named reward models: specs read from TOML or YAML, loaded lazily, with a device policy and LRU unloading.

A registry file has one top-level table ``rms`` keyed by RM name (see ``docs/reward_models.md``)::

    [rms.rm-a]
    kind = "classifier"            # classifier | implicit_dpo | likelihood | judge | function
    model = "./models/rm-a"        # hub id, folder or .gguf file; ./ and ../ are relative to this file
    dtype = "float32"              # float32 | float16 | bfloat16 | auto
    device = "cpu"                 # cpu | cuda | cuda:N | mps | auto
    options = { batch_size = 16 }  # keyword arguments of the RM class

Nothing is loaded until ``get(name)``. Only the RM in use sits on its accelerator: ``get`` moves every
other held RM that is on an accelerator to the CPU first. At most ``max_loaded`` model-backed RMs built
from specs are held at once; beyond that the least recently used is dropped (and reloaded on its next
``get``). RMs registered as objects and ``function`` RMs are cheap or cannot be rebuilt, so they are never
dropped. Every load, eviction and move between an accelerator and the CPU is recorded until
``take_moves()`` reads it (a run reports each step's). This module imports torch only when a model-backed RM
is built.
"""

from __future__ import annotations

import gc
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .base import FloatArray, RewardModel, RewardModelError, checked_scores

#: What :meth:`RMRegistry.take_moves` reports: RMs built from their spec (read from disk), dropped to stay
#: within ``max_loaded``, moved from their accelerator to the CPU, and moved back to it.
MOVES = ("loaded", "evicted", "offloaded", "onloaded")

RMKind = Literal["classifier", "implicit_dpo", "likelihood", "function", "judge"]
CAUSAL_KINDS = frozenset({"implicit_dpo", "likelihood", "judge"})

#: the ``options`` each kind accepts: keyword arguments of its class beyond the spec's own fields
ALLOWED_OPTIONS: dict[str, frozenset[str]] = {
    "classifier": frozenset({"tokenizer", "batch_size", "max_length", "label", "use_chat_template"}),
    "implicit_dpo": frozenset({"tokenizer", "beta", "batch_size", "max_length", "ref_gguf_file",
                               "use_chat_template"}),
    "likelihood": frozenset({"tokenizer", "normalize", "batch_size", "max_length", "use_chat_template",
                             "empty_score"}),
    "judge": frozenset({"tokenizer", "template", "grades", "values", "batch_size", "max_length",
                        "use_chat_template"}),
    "function": frozenset({"callable", "batched"}),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE = re.compile(r"^(cpu|auto|mps|meta|[a-z]+(:\d+)?)$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class RMSpec(BaseModel):
    """How to build one reward model. Frozen; unknown fields are errors.

    >>> RMSpec(name="rm-a", kind="classifier", model="./models/rm-a", options={"batch_size": 8}).device
    'cpu'
    >>> RMSpec(name="exact", kind="function", options={"callable": "mypkg.verifiers:exact"}).kind
    'function'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="registry name: letters, digits, '-', '_', '.'")
    kind: RMKind
    model: str | None = Field(default=None, validate_default=True, description="hub id, folder or .gguf file")
    ref_model: str | None = Field(default=None, description="reference model (implicit_dpo only)")
    gguf_file: str | None = Field(default=None, description="GGUF file inside `model`'s folder (causal "
                                                            "kinds)")
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    options: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must start with a letter or digit and use only letters, digits, '-', '_' "
                             "and '.'")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
        return value

    # The checks below depend on `kind`, which is validated first (field order); when `kind` itself is
    # invalid they are skipped, so every problem of a spec is reported at once, one line per field.

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "function" and value is not None:
            raise ValueError("not used by kind 'function' (give options.callable instead)")
        if kind not in (None, "function") and value is None:
            raise ValueError(f"required for kind {kind!r} (a hub id, local folder or .gguf file)")
        return value

    @field_validator("ref_model")
    @classmethod
    def _check_ref_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind != "implicit_dpo":
            raise ValueError(f"only used by kind 'implicit_dpo', not {kind!r}")
        return value

    @field_validator("gguf_file")
    @classmethod
    def _check_gguf_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind not in CAUSAL_KINDS:
            raise ValueError(f"GGUF loading is for causal-LM kinds {sorted(CAUSAL_KINDS)}, not {kind!r}")
        return value

    @field_validator("options")
    @classmethod
    def _check_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None:
            return value
        allowed = ALLOWED_OPTIONS[kind]
        problems = [f"unknown option {key!r} for kind {kind!r}; valid: {', '.join(sorted(allowed))}"
                    for key in value if key not in allowed]
        target = value.get("callable")
        if kind == "function" and (not isinstance(target, str) or not _CALLABLE.match(target)):
            problems.append(f"kind 'function' needs callable = 'package.module:function', got {target!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return value


class RegistryError(ValueError):
    """A registry file or mapping is malformed; the message has one line per problem, each naming the RM."""


class UnknownRMError(KeyError):
    """A name that is not in the registry; the message lists the valid names."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        listed = ", ".join(valid) if valid else "(none: the registry is empty)"
        self.message = f"unknown reward model {name!r}; valid names: {listed}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _error_lines(name: str, err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] in ("missing", "value_error") or not loc:
            got = ""
        else:
            got = f" (got {e.get('input')!r:.60})"
        for part in msg.split("\n"):
            lines.append(f"{name}.{loc}: {part}{got}" if loc else f"{name}: {part}")
    return lines


def _resolve_relative(value: Any, base_dir: Path | None) -> Any:
    if base_dir is not None and isinstance(value, str) and value.startswith(("./", "../")):
        return str((base_dir / value).resolve())
    return value


def parse_specs(table: Mapping[str, Any], *, source: str = "<mapping>",
                base_dir: str | Path | None = None) -> list[RMSpec]:
    """Validate the ``rms`` table (name -> fields) into specs, reporting every problem at once.

    Values of ``model``, ``ref_model`` and ``options.tokenizer`` starting with ``./`` or ``../`` are resolved
    against ``base_dir`` (the registry file's folder).

    >>> [s.name for s in parse_specs({"len": {"kind": "function", "options": {"callable": "builtins:len"}}})]
    ['len']
    """
    if not isinstance(table, Mapping):
        raise RegistryError(f"{source}: `rms` must be a table of name -> spec, got {type(table).__name__}")
    base = Path(base_dir) if base_dir is not None else None
    specs, lines = [], []
    for name, fields in table.items():
        if not isinstance(fields, Mapping):
            lines.append(f"{name}: must be a table of fields, got {type(fields).__name__} {fields!r:.60}")
            continue
        data = dict(fields)
        if "name" in data and data["name"] != name:
            lines.append(f"{name}.name: {data['name']!r} differs from the table's key {name!r}; drop it")
            continue
        data["name"] = str(name)
        for key in ("model", "ref_model"):
            data[key] = _resolve_relative(data.get(key), base)
        if isinstance(data.get("options"), Mapping) and "tokenizer" in data["options"]:
            tokenizer = _resolve_relative(data["options"]["tokenizer"], base)
            data["options"] = {**data["options"], "tokenizer": tokenizer}
        try:
            specs.append(RMSpec.model_validate(data))
        except ValidationError as err:
            lines.extend(_error_lines(str(name), err))
    if lines:
        raise RegistryError(f"invalid RM registry {source}:\n" + "\n".join(f"  {line}" for line in lines))
    return specs


def _read_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"invalid RM registry {path}: not valid TOML: {exc}") from exc
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"invalid RM registry {path}: not valid YAML: {exc}") from exc
    raise RegistryError(f"RM registry {path} must end in .toml, .yaml or .yml, got {suffix!r}")


def build_rm(spec: RMSpec) -> RewardModel:
    """Build the reward model a spec describes (loads the model now)."""
    opts = dict(spec.options)
    if spec.kind == "function":
        from .function import FunctionRM

        return FunctionRM.from_import(opts.pop("callable"), name=spec.name, **opts)
    common: dict[str, Any] = dict(name=spec.name, device=spec.device, dtype=spec.dtype,
                                  trust_remote_code=spec.trust_remote_code, **opts)
    model: Any = spec.model
    if spec.kind == "classifier":
        from .classifier import SequenceClassifierRM

        return SequenceClassifierRM(model, **common)
    if spec.kind == "implicit_dpo":
        from .implicit_dpo import ImplicitDPORM

        return ImplicitDPORM(model, spec.ref_model, gguf_file=spec.gguf_file, **common)
    if spec.kind == "likelihood":
        from .likelihood import LikelihoodRM

        return LikelihoodRM(model, gguf_file=spec.gguf_file, **common)
    from .judge import JudgeRM

    return JudgeRM(model, gguf_file=spec.gguf_file, **common)


def _on_accelerator(rm: Any) -> bool:
    device = str(getattr(rm, "device", "cpu"))
    return not (device.startswith("cpu") or device == "meta")


def _free_accelerator_memory() -> None:
    # a full collection costs up to a second with transformers loaded; only worth it to return GPU memory
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class RMRegistry:
    """Reward models by name: specs (built lazily) and RM objects registered in code.

    >>> from laser_adapters.reward_models.function import FunctionRM
    >>> registry = RMRegistry([RMSpec(name="len", kind="function", options={"callable": "builtins:len",
    ...                                                                    "batched": False})])
    >>> registry.register("first-char-a", FunctionRM(lambda p, r: float(r[:1] == "a"), name="first-char-a",
    ...                                              batched=False))
    >>> registry.names
    ['len', 'first-char-a']
    >>> registry.score("first-char-a", ["q", "q"], ["apple", "pear"])
    array([1., 0.])
    >>> try:
    ...     registry.get("nope")
    ... except UnknownRMError as err:
    ...     print(err)
    unknown reward model 'nope'; valid names: len, first-char-a
    """

    def __init__(self, specs: Iterable[RMSpec] = (), *, max_loaded: int = 2) -> None:
        if isinstance(max_loaded, bool) or not isinstance(max_loaded, int) or max_loaded < 1:
            raise ValueError(f"max_loaded must be an int >= 1, got {max_loaded!r}")
        self.max_loaded = max_loaded
        self._entries: dict[str, RMSpec | RewardModel] = {}
        self._held: OrderedDict[str, RewardModel] = OrderedDict()  # built from specs, least recent first
        self._home: dict[str, str] = {}
        self._moves: dict[str, list[str]] = {kind: [] for kind in MOVES}
        for spec in specs:
            if not isinstance(spec, RMSpec):
                raise TypeError(f"specs must be RMSpec objects, got {type(spec).__name__}")
            if spec.name in self._entries:
                raise ValueError(f"duplicate reward model name {spec.name!r}")
            self._entries[spec.name] = spec

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, base_dir: str | Path | None = None,
                     source: str = "<mapping>", max_loaded: int = 2) -> RMRegistry:
        """A registry from the contents of an ``rms`` table (name -> fields)."""
        return cls(parse_specs(table, source=source, base_dir=base_dir), max_loaded=max_loaded)

    @classmethod
    def from_file(cls, path: str | Path, *, max_loaded: int = 2) -> RMRegistry:
        """A registry from a TOML (``.toml``) or YAML (``.yaml``, ``.yml``) file with an ``rms`` table."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"RM registry file {str(path)!r} does not exist")
        data = _read_file(path)
        if not isinstance(data, Mapping) or "rms" not in data:
            raise RegistryError(f"invalid RM registry {path}: expected a top-level `rms` table keyed "
                                "by RM name")
        extra = sorted(set(data) - {"rms"})
        if extra:
            raise RegistryError(f"invalid RM registry {path}: unknown top-level keys {extra}; only "
                                "`rms` is allowed")
        return cls.from_mapping(data["rms"], base_dir=path.parent, source=str(path), max_loaded=max_loaded)

    @property
    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    @property
    def loaded(self) -> list[str]:
        """Names of the RMs built from specs and currently held, least recently used first."""
        return list(self._held)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def spec(self, name: str) -> RMSpec | None:
        """The spec registered under ``name``, or None for an RM registered as an object."""
        entry = self._lookup(name)
        return entry if isinstance(entry, RMSpec) else None

    def check_names(self, names: Iterable[str]) -> list[str]:
        """Return ``names`` as a list, raising ``UnknownRMError`` for the first unknown one."""
        out = list(names)
        for name in out:
            self._lookup(name)
        return out

    def register(self, name: str, rm_or_spec: RewardModel | RMSpec, *, replace: bool = False) -> None:
        """Add an RM object (kept as is, never unloaded) or a spec (built on first ``get``) under ``name``."""
        if name in self._entries and not replace:
            raise ValueError(f"reward model {name!r} is already registered; pass replace=True to replace it")
        if isinstance(rm_or_spec, RMSpec):
            entry: RMSpec | RewardModel = (rm_or_spec if rm_or_spec.name == name
                                           else rm_or_spec.model_copy(update={"name": name}))
        elif callable(getattr(rm_or_spec, "score", None)):
            rm_name = getattr(rm_or_spec, "name", None)
            if rm_name != name:
                raise ValueError(f"register({name!r}, ...) got an RM whose name is {rm_name!r}; the "
                                 "names must match")
            entry = rm_or_spec
        else:
            raise TypeError(f"register() takes a RewardModel (with .score) or an RMSpec, "
                            f"got {type(rm_or_spec).__name__}")
        self.unload(name)
        self._home.pop(name, None)
        if not isinstance(entry, RMSpec):
            self._home[name] = str(getattr(entry, "device", "cpu"))
        self._entries[name] = entry

    def take_moves(self) -> dict[str, list[str]]:
        """The RM names each kind of move (:data:`MOVES`) touched since the last call, in order, and forget them.

        >>> registry = RMRegistry([RMSpec(name="len", kind="function", options={"callable": "builtins:len"})])
        >>> _ = registry.get("len")
        >>> registry.take_moves(), registry.take_moves()["loaded"]
        ({'loaded': ['len'], 'evicted': [], 'offloaded': [], 'onloaded': []}, [])
        """
        moves, self._moves = self._moves, {kind: [] for kind in MOVES}
        return moves

    def get(self, name: str) -> RewardModel:
        """The RM ``name``, built on first use; on return it is the only held RM on an accelerator."""
        entry = self._lookup(name)
        to_build = isinstance(entry, RMSpec) and name not in self._held
        if to_build and isinstance(entry, RMSpec) and entry.kind != "function":
            self._evict_for_one_more()  # before offloading, so an RM about to be dropped is not moved
        self._offload_except(name)
        if not isinstance(entry, RMSpec):
            rm = entry
        elif not to_build:
            rm = self._held[name]
            self._held.move_to_end(name)
        else:
            rm = self._build(entry)
            self._moves["loaded"].append(name)
            self._held[name] = rm
            self._home[name] = str(getattr(rm, "device", "cpu"))
        home = self._home.get(name, "cpu")
        move = getattr(rm, "to", None)
        if str(getattr(rm, "device", home)) != home and callable(move):
            move(home)
            self._moves["onloaded"].append(name)
        return rm

    def score(self, name: str, prompts: Sequence[str], responses: Sequence[str], *,
              batch: str | int | None = None) -> FloatArray:
        """``checked_scores(self.get(name), prompts, responses, batch=batch)``."""
        return checked_scores(self.get(name), prompts, responses, batch=batch)

    def unload(self, name: str) -> None:
        """Drop the built RM ``name`` (if held) and free its memory; its spec stays registered."""
        if self._held.pop(name, None) is not None:
            if self._home.pop(name, "cpu") != "cpu":
                _free_accelerator_memory()

    def clear(self) -> None:
        """Drop every RM built from a spec."""
        for name in list(self._held):
            self.unload(name)

    def _lookup(self, name: str) -> RMSpec | RewardModel:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownRMError(name, self.names) from None

    def _build(self, spec: RMSpec) -> RewardModel:
        try:
            return build_rm(spec)
        except (ValueError, TypeError, OSError) as exc:
            where = f" from {spec.model!r}" if spec.model else ""
            message = f"could not build reward model {spec.name!r} (kind {spec.kind!r}{where}): {exc}"
            try:  # keep the exception's type (FileNotFoundError, ValueError, ...) for callers that catch it
                wrapped: Exception = type(exc)(message)
            except Exception:
                wrapped = RewardModelError(message)
            raise wrapped from exc

    def _counted(self) -> list[str]:
        return [n for n in self._held if (s := self._entries.get(n)) is not None
                and isinstance(s, RMSpec) and s.kind != "function"]

    def _evict_for_one_more(self) -> None:
        counted = self._counted()
        while len(counted) >= self.max_loaded:
            self._moves["evicted"].append(counted[0])
            self.unload(counted.pop(0))

    def _offload_except(self, name: str) -> None:
        others = [(n, rm) for n, rm in self._held.items() if n != name]
        others += [(n, e) for n, e in self._entries.items() if n != name and not isinstance(e, RMSpec)]
        for other, rm in others:
            move = getattr(rm, "to", None)
            if _on_accelerator(rm) and callable(move):
                move("cpu")
                self._moves["offloaded"].append(other)
