"""One way to declare CLI options: every :class:`~laser_app.config.RunConfig` field becomes a typer option.

A command declares its own options as usual and takes the config's as ``**settings``;
:func:`config_options` adds one ``--kebab-name`` option per field (help and default from the field, the
help panel from the field's section, ``--x/--no-x`` for on/off fields) to the signature typer reads.
Only the flags the user gave reach ``settings`` (the others are ``None``), so a config file's values
survive. Values stay as typed on the command line and the config model converts and checks them, so
every bad value fails with the same one-line message whether it came from a flag, ``--set`` or a file.

>>> import typer
>>> @config_options(("alpha", "lora"))
... def cmd(ctx: typer.Context, **settings: object) -> None: ...
>>> [p for p in inspect.signature(cmd).parameters]
['ctx', 'alpha', 'lora']
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer

from laser_app.config import RunConfig, field_help, flag_name, section_of

F = TypeVar("F", bound=Callable[..., Any])


def _kinds(field: str) -> list[Any]:
    """The types a field's annotation allows, None left out (``float | None`` -> ``[float]``)."""
    annotation = RunConfig.model_fields[field].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _cli_type(field: str) -> type:
    """What the command line carries for ``field``: on/off fields as flags, everything else as text, which
    the config model converts and checks (so a bad number is one line naming the field, as from a file)."""
    return bool if _kinds(field) == [bool] else str


def _metavar(field: str) -> str:
    """How ``--help`` shows a field's value: its type, or its choices.

    >>> _metavar("alpha"), _metavar("scope"), _metavar("rms"), _metavar("mab_reward")
    ('FLOAT', 'global|per-context', 'TEXT', 'NAME')
    """
    kinds = _kinds(field)
    choices = [str(c) for k in kinds if typing.get_origin(k) is typing.Literal for c in typing.get_args(k)]
    if choices:
        shown = "|".join(choices)
        return shown if len(shown) <= 20 else "NAME"
    names = {int: "INT", float: "FLOAT", Path: "PATH"}
    return next((names[k] for k in kinds if k in names), "TEXT")


def config_parameters(fields: Iterable[str], *, help: Mapping[str, str] | None = None,
                      hidden: Collection[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field, its default a typer option (``help`` replaces a field's text)."""
    params = []
    for field in fields:
        kind = _cli_type(field)
        names = [f"{flag_name(field)}/--no-{field.replace('_', '-')}"] if kind is bool else [flag_name(field)]
        option = typer.Option(None, *names, help=(help or {}).get(field) or field_help(field),
                              rich_help_panel=section_of(field), show_default=False, hidden=field in hidden,
                              metavar=None if kind is bool else _metavar(field))
        params.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=kind | None))
    return params


def config_options(fields: Iterable[str] | None = None, *, help: Mapping[str, str] | None = None,
                   hidden: Collection[str] = ()) -> Callable[[F], F]:
    """Decorate a command whose last parameter is ``**settings``: add an option for each of ``fields``
    (default: every config field) to the signature typer reads; ``hidden`` options parse but stay out of
    ``--help``."""
    names = list(RunConfig.model_fields if fields is None else fields)
    unknown = [n for n in names if n not in RunConfig.model_fields]
    if unknown:
        raise ValueError(f"not config fields: {', '.join(unknown)}")

    def decorate(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        clash = sorted({p.name for p in own} & set(names))
        if clash:
            raise ValueError(f"{fn.__name__} declares {', '.join(clash)} itself; leave them out of fields")
        # the context first, then the config's options, then the command's own (--help lists panels in order)
        first = [p for p in own if p.annotation is typer.Context]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.annotation is not typer.Context]
        params = [*first, *config_parameters(names, help=help, hidden=hidden), *rest]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return typing.cast(F, command)

    return decorate


def given_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The config settings the user gave on the command line (typer passes the rest as None).

    >>> given_settings({"alpha": 0.5, "lr": None})
    {'alpha': 0.5}
    """
    return {k: v for k, v in settings.items() if v is not None}
