"""Error types shared by every stage.

The CLI maps them to exit codes: usage errors (a bad flag value) exit 2, data errors
(a file that is not what it should be) exit 1. Messages say what was received, what was
expected and how to fix it; the CLI prints them without a traceback unless `--debug`.
"""


class SynthgenError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(SynthgenError):
    """A flag or argument has a value we cannot use (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, flag: str | None = None):
        self.flag = flag
        super().__init__(f"{flag}: {message}" if flag else message)


class DataError(SynthgenError):
    """An input file is missing, unreadable or of the wrong kind (exit code 1)."""

    exit_code = 1


class UnsafePickleError(DataError):
    """A pickle asked for a global outside the allow-list; nothing from it was run."""
