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


def expect_type(name: str, value: object, *types: type) -> None:
    """A :class:`DnasError` unless ``value`` is one of ``types`` (``type(None)`` among them for optional
    arguments): the Python API's arguments get a sentence, not an AttributeError deep inside."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise DnasError(f"{name} takes {names}, got {type(value).__name__}")
