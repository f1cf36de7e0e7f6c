"""The ``laser`` command's entry point.

It first checks that the ``llm`` extra is installed, without importing torch (``laser --help`` stays
fast), then runs the typer app from :mod:`laser_app.commands`. User errors become one line on stderr and
exit code 2; everything else keeps its traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

#: Modules the ``llm`` extra provides that the CLI cannot run without.
REQUIRED_MODULES = ("typer", "pydantic", "rich", "torch", "transformers")
INSTALL_HINT = "pip install 'laser-bandits[llm]'"


def missing_modules(names: Sequence[str] = REQUIRED_MODULES) -> list[str]:
    """The modules among ``names`` that cannot be imported (checked without importing them).

    >>> missing_modules(["json", "no_such_module_xyz"])
    ['no_such_module_xyz']
    """
    return [name for name in names if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``laser`` with ``argv`` (default: the process's arguments); returns the exit code."""
    missing = missing_modules()
    if missing:
        print(f"laser needs the llm extra (missing: {', '.join(missing)}): {INSTALL_HINT}", file=sys.stderr)
        return 1
    from laser_app.commands import app, user_error_lines

    try:
        app(args=list(argv) if argv is not None else None, prog_name="laser")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:  # a run folder in progress is already marked failed
        print("laser: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a user error raised outside a command body (commands handle their own)
        lines = user_error_lines(err)
        if lines is None:
            raise
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
