"""Typed errors. The CLI maps each class to one exit code, in one place (``exit_code``)."""
from __future__ import annotations


class GGUFToolsError(Exception):
    """Base class: anything the user can fix gets a subclass and a documented exit code."""

    exit_code = 1


class UsageError(GGUFToolsError):
    """A request that cannot be met as asked (bad option values): the same exit code as a bad command line."""

    exit_code = 2


class BudgetError(UsageError):
    """A size budget outside the reachable range; the message gives the range."""


class InputError(GGUFToolsError):
    """Missing, malformed, truncated or hostile input (checkpoint, GGUF, packed file, JSON)."""

    exit_code = 3


class UnsupportedError(GGUFToolsError):
    """Valid input that this tool does not handle (architecture, tokenizer, tensor type)."""

    exit_code = 4


class OutputError(GGUFToolsError):
    """The output cannot be written: unwritable path, existing file, not enough disk space."""

    exit_code = 5


class ResourceError(GGUFToolsError):
    """The machine cannot do it: the model does not fit in available memory."""

    exit_code = 6


EXIT_INTERRUPTED = 130

EXIT_CODES = {
    0: "success",
    1: "internal error (a bug: please report it)",
    2: "usage error (bad command-line arguments, or a size budget outside the reachable range)",
    3: "bad input (missing, malformed or corrupt file)",
    4: "unsupported input (architecture, tokenizer or tensor type)",
    5: "cannot write output (path, permissions, disk space)",
    6: "not enough memory for the model",
    130: "interrupted (Ctrl-C); no output was left behind",
}


def message(exc: BaseException) -> str:
    """The one line the command prints for an error: ours as they are, anything else named as a bug."""
    return str(exc) if isinstance(exc, GGUFToolsError) else f"internal error: {type(exc).__name__}: {exc}"


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, GGUFToolsError):
        return exc.exit_code
    return 1
