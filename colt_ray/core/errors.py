"""The two exception types a user sees (bad input, a run that cannot go on) and how their messages are
printed: one line on stderr."""

from __future__ import annotations

import sys


class ConfigError(ValueError):
    """Bad user input. Its message is one line naming the field and what is allowed.

    The command line turns it into ``error: <message>`` on stderr and exit status 2, with no traceback.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):
        # two-argument __init__: tell pickle how to rebuild it, so it can cross a Ray actor boundary
        return (type(self), (self.field, self.message))


class RunError(RuntimeError):
    """A run that started but cannot go on (e.g. a shard actor that keeps dying). The command line prints
    its one-line message and exits with status 1; every completed cycle's results stay written."""


def one_line(message: object, limit: int = 500) -> str:
    """``message`` (an exception or any text) folded onto one line, at most ``limit`` characters."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    return text[:limit]


def stderr_line(line: str) -> None:
    """Print one progress or warning line on stderr, at once."""
    print(line, file=sys.stderr, flush=True)
