"""User errors: problems with what the user asked for, reported as one line and a non-zero exit.

Anything raised as a :class:`LaserError` is the user's to fix (a bad flag, a missing file, a malformed
data row); the CLI prints its message without a traceback. Bugs stay ordinary exceptions.
"""

from __future__ import annotations


class LaserError(Exception):
    """A problem with the user's input or environment, with the fix in the message.

    >>> str(LaserError("data file x.jsonl has no rows; add at least one JSON object per line"))
    'data file x.jsonl has no rows; add at least one JSON object per line'
    """


class ConfigError(LaserError):
    """A config file that cannot be read or parsed."""


class DataError(LaserError):
    """A data file that cannot be used: missing, empty, bad JSON or missing fields."""


class ModelLoadError(LaserError):
    """A model path that does not exist or a model that cannot be loaded."""


class RunDirError(LaserError):
    """A run folder that cannot be created, or read as a finished run."""


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM) turned into an interrupt, so a run stops the way Ctrl-C stops it: its
    folder marked ``interrupted``, one line, exit code 143."""
