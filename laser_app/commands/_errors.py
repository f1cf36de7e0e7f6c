"""Turning user errors into one line each on stderr and exit code 2, with no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from laser_app.config import format_validation_error
from laser_app.errors import LaserError

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code for input the user must fix (click uses 2 for usage errors too).
USER_ERROR_EXIT = 2

# The adapters' errors that are the user's to fix, looked up only once their modules are loaded, so that
# handling an error never imports torch.
_ADAPTER_ERRORS = (("laser_adapters.reward_models.registry", "UnknownRMError"),
                   ("laser_adapters.reward_models.base", "RewardModelError"))


def user_error_lines(err: BaseException) -> list[str] | None:
    """The lines to print for a user error, or ``None`` when ``err`` is a bug (keep its traceback).

    >>> user_error_lines(LaserError("data file d.jsonl has no rows"))
    ['data file d.jsonl has no rows']
    >>> user_error_lines(ZeroDivisionError()) is None
    True
    """
    if isinstance(err, LaserError):
        return [str(err)]
    if isinstance(err, ValidationError):
        return ["invalid configuration: " + line for line in format_validation_error(err)]
    for module, name in _ADAPTER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
            return [str(message)]
    return None


def user_errors(fn: F) -> F:
    """Decorate a command so user errors print as ``error: ...`` lines and exit with code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as err:
            lines = user_error_lines(err)
            if lines is None:
                raise
            for line in lines:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code=USER_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]
