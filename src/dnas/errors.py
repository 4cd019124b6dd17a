"""User-facing errors.

A :class:`DnasError` is a mistake the user can fix (a missing dataset, an unknown method, a
corrupt checkpoint, an inconsistent config). The CLI prints its message as one sentence and exits
with a non-zero code, without a traceback. Programming errors stay ordinary exceptions.
"""


class DnasError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""


class NonFiniteLossError(DnasError):
    """The training or validation loss became NaN or infinite."""


class Interrupted(DnasError):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving its checkpoint; the same command resumes it."""
