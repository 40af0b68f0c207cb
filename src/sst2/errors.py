"""Errors caused by the user's input (files, options, directories): printed without a traceback."""


class UserError(Exception):
    """Base class; the CLI prints the message and exits with ``status`` (2)."""

    status = 2


class PartialFailure(UserError):
    """The command did its work, but some of it failed (written down in its output): exit status 1."""

    status = 1


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message folded onto one line and cut to ``limit`` characters, for quoting."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
