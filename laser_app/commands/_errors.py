"""Turning user errors into one line each on stderr and exit code 2, with no traceback."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from laser_app.config import format_validation_error
from laser_app.errors import LaserError, Terminated
from laser_app.run_dir import resumable_folder

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code for input the user must fix (click uses 2 for usage errors too).
USER_ERROR_EXIT = 2
#: Exit codes of a command stopped by Ctrl-C (SIGINT) and by SIGTERM (128 + the signal number).
INTERRUPTED_EXIT, TERMINATED_EXIT = 130, 143

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
    if isinstance(err, LaserError):  # one message, one line each (a message may list several problems)
        return str(err).splitlines() or [type(err).__name__]
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
        previous = _terminate_as_interrupt()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as err:  # the run folder, if one was started, is marked interrupted
            terminated = isinstance(err, Terminated)
            folder = resumable_folder(err)
            then = f"; resume with laser run --resume {folder}" if folder else " (rerun it with --overwrite)"
            typer.echo(f"laser: {'terminated' if terminated else 'interrupted'}; a run folder it started is "
                       f"marked interrupted{then}", err=True)
            raise typer.Exit(code=TERMINATED_EXIT if terminated else INTERRUPTED_EXIT) from None
        except Exception as err:
            lines = user_error_lines(err)
            if lines is None:
                raise
            for line in lines:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code=USER_ERROR_EXIT) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _terminate_as_interrupt() -> Any:
    """Make SIGTERM raise :class:`Terminated` while a command runs (main thread only); the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)
